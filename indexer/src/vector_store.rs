//! [`VectorStore`]: what the command line (and, next, the server) needs of a gallery, whichever engine holds
//! it: the embedded index directory ([`EmbeddedStore`] around [`Index`]) or a Milvus collection
//! ([`MilvusStore`]). Changes through it are durable when they return.

use crate::atomic_dir::WriterLock;
use crate::compaction::{self, CompactionPolicy};
use crate::error::IndexError;
use crate::index::{Hit, Index};
use crate::manifest::IndexManifest;
use crate::milvus_store::MilvusStore;
use crate::record::Record;

pub trait VectorStore: Send {
    /// The embedding space, dimension and HNSW parameters (model checks use it as for an index directory).
    fn manifest(&self) -> &IndexManifest;
    /// Items a search can return.
    fn live_len(&self) -> Result<usize, IndexError>;
    /// Which of `ids` are in the gallery.
    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError>;
    /// Up to `k` nearest items, best first (`ef`: HNSW candidate list, default the manifest's).
    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError>;
    /// Adds new items (ids must be new), durably; returns how many.
    fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<usize, IndexError>;
    /// Removes items by id, durably; returns the ids that were not there.
    fn remove(&mut self, ids: &[String]) -> Result<Vec<String>, IndexError>;
    /// Where the gallery lives, for messages.
    fn location(&self) -> String;
}

/// An index directory opened for changing: its writer lock is held for the store's life.
pub struct EmbeddedStore {
    index: Option<Index>,
    lock: WriterLock,
}

impl EmbeddedStore {
    /// Takes the writer lock, then opens the index without its graph (searches are exact until
    /// [`EmbeddedStore::load_graph`]; changes need no graph).
    pub fn open(dir: &std::path::Path) -> Result<Self, IndexError> {
        let lock = WriterLock::acquire(dir)?;
        let index = Index::open_without_graph(dir)?;
        Ok(Self {
            index: Some(index),
            lock,
        })
    }

    /// Loads the stored graph (or builds one), for HNSW searches.
    pub fn load_graph(&mut self) -> Result<(), IndexError> {
        let index = self.index_mut();
        let (graph, _) = index.load_or_build_graph()?;
        index.install_graph(graph)
    }

    pub fn index(&self) -> &Index {
        self.index
            .as_ref()
            .expect("the index is only taken during a compaction")
    }

    fn index_mut(&mut self) -> &mut Index {
        self.index
            .as_mut()
            .expect("the index is only taken during a compaction")
    }

    /// Compacts when the default policy says so.
    pub fn compact_if_due(&mut self) -> Result<(), IndexError> {
        if let Some(kind) = CompactionPolicy::default().due(self.index()) {
            let index = self.index.take().expect("present");
            match compaction::run(index, &self.lock, kind) {
                Ok((index, _)) => self.index = Some(index),
                Err(e) => {
                    // The directory is as it was (a compaction replaces it atomically): reopen it.
                    self.index = Some(Index::open_without_graph(self.lock.target())?);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl VectorStore for EmbeddedStore {
    fn manifest(&self) -> &IndexManifest {
        self.index().manifest()
    }

    fn live_len(&self) -> Result<usize, IndexError> {
        Ok(self.index().live_len())
    }

    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        Ok(ids
            .iter()
            .filter(|id| self.index().contains_id(id))
            .cloned()
            .collect())
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError> {
        self.index().search(query, k, ef)
    }

    fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<usize, IndexError> {
        let n = items.len();
        let lock = &self.lock;
        self.index
            .as_mut()
            .expect("present")
            .add_logged(lock, items)?;
        Ok(n)
    }

    fn remove(&mut self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        let lock = &self.lock;
        let (missing, _) = self
            .index
            .as_mut()
            .expect("present")
            .remove_logged(lock, ids)?;
        Ok(missing)
    }

    fn location(&self) -> String {
        self.lock.target().display().to_string()
    }
}

impl VectorStore for MilvusStore {
    fn manifest(&self) -> &IndexManifest {
        MilvusStore::manifest(self)
    }

    fn live_len(&self) -> Result<usize, IndexError> {
        MilvusStore::live_len(self)
    }

    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        MilvusStore::present(self, ids)
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError> {
        MilvusStore::search(self, query, k, ef, true)
    }

    fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<usize, IndexError> {
        MilvusStore::add(self, items)
    }

    fn remove(&mut self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        MilvusStore::remove(self, ids)
    }

    fn location(&self) -> String {
        format!("Milvus {} collection {}", self.uri(), self.collection())
    }
}
