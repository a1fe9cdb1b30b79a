//! In-process server state for unit tests: a real index and real worker pools around a small deterministic
//! stand-in model (no ONNX Runtime), so routes can be driven with `tower::ServiceExt::oneshot`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hetvis_indexer::{GalleryModel, HnswParams, Index, Record, WriterLock};
use hetvis_models::manifest::Role;
use hetvis_models::preprocess::{ImageLimits, Preprocessing};
use hetvis_models::runtime::Provider;

use crate::embed_pool::{BatchModel, EmbedPool, PoolConfig};
use crate::metrics::Metrics;
use crate::state::{AppState, Limits, LoadedModel, ModelInfo, SharedState, StateParts};

pub const DIM: usize = 8;
pub const SIZE: usize = 8;
pub const TOKEN: &str = "test-token";

/// Sums of input chunks, plus one so no embedding is zero; counts the images it embeds.
pub struct ChunkSums {
    passes: Arc<AtomicUsize>,
}

impl BatchModel for ChunkSums {
    fn input_len(&self) -> usize {
        3 * SIZE * SIZE
    }

    fn dim(&self) -> usize {
        DIM
    }

    fn embed(&mut self, batch: &[f32]) -> Result<Vec<f32>, String> {
        self.passes
            .fetch_add(batch.len() / self.input_len(), Ordering::SeqCst);
        let chunk = self.input_len() / DIM;
        Ok(batch
            .chunks(chunk)
            .map(|c| c.iter().sum::<f32>().abs() + 1.0)
            .collect())
    }
}

pub struct Options {
    pub vectors: usize,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    /// Uploads enabled (admin token and gallery model), with the index saved in this directory.
    pub index_dir: Option<PathBuf>,
    pub gallery_root: Option<PathBuf>,
    pub ef_search: usize,
    pub max_ef: usize,
    /// Images embedded by every model, counted here.
    pub passes: Arc<AtomicUsize>,
    /// The default policy when `None`.
    pub compaction_policy: Option<hetvis_indexer::CompactionPolicy>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            vectors: 50,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 8,
            index_dir: None,
            gallery_root: None,
            ef_search: 64,
            max_ef: 4096,
            passes: Arc::new(AtomicUsize::new(0)),
            compaction_policy: None,
        }
    }
}

fn loaded(role: Role, metrics: &Metrics, passes: &Arc<AtomicUsize>) -> LoadedModel {
    let label = if role == Role::Query {
        "query"
    } else {
        "gallery"
    };
    let pool = EmbedPool::start(
        label,
        vec![ChunkSums {
            passes: passes.clone(),
        }],
        PoolConfig {
            workers: 1,
            max_batch: 8,
            batch_wait: Duration::ZERO,
            queue_capacity: 16,
            delay: Duration::ZERO,
        },
        metrics.pool(label),
    )
    .expect("pool");
    LoadedModel {
        info: ModelInfo {
            name: label.into(),
            role,
            mmacs: 0.0,
            params: 0,
            embedding_dim: DIM,
            input_size: SIZE,
            compat_id: "space-1".into(),
            provider: Provider::Cpu,
            path: PathBuf::from(format!("{label}.onnx")),
        },
        preprocessing: Preprocessing::fashion_mnist(SIZE),
        pool,
        probe: vec![0.5; 3 * SIZE * SIZE],
    }
}

/// A unit vector that depends on `i`.
pub fn vector(i: usize) -> Vec<f32> {
    (0..DIM)
        .map(|d| (((i * 31 + d * 17) % 23) as f32) - 11.0 + 0.5)
        .collect()
}

pub fn state(o: Options) -> SharedState {
    let gallery = GalleryModel {
        name: "gallery".into(),
        compat_id: "space-1".into(),
        sha256: "0".repeat(64),
    };
    let params = HnswParams {
        ef_search: o.ef_search,
        ..HnswParams::default()
    };
    let mut index = Index::new(gallery, DIM, params).expect("index");
    index
        .add(
            (0..o.vectors)
                .map(|i| (Record::new(format!("item/{i}")), vector(i)))
                .collect(),
        )
        .expect("add");
    let writer_lock = o.index_dir.as_ref().map(|dir| {
        let lock = WriterLock::acquire(dir).expect("writer lock");
        let saved = index.save(&lock).expect("first save");
        index.rebase(saved).expect("rebase");
        lock
    });
    let metrics = Metrics::new().expect("metrics");
    let query = loaded(Role::Query, &metrics, &o.passes);
    let gallery = loaded(Role::Gallery, &metrics, &o.passes);
    let limits = Limits {
        max_k: 100,
        max_ef: o.max_ef,
        body_limit: 1 << 20,
        image: ImageLimits::default(),
        max_image_side: 8192,
        request_timeout: o.request_timeout,
        request_timeout_ms: o.request_timeout.as_millis() as u64,
        workers: 1,
        max_batch: 8,
        batch_wait_ms: 0.0,
        queue_capacity: 16,
        max_in_flight: o.max_in_flight,
    };
    let uploads = o.index_dir.is_some();
    Arc::new(AppState::new(StateParts {
        index,
        backend: std::sync::Arc::new(crate::backend::Embedded),
        index_dir: o.index_dir.clone().unwrap_or_default(),
        query,
        gallery: Some(gallery),
        metrics,
        limits,
        admin_token: uploads.then(|| TOKEN.to_owned()),
        image_store: None,
        gallery_root: o.gallery_root,
        fashion_mnist: None,
        writer_lock,
        compaction_policy: o.compaction_policy.unwrap_or_default(),
    }))
}

/// A small PNG whose pixels depend on `seed`.
pub fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(12, 10, |x, y| {
        image::Rgb([(x * 20 + seed * 7) as u8, (y * 25) as u8, (seed * 40) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

pub const BOUNDARY: &str = "hetvis-test-boundary";

/// A multipart body of `(id, image bytes)` parts, each image preceded by its `id` field.
pub fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, bytes) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n{id}\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}
