//! [`Index`]: the vectors, their records and the HNSW graph over them, as the server and the CLI use it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use hetvis_models::manifest::ModelManifest;

use crate::atomic_dir::{Durability, WriterLock};
use crate::error::IndexError;
use crate::flat::{self, FlatIndex};
use crate::graph::Graph;
use crate::manifest::{GalleryModel, IndexManifest};
use crate::params::{HnswParams, EXACT_SEARCH_MAX_LEN};
use crate::record::Record;
use crate::{atomic_dir, compat, store, vector};

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    /// Cosine similarity to the query, in [-1, 1], higher is closer.
    pub score: f32,
    pub label: Option<String>,
    pub meta: Option<serde_json::Value>,
}

/// How [`Index::search_rows`] finds neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Exact below [`EXACT_SEARCH_MAX_LEN`] vectors, HNSW above.
    Auto,
    Hnsw,
    Exact,
}

/// A gallery index held in memory. Searching takes `&self` and is safe from many threads at once; adding takes
/// `&mut self` (wrap it in a lock to do both).
///
/// The HNSW graph is not stored on disk but rebuilt from the vectors, which takes a while for a large gallery.
/// [`Index::open`] waits for it; a server that wants to answer at once opens with
/// [`Index::open_without_graph`] (searches are exact meanwhile), builds with [`Index::build_graph`] (`&self`,
/// so searches continue) and swaps the graph in with [`Index::install_graph`].
pub struct Index {
    manifest: IndexManifest,
    records: Vec<Record>,
    rows_by_id: HashMap<String, usize>,
    vectors: FlatIndex,
    /// `None` until a graph is installed after [`Index::open_without_graph`]; covers every row otherwise.
    graph: Option<Graph>,
    /// Where the graph stored with the opened directory lies, when it has one.
    stored_graph: Option<PathBuf>,
    /// Rows of removed items: their vectors stay (the graph routes through them) until [`Index::compacted`],
    /// but no search returns them and their ids are free again.
    removed: BTreeSet<usize>,
}

impl std::fmt::Debug for Index {
    /// A summary: the records and vectors themselves would be megabytes of output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("compat_id", &self.manifest.gallery.compat_id)
            .field("len", &self.len())
            .field("dim", &self.dim())
            .field("hnsw", &self.manifest.hnsw)
            .field("graph", &self.graph)
            .finish()
    }
}

impl Index {
    /// An empty index for `dim`-d embeddings of `gallery`.
    pub fn new(gallery: GalleryModel, dim: usize, params: HnswParams) -> Result<Self, IndexError> {
        if dim == 0 {
            return Err(IndexError::InvalidParams("dim must be positive".into()));
        }
        let graph = Graph::new(&params, 0)?;
        Ok(Self {
            manifest: IndexManifest::new(gallery, dim, params),
            records: Vec::new(),
            rows_by_id: HashMap::new(),
            vectors: FlatIndex::new(dim),
            graph: Some(graph),
            stored_graph: None,
            removed: BTreeSet::new(),
        })
    }

