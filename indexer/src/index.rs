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
use crate::wal::{self, Change, LogStats};
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
/// On disk an index is a directory of checksummed files (vectors, records, the HNSW graph) written whole by
/// [`Index::save`], plus a write-ahead log ([`crate::wal`]) of the changes since: [`Index::add_logged`] and
/// [`Index::remove_logged`] append to it, and a save folds it in. [`Index::open`] loads the stored graph (or
/// rebuilds one for an index that stores none) and replays the log; a server that wants to answer at once opens
/// with [`Index::open_without_graph`] (searches are exact meanwhile), gets a graph with
/// [`Index::load_or_build_graph`] (`&self`, so searches continue) and swaps it in with [`Index::install_graph`].
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
    /// The saved files this index extends (`None` until it is first saved), which its log's header names.
    base: Option<wal::Base>,
    /// Rows held by the saved files; rows past it came from the log.
    base_rows: usize,
    /// The log of changes since the save.
    log: LogStats,
}

/// What [`Index::save`] wrote: hand it to [`Index::rebase`] when the index lives on, so that its later changes
/// are logged against the new files.
#[derive(Debug)]
#[must_use]
pub struct Saved {
    pub durability: Durability,
    base: wal::Base,
    rows: usize,
    dir: PathBuf,
    with_graph: bool,
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
            base: None,
            base_rows: 0,
            log: LogStats::default(),
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

    /// The graph stored with the opened directory, when it has one; it covers the stored rows, and
    /// [`Index::install_graph`] inserts those added by the log.
    pub fn load_stored_graph(&self) -> Option<Result<Graph, IndexError>> {
        let (dir, rows) = self.stored_graph_location()?;
        Some(Graph::load_covering(&dir, rows))
    }

    /// Where the stored graph lies and the rows it holds, for [`Graph::load_covering`] without holding the index
    /// (a server loads it while the index serves and changes).
    pub fn stored_graph_location(&self) -> Option<(PathBuf, usize)> {
        Some((self.stored_graph.clone()?, self.base_rows))
    }

