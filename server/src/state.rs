//! What every request handler shares: the index, the models' worker pools, limits and metrics.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hetvis_indexer::{CompactionPolicy, Index, WriterLock};
use hetvis_models::manifest::{ModelManifest, Role};
use hetvis_models::preprocess::{ImageLimits, Preprocessing};
use hetvis_models::runtime::Provider;
use serde::Serialize;

use crate::backend::GalleryBackend;
use crate::compaction::CompactionStatus;
use crate::dataset_images::FashionMnistImages;
use crate::embed_pool::EmbedPool;
use crate::metrics::Metrics;
use crate::operations::Operations;

/// A model as `/v1/info` and every search response describe it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub name: String,
    /// `gallery` or `query`.
    #[schema(value_type = String)]
    pub role: Role,
    pub mmacs: f64,
    pub params: u64,
    pub embedding_dim: usize,
    pub input_size: usize,
    pub compat_id: String,
    /// ONNX Runtime execution provider.
    #[schema(value_type = String)]
    pub provider: Provider,
    /// For logs only: clients are not told where the server keeps its files.
    #[serde(skip)]
    #[schema(ignore)]
    pub path: PathBuf,
}

impl ModelInfo {
    pub fn new(m: &ModelManifest, provider: Provider, path: PathBuf) -> Self {
        Self {
            name: m.name.clone(),
            role: m.role,
            mmacs: m.mmacs,
            params: m.params,
            embedding_dim: m.embedding_dim,
            input_size: m.preprocessing.size,
            compat_id: m.compat_id.clone(),
            provider,
            path,
        }
    }
}

/// A loaded model: its workers and how to prepare images for it.
pub struct LoadedModel {
    pub info: ModelInfo,
    pub preprocessing: Preprocessing,
    pub pool: EmbedPool,
    /// A fixed, preprocessed test image for readiness checks.
    pub probe: Vec<f32>,
}

/// The HNSW graph is built in the background after start-up; searches are exact until it is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "error")]
pub enum GraphState {
    Building,
    Ready,
    Failed(String),
}

impl GraphState {
    pub fn label(&self) -> &'static str {
        match self {
            GraphState::Building => "building",
            GraphState::Ready => "ready",
            GraphState::Failed(_) => "failed",
        }
    }
}

/// Request limits taken from the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_k: usize,
    pub max_ef: usize,
    pub body_limit: usize,
    #[serde(skip)]
    pub image: ImageLimits,
    pub max_image_side: u32,
    #[serde(skip)]
    pub request_timeout: Duration,
    pub request_timeout_ms: u64,
    pub workers: usize,
    pub max_batch: usize,
    pub batch_wait_ms: f64,
    pub queue_capacity: usize,
    pub max_in_flight: usize,
}

pub struct AppState {
    index: RwLock<Index>,
    /// Where searches go: the `index` above, or with `--milvus` a collection (the `index` is then an empty
    /// placeholder holding the manifest, and the server keeps no gallery state).
    pub backend: Arc<dyn GalleryBackend>,
    pub index_dir: PathBuf,
    pub query: LoadedModel,
    pub gallery: Option<LoadedModel>,
    pub metrics: Metrics,
    pub limits: Limits,
    pub admin_token: Option<String>,
    pub image_store: Option<PathBuf>,
    pub gallery_root: Option<PathBuf>,
    pub fashion_mnist: Option<FashionMnistImages>,
    pub graph: Mutex<GraphState>,
    /// Admission: one permit per search or upload being served or still working (429 when none is left).
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Decodes at once: CPU-bound work, so about one per core, which also bounds decoder memory. Held by the
    /// decode itself, so a timed-out request's decode still counts.
    pub decoders: Arc<tokio::sync::Semaphore>,
    /// One gallery change (or compaction step) at a time: the log is appended in order.
    pub writer: Arc<tokio::sync::Mutex<()>>,
    /// The index directory's writer lock, held for the server's life when uploads are enabled, so no other
    /// process can change the index under it (and have its changes dropped by the next upload's save).
    pub writer_lock: Option<WriterLock>,
    /// Gallery changes answered 202 before they finished.
    pub operations: Operations,
    /// The last readiness check and when it ran: `/readyz` checks at most once a second, one check at a time.
    pub readiness:
        tokio::sync::Mutex<Option<(std::time::Instant, Result<serde_json::Value, String>)>>,
    /// When the write-ahead log is folded in, and removed rows reclaimed ([`crate::compaction`]).
    pub compaction_policy: CompactionPolicy,
    pub compaction: Mutex<CompactionStatus>,
}

pub type SharedState = Arc<AppState>;

/// The parts [`AppState::new`] takes.
pub struct StateParts {
    pub index: Index,
    pub backend: Arc<dyn GalleryBackend>,
    pub index_dir: PathBuf,
    pub query: LoadedModel,
    pub gallery: Option<LoadedModel>,
    pub metrics: Metrics,
    pub limits: Limits,
    pub admin_token: Option<String>,
    pub image_store: Option<PathBuf>,
    pub gallery_root: Option<PathBuf>,
    pub fashion_mnist: Option<PathBuf>,
    pub writer_lock: Option<WriterLock>,
    pub compaction_policy: CompactionPolicy,
}

impl AppState {
    pub fn new(p: StateParts) -> Self {
        p.metrics.index_size.set(p.index.live_len() as i64);
        p.metrics.log_bytes.set(p.index.log_stats().bytes as i64);
        let max_in_flight = p.limits.max_in_flight;
        let graph = if p.index.has_graph() {
            p.metrics.graph_ready.set(1);
            GraphState::Ready
        } else {
            GraphState::Building
        };
        Self {
            index: RwLock::new(p.index),
            backend: p.backend,
            index_dir: p.index_dir,
            query: p.query,
            gallery: p.gallery,
            metrics: p.metrics,
            limits: p.limits,
            admin_token: p.admin_token,
            image_store: p.image_store,
            gallery_root: p.gallery_root,
            fashion_mnist: p.fashion_mnist.map(FashionMnistImages::new),
            graph: Mutex::new(graph),
            admission: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            decoders: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            writer_lock: p.writer_lock,
            operations: Operations::default(),
            readiness: tokio::sync::Mutex::new(None),
            compaction_policy: p.compaction_policy,
            compaction: Mutex::new(CompactionStatus::idle()),
        }
    }

    /// Searches hold this; a panic elsewhere cannot poison the index for good (its updates are all or nothing).
    pub fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn compaction_status(&self) -> CompactionStatus {
        self.compaction
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn graph_state(&self) -> GraphState {
        self.graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_graph_state(&self, s: GraphState) {
        self.metrics
            .graph_ready
            .set(i64::from(s == GraphState::Ready));
        *self.graph.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }
}
