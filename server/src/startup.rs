//! Start-up: load and check the index and models, start the workers, prove a forward pass works, and build
//! the HNSW graph in the background.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hetvis_indexer::{checksum, Index, IndexError, MilvusStore, WriterLock};
use hetvis_models::embed::{EmbedError, Embedder};
use hetvis_models::preprocess::{self, Preprocessing};
use hetvis_models::runtime::{self, RuntimeError, SessionConfig};

use crate::backend::{self, GalleryBackend};
use crate::config::ServerConfig;
use crate::embed_pool::{EmbedPool, PoolError};
use crate::metrics::Metrics;
use crate::state::{AppState, GraphState, Limits, LoadedModel, ModelInfo, SharedState, StateParts};

/// Each message includes its cause's text (kept out of `source()`, so `{:#}` chains do not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("index {dir}: {cause}")]
    Index { dir: PathBuf, cause: IndexError },
    #[error("cannot read model {path}: {cause}")]
    ReadModel {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("model {path}: {cause}")]
    Model { path: PathBuf, cause: EmbedError },
    #[error("{role} model {path} cannot be used with index {index}: {cause}")]
    Incompatible {
        role: &'static str,
        path: PathBuf,
        index: PathBuf,
        cause: IndexError,
    },
    #[error("{role} model {path} failed its first forward pass: {reason}")]
    Probe {
        role: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot start worker threads: {0}")]
    Threads(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Loads everything `config` names, refusing incompatible models; returns the shared state (graph not built).
pub fn load(config: &ServerConfig) -> Result<SharedState, StartupError> {
    runtime::init(config.ort_lib.as_deref())?;
    let started = Instant::now();
    let milvus_target = config.milvus_target().map_err(|e| StartupError::Index {
        dir: PathBuf::from("milvus"),
        cause: IndexError::Milvus(e),
    })?;
    // Where the gallery is, for messages: the index directory, or `milvus:<collection>`.
    let place = match (&milvus_target, &config.index) {
        (Some(t), _) => PathBuf::from(format!("milvus:{}", t.collection)),
        (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::new(),
    };
    let index_error = |cause| StartupError::Index {
        dir: place.clone(),
        cause,
    };
    // A server that may change the index holds its writer lock for life (taken before reading, which also
    // repairs what a killed writer left); a read-only server takes none. A Milvus gallery is changed with
    // `hetvis-index --milvus`, not through the server.
    let uploads = config.admin_token.as_deref().is_some_and(|t| !t.is_empty())
        && config.gallery_model.is_some()
        && milvus_target.is_none();
    let writer_lock = uploads
        .then(|| WriterLock::acquire(&place))
        .transpose()
        .map_err(index_error)?;
    let (index, backend): (Index, Arc<dyn GalleryBackend>) = match &milvus_target {
        Some(target) => {
            let store = MilvusStore::open(target).map_err(index_error)?;
            // The server searches Milvus; this empty index only carries the manifest for the model checks.
            let m = store.manifest().clone();
            let placeholder = Index::new(m.gallery.clone(), m.dim, m.hnsw).map_err(index_error)?;
            (placeholder, Arc::new(backend::Milvus(Arc::new(store))))
        }
        None => (
            Index::open_without_graph(&place).map_err(index_error)?,
            Arc::new(backend::Embedded),
        ),
    };
    let metrics = Metrics::new()?;
    let session = config.session();
    let incompatible = |role, path: &Path| {
        let (path, index) = (path.to_owned(), place.clone());
        move |cause| StartupError::Incompatible {
            role,
            path,
            index,
            cause,
        }
    };

    let (query_embedders, _) = load_embedders(&config.query_model, config, &session)?;
    index
        .check_query_model(query_embedders[0].manifest())
        .map_err(incompatible("query", &config.query_model))?;
    let query = start_model("query", query_embedders, config, &metrics)?;

    let gallery = match &config.gallery_model {
        None => None,
        Some(path) => {
            let (embedders, sha256) = load_embedders(path, config, &session)?;
            // Paragon searches and uploads must embed exactly like the vectors already in the index.
            index
                .check_gallery_model(embedders[0].manifest(), &sha256)
                .map_err(incompatible("gallery", path))?;
            Some(start_model("gallery", embedders, config, &metrics)?)
        }
    };

    let limits = Limits {
        max_k: config.max_k,
        max_ef: config.max_ef,
        body_limit: config.body_limit,
        image: config.image_limits(),
        max_image_side: config.max_image_side,
        request_timeout: config.request_timeout(),
        request_timeout_ms: config.request_timeout_ms,
        workers: config.workers.into(),
        max_batch: config.max_batch.into(),
        batch_wait_ms: config.batch_wait_ms,
        queue_capacity: config.queue_capacity as usize,
        max_in_flight: config.max_in_flight as usize,
    };
    tracing::info!(
        index = %place.display(),
        vectors = index.live_len(),
        dim = index.dim(),
        query = %query.info.name,
        gallery = gallery.as_ref().map(|g| g.info.name.as_str()).unwrap_or("-"),
        provider = %query.info.provider,
        seconds = started.elapsed().as_secs_f64(),
        "loaded"
    );
    Ok(Arc::new(AppState::new(StateParts {
        index,
        index_dir: place.clone(),
        backend,
        query,
        gallery,
        metrics,
        limits,
        admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
        image_store: config.image_store.clone(),
        gallery_root: config.gallery_root.clone(),
        fashion_mnist: config.fashion_mnist.clone(),
        writer_lock,
        compaction_policy: config.compaction_policy(),
    })))
}

/// One session per worker, all from the same file bytes; returns them with the file's sha256.
fn load_embedders(
    path: &Path,
    config: &ServerConfig,
    session: &SessionConfig,
) -> Result<(Vec<Embedder>, String), StartupError> {
    let bytes = std::fs::read(path).map_err(|cause| StartupError::ReadModel {
        path: path.to_owned(),
        cause,
    })?;
    let embedders = (0..config.workers)
        .map(|_| {
            Embedder::from_bytes(&bytes, path, session).map_err(|cause| StartupError::Model {
                path: path.to_owned(),
                cause,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((embedders, checksum::sha256_hex(&bytes)))
}

/// Starts the model's workers and runs one real forward pass through them.
fn start_model(
    role: &'static str,
    embedders: Vec<Embedder>,
    config: &ServerConfig,
    metrics: &Metrics,
) -> Result<LoadedModel, StartupError> {
    let first = &embedders[0];
    let info = ModelInfo::new(first.manifest(), first.provider(), first.path().to_owned());
    let preprocessing = first.manifest().preprocessing.clone();
    let probe = probe_input(&preprocessing);
    let pool = EmbedPool::start(role, embedders, config.pool(), metrics.pool(role))?;
    let probe_failed = |reason: String| StartupError::Probe {
        role,
        path: info.path.clone(),
        reason,
    };
    let reply = pool
        .submit(probe.clone(), 1)
        .map_err(|e| probe_failed(e.to_string()))?
        .blocking_recv()
        .map_err(|_| probe_failed(PoolError::Stopped(role).to_string()))?
        .map_err(|e| probe_failed(e.to_string()))?;
    if reply.vectors.len() != info.embedding_dim || !reply.vectors.iter().all(|v| v.is_finite()) {
        return Err(probe_failed("the embedding is not finite".into()));
    }
    Ok(LoadedModel {
        info,
        preprocessing,
        pool,
        probe,
    })
}

/// A fixed gradient image through the real preprocessing path.
fn probe_input(p: &Preprocessing) -> Vec<f32> {
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8])
    });
    let mut out = Vec::with_capacity(p.numel());
    preprocess::preprocess_into(&image::DynamicImage::ImageRgb8(img), p, &mut out);
    out
}

/// Loads the stored HNSW graph, or builds one from a snapshot of the vectors when the index stores none, on a
/// thread of its own (searches continue, exact, on the live index meanwhile), then installs it; rows added
/// since the snapshot are inserted on installation.
pub fn build_graph_in_background(state: &SharedState) {
    if !state.backend.graph_in_process() {
        // Milvus holds the gallery and its HNSW index.
        return;
    }
    build_in_background(state, |shared| {
        if hetvis_models::failpoint::fail("graph-build") {
            panic!("injected failure of the graph build");
        }
        // The stored graph is loaded without a copy of the index (searches and changes go on meanwhile);
        // only a rebuild needs a snapshot of the vectors.
        let stored = shared.read_index().stored_graph_location();
        let graph = match stored
            .map(|(dir, rows)| hetvis_indexer::graph::Graph::load_covering(&dir, rows))
        {
            Some(Ok(graph)) => {
                tracing::info!(points = graph.len(), "loaded the stored HNSW graph");
                graph
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "the stored HNSW graph cannot be used; rebuilding it");
                }
                let snapshot = shared.read_index().clone_without_graph();
                let graph = snapshot.build_graph()?;
                tracing::info!(points = graph.len(), "rebuilt the HNSW graph");
                graph
            }
        };
        shared.write_index().install_graph(graph)?;
        // A log left long by the last run is folded once the graph can be stored with it.
        shared.set_graph_state(GraphState::Ready);
        crate::compaction::start_if_due(shared);
        Ok(())
    });
}

/// Runs `build` on its own thread and records how it ended: ready, failed with its error, or failed with its
/// panic's message (a panic must not leave the state at "building" for ever).
fn build_in_background(
    state: &SharedState,
    build: impl FnOnce(&SharedState) -> Result<(), IndexError> + Send + 'static,
) {
    let shared = state.clone();
    let spawned = std::thread::Builder::new()
        .name("hnsw-build".into())
        .spawn(move || {
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&shared)));
            let state = match outcome {
                Ok(Ok(())) => {
                    tracing::info!(
                        seconds = started.elapsed().as_secs_f64(),
                        "HNSW graph installed"
                    );
                    GraphState::Ready
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "HNSW graph build failed; searches stay exact");
                    GraphState::Failed(e.to_string())
                }
                Err(panic) => {
                    let message = hetvis_indexer::panic_message(panic.as_ref());
                    tracing::error!(panic = %message, "HNSW graph build panicked; searches stay exact");
                    GraphState::Failed(format!("the graph build panicked: {message}"))
                }
            };
            shared.set_graph_state(state);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the graph builder; searches stay exact");
        state.set_graph_state(GraphState::Failed(e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_state::{self, Options};

    fn wait_settled(state: &SharedState) -> GraphState {
        for _ in 0..500 {
            let s = state.graph_state();
            if s != GraphState::Building {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the graph state stayed at building");
    }

    #[test]
    fn a_panicking_graph_build_is_reported_as_failed_with_its_message() {
        let state = test_state::state(Options::default());
        state.set_graph_state(GraphState::Building);
        build_in_background(&state, |_| panic!("hnsw ran out of layers"));
        match wait_settled(&state) {
            GraphState::Failed(m) => assert!(m.contains("hnsw ran out of layers"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(state.metrics.graph_ready.get(), 0);
    }

    #[test]
    fn a_real_build_installs_the_graph() {
        let state = test_state::state(Options::default());
        build_graph_in_background(&state);
        assert_eq!(wait_settled(&state), GraphState::Ready);
        assert!(state.read_index().has_graph());
    }
}
