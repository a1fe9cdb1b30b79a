//! `hetvis-indexer`: embeds a gallery with the gallery model and keeps a persistent nearest-neighbour index.
//!
//! [`Index`] is the library the server uses: open (verified), search (HNSW or exact), add and remove through a
//! write-ahead log ([`wal`]), save atomically ([`atomic_dir`]), compact ([`compaction`]).
//! [`pipeline`] embeds image folders, JSONL manifests and Fashion-MNIST in bulk; [`recall`] measures HNSW
//! against exact search.

pub mod atomic_dir;
pub mod checksum;
pub mod compaction;
pub mod compat;
pub mod error;
pub mod flat;
pub mod graph;
pub mod index;
pub mod manifest;
pub mod milvus_store;
pub mod npy;
pub mod params;
pub mod pipeline;
pub mod recall;
pub mod record;
pub mod store;
#[cfg(test)]
mod test_model;
pub mod vector;
pub mod vector_store;
pub mod wal;

pub use atomic_dir::{Durability, WriterLock};
pub use compaction::{Compaction, CompactionPolicy};
pub use error::IndexError;
pub use index::{Hit, Index, Saved, SearchMode};
pub use manifest::{GalleryModel, IndexManifest};
pub use milvus_store::{MilvusStore, MilvusTarget};
pub use params::HnswParams;
pub use record::Record;
pub use vector_store::{EmbeddedStore, GallerySearch, VectorStore};

/// The message of a caught panic (`&str` or `String` payloads), for reporting it as an error.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
