//! Where the served gallery lives, behind one interface ([`GalleryBackend`]): the embedded index, which the
//! server also changes (uploads, removals, background compaction) under the state's lock; or a Milvus
//! collection, for which the server keeps no gallery state and any number of replicas can serve.
//!
//! The request handlers search, count and check readiness through the interface only; what is particular to a
//! backend (the graph's state, the write-ahead log) is reported by its own implementation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hetvis_indexer::{Hit, IndexError, MilvusStore};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::metrics::Stage;
use crate::state::{GraphState, SharedState};
use crate::work::Admitted;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A search's answer.
pub struct Found {
    pub hits: Vec<Hit>,
    /// Whether an HNSW index answered (the embedded index scans until its graph is ready).
    pub graph: bool,
}

pub trait GalleryBackend: Send + Sync {
    /// `{"kind": "embedded"}`, or `{"kind": "milvus", "milvus": URI, "collection": NAME}`.
    fn describe(&self) -> Value;

    /// Why this server does not change the gallery (uploads and removals answer 403 with it), if it does not.
    fn read_only(&self) -> Option<&'static str>;

    /// The metrics stage of the search's own round trip, when it leaves the process.
    fn round_trip_stage(&self) -> Option<Stage>;

    /// Whether the HNSW graph is this process's to load or build (at start-up, in the background).
    fn graph_in_process(&self) -> bool;

    /// Up to `k` nearest items at `ef` (default: the gallery's `ef_search`; at most `max_ef`). `work` is held
    /// until the search ends, also after the request that asked for it has gone, so admission counts it.
    fn search(
        &self,
        state: &SharedState,
        query: Vec<f32>,
        k: usize,
        ef: Option<usize>,
        work: Admitted,
    ) -> BoxFuture<Result<Found, ApiError>>;

    /// The body of `/readyz` once the gallery has answered a search with `probe`; the reason otherwise.
    fn ready(&self, state: &SharedState, probe: Vec<f32>) -> BoxFuture<Result<Value, String>>;

    /// Items a search can return (`None` when the backend cannot tell now).
    fn size(&self, state: &SharedState) -> BoxFuture<Option<usize>>;
}

/// The candidate list a search uses: the requested one, or the gallery's default, capped by `--max-ef`.
pub fn effective_ef(requested: Option<usize>, gallery_default: usize, max_ef: usize) -> usize {
    requested.unwrap_or(gallery_default).min(max_ef)
}

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> String {
    format!("not ready: {what}: {e}")
}

/// The index directory the server opened, held in the state ([`crate::state::AppState::read_index`]).
pub struct Embedded;

impl GalleryBackend for Embedded {
    fn describe(&self) -> Value {
        json!({"kind": "embedded"})
    }

    fn read_only(&self) -> Option<&'static str> {
        None
    }

    fn round_trip_stage(&self) -> Option<Stage> {
        None
    }

    fn graph_in_process(&self) -> bool {
        true
    }

    fn search(
        &self,
        state: &SharedState,
        query: Vec<f32>,
        k: usize,
        ef: Option<usize>,
        work: Admitted,
    ) -> BoxFuture<Result<Found, ApiError>> {
        let shared = state.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _work = work;
                let index = shared.read_index();
                let ef = effective_ef(ef, index.params().ef_search, shared.limits.max_ef);
                index.search(&query, k, Some(ef)).map(|hits| Found {
                    hits,
                    graph: index.has_graph(),
                })
            })
            .await?
            .map_err(|e| ApiError::Internal(format!("search failed: {e}")))
        })
    }

    fn ready(&self, state: &SharedState, probe: Vec<f32>) -> BoxFuture<Result<Value, String>> {
        let state = state.clone();
        Box::pin(async move {
            let shared = state.clone();
            let (size, removed, log, hits) = tokio::task::spawn_blocking(move || {
                let index = shared.read_index();
                index.search(&probe, 1, None).map(|h| {
                    (
                        index.live_len(),
                        index.removed_rows().len(),
                        index.log_stats(),
                        h.len(),
                    )
                })
            })
            .await
            .map_err(|e| unavailable("index search", &e))?
            .map_err(|e| unavailable("index search", &e))?;
            if size > 0 && hits == 0 {
                return Err(unavailable("index search", &"no result"));
            }
            let graph = state.graph_state();
            let mut body = json!({
                "status": "ready",
                "backend": "embedded",
                "index_size": size,
                "removed_rows": removed,
                "log": crate::routes::info::log_json(&log),
                "compaction": state.compaction_status(),
                "graph": graph.label(),
            });
            // Searches still work (exact) without a graph, so a failed build is reported, not a 503.
            if let GraphState::Failed(why) = graph {
                body["graph_error"] = json!(why);
            }
            Ok(body)
        })
    }

    fn size(&self, state: &SharedState) -> BoxFuture<Option<usize>> {
        let state = state.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || state.read_index().live_len())
                .await
                .ok()
        })
    }
}

/// A Milvus collection: searches are one gRPC round trip each; the server holds only its manifest.
pub struct Milvus(pub Arc<MilvusStore>);

impl GalleryBackend for Milvus {
    fn describe(&self) -> Value {
        json!({"kind": "milvus", "milvus": self.0.uri(), "collection": self.0.collection()})
    }

    fn read_only(&self) -> Option<&'static str> {
        Some("this server serves a Milvus collection: change it with `hetvis-index add|remove --milvus`")
    }

    fn round_trip_stage(&self) -> Option<Stage> {
        Some(Stage::Milvus)
    }

    fn graph_in_process(&self) -> bool {
        false
    }

    fn search(
        &self,
        state: &SharedState,
        query: Vec<f32>,
        k: usize,
        ef: Option<usize>,
        work: Admitted,
    ) -> BoxFuture<Result<Found, ApiError>> {
        let (store, max_ef) = (self.0.clone(), state.limits.max_ef);
        Box::pin(async move {
            let _work = work;
            let ef = effective_ef(ef, store.manifest().hnsw.ef_search, max_ef);
            // Milvus's own failures are a 503: the server itself is fine.
            let hits = store
                .search_async(&query, k, Some(ef), false)
                .await
                .map_err(|e| match e {
                    IndexError::Milvus(why) => {
                        ApiError::Unavailable(format!("the gallery (Milvus) is unavailable: {why}"))
                    }
                    other => ApiError::Internal(format!("search failed: {other}")),
                })?;
            Ok(Found { hits, graph: true })
        })
    }

    fn ready(&self, _state: &SharedState, probe: Vec<f32>) -> BoxFuture<Result<Value, String>> {
        let store = self.0.clone();
        Box::pin(async move {
            // Milvus answers a health check and a real search with the probe's embedding.
            store
                .check_health_async()
                .await
                .map_err(|e| unavailable("Milvus", &e))?;
            store
                .search_async(&probe, 1, None, false)
                .await
                .map_err(|e| unavailable("Milvus search", &e))?;
            let size = store
                .approximate_len_async()
                .await
                .map_err(|e| unavailable("Milvus count", &e))?;
            Ok(json!({
                "status": "ready",
                "backend": "milvus",
                "milvus": store.uri(),
                "collection": store.collection(),
                "index_size": size,
                "graph": "milvus",
            }))
        })
    }

    fn size(&self, _state: &SharedState) -> BoxFuture<Option<usize>> {
        let store = self.0.clone();
        Box::pin(async move { store.approximate_len_async().await.ok() })
    }
}
