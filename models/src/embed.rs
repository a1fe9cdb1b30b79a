//! The ONNX Runtime embedder: an exported model plus its manifest, checked, embedding batches of preprocessed
//! images. `Session::run` takes `&mut self`, so an `Embedder` belongs to one thread at a time; servers keep a
//! pool of them on worker threads.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use crate::manifest::{ManifestError, ModelManifest, Role, METADATA_KEY};
use crate::runtime::{self, Provider, RuntimeError, SessionConfig};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot read model {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: no hetvis manifest in the ONNX metadata (key {METADATA_KEY}); export it with `hetvis-model export`")]
    NoManifest { path: PathBuf },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: model does not match its manifest: {message}")]
    Mismatch { path: PathBuf, message: String },
    #[error("{path} is a {found} model; a {expected} model is needed here")]
    Role {
        path: PathBuf,
        expected: Role,
        found: Role,
    },
    #[error("batch holds {got} floats, not a multiple of {per_image} per image")]
    BadBatch { got: usize, per_image: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

pub struct Embedder {
    session: Session,
    manifest: ModelManifest,
    provider: Provider,
    path: PathBuf,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("path", &self.path)
            .field("name", &self.manifest.name)
            .field("provider", &self.provider)
            .finish()
    }
}

fn dims_of(outlet: &ort::value::Outlet) -> Option<Vec<i64>> {
    outlet.dtype().tensor_shape().map(|s| s.to_vec())
}

impl Embedder {
    /// Loads a model file. The manifest comes from the ONNX metadata, so it cannot drift from the graph.
    pub fn load(path: &Path, config: &SessionConfig) -> Result<Self, EmbedError> {
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, path, config)
    }

    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        config: &SessionConfig,
    ) -> Result<Self, EmbedError> {
        let (session, provider) = runtime::session_from_bytes(bytes, config)?;
        let text = session
            .metadata()
            .map_err(RuntimeError::from)?
            .custom(METADATA_KEY)
            .ok_or_else(|| EmbedError::NoManifest {
                path: path.to_owned(),
            })?;
        let manifest = ModelManifest::from_json(&text)?;
        let e = Self {
            session,
            manifest,
            provider,
            path: path.to_owned(),
        };
        e.check_io()?;
        Ok(e)
    }

    /// Input `[batch, C, S, S]` and output `[batch, D]`, named as the manifest says.
    fn check_io(&self) -> Result<(), EmbedError> {
        let m = &self.manifest;
        let bad = |message: String| EmbedError::Mismatch {
            path: self.path.clone(),
            message,
        };
        let (ins, outs) = (self.session.inputs(), self.session.outputs());
        let [input] = ins else {
            return Err(bad(format!("{} inputs, expected 1", ins.len())));
        };
        let [output] = outs else {
            return Err(bad(format!("{} outputs, expected 1", outs.len())));
        };
        if input.name() != m.input_name || output.name() != m.output_name {
            return Err(bad(format!(
                "io names {}/{}, manifest says {}/{}",
                input.name(),
                output.name(),
                m.input_name,
                m.output_name
            )));
        }
        let p = &m.preprocessing;
        let want_in = [p.channels as i64, p.size as i64, p.size as i64];
        match dims_of(input) {
            Some(d) if d.len() == 4 && d[1..] == want_in => {}
            d => {
                return Err(bad(format!(
                    "input shape {d:?}, manifest wants [batch, {want_in:?}]"
                )))
            }
        }
        match dims_of(output) {
            Some(d) if d.len() == 2 && d[1] == m.embedding_dim as i64 => {}
            d => {
                return Err(bad(format!(
                    "output shape {d:?}, manifest wants [batch, {}]",
                    m.embedding_dim
                )))
            }
        }
        if p.channels != m.spec.input.channels || p.size != m.spec.input.size {
            return Err(bad("preprocessing disagrees with the spec's input".into()));
        }
        Ok(())
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dim(&self) -> usize {
        self.manifest.embedding_dim
    }

    /// Floats per preprocessed image.
    pub fn input_len(&self) -> usize {
        self.manifest.preprocessing.numel()
    }

    /// Fails unless the model has the given role.
    pub fn expect_role(&self, role: Role) -> Result<(), EmbedError> {
        if self.manifest.role == role {
            Ok(())
        } else {
            Err(EmbedError::Role {
                path: self.path.clone(),
                expected: role,
                found: self.manifest.role,
            })
        }
    }

    /// Embeds a batch of preprocessed images (`n * input_len()` floats, CHW each); returns `n * dim()` floats,
    /// each row L2-normalised by the model.
    pub fn embed(&mut self, batch: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let per = self.input_len();
        if batch.is_empty() || !batch.len().is_multiple_of(per) {
            return Err(EmbedError::BadBatch {
                got: batch.len(),
                per_image: per,
            });
        }
        let n = batch.len() / per;
        let expected = n * self.dim();
        let s = self.manifest.preprocessing.size;
        let shape = [n, self.manifest.preprocessing.channels, s, s];
        let input = TensorRef::from_array_view((shape, batch))
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input_name.as_str() => input])
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        let (_, data) = outputs[self.manifest.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        if data.len() != expected {
            return Err(EmbedError::Inference(format!(
                "{} floats out, expected {expected}",
                data.len()
            )));
        }
        Ok(data.to_vec())
    }
}
