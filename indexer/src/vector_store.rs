//! The gallery behind one interface, whichever engine holds it: an index directory ([`Index`], or
//! [`EmbeddedStore`] when it is opened for changing) or a Milvus collection ([`MilvusStore`]).
//!
//! [`GallerySearch`] is what querying needs (the manifest that the model checks use, counts, search);
//! [`VectorStore`] adds durable changes. `hetvis-index` works through them (the `backends` benchmark calls
//! each implementation directly, since it compares them).

use hetvis_models::manifest::ModelManifest;

use crate::atomic_dir::WriterLock;
use crate::compaction::{self, CompactionPolicy};
use crate::compat;
use crate::error::IndexError;
use crate::index::{Hit, Index};
use crate::manifest::IndexManifest;
use crate::milvus_store::MilvusStore;
use crate::record::Record;

/// A gallery that can be searched.
pub trait GallerySearch {
    /// The embedding space, dimension and HNSW parameters.
    fn manifest(&self) -> &IndexManifest;
    /// Items a search can return.
    fn live_len(&self) -> Result<usize, IndexError>;
    /// Which of `ids` are in the gallery.
    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError>;
    /// Up to `k` nearest items, best first (`ef`: HNSW candidate list, default the manifest's).
    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError>;

    /// A model whose embeddings can be searched here (same embedding space and dimension).
    fn check_query_model(&self, model: &ModelManifest) -> Result<(), IndexError> {
        compat::check_query_model(self.manifest(), model)
    }

    /// The model that may add here: the very gallery model file that built the gallery.
    fn check_gallery_model(&self, model: &ModelManifest, sha256: &str) -> Result<(), IndexError> {
        compat::check_gallery_model(self.manifest(), model, sha256)
    }
}

/// A gallery that can be changed; every change is durable when it returns.
pub trait VectorStore: GallerySearch + Send {
    /// Adds new items (ids must be new); returns how many.
    fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<usize, IndexError>;
    /// Removes items by id; returns the ids that were not there.
    fn remove(&mut self, ids: &[String]) -> Result<Vec<String>, IndexError>;
    /// After a run of changes: an index directory compacts when its policy says so; Milvus seals what was
    /// inserted, so that counts and its index cover it.
    fn settle(&mut self) -> Result<(), IndexError>;
    /// Where the gallery lives, for messages.
    fn location(&self) -> String;
}

impl GallerySearch for Index {
    fn manifest(&self) -> &IndexManifest {
        Index::manifest(self)
    }

    fn live_len(&self) -> Result<usize, IndexError> {
        Ok(Index::live_len(self))
    }

    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        Ok(ids
            .iter()
            .filter(|id| self.contains_id(id))
            .cloned()
            .collect())
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError> {
        Index::search(self, query, k, ef)
    }
}

/// An index directory opened for changing: its writer lock is held for the store's life, and its graph is not
/// loaded (changes need none; its searches are exact).
pub struct EmbeddedStore {
    index: Option<Index>,
    lock: WriterLock,
}

impl EmbeddedStore {
    /// Takes the writer lock before reading, so no other writer's changes can be missed by this one.
    pub fn open(dir: &std::path::Path) -> Result<Self, IndexError> {
        let lock = WriterLock::acquire(dir)?;
        let index = Index::open_without_graph(dir)?;
        Ok(Self {
            index: Some(index),
            lock,
        })
    }

    pub fn index(&self) -> &Index {
        self.index
            .as_ref()
            .expect("the index is only taken during a compaction")
    }

    pub fn dir(&self) -> &std::path::Path {
        self.lock.target()
    }

    /// Compacts with `kind` (see [`compaction::run`]); on failure the directory is as it was and is reopened.
    pub fn compact(
        &mut self,
        kind: compaction::Compaction,
    ) -> Result<crate::atomic_dir::Durability, IndexError> {
        let index = self.index.take().expect("present");
        match compaction::run(index, &self.lock, kind) {
            Ok((index, durability)) => {
                self.index = Some(index);
                Ok(durability)
            }
            Err(e) => {
                self.index = Some(Index::open_without_graph(self.lock.target())?);
                Err(e)
            }
        }
    }
}

impl GallerySearch for EmbeddedStore {
    fn manifest(&self) -> &IndexManifest {
        self.index().manifest()
    }

    fn live_len(&self) -> Result<usize, IndexError> {
        Ok(self.index().live_len())
    }

    fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        GallerySearch::present(self.index(), ids)
    }

    fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>, IndexError> {
        self.index().search(query, k, ef)
    }
}

impl VectorStore for EmbeddedStore {
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

    fn settle(&mut self) -> Result<(), IndexError> {
        if let Some(kind) = CompactionPolicy::default().due(self.index()) {
            let before = self.index().log_stats();
            let started = std::time::Instant::now();
            let durability = self.compact(kind)?;
            if let crate::atomic_dir::Durability::NotDurable(why) = &durability {
                tracing::warn!(dir = %self.dir().display(), why, "compacted but not yet durable");
            }
            tracing::info!(
                ?kind,
                changes = before.changes,
                log_bytes = before.bytes,
                seconds = started.elapsed().as_secs_f64(),
                ?durability,
                "compacted"
            );
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.lock.target().display().to_string()
    }
}

impl GallerySearch for MilvusStore {
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
}

impl VectorStore for MilvusStore {
    fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<usize, IndexError> {
        MilvusStore::add(self, items)
    }

    fn remove(&mut self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        MilvusStore::remove(self, ids)
    }

    fn settle(&mut self) -> Result<(), IndexError> {
        self.flush()
    }

    fn location(&self) -> String {
        format!("{} collection {}", self.uri(), self.collection())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::GalleryModel;
    use crate::params::HnswParams;

    fn record(id: &str) -> Record {
        Record::new(id)
    }

    fn gallery() -> GalleryModel {
        GalleryModel {
            name: "g".into(),
            compat_id: "space".into(),
            sha256: "abc".into(),
        }
    }

    #[test]
    fn an_index_directory_through_the_interface() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::new(gallery(), 2, HnswParams::default()).unwrap();
        index.add(vec![(record("a"), vec![1.0, 0.0])]).unwrap();
        let _ = index.save_exclusive(dir.path()).unwrap();

        let mut store: Box<dyn VectorStore> = Box::new(EmbeddedStore::open(dir.path()).unwrap());
        assert_eq!(store.add(vec![(record("b"), vec![0.0, 1.0])]).unwrap(), 1);
        assert_eq!(
            store.remove(&["a".into(), "zz".into()]).unwrap(),
            vec!["zz".to_owned()]
        );
        store.settle().unwrap();
        assert_eq!(store.live_len().unwrap(), 1);
        assert_eq!(
            store.present(&["a".into(), "b".into()]).unwrap(),
            vec!["b".to_owned()]
        );
        assert_eq!(store.search(&[0.1, 1.0], 1, None).unwrap()[0].id, "b");
        drop(store);

        // Durable: a reader opening the directory sees the same.
        let reopened = Index::open(dir.path()).unwrap();
        let reader: &dyn GallerySearch = &reopened;
        assert_eq!(reader.live_len().unwrap(), 1);
        assert_eq!(reader.search(&[0.1, 1.0], 1, None).unwrap()[0].id, "b");
    }

    #[test]
    fn a_second_writer_is_refused_while_a_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::new(gallery(), 2, HnswParams::default()).unwrap();
        index.add(vec![(record("a"), vec![1.0, 0.0])]).unwrap();
        let _ = index.save_exclusive(dir.path()).unwrap();
        let _store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(EmbeddedStore::open(dir.path()).is_err());
    }
}
