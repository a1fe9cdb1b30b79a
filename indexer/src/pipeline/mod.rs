//! Bulk embedding: a [`Source`] lists the gallery as a [`Catalog`]; [`embed_catalog`] decodes and preprocesses
//! it in parallel (rayon) while a dedicated thread runs batched ONNX Runtime inference. Files that cannot be
//! read or decoded become [`Failure`]s (reported in `errors.jsonl`), never a failed run.

mod embed;
mod progress;
mod source;
mod vectors;

pub use embed::{embed_catalog, Embedded, PipelineConfig};
pub use source::{Catalog, Entry, Origin, Source, SourceOptions};
pub use vectors::{VectorsSource, NPY_PREFIX};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the per-run report of skipped items, written into the index directory.
pub const ERRORS_FILE: &str = "errors.jsonl";

/// One gallery item that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The item's id, or `line N` for an unreadable manifest line.
    pub id: String,
    /// Where it came from: a file path, a manifest line, or a data set record.
    pub source: String,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source {spec:?}: {reason}")]
    Source { spec: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] hetvis_models::data::DataError),
    #[error("inference failed: {0}")]
    Embed(#[from] hetvis_models::embed::EmbedError),
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
}

/// `errors.jsonl`: one [`Failure`] per line.
pub fn errors_jsonl(failures: &[Failure]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in failures {
        // A struct of three strings always serialises.
        out.extend(serde_json::to_vec(f).unwrap_or_default());
        out.push(b'\n');
    }
    out
}
