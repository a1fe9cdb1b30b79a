//! `manifest.json`: what an index directory holds and how to check it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::params::HnswParams;

/// Bumped when the directory layout or a file's encoding changes. Version 2 may hold the HNSW graph
/// ([`crate::graph::GRAPH_FILES`]); version 1 never does, and is still read (its graph is rebuilt on open).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// `count * dim` little-endian f32, row-major, each row unit length.
pub const VECTORS_FILE: &str = "vectors.f32";
/// One JSON [`crate::Record`] per line, in row order.
pub const RECORDS_FILE: &str = "records.jsonl";
/// The rows of removed items (a JSON array, ascending), when there are any (format 2).
pub const REMOVED_FILE: &str = "removed.json";
/// The files every index has, each listed with its size and checksum in the manifest.
pub const DATA_FILES: [&str; 2] = [VECTORS_FILE, RECORDS_FILE];
/// Similarity reported by searches: cosine (inner product of unit vectors).
pub const METRIC: &str = "cosine";

/// The gallery model whose embedding space the index lives in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryModel {
    pub name: String,
    pub compat_id: String,
    /// sha256 of the ONNX model file.
    pub sha256: String,
}

impl GalleryModel {
    pub fn from_manifest(m: &hetvis_models::manifest::ModelManifest, sha256: &str) -> Self {
        Self {
            name: m.name.clone(),
            compat_id: m.compat_id.clone(),
            sha256: sha256.to_owned(),
        }
    }
}

/// Size and sha256 of one data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    pub format_version: u32,
    /// `hetvis-indexer <version>` that wrote it.
    pub writer: String,
    pub gallery: GalleryModel,
    pub dim: usize,
    pub metric: String,
    pub count: usize,
    pub hnsw: HnswParams,
    /// File name -> size and checksum, for every file in [`DATA_FILES`] and, when the graph is stored, in
    /// [`crate::graph::GRAPH_FILES`].
    pub files: BTreeMap<String, FileEntry>,
}

impl IndexManifest {
    pub fn new(gallery: GalleryModel, dim: usize, hnsw: HnswParams) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            writer: format!("hetvis-indexer {}", env!("CARGO_PKG_VERSION")),
            gallery,
            dim,
            metric: METRIC.to_owned(),
            count: 0,
            hnsw,
            files: BTreeMap::new(),
        }
    }
}
