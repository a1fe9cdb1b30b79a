//! `hetvis-index`: build, extend, inspect, verify and query gallery indexes.

mod build;
mod edit;
mod inspect;
mod milvus;
mod model;
mod place;
mod search;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hetvis_models::data::fashion_mnist::{DEFAULT_ROOT, ROOT_ENV};
use hetvis_models::runtime::{self, Device};
use place::Place;

#[derive(Parser)]
#[command(
    name = "hetvis-index",
    version,
    about = "hetvis gallery indexer: embed a gallery with the gallery model into a persistent HNSW index"
)]
struct Cli {
    /// Path to libonnxruntime.so (default: the project venv made by `make setup`).
    #[arg(long, env = runtime::ORT_LIB_ENV, global = true)]
    ort_lib: Option<PathBuf>,
    #[command(flatten)]
    milvus: milvus::MilvusArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where inference runs.
#[derive(Args, Clone)]
struct RuntimeArgs {
    #[arg(long, value_enum, default_value_t = Device::Cpu, env = "HETVIS_DEVICE")]
    device: Device,
    /// ONNX Runtime intra-op threads (0 = one per physical core). Preprocessing uses rayon (RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 0, env = "HETVIS_THREADS")]
    threads: usize,
}

/// A gallery model and the images to embed with it.
#[derive(Args)]
struct EmbedArgs {
    /// The gallery model (ONNX exported by hetvis, with its manifest inside).
    #[arg(long, env = "HETVIS_GALLERY_MODEL")]
    model: PathBuf,
    /// An image folder (recursive), a JSONL manifest ({"id","path","label"?,"meta"?} per line),
    /// fashion-mnist:train / fashion-mnist:test, or npy:FILE.npy (precomputed float32 [N, dim] embeddings
    /// of this gallery model; nothing is embedded).
    #[arg(long)]
    source: String,
    /// With an npy: source, one {"id","label"?,"meta"?} line per row, in row order (default ids:
    /// <file stem>/<row>).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Label images of a folder source with their parent folder's name.
    #[arg(long)]
    labels_from_dirs: bool,
    /// Fashion-MNIST directory for fashion-mnist: sources.
    #[arg(long, env = ROOT_ENV, default_value = DEFAULT_ROOT)]
    fashion_mnist: PathBuf,
    /// Images per inference call.
    #[arg(long, default_value_t = 64, env = "HETVIS_BATCH")]
    batch: usize,
    /// Embed only the first N items of the source.
    #[arg(long)]
    limit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Embed a gallery and write a new index directory.
    Build {
        #[command(flatten)]
        embed: EmbedArgs,
        /// Index directory to create (or --milvus URI --collection NAME).
        #[arg(long, required_unless_present = "milvus")]
        out: Option<PathBuf>,
        /// Replace an existing index at --out.
        #[arg(long)]
        overwrite: bool,
        /// HNSW neighbours per node (2..=256).
        #[arg(long, default_value_t = hetvis_indexer::HnswParams::default().m)]
        m: usize,
        /// HNSW candidate list size while building.
        #[arg(long, default_value_t = hetvis_indexer::HnswParams::default().ef_construction)]
        ef_construction: usize,
        /// Default HNSW candidate list size while searching.
        #[arg(long, default_value_t = hetvis_indexer::HnswParams::default().ef_search)]
        ef_search: usize,
    },
    /// Embed more images into an existing index (with the same gallery model file): appended to its
    /// write-ahead log.
    Add {
        /// Index directory to extend (or --milvus URI --collection NAME).
        #[arg(long, required_unless_present = "milvus")]
        index: Option<PathBuf>,
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// Remove items by id: no search returns them again, and their ids may be added anew. Their rows are
    /// reclaimed by `compact`.
    Remove {
        /// Index directory (the removal is appended to its write-ahead log), or --milvus URI --collection NAME.
        #[arg(long, required_unless_present = "milvus")]
        index: Option<PathBuf>,
        /// An id to remove; repeat for more.
        #[arg(long = "id", required = true)]
        ids: Vec<String>,
    },
    /// Fold the write-ahead log into the stored files and reclaim removed rows (an HNSW graph built anew).
    /// `add` and `remove` fold by themselves once the log is large.
    Compact {
        /// Index directory (replaced atomically).
        #[arg(long)]
        index: PathBuf,
        /// Only fold the log: keep removed rows (and the stored graph) instead of rebuilding the graph.
        #[arg(long)]
        fold_only: bool,
    },
    /// Check an index's files and print what it holds.
    Info {
        /// Index directory (or --milvus URI --collection NAME).
        #[arg(required_unless_present = "milvus")]
        index: Option<PathBuf>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure recall@k of HNSW search against exact search, using stored vectors as queries (with --milvus,
    /// the collection is read whole and scanned here for the exact answers).
    Verify {
        /// Index directory (or --milvus URI --collection NAME).
        #[arg(required_unless_present = "milvus")]
        index: Option<PathBuf>,
        /// Number of stored vectors used as queries (spread evenly over the index).
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// HNSW ef values to measure, comma-separated (default: the index's ef_search).
        #[arg(long, value_delimiter = ',')]
        ef: Vec<usize>,
        /// Fail when any measured recall is below this.
        #[arg(long)]
        min_recall: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Embed one image with a gallery or compatible query model and print its nearest gallery items.
    Search {
        /// INDEX IMAGE: the index directory and the image; with --milvus URI --collection NAME, IMAGE alone.
        #[arg(value_name = "INDEX IMAGE", num_args = 1..=2, required = true)]
        paths: Vec<PathBuf>,
        /// The index's gallery model, or a query model with the same compat_id.
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// HNSW candidate list size (default: the index's ef_search).
        #[arg(long)]
        ef: Option<usize>,
        /// Scan every vector instead of using the HNSW graph.
        #[arg(long)]
        exact: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // hnsw_rs logs every graph allocation and drop at info.
                .unwrap_or_else(|_| "info,hnsw_rs=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let ort_lib = cli.ort_lib.as_deref();
    let milvus = cli.milvus.target()?;
    // Exactly one place holds the gallery: an index directory or a Milvus collection.
    let place = |dir: Option<PathBuf>| Place::of(dir, milvus.clone());
    match cli.command {
        Command::Build {
            embed,
            out,
            overwrite,
            m,
            ef_construction,
            ef_search,
        } => {
            let params = hetvis_indexer::HnswParams {
                m,
                ef_construction,
                ef_search,
            };
            match place(out)? {
                Place::Dir(out) => build::build(ort_lib, &embed, &out, overwrite, params),
                Place::Milvus(t) => milvus::build(ort_lib, &embed, &t, params),
            }
        }
        Command::Add { index, embed } => build::add(ort_lib, &embed, &place(index)?),
        Command::Remove { index, ids } => edit::remove(&place(index)?, &ids),
        Command::Compact { index, fold_only } => edit::compact(&index, !fold_only),
        Command::Info { index, json } => match place(index)? {
            Place::Dir(index) => inspect::info(&index, json),
            Place::Milvus(t) => milvus::info(&t, json),
        },
        Command::Verify {
            index,
            queries,
            k,
            ef,
            min_recall,
            json,
        } => {
            let opts = inspect::VerifyOptions {
                queries,
                k,
                ef,
                min_recall,
                json,
            };
            match place(index)? {
                Place::Dir(index) => inspect::verify(&index, &opts),
                Place::Milvus(t) => milvus::verify(&t, &opts),
            }
        }
        Command::Search {
            paths,
            model,
            k,
            ef,
            exact,
            json,
            runtime,
        } => {
            // With --milvus the one path is the image; otherwise the index directory comes first.
            let (index, image) = match (paths.as_slice(), milvus.is_some()) {
                ([image], true) => (None, image.clone()),
                ([index, image], false) => (Some(index.clone()), image.clone()),
                _ => anyhow::bail!("search takes INDEX IMAGE, or IMAGE alone with --milvus"),
            };
            let place = place(index)?;
            let query = search::Query {
                model: &model,
                image: &image,
                k,
                ef,
                exact,
                json,
            };
            search::search(ort_lib, &place, &query, &runtime)
        }
    }
}
