//! [`MilvusStore`]: a gallery kept in a Milvus collection instead of an index directory, for galleries that
//! outgrow one machine. Milvus holds the vectors, their HNSW index (the project's `M` and `ef_construction`,
//! inner product on unit vectors) and the records; the collection's description holds the index manifest
//! (compat id, gallery model sha256, dimension, parameters), so the same model checks apply as on disk.
//!
//! Calls are synchronous: the store owns a small runtime for the client. From async code, call it on a
//! blocking thread (`spawn_blocking`), as the server does with the embedded index.

use std::time::Duration;

use hetvis_milvus::{Client, CollectionSpec, ConnectOptions, MilvusError, Row};
use serde::{Deserialize, Serialize};

use crate::error::IndexError;
use crate::index::Hit;
use crate::manifest::{GalleryModel, IndexManifest};
use crate::params::HnswParams;
use crate::record::Record;
use crate::vector;

/// Rows per insert request: a few MB each, far below gRPC's message limit.
pub const INSERT_BATCH: usize = 1000;
/// Attempts of a failed insert batch before it is reported.
const INSERT_ATTEMPTS: u32 = 3;
/// Marks a collection made by hetvis, and its layout.
const FORMAT: u32 = 1;

/// Where a gallery collection lives.
#[derive(Debug, Clone)]
pub struct MilvusTarget {
    pub connect: ConnectOptions,
    pub collection: String,
}

/// What the collection's description holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Description {
    hetvis_milvus_format: u32,
    manifest: IndexManifest,
}

/// A gallery in a Milvus collection.
pub struct MilvusStore {
    client: Client,
    runtime: Runtime,
    collection: String,
    manifest: IndexManifest,
}

impl std::fmt::Debug for MilvusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MilvusStore")
            .field("uri", &self.client.uri())
            .field("collection", &self.collection)
            .finish()
    }
}

/// The client's own runtime, shut down without blocking when the store is dropped: a server drops it from async
/// code, where dropping a runtime the blocking way would panic.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.0.as_ref().expect("present until dropped").block_on(f)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn milvus(e: MilvusError) -> IndexError {
    IndexError::Milvus(e.to_string())
}