    /// Loads an index directory, verifying every file against the manifest, with its HNSW graph: the stored one,
    /// or, for an index that stores none (format 1, or saved without it), one rebuilt from the vectors (in
    /// parallel; saving the index again stores it). Reads the previous index when a save was interrupted between
    /// renames.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let mut index = Self::open_without_graph(dir)?;
        let started = std::time::Instant::now();
        let (graph, how) = index.load_or_build_graph()?;
        index.install_graph(graph)?;
        tracing::info!(
            dir = %dir.display(),
            vectors = index.len(),
            seconds = started.elapsed().as_secs_f64(),
            "{how} the HNSW graph"
        );
        Ok(index)
    }

    /// The stored graph when the directory has a usable one, else a graph built from the vectors; and which
    /// ("loaded" or "rebuilt"). A stored graph that cannot be used is reported and rebuilt: it is derived data.
    pub fn load_or_build_graph(&self) -> Result<(Graph, &'static str), IndexError> {
        match self.load_stored_graph() {
            Some(Ok(graph)) => return Ok((graph, "loaded")),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the stored HNSW graph cannot be used; rebuilding it")
            }
            None => tracing::info!(
                vectors = self.len(),
                "this index stores no HNSW graph (format 1, or saved without it); rebuilding it"
            ),
        }
        Ok((self.build_graph()?, "rebuilt"))
    }

    /// The graph stored with the opened directory, when it has one that covers every vector.
    pub fn load_stored_graph(&self) -> Option<Result<Graph, IndexError>> {
        let dir = self.stored_graph.as_deref()?;
        Some(Graph::load(dir).and_then(|g| {
            if g.len() == self.len() {
                Ok(g)
            } else {
                Err(IndexError::corrupt(
                    dir.join(crate::graph::GRAPH_FILES[0]),
                    format!(
                        "the graph holds {} points for {} vectors",
                        g.len(),
                        self.len()
                    ),
                ))
            }
        }))
    }

    /// Loads and verifies an index directory like [`Index::open`] but builds no graph: every search is exact
    /// until [`Index::install_graph`].
    pub fn open_without_graph(dir: &Path) -> Result<Self, IndexError> {
        let stored = store::read_verified(dir)?;
        let stored_graph = stored.has_stored_graph().then(|| stored.dir.clone());
        let rows_by_id = stored
            .records
            .iter()
            .enumerate()
            .filter(|(row, _)| !stored.removed.contains(row))
            .map(|(row, r)| (r.id.clone(), row))
            .collect();
        Ok(Self {
            manifest: stored.manifest,
            records: stored.records,
            rows_by_id,
            vectors: stored.vectors,
            graph: None,
            stored_graph,
            removed: stored.removed,
        })
    }

    /// Builds an HNSW graph over the current vectors (in parallel), for [`Index::install_graph`].
    pub fn build_graph(&self) -> Result<Graph, IndexError> {
        Graph::build(&self.manifest.hnsw, &self.vectors)
    }

    /// Installs a graph from [`Index::build_graph`], first inserting the rows added since it was built.
    pub fn install_graph(&mut self, graph: Graph) -> Result<(), IndexError> {
        if graph.len() > self.len() {
            return Err(IndexError::InvalidParams(format!(
                "the graph holds {} points but the index only {} vectors",
                graph.len(),
                self.len()
            )));
        }
        graph.insert(&self.vectors, graph.len()..self.len());
        self.graph = Some(graph);
        Ok(())
    }

    /// A copy of the records and vectors without the graph (searches on it are exact): a snapshot to build a
    /// graph from, or to stage and save an addition before the live index takes it, without holding its lock.
    pub fn clone_without_graph(&self) -> Self {
        Self {
            manifest: self.manifest.clone(),
            records: self.records.clone(),
            rows_by_id: self.rows_by_id.clone(),
            vectors: self.vectors.clone(),
            graph: None,
            stored_graph: self.stored_graph.clone(),
            removed: self.removed.clone(),
        }
    }

    /// Whether searches can use the HNSW graph (false between `open_without_graph` and `install_graph`).
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Writes the index to the locked directory atomically: a crash at any point leaves the previous index
    /// loadable. `NotDurable` when the new version is in place but its final fsync failed.
    pub fn save(&self, lock: &WriterLock) -> Result<Durability, IndexError> {
        self.save_with_extras(lock, &[])
    }

    /// [`Self::save`] under a writer lock taken for this save alone: for an index built in one go. A caller
    /// that opened the index to change it takes the lock before opening, or the save may drop another writer's
    /// changes.
    pub fn save_exclusive(&self, dir: &Path) -> Result<Durability, IndexError> {
        self.save(&WriterLock::acquire(dir)?)
    }

    /// [`Self::save`], plus extra files (name, bytes) such as an errors report, outside the checksummed set.
    pub fn save_with_extras(
        &self,
        lock: &WriterLock,
        extras: &[(&str, &[u8])],
    ) -> Result<Durability, IndexError> {
        atomic_dir::replace_dir(lock, |tmp| {
            // A graph still catching up with added rows is left out; the next open rebuilds it.
            let graph = self.graph.as_ref().filter(|g| g.len() == self.len());
            store::write_into(
                tmp,
                &self.manifest,
                &self.records,
                &self.vectors,
                &self.removed,
                graph,
                extras,
            )
        })
    }

    /// Adds vectors with their records, all or nothing: every vector is checked (dimension, finite, non-zero)
    /// and every id for uniqueness before any is inserted. Vectors are stored L2-normalised.
    pub fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<(), IndexError> {
        let mut fresh = std::collections::HashSet::with_capacity(items.len());
        let mut unit = Vec::with_capacity(items.len() * self.dim());
        for (record, v) in &items {
            if self.rows_by_id.contains_key(&record.id) || !fresh.insert(record.id.as_str()) {
                return Err(IndexError::DuplicateId(record.id.clone()));
            }
            let n =
                vector::normalised(v, self.dim()).map_err(|problem| IndexError::InvalidVector {
                    what: format!("id {:?}", record.id),
                    problem,
                })?;
            unit.extend_from_slice(&n);
        }
        let first = self.len();
        if first == 0 && self.graph.is_some() {
            // Size the graph's tables for the whole first batch.
            self.graph = Some(Graph::new(&self.manifest.hnsw, items.len())?);
        }
        for (row, (record, _)) in items.into_iter().enumerate() {
            self.rows_by_id.insert(record.id.clone(), first + row);
            self.records.push(record);
        }
        for v in unit.chunks_exact(self.dim()) {
            self.vectors.push(v);
        }
        if let Some(graph) = &self.graph {
            graph.insert(&self.vectors, first..self.vectors.len());
        }
        self.manifest.count = self.records.len();
        Ok(())
    }

    /// Up to `k` nearest records, best first: exact for small indexes, HNSW with `ef` (default: the index's
    /// `ef_search`) otherwise.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Hit>, IndexError> {
        let rows = self.search_rows(query, k, ef, SearchMode::Auto)?;
        Ok(self.hits(rows))
    }

    /// Up to `k` nearest records by HNSW, whatever the index size (exact while no graph is installed).
    pub fn search_hnsw(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Hit>, IndexError> {
        let rows = self.search_rows(query, k, ef, SearchMode::Hnsw)?;
        Ok(self.hits(rows))
    }

    /// The exact `k` nearest records (a scan of every vector).
    pub fn search_exact(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        let rows = self.search_rows(query, k, None, SearchMode::Exact)?;
        Ok(self.hits(rows))
    }

    /// Rows and cosine scores of up to `k` neighbours, best first (ties by lower row). HNSW candidates are
    /// re-scored with the exact inner product, so both paths report identical scores for the same row.
    pub fn search_rows(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        mode: SearchMode,
    ) -> Result<Vec<flat::Hit>, IndexError> {
        let q =
            vector::normalised(query, self.dim()).map_err(|problem| IndexError::InvalidVector {
                what: "the query".into(),
                problem,
            })?;
        let graph = match (mode, &self.graph) {
            (SearchMode::Exact, _) | (_, None) => None,
            (SearchMode::Auto, _) if self.len() <= EXACT_SEARCH_MAX_LEN => None,
            (_, Some(g)) => Some(g),
        };
        let Some(graph) = graph else {
            return Ok(self
                .vectors
                .search_where(&q, k, |row| !self.removed.contains(&row)));
        };
        let ef = ef.unwrap_or(self.manifest.hnsw.ef_search);
        let mut hits: Vec<flat::Hit> = graph
            .search_excluding(&q, k, ef, &self.removed)
            .into_iter()
            .map(|row| flat::Hit {
                row,
                score: vector::dot(self.vectors.vector(row), &q),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        Ok(hits)
    }

    fn hits(&self, rows: Vec<flat::Hit>) -> Vec<Hit> {
        rows.into_iter()
            .map(|h| {
                let r = &self.records[h.row];
                Hit {
                    id: r.id.clone(),
                    score: h.score,
                    label: r.label.clone(),
                    meta: r.meta.clone(),
                }
            })
            .collect()
    }

    /// Fails unless `model` embeds into this index's space with its dimension (a gallery or query model).
    pub fn check_query_model(&self, model: &ModelManifest) -> Result<(), IndexError> {
        compat::check_query_model(&self.manifest, model)
    }

    /// Fails unless `model` (whose file hashes to `model_sha256`) is the gallery model that built this index.
    pub fn check_gallery_model(
        &self,
        model: &ModelManifest,
        model_sha256: &str,
    ) -> Result<(), IndexError> {
        compat::check_gallery_model(&self.manifest, model, model_sha256)
    }

    /// Stored rows, removed ones included (see [`Index::live_len`]).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Items a search can return: stored rows less removed ones.
    pub fn live_len(&self) -> usize {
        self.records.len() - self.removed.len()
    }

    /// Rows of removed items, awaiting compaction.
    pub fn removed_rows(&self) -> &BTreeSet<usize> {
        &self.removed
    }

    /// Removes items by id: no search returns them again and their ids may be added anew. Their rows stay until
    /// [`Index::compacted`]. Returns the ids that were not in the index (nothing else changes for them).
    pub fn remove(&mut self, ids: &[String]) -> Vec<String> {
        let mut missing = Vec::new();
        for id in ids {
            match self.rows_by_id.remove(id) {
                Some(row) => {
                    self.removed.insert(row);
                }
                None => missing.push(id.clone()),
            }
        }
        missing
    }

    /// Undoes [`Index::remove`] of `id` (its latest removed row), for a caller whose save of the removal failed.
    /// False when `id` is live or was never removed.
    pub fn restore(&mut self, id: &str) -> bool {
        if self.rows_by_id.contains_key(id) {
            return false;
        }
        let Some(row) = self
            .removed
            .iter()
            .rev()
            .copied()
            .find(|&row| self.records[row].id == id)
        else {
            return false;
        };
        self.removed.remove(&row);
        self.rows_by_id.insert(id.to_owned(), row);
        true
    }

    /// The live items only, in row order, with a graph built anew over them: what a compaction writes.
    pub fn compacted(&self) -> Result<Self, IndexError> {
        let mut out = Self::new(
            self.manifest.gallery.clone(),
            self.dim(),
            self.manifest.hnsw,
        )?;
        let live = (0..self.len())
            .filter(|row| !self.removed.contains(row))
            .map(|row| (self.records[row].clone(), self.vectors.vector(row).to_vec()))
            .collect();
        out.add(live)?;
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    pub fn params(&self) -> &HnswParams {
        &self.manifest.hnsw
    }

    /// The manifest as of the last load; `count` follows adds, `files` is refreshed by saving and reopening.
    pub fn manifest(&self) -> &IndexManifest {
        &self.manifest
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.rows_by_id.contains_key(id)
    }

    pub fn row_of(&self, id: &str) -> Option<usize> {
        self.rows_by_id.get(id).copied()
    }

    /// The stored (unit-length) vector of a row.
    pub fn vector(&self, row: usize) -> &[f32] {
        self.vectors.vector(row)
    }
}

#[cfg(test)]
mod tests;
