//! Command line and environment configuration of `hetvis-serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hetvis_indexer::CompactionPolicy;
use hetvis_models::preprocess::ImageLimits;
use hetvis_models::runtime::{Device, OptLevel, SessionConfig};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "hetvis-serve",
    version,
    about = "hetvis heterogeneous visual search server: the query model embeds, the gallery index answers"
)]
pub struct ServerConfig {
    /// Index directory built by `hetvis-index build` (or --milvus URI --collection NAME).
    #[arg(long, env = "HETVIS_INDEX", required_unless_present = "milvus")]
    pub index: Option<PathBuf>,
    /// Milvus address (http://host:19530): serve the gallery from a Milvus collection (built with
    /// `hetvis-index build --milvus`) instead of an index directory. The server then keeps no gallery state, so
    /// any number of replicas can serve one collection.
    #[arg(long, env = "HETVIS_MILVUS", conflicts_with = "index")]
    pub milvus: Option<String>,
    /// The gallery's collection in Milvus.
    #[arg(long, env = "HETVIS_COLLECTION", requires = "milvus")]
    pub collection: Option<String>,
    /// `user:password` or an API key, when Milvus has authentication enabled.
    #[arg(long, env = "HETVIS_MILVUS_TOKEN", hide_env_values = true)]
    pub milvus_token: Option<String>,
    /// The Milvus database (default: Milvus's `default`).
    #[arg(long, env = "HETVIS_MILVUS_DATABASE")]
    pub milvus_database: Option<String>,
    /// Limit of each call to Milvus in milliseconds; past it the request is answered 503.
    #[arg(long, env = "HETVIS_MILVUS_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub milvus_timeout_ms: u64,
    /// Compact query model (ONNX) whose compat_id and dimension match the index.
    #[arg(long, env = "HETVIS_QUERY_MODEL")]
    pub query_model: PathBuf,
    /// The gallery model that built the index: enables `mode=paragon` searches and `POST /gallery`.
    #[arg(long, env = "HETVIS_GALLERY_MODEL")]
    pub gallery_model: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the bound address is printed on stdout).
    #[arg(long, env = "HETVIS_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Where inference runs; `cuda` fails at start-up rather than falling back to CPU.
    #[arg(long, env = "HETVIS_DEVICE", value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// ONNX Runtime shared library (default: found in the project venv).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Bearer token that `POST /gallery` requires; without it uploads are refused with 403.
    #[arg(long, env = "HETVIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Folder to keep images uploaded through `POST /gallery` in, so `GET /gallery/{id}/image` can serve them.
    #[arg(long, env = "HETVIS_IMAGE_STORE")]
    pub image_store: Option<PathBuf>,
    /// Folder that an image-folder index was built from: `GET /gallery/{id}/image` serves `<root>/<id>`.
    #[arg(long, env = "HETVIS_GALLERY_ROOT")]
    pub gallery_root: Option<PathBuf>,
    /// Fashion-MNIST folder: `GET /gallery/{id}/image` renders ids `train/<i>` and `test/<i>` from it.
    #[arg(long, env = "HETVIS_FASHION_MNIST")]
    pub fashion_mnist: Option<PathBuf>,
    /// Inference threads per model, each owning one ONNX Runtime session.
    #[arg(long, env = "HETVIS_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// ONNX Runtime intra-op threads per session (0: one per core).
    #[arg(long, env = "HETVIS_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// ONNX Runtime graph optimisation level.
    #[arg(long, env = "HETVIS_ORT_OPT_LEVEL", value_enum, default_value_t = OptLevel::All)]
    pub ort_opt_level: OptLevel,
    /// ONNX Runtime memory pattern (activation memory planned once per input shape).
    #[arg(long, env = "HETVIS_ORT_MEMORY_PATTERN", default_value_t = true, action = clap::ArgAction::Set)]
    pub ort_memory_pattern: bool,
    /// ONNX Runtime intra-op threads spin while waiting for work (faster alone, wasteful with several workers).
    #[arg(long, env = "HETVIS_ORT_SPINNING", default_value_t = true, action = clap::ArgAction::Set)]
    pub ort_spinning: bool,
    /// Most images in one forward pass.
    #[arg(long, env = "HETVIS_MAX_BATCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_batch: u16,
    /// How long a worker holding a request waits for more to batch with it, in milliseconds.
    #[arg(long, env = "HETVIS_BATCH_WAIT_MS", default_value_t = 2.0, value_parser = parse_wait_ms)]
    pub batch_wait_ms: f64,
    /// Requests waiting for a worker, per model; beyond it requests get 429.
    #[arg(long, env = "HETVIS_QUEUE_CAPACITY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub queue_capacity: u32,
    /// Whole-request time limit in milliseconds (503 past it).
    #[arg(long, env = "HETVIS_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Largest request body in bytes (413 past it).
    #[arg(long, env = "HETVIS_BODY_LIMIT", default_value_t = 16 << 20, value_parser = positive)]
    pub body_limit: usize,
    /// Largest image width or height in pixels (checked from the header, before decoding).
    #[arg(long, env = "HETVIS_MAX_IMAGE_SIDE", default_value_t = 4096)]
    pub max_image_side: u32,
    /// Searches and uploads being served at once; beyond it requests get 429. With `--body-limit` this bounds
    /// the memory held by request bodies.
    #[arg(long, env = "HETVIS_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
    /// Largest `k` a search may ask for.
    #[arg(long, env = "HETVIS_MAX_K", default_value_t = 100, value_parser = positive)]
    pub max_k: usize,
    /// Largest `ef` a search may ask for.
    #[arg(long, env = "HETVIS_MAX_EF", default_value_t = 4096, value_parser = positive)]
    pub max_ef: usize,
    /// Fold the index's write-ahead log into its stored files (in the background) once it holds this many
    /// changed items, or 5% of the stored rows if that is more.
    #[arg(long, env = "HETVIS_COMPACT_LOG_ITEMS", default_value_t = CompactionPolicy::default().min_log_items, value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_log_items: u64,
    /// Reclaim removed rows (a compaction that builds the graph anew) once they are this share of all rows.
    #[arg(long, env = "HETVIS_COMPACT_RECLAIM_RATIO", default_value_t = CompactionPolicy::default().reclaim_ratio, value_parser = ratio)]
    pub compact_reclaim_ratio: f64,
    /// Testing aid: sleep this long before every forward pass, to make overload reproducible.
    #[arg(long, env = "HETVIS_EMBED_DELAY_MS", default_value_t = 0, hide = true)]
    pub embed_delay_ms: u64,
}

