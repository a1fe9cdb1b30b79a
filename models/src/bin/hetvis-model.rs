//! `hetvis-model`: inspect data, the ONNX Runtime set-up, architectures and exported models.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hetvis_models::data::fashion_mnist::{FashionMnist, Split, CLASS_NAMES, ROOT_ENV};
use hetvis_models::runtime;

#[derive(Parser)]
#[command(name = "hetvis-model", version, about = "hetvis model tools")]
struct Cli {
    /// Path to libonnxruntime.so (default: the project venv made by `make setup`).
    #[arg(long, env = runtime::ORT_LIB_ENV, global = true)]
    ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load ONNX Runtime and report which library is in use.
    Runtime,
    /// Read Fashion-MNIST and print a summary of both splits.
    Data {
        /// Directory with the IDX files.
        #[arg(long, env = ROOT_ENV, default_value = hetvis_models::data::fashion_mnist::DEFAULT_ROOT)]
        root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Runtime => {
            let path = runtime::init(cli.ort_lib.as_deref())?;
            println!("ONNX Runtime loaded from {}", path.display());
        }
        Command::Data { root } => {
            let fm = FashionMnist::new(root);
            for split in [Split::Train, Split::Test] {
                let set = fm.load(split).with_context(|| {
                    format!("reading Fashion-MNIST from {}", fm.root().display())
                })?;
                let mut counts = [0usize; 10];
                for &l in &set.labels {
                    counts[l as usize] += 1;
                }
                println!(
                    "{split:?}: {} images of {}x{}, {} classes",
                    set.len(),
                    set.rows,
                    set.cols,
                    set.num_classes()
                );
                for (name, n) in CLASS_NAMES.iter().zip(counts) {
                    println!("  {name:<12} {n}");
                }
            }
        }
    }
    Ok(())
}
