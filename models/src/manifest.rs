//! The model manifest: what a model is, what it expects, which embedding space it lives in, where it came from.
//! Written as JSON beside every exported model and mirrored into the ONNX `metadata_props`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::arch::ModelSpec;
use crate::preprocess::Preprocessing;

pub const FORMAT_VERSION: u32 = 1;
/// `metadata_props` key holding the whole manifest as JSON.
pub const METADATA_KEY: &str = "hetvis.manifest";
pub const INPUT_NAME: &str = "image";
pub const OUTPUT_NAME: &str = "embedding";

/// Which side of the search a model embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gallery,
    Query,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Gallery => "gallery",
            Role::Query => "query",
        })
    }
}

/// How the model was trained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Data set, e.g. `fashion-mnist` or an image folder path.
    pub data: String,
    pub preset: String,
    pub seed: u64,
    pub epochs: usize,
    /// Training method: `gallery`, `bct`, `independent`, `l2`, ...
    pub mode: String,
    /// `hetvis` version that trained it.
    #[serde(default)]
    pub tool_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub format_version: u32,
    pub name: String,
    pub role: Role,
    pub spec: ModelSpec,
    /// Multiply-accumulates at batch 1, in millions.
    pub mmacs: f64,
    pub params: u64,
    pub embedding_dim: usize,
    pub preprocessing: Preprocessing,
    /// Identifies the embedding space: the gallery model's id; a query model trained against it carries it too.
    pub compat_id: String,
    pub input_name: String,
    pub output_name: String,
    pub provenance: Provenance,
    /// Evaluation numbers when known (metric name -> value).
    #[serde(default)]
    pub evaluation: BTreeMap<String, f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {message}")]
    Read { path: String, message: String },
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

impl ModelManifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises")
    }

    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let m: Self =
            serde_json::from_str(text).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if m.format_version > FORMAT_VERSION {
            return Err(ManifestError::Invalid(format!(
                "manifest format {} is newer than this build understands ({FORMAT_VERSION})",
                m.format_version
            )));
        }
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json(&text)
    }

    /// Where the JSON copy of a model's manifest lives: `model.onnx` -> `model.json`.
    pub fn sidecar_path(model: &Path) -> std::path::PathBuf {
        model.with_extension("json")
    }
}

/// A compat id for a new gallery model: its name plus a digest of its weights, so two different trainings never
/// share an embedding space by accident.
pub fn new_compat_id(name: &str, weights: &[u8]) -> String {
    let digest = Sha256::digest(weights);
    format!("{name}-{}", hex::encode(&digest[..8]))
}

impl ModelManifest {
    /// A manifest for `spec`, with FLOPs and parameters counted from the spec itself.
    pub fn for_spec(
        name: &str,
        role: Role,
        spec: &crate::arch::ModelSpec,
        preprocessing: Preprocessing,
        compat_id: &str,
        provenance: Provenance,
    ) -> Result<Self, crate::arch::ArchError> {
        let cost = crate::flops::count(&spec.lower()?)?;
        if preprocessing.size != spec.input.size || preprocessing.channels != spec.input.channels {
            return Err(crate::arch::ArchError::Invalid(format!(
                "preprocessing {}px x {} channels does not match the spec's input {:?}",
                preprocessing.size, preprocessing.channels, spec.input
            )));
        }
        Ok(Self {
            format_version: FORMAT_VERSION,
            name: name.to_owned(),
            role,
            spec: spec.clone(),
            mmacs: cost.mmacs(),
            params: cost.params,
            embedding_dim: spec.embedding_dim,
            preprocessing,
            compat_id: compat_id.to_owned(),
            input_name: INPUT_NAME.to_owned(),
            output_name: OUTPUT_NAME.to_owned(),
            provenance,
            evaluation: BTreeMap::new(),
        })
    }
}