impl ServerConfig {
    /// The Milvus collection to serve, when `--milvus` is given.
    pub fn milvus_target(&self) -> Result<Option<hetvis_indexer::MilvusTarget>, String> {
        let Some(uri) = &self.milvus else {
            return Ok(None);
        };
        let collection = self
            .collection
            .clone()
            .ok_or("--milvus needs --collection NAME (or HETVIS_COLLECTION)")?;
        let mut connect = hetvis_milvus::ConnectOptions::new(uri.clone());
        connect.token = self.milvus_token.clone();
        connect.database = self.milvus_database.clone();
        connect.timeout = Duration::from_millis(self.milvus_timeout_ms);
        Ok(Some(hetvis_indexer::MilvusTarget {
            connect,
            collection,
        }))
    }

    pub fn compaction_policy(&self) -> CompactionPolicy {
        CompactionPolicy {
            min_log_items: self.compact_log_items,
            reclaim_ratio: self.compact_reclaim_ratio,
            ..CompactionPolicy::default()
        }
    }

    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            device: self.device,
            intra_threads: self.threads,
            optimization: self.ort_opt_level,
            memory_pattern: self.ort_memory_pattern,
            spinning: self.ort_spinning,
            ..Default::default()
        }
    }

    pub fn image_limits(&self) -> ImageLimits {
        ImageLimits {
            max_width: self.max_image_side,
            max_height: self.max_image_side,
            ..Default::default()
        }
    }

    pub fn batch_wait(&self) -> Duration {
        Duration::from_secs_f64(self.batch_wait_ms / 1000.0)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    pub fn pool(&self) -> crate::embed_pool::PoolConfig {
        crate::embed_pool::PoolConfig {
            workers: self.workers.into(),
            max_batch: self.max_batch.into(),
            batch_wait: self.batch_wait(),
            queue_capacity: self.queue_capacity as usize,
            delay: Duration::from_millis(self.embed_delay_ms),
        }
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive integer")),
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a share in (0, 1]")),
    }
}

/// 0..=1000 ms: a longer wait would only add latency.
fn parse_wait_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of milliseconds in 0..=1000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = ServerConfig::try_parse_from([
            "hetvis-serve",
            "--index",
            "i",
            "--query-model",
            "q.onnx",
        ])
        .unwrap();
        assert_eq!(c.addr.port(), 8080);
        assert_eq!(c.pool().max_batch, 32);
        assert_eq!(c.batch_wait(), Duration::from_millis(2));
        for bad in [
            ["--workers", "0"],
            ["--max-batch", "0"],
            ["--device", "tpu"],
            ["--batch-wait-ms", "NaN"],
            ["--batch-wait-ms", "-1"],
            ["--max-k", "0"],
            ["--body-limit", "0"],
        ] {
            let mut args = vec!["hetvis-serve", "--index", "i", "--query-model", "q.onnx"];
            args.extend(bad);
            assert!(ServerConfig::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
