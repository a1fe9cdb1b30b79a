//! The one error type of the index library. Every variant that concerns a file names it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no index at {path} (expected a directory with manifest.json)")]
    NotFound { path: PathBuf },
    #[error("index file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: index format {found} is not supported; this build reads formats 1 to {supported}"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "the model embeds into space {model:?} but the index was built in space {index:?}; \
         use the index's gallery model or a query model trained against it"
    )]
    Incompatible { index: String, model: String },
    #[error("the model produces {model}-d embeddings but the index holds {index}-d vectors")]
    DimensionMismatch { index: usize, model: usize },
    #[error(
        "this gallery model file (sha256 {model}) is not the one that built the index (sha256 {index}); \
         adding needs the same gallery model"
    )]
    ModelChanged { index: String, model: String },
    #[error("{model} is a {role} model; building or extending an index needs the gallery model")]
    NotGallery { model: String, role: String },
    #[error("vector for {what}: {problem}")]
    InvalidVector {
        what: String,
        problem: crate::vector::VectorProblem,
    },
    #[error("id {0:?} is already in the index")]
    DuplicateId(String),
    #[error("{path} is being changed by another writer ({holder}); one writer at a time")]
    Locked { path: PathBuf, holder: String },
    #[error("invalid index parameters: {0}")]
    InvalidParams(String),
    #[error("Milvus: {0}")]
    Milvus(String),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| IndexError::Io { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IndexError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
