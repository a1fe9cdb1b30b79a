//! `hetvis-train`: training, search and evaluation.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hetvis_models::data::fashion_mnist::{FashionMnist, DEFAULT_ROOT, ROOT_ENV};
use hetvis_trainer::device::DeviceChoice;

#[derive(Parser)]
#[command(
    name = "hetvis-train",
    version,
    about = "hetvis training: gallery and query models, CMP-NAS search, evaluation"
)]
struct Cli {
    /// Where to train: cpu, cuda, or auto (CUDA when available).
    #[arg(long, env = "HETVIS_DEVICE", value_enum, default_value_t = DeviceChoice::Auto, global = true)]
    device: DeviceChoice,
    /// Fashion-MNIST directory (IDX files).
    #[arg(long, env = ROOT_ENV, default_value = DEFAULT_ROOT, global = true)]
    fashion_mnist: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a small CNN classifier on Fashion-MNIST and report test accuracy: a libtorch sanity check.
    Smoke {
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        #[arg(long, default_value_t = 128)]
        batch: i64,
        /// Directory for smoke.json.
        #[arg(long)]
        out: Option<PathBuf>,
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
    let device = cli.device.resolve()?;
    let data = FashionMnist::new(&cli.fashion_mnist);
    match cli.command {
        Command::Smoke { epochs, batch, out } => {
            let report = hetvis_trainer::smoke::run(&data, epochs, batch, device)?;
            println!(
                "trained a 2-layer CNN on {} Fashion-MNIST images for {} epoch(s) on {device:?}: {:.0} images/s, \
                 test accuracy {:.2}% on {} images ({:.1} s)",
                report.train_images,
                report.epochs,
                report.train_images_per_s,
                100.0 * report.test_accuracy,
                report.test_images,
                report.seconds
            );
            if let Some(out) = out {
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let path = out.join("smoke.json");
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