    /// Loads and verifies an index directory like [`Index::open`], replaying its log, but loads no graph: every
    /// search is exact until [`Index::install_graph`].
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
        let base = wal::Base {
            manifest_sha256: stored.manifest_sha256,
            dim: stored.manifest.dim,
        };
        let replay = wal::read(&stored.dir, &base)?;
        let mut index = Self {
            base_rows: stored.records.len(),
            manifest: stored.manifest,
            records: stored.records,
            rows_by_id,
            vectors: stored.vectors,
            graph: None,
            stored_graph,
            removed: stored.removed,
            base: Some(base),
            log: LogStats::default(),
        };
        let log_path = wal::path(&stored.dir);
        for (i, change) in replay.changes.iter().enumerate() {
            index.check_replayed(change).map_err(|e| {
                IndexError::corrupt(&log_path, format!("change {} does not apply: {e}", i + 1))
            })?;
            index.apply(change);
            index.log.record(change, 0);
        }
        index.log.bytes = replay.valid_len;
        if index.log.changes > 0 {
            tracing::info!(
                log = %log_path.display(),
                changes = index.log.changes,
                added = index.log.added,
                removed = index.log.removed,
                "replayed the write-ahead log"
            );
        }
        Ok(index)
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
            base: self.base.clone(),
            base_rows: self.base_rows,
            log: self.log,
        }
    }

    /// Whether searches can use the HNSW graph (false between `open_without_graph` and `install_graph`).
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Writes the whole index to the locked directory atomically, its log folded in (the new directory has
    /// none): a crash at any point leaves the previous index loadable. `NotDurable` when the new version is in
    /// place but its final fsync failed. An index that goes on changing takes the result to [`Index::rebase`].
    pub fn save(&self, lock: &WriterLock) -> Result<Saved, IndexError> {
        self.save_with_extras(lock, &[])
    }

    /// [`Self::save`] under a writer lock taken for this save alone: for an index built in one go. A caller
    /// that opened the index to change it takes the lock before opening, or the save may drop another writer's
    /// changes.
    pub fn save_exclusive(&self, dir: &Path) -> Result<Durability, IndexError> {
        Ok(self.save(&WriterLock::acquire(dir)?)?.durability)
    }

    /// [`Self::save`], plus extra files (name, bytes) such as an errors report, outside the checksummed set.
    pub fn save_with_extras(
        &self,
        lock: &WriterLock,
        extras: &[(&str, &[u8])],
    ) -> Result<Saved, IndexError> {
        // A graph still catching up with added rows is left out; the next open rebuilds it.
        let graph = self.graph.as_ref().filter(|g| g.len() == self.len());
        let mut manifest_sha256 = [0; 32];
        let durability = atomic_dir::replace_dir(lock, |tmp| {
            manifest_sha256 = store::write_into(
                tmp,
                &self.manifest,
                &self.records,
                &self.vectors,
                &self.removed,
                graph,
                extras,
            )?;
            Ok(())
        })?;
        Ok(Saved {
            durability,
            base: wal::Base {
                manifest_sha256,
                dim: self.dim(),
            },
            rows: self.len(),
            dir: lock.target().to_owned(),
            with_graph: graph.is_some(),
        })
    }

    /// Takes a save of this index (with no change since) as the files its later changes extend: the log starts
    /// empty in the new directory.
    pub fn rebase(&mut self, saved: Saved) -> Result<(), IndexError> {
        if saved.rows != self.len() {
            return Err(IndexError::InvalidParams(format!(
                "the save holds {} rows but the index {}: it changed after saving",
                saved.rows,
                self.len()
            )));
        }
        self.base = Some(saved.base);
        self.base_rows = saved.rows;
        self.log = LogStats::default();
        self.stored_graph = saved.with_graph.then_some(saved.dir);
        Ok(())
    }

    /// Checks additions (dimension, finite, non-zero vectors; ids new and unique) and normalises their vectors:
    /// the change [`Index::add`] and [`Index::add_logged`] apply. Nothing changes yet.
    pub fn prepare_add(&self, items: Vec<(Record, Vec<f32>)>) -> Result<Change, IndexError> {
        self.check_new_ids(items.iter().map(|(r, _)| r.id.as_str()))?;
        let mut out = Vec::with_capacity(items.len());
        for (record, v) in items {
            let unit = vector::normalised(&v, self.dim()).map_err(|problem| {
                IndexError::InvalidVector {
                    what: format!("id {:?}", record.id),
                    problem,
                }
            })?;
            out.push((record, unit));
        }
        Ok(Change::Add(out))
    }

    fn check_new_ids<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Result<(), IndexError> {
        let mut fresh = std::collections::HashSet::new();
        for id in ids {
            if self.rows_by_id.contains_key(id) || !fresh.insert(id) {
                return Err(IndexError::DuplicateId(id.to_owned()));
            }
        }
        Ok(())
    }

    /// The removal of those of `ids` that are live, and the ids that are not (nothing to remove for them).
    pub fn prepare_remove(&self, ids: &[String]) -> (Change, Vec<String>) {
        let mut seen = std::collections::HashSet::new();
        let (live, missing): (Vec<String>, Vec<String>) = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .partition(|id| self.rows_by_id.contains_key(id));
        (Change::Remove(live), missing)
    }

    /// Checks a change read back from the log as it was checked before it was logged.
    fn check_replayed(&self, change: &Change) -> Result<(), String> {
        match change {
            Change::Add(items) => {
                for (record, v) in items {
                    let norm = vector::dot(v, v).sqrt();
                    if v.len() != self.dim() || !norm.is_finite() || (norm - 1.0).abs() > 1e-3 {
                        return Err(format!("id {:?} has a vector of norm {norm}", record.id));
                    }
                }
                self.check_new_ids(items.iter().map(|(r, _)| r.id.as_str()))
                    .map_err(|e| e.to_string())
            }
            Change::Remove(ids) => {
                let mut seen = std::collections::HashSet::new();
                match ids
                    .iter()
                    .find(|id| !self.rows_by_id.contains_key(*id) || !seen.insert(id.as_str()))
                {
                    Some(id) => Err(format!("id {id:?} is not in the index")),
                    None => Ok(()),
                }
            }
        }
    }

    /// Applies a checked change to the rows in memory (and the graph, when there is one).
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Add(items) => {
                let first = self.len();
                if first == 0 && self.graph.is_some() {
                    // Size the graph's tables for the whole first batch.
                    self.graph = Graph::new(&self.manifest.hnsw, items.len()).ok();
                }
                for (row, (record, v)) in items.iter().enumerate() {
                    self.rows_by_id.insert(record.id.clone(), first + row);
                    self.records.push(record.clone());
                    self.vectors.push(v);
                }
                if let Some(graph) = &self.graph {
                    graph.insert(&self.vectors, first..self.vectors.len());
                }
                self.manifest.count = self.records.len();
            }
            Change::Remove(ids) => {
                for id in ids {
                    if let Some(row) = self.rows_by_id.remove(id) {
                        self.removed.insert(row);
                    }
                }
            }
        }
    }

    /// Appends a prepared change to the log of the locked directory and fsyncs it, without applying it: a
    /// server does this under a read lock (searches go on) and then [`Index::apply_logged`] under a write lock.
    /// Its writer lock serialises changes, so nothing else changes the index in between. Returns the log's new
    /// length.
    pub fn log_change(&self, lock: &WriterLock, change: &Change) -> Result<u64, IndexError> {
        let base = self.base.as_ref().ok_or_else(|| {
            IndexError::InvalidParams(
                "the index has never been saved: save it before logging changes".into(),
            )
        })?;
        let dir = lock.target();
        if self.log.bytes == 0 {
            // A new log names the files it extends: they must be those on disk now.
            let (on_disk, _) =
                crate::checksum::sha256_file(&dir.join(crate::manifest::MANIFEST_FILE))?;
            if on_disk != hex::encode(base.manifest_sha256) {
                return Err(IndexError::InvalidParams(format!(
                    "{} was saved by someone else since this index was opened; reopen it",
                    dir.display()
                )));
            }
        }
        wal::append(dir, base, self.log.bytes, change)
    }

    /// Applies a change that [`Index::log_change`] logged (the log's new length is its result).
    pub fn apply_logged(&mut self, change: &Change, log_len: u64) {
        self.apply(change);
        self.log.record(change, log_len);
    }

    /// Adds items durably: checked, logged and fsynced, then searchable. Returns the bytes appended.
    pub fn add_logged(
        &mut self,
        lock: &WriterLock,
        items: Vec<(Record, Vec<f32>)>,
    ) -> Result<u64, IndexError> {
        let change = self.prepare_add(items)?;
        self.commit(lock, &change)
    }

    /// Removes the live ones of `ids` durably; returns the ids that were not live and the bytes appended.
    pub fn remove_logged(
        &mut self,
        lock: &WriterLock,
        ids: &[String],
    ) -> Result<(Vec<String>, u64), IndexError> {
        let (change, missing) = self.prepare_remove(ids);
        let bytes = if change.is_empty() {
            0
        } else {
            self.commit(lock, &change)?
        };
        Ok((missing, bytes))
    }

    fn commit(&mut self, lock: &WriterLock, change: &Change) -> Result<u64, IndexError> {
        let before = self.log.bytes;
        let len = self.log_change(lock, change)?;
        self.apply_logged(change, len);
        Ok(len - before)
    }

    /// The changes logged in the locked directory since this index's save, in order (all of them, even those
    /// made after this index was opened or copied): what a compaction built from a snapshot catches up with.
    pub fn logged_changes(&self, lock: &WriterLock) -> Result<Vec<Change>, IndexError> {
        match &self.base {
            Some(base) => Ok(wal::read(lock.target(), base)?.changes),
            None => Ok(Vec::new()),
        }
    }

    /// Applies changes in memory only (checked as on replay), for an index that is saved next.
    pub fn catch_up(&mut self, changes: &[Change]) -> Result<(), IndexError> {
        for (i, change) in changes.iter().enumerate() {
            self.check_replayed(change).map_err(|e| {
                IndexError::InvalidParams(format!("change {} does not apply: {e}", i + 1))
            })?;
            self.apply(change);
        }
        Ok(())
    }

    /// The write-ahead log's size and what it holds.
    pub fn log_stats(&self) -> LogStats {
        self.log
    }

    /// Rows held by the saved files (the rest came from the log).
    pub fn base_rows(&self) -> usize {
        self.base_rows
    }

    /// Adds vectors with their records in memory only (a build; [`Index::save`] writes them), all or nothing:
    /// every vector is checked (dimension, finite, non-zero) and every id for uniqueness before any is inserted.
    /// Vectors are stored L2-normalised. [`Index::add_logged`] adds to a saved index durably.
    pub fn add(&mut self, items: Vec<(Record, Vec<f32>)>) -> Result<(), IndexError> {
        let change = self.prepare_add(items)?;
        self.apply(&change);
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
    /// [`Index::compacted`]. In memory only: [`Index::remove_logged`] removes from a saved index durably. Returns
    /// the ids that were not in the index (nothing else changes for them).
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
