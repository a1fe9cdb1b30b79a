//! `hetvis-train`: gallery and query model training, CMP-NAS, evaluation and the compatibility studies. One
//! module per subcommand; `common` holds what they share.

mod common;
mod eval;
mod gallery;
mod pipeline;
mod query;
mod replicate_stats;
mod score;
mod search;
mod smoke;
mod step_bench;
mod study;
mod supernet;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hetvis_models::data::fashion_mnist::{FashionMnist, DEFAULT_ROOT, ROOT_ENV};
use hetvis_models::runtime;
use hetvis_trainer::device::DeviceChoice;

use common::Ctx;

#[derive(Parser)]
#[command(
    name = "hetvis-train",
    version,
    about = "hetvis training: gallery and query models, evaluation"
)]
struct Cli {
    /// Where to train: cpu, cuda, or auto (CUDA when available).
    #[arg(long, env = "HETVIS_DEVICE", value_enum, default_value_t = DeviceChoice::Auto, global = true)]
    device: DeviceChoice,
    /// Fashion-MNIST directory (IDX files).
    #[arg(long, env = ROOT_ENV, default_value = DEFAULT_ROOT, global = true)]
    fashion_mnist: PathBuf,
    /// Path to libonnxruntime.so for evaluation and export checks (default: the project venv).
    #[arg(long, env = runtime::ORT_LIB_ENV, global = true)]
    ort_lib: Option<PathBuf>,
    /// A presets file of the same shape as trainer/presets.json (default: the built-in presets).
    #[arg(long, env = "HETVIS_PRESETS", global = true)]
    preset_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the gallery model (ResNet-101 depth; the preset sets width, input size, epochs).
    Gallery(gallery::GalleryArgs),
    /// Train a compact query model against a finished gallery run.
    Query(query::QueryArgs),
    /// Evaluate a gallery run and query runs on the test split through ONNX Runtime; writes report.json/.md.
    Eval(eval::EvalArgs),
    /// Train (or resume) a BCT or vanilla super-network over the SPOS space for a FLOPs tier.
    Supernet(supernet::SupernetArgs),
    /// Compatibility-aware evolutionary search (trains the tier's super-network first unless it is finished).
    /// Writes best.json, search_log.jsonl, summary.json and reward.svg.
    Search(search::SearchArgs),
    /// Score architectures of a trained super-network the way the search does (inherited weights, BN
    /// recalibrated, rewards on the validation split), e.g. to compare them with their retrained accuracy.
    /// Prints one JSON line per architecture.
    Score(score::ScoreArgs),
    /// The whole job: gallery -> super-network -> search at each tier -> retrain winners -> baselines -> report.
    Pipeline(pipeline::PipelineArgs),
    /// The paper's compatibility studies, sized by the preset's `study` section; re-running skips finished
    /// models.
    Study {
        #[command(subcommand)]
        study: study::StudyCommand,
    },
    /// Seed statistics of an evaluation report: mean ± s.d. per model, the compatibility rule per metric, and
    /// the searched model against each other with Welch's t-test.
    ReplicateStats(replicate_stats::ReplicateStatsArgs),
    /// Measure training-step throughput (images/s, median of timed steps) on random data; prints JSON.
    StepBench(step_bench::StepBenchArgs),
    /// Train a small CNN classifier on Fashion-MNIST and report test accuracy: a libtorch sanity check.
    Smoke(smoke::SmokeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Statistics over a report need neither libtorch's device nor ONNX Runtime.
    let command = match cli.command {
        Command::ReplicateStats(a) => return replicate_stats::run(a),
        other => other,
    };
    let presets_text = match &cli.preset_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let ctx = Ctx {
        device: cli.device.resolve()?,
        fashion: FashionMnist::new(&cli.fashion_mnist),
        presets_text,
    };
    runtime::init(cli.ort_lib.as_deref())?;
    match command {
        Command::Gallery(a) => gallery::run(&ctx, a),
        Command::Query(a) => query::run(&ctx, a),
        Command::Eval(a) => eval::run(&ctx, a),
        Command::Supernet(a) => supernet::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Score(a) => score::run(&ctx, a),
        Command::Pipeline(a) => pipeline::run(&ctx, a),
        Command::Study { study } => study::run(&ctx, study),
        Command::StepBench(a) => step_bench::run(&ctx, a),
        Command::Smoke(a) => smoke::run(&ctx, a),
        Command::ReplicateStats(_) => unreachable!("handled before the device is resolved"),
    }
}