impl MilvusStore {
    fn connect(target: &MilvusTarget) -> Result<(Client, Runtime), IndexError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("milvus-client")
            .enable_all()
            .build()
            .map_err(|e| IndexError::Milvus(format!("cannot start the client runtime: {e}")))?;
        let client = {
            let _guard = runtime.enter();
            Client::new(&target.connect).map_err(milvus)?
        };
        Ok((client, Runtime(Some(runtime))))
    }

    /// Creates the collection for `dim`-d embeddings of `gallery`; refuses one that exists.
    pub fn create(
        target: &MilvusTarget,
        gallery: GalleryModel,
        dim: usize,
        params: HnswParams,
    ) -> Result<Self, IndexError> {
        params.validate()?;
        let (client, runtime) = Self::connect(target)?;
        let name = &target.collection;
        if runtime
            .block_on(client.has_collection(name))
            .map_err(milvus)?
        {
            return Err(IndexError::Milvus(format!(
                "collection {name:?} already exists in {}: use `add`, or drop it first",
                client.uri()
            )));
        }
        let mut manifest = IndexManifest::new(gallery, dim, params);
        manifest.files.clear();
        let description = serde_json::to_string(&Description {
            hetvis_milvus_format: FORMAT,
            manifest: manifest.clone(),
        })
        .map_err(|e| IndexError::Milvus(e.to_string()))?;
        runtime
            .block_on(client.create_collection(&CollectionSpec {
                name: name.clone(),
                dim,
                description,
                m: params.m,
                ef_construction: params.ef_construction,
            }))
            .map_err(milvus)?;
        Ok(Self {
            client,
            runtime,
            collection: name.clone(),
            manifest,
        })
    }

    /// Opens an existing gallery collection, reading its manifest (and loading it for search).
    pub fn open(target: &MilvusTarget) -> Result<Self, IndexError> {
        let (client, runtime) = Self::connect(target)?;
        let name = &target.collection;
        if !runtime
            .block_on(client.has_collection(name))
            .map_err(milvus)?
        {
            return Err(IndexError::Milvus(format!(
                "no collection {name:?} in {}",
                client.uri()
            )));
        }
        let info = runtime.block_on(client.describe(name)).map_err(milvus)?;
        let description: Description = serde_json::from_str(&info.description).map_err(|e| {
            IndexError::Milvus(format!(
                "collection {name:?} was not made by hetvis (its description is no hetvis manifest: {e})"
            ))
        })?;
        if description.hetvis_milvus_format != FORMAT || description.manifest.dim != info.dim {
            return Err(IndexError::Milvus(format!(
                "collection {name:?}: layout {} with {}-d vectors, this build reads layout {FORMAT} and the manifest says {}-d",
                description.hetvis_milvus_format, info.dim, description.manifest.dim
            )));
        }
        runtime.block_on(client.load(name)).map_err(milvus)?;
        Ok(Self {
            client,
            runtime,
            collection: name.clone(),
            manifest: description.manifest,
        })
    }

    pub fn manifest(&self) -> &IndexManifest {
        &self.manifest
    }

    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    pub fn uri(&self) -> &str {
        self.client.uri()
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Items in the collection, every acknowledged write counted.
    pub fn live_len(&self) -> Result<usize, IndexError> {
        let n = self
            .runtime
            .block_on(self.client.count(&self.collection, true))
            .map_err(milvus)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Which of `ids` are in the collection.
    pub fn present(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(INSERT_BATCH) {
            out.extend(
                self.runtime
                    .block_on(self.client.existing_ids(&self.collection, chunk, true))
                    .map_err(milvus)?,
            );
        }
        Ok(out)
    }

    /// Adds items: vectors checked and normalised, ids checked new (in the collection and in the batch) before
    /// anything is sent, then inserted in batches of [`INSERT_BATCH`]. A failed batch is retried, then reported
    /// with how many rows went in before it; Milvus has no multi-batch transaction, so a failure part-way leaves
    /// the earlier batches in (re-adding skips them as present). Returns the rows added.
    pub fn add(&self, items: Vec<(Record, Vec<f32>)>) -> Result<usize, IndexError> {
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut rows = Vec::with_capacity(items.len());
        for (record, v) in items {
            if !seen.insert(record.id.clone()) {
                return Err(IndexError::DuplicateId(record.id));
            }
            let unit = vector::normalised(&v, self.dim()).map_err(|problem| {
                IndexError::InvalidVector {
                    what: format!("id {:?}", record.id),
                    problem,
                }
            })?;
            rows.push(row(record, unit));
        }
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        if let Some(id) = self.present(&ids)?.into_iter().next() {
            return Err(IndexError::DuplicateId(id));
        }
        let mut added = 0;
        for batch in rows.chunks(INSERT_BATCH) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.runtime.block_on(self.client.insert(&self.collection, batch)) {
                    Ok(n) if n == batch.len() => break,
                    Ok(n) => {
                        return Err(IndexError::Milvus(format!(
                            "Milvus took {n} of a batch of {} rows ({added} added before it)",
                            batch.len()
                        )))
                    }
                    Err(e) if e.is_transient() && attempt < INSERT_ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "Milvus insert failed; retrying");
                        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                    }
                    Err(e) => {
                        return Err(IndexError::Milvus(format!(
                            "inserting a batch of {} rows failed after {attempt} attempt(s), {added} rows added before it: {e}",
                            batch.len()
                        )))
                    }
                }
            }
            added += batch.len();
            if (added / INSERT_BATCH).is_multiple_of(10) || added == rows.len() {
                tracing::info!(added, total = rows.len(), collection = %self.collection, "inserted into Milvus");
            }
        }
        Ok(added)
    }

    /// Seals what was inserted, so that counts and the index cover it (after a bulk load).
    pub fn flush(&self) -> Result<(), IndexError> {
        self.runtime
            .block_on(self.client.flush(&self.collection))
            .map_err(milvus)
    }

    /// Waits until Milvus's HNSW index covers `rows` rows (it builds in the background after a flush, and its
    /// row counts lag behind), so that searches measure the index and not a scan of unindexed segments.
    pub fn wait_index_built(&self, rows: usize, limit: Duration) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        loop {
            let (indexed, total) = self
                .runtime
                .block_on(self.client.index_progress(&self.collection))
                .map_err(milvus)?;
            if total >= rows as u64 && indexed >= total {
                // Built; now served through it by the query nodes (a hand-over that follows the build).
                let (served, loaded) = self
                    .runtime
                    .block_on(self.client.served_rows(&self.collection))
                    .map_err(milvus)?;
                if loaded >= rows as u64 && served >= loaded {
                    return Ok(());
                }
            }
            if started.elapsed() > limit {
                return Err(IndexError::Milvus(format!(
                    "after {limit:?} the index covers {indexed} of {total} rows, not all served through it"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every stored (id, unit vector), in id order, read in pages of `page` rows (for a recall check against
    /// exact search; it holds the whole collection in memory). `progress` sees the rows read so far.
    pub fn scan_vectors(
        &self,
        page: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<(String, Vec<f32>)>, IndexError> {
        let mut rows: Vec<(String, Vec<f32>)> = Vec::new();
        loop {
            let after = rows.last().map_or("", |(id, _)| id.as_str()).to_owned();
            let next = self
                .runtime
                .block_on(
                    self.client
                        .rows_after(&self.collection, &after, page.max(1), self.dim()),
                )
                .map_err(milvus)?;
            let done = next.len() < page.max(1);
            rows.extend(next);
            progress(rows.len());
            if done {
                return Ok(rows);
            }
        }
    }

    /// Removes items by id; returns the ids that were not in the collection.
    pub fn remove(&self, ids: &[String]) -> Result<Vec<String>, IndexError> {
        let present = self.present(ids)?;
        let missing = ids
            .iter()
            .filter(|id| !present.contains(id))
            .cloned()
            .collect();
        for chunk in present.chunks(INSERT_BATCH) {
            self.runtime
                .block_on(self.client.delete(&self.collection, chunk))
                .map_err(milvus)?;
        }
        Ok(missing)
    }

    /// Up to `k` nearest items by Milvus's HNSW with `ef` (default: the manifest's `ef_search`). `strong` waits
    /// for every acknowledged write to be visible. Blocks; async code calls [`Self::search_async`].
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        strong: bool,
    ) -> Result<Vec<Hit>, IndexError> {
        self.runtime
            .block_on(self.search_async(query, k, ef, strong))
    }

    /// [`Self::search`] for async callers (a server's handlers). Milvus's own failures are
    /// [`IndexError::Milvus`], which a server answers as unavailable.
    pub async fn search_async(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        strong: bool,
    ) -> Result<Vec<Hit>, IndexError> {
        let q =
            vector::normalised(query, self.dim()).map_err(|problem| IndexError::InvalidVector {
                what: "the query".into(),
                problem,
            })?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let ef = ef.unwrap_or(self.manifest.hnsw.ef_search);
        let mut hits = self
            .client
            .search(&self.collection, &[q], k, ef, strong)
            .await
            .map_err(milvus)?;
        Ok(hits
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(hit)
            .collect())
    }

    /// Whether Milvus answers and says it is healthy.
    pub fn check_health(&self) -> Result<(), IndexError> {
        self.runtime.block_on(self.check_health_async())
    }

    pub async fn check_health_async(&self) -> Result<(), IndexError> {
        self.client.check_health().await.map_err(milvus)
    }

    /// Items in the collection as Milvus's bounded consistency sees them (the latest writes may be missing): a
    /// cheap figure for status pages.
    pub async fn approximate_len_async(&self) -> Result<usize, IndexError> {
        let n = self
            .client
            .count(&self.collection, false)
            .await
            .map_err(milvus)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Drops the collection (tests, and replacing a gallery on purpose).
    pub fn drop_collection(target: &MilvusTarget) -> Result<(), IndexError> {
        let (client, runtime) = Self::connect(target)?;
        if runtime
            .block_on(client.has_collection(&target.collection))
            .map_err(milvus)?
        {
            runtime
                .block_on(client.drop_collection(&target.collection))
                .map_err(milvus)?;
        }
        Ok(())
    }
}

/// What of a record besides id and label is kept in the `meta` JSON column.
#[derive(Serialize, Deserialize, Default)]
struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

fn row(record: Record, vector: Vec<f32>) -> Row {
    let extra = Extra {
        meta: record.meta,
        sha256: record.sha256,
    };
    let meta = serde_json::to_value(&extra)
        .ok()
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));
    Row {
        id: record.id,
        vector,
        label: record.label,
        meta,
    }
}

fn hit(h: hetvis_milvus::Hit) -> Hit {
    let extra: Extra = h
        .meta
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default();
    Hit {
        id: h.id,
        score: h.score,
        label: h.label,
        meta: extra.meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_row() {
        let r = Record::new("a")
            .with_label("l")
            .with_meta(serde_json::json!({"path": "x.png"}))
            .with_sha256("ab");
        let row = row(r, vec![1.0]);
        assert_eq!(row.label.as_deref(), Some("l"));
        let h = hit(hetvis_milvus::Hit {
            id: row.id.clone(),
            score: 0.5,
            label: row.label.clone(),
            meta: row.meta.clone(),
        });
        assert_eq!(h.meta, Some(serde_json::json!({"path": "x.png"})));
        assert!(super::row(Record::new("b"), vec![1.0]).meta.is_none());
    }
}
