//! Where a command's gallery lives: an index directory or a Milvus collection, opened behind the
//! [`VectorStore`] interface for the commands that work alike on both.

use std::path::PathBuf;

use hetvis_indexer::pipeline::ERRORS_FILE;
use hetvis_indexer::{EmbeddedStore, MilvusStore, MilvusTarget, VectorStore};

pub enum Place {
    Dir(PathBuf),
    Milvus(MilvusTarget),
}

impl Place {
    /// Exactly one place: an index directory or `--milvus URI --collection NAME`.
    pub fn of(dir: Option<PathBuf>, milvus: Option<MilvusTarget>) -> anyhow::Result<Self> {
        match (dir, milvus) {
            (Some(d), None) => Ok(Self::Dir(d)),
            (None, Some(t)) => Ok(Self::Milvus(t)),
            (Some(_), Some(_)) => anyhow::bail!("give an index directory or --milvus, not both"),
            (None, None) => {
                anyhow::bail!("give an index directory or --milvus URI --collection NAME")
            }
        }
    }

    /// The gallery opened for changing (an index directory under its writer lock, without its graph).
    pub fn open_for_changes(&self) -> anyhow::Result<Box<dyn VectorStore>> {
        Ok(match self {
            Self::Dir(dir) => Box::new(EmbeddedStore::open(dir)?),
            Self::Milvus(target) => Box::new(MilvusStore::open(target)?),
        })
    }

    /// Where a run's skipped items are written (`errors.jsonl` beside an index directory); a Milvus run lists
    /// them in its report instead.
    pub fn errors_file(&self) -> Option<PathBuf> {
        match self {
            Self::Dir(dir) => Some(dir.join(ERRORS_FILE)),
            Self::Milvus(_) => None,
        }
    }
}
