//! Training presets: data, not constants scattered through the code. `presets.json` is compiled in;
//! `--preset-file` reads another file of the same shape.

use std::collections::BTreeMap;

use hetvis_models::arch::{Backbone, ModelSpec};
use serde::{Deserialize, Serialize};

const BUILTIN: &str = include_str!("../presets.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataSpec {
    /// Debian's Fashion-MNIST: train split minus a seeded validation split; the test split for final numbers.
    FashionMnist,
    /// The project's generator (`hetvis_models::data::synthetic`).
    Synthetic {
        train: usize,
        test: usize,
        classes: usize,
        image_size: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate of SGD (momentum 0.9, Nesterov) with a cosine decay over all steps.
    pub lr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryPreset {
    pub backbone: Backbone,
    pub train: Schedule,
}

/// Normalised-softmax (CosFace) classifier: logits `scale * (cos - margin * onehot)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassifierPreset {
    pub scale: f64,
    pub margin: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    #[serde(default)]
    pub about: String,
    pub data: DataSpec,
    pub input_size: usize,
    pub embedding_dim: usize,
    pub gallery: GalleryPreset,
    pub query: Schedule,
    /// Baseline query architectures by name (`mobilenetv2`, `shufflenetv2`), scaled for this preset.
    pub baselines: BTreeMap<String, Backbone>,
    pub classifier: ClassifierPreset,
    /// BCT influence-loss weight (lambda).
    pub bct_weight: f64,
    /// Weight of the squared distance to the gallery embedding in `l2` mode.
    pub l2_weight: f64,
    pub augment: bool,
    pub val_fraction: f64,
    /// Train on a seeded subset of this many training images (0 = all): a compute budget, not a data choice.
    #[serde(default)]
    pub train_limit: usize,
    pub seed: u64,
    /// Super-network, search and pipeline tiers.
    pub cmpnas: crate::cmpnas::CmpNasPreset,
}

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("unknown preset {name:?}; available: {available}")]
    Unknown { name: String, available: String },
    #[error("invalid preset file: {0}")]
    Parse(String),
}

pub fn all(file: Option<&str>) -> Result<BTreeMap<String, Preset>, PresetError> {
    serde_json::from_str(file.unwrap_or(BUILTIN)).map_err(|e| PresetError::Parse(e.to_string()))
}

pub fn load(name: &str, file: Option<&str>) -> Result<Preset, PresetError> {
    let mut presets = all(file)?;
    let available = presets.keys().cloned().collect::<Vec<_>>().join(", ");
    presets.remove(name).ok_or(PresetError::Unknown {
        name: name.to_owned(),
        available,
    })
}

impl Preset {
    /// A model spec for a backbone at this preset's input size and embedding dimension.
    pub fn spec(&self, backbone: Backbone) -> ModelSpec {
        ModelSpec::new(backbone, self.input_size, self.embedding_dim)
    }

    pub fn gallery_spec(&self) -> ModelSpec {
        self.spec(self.gallery.backbone.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_parse_and_lower() {
        let presets = all(None).unwrap();
        for name in ["tiny", "cpu", "paper"] {
            let p = &presets[name];
            p.gallery_spec().lower().unwrap();
            for b in p.baselines.values() {
                p.spec(b.clone()).lower().unwrap();
            }
        }
        assert!(matches!(
            load("nope", None),
            Err(PresetError::Unknown { .. })
        ));
    }
}
