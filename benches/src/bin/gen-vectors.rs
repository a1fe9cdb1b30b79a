//! Writes clustered synthetic unit vectors (a Gaussian mixture, `hetvis_benches::vectors::clustered`) as a
//! float32 `.npy` file, for indexing benchmarks at sizes no image set here reaches:
//!
//! target/release/gen-vectors --n 1000000 --dim 128 --out runs/bench/1m.npy
//! target/release/hetvis-index build --model GALLERY.onnx --source npy:runs/bench/1m.npy --out runs/bench/1m-index

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hetvis_benches::vectors::clustered;

#[derive(Parser)]
#[command(about = "Clustered synthetic unit vectors as a float32 .npy file")]
struct Cli {
    #[arg(long)]
    n: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Mixture components.
    #[arg(long, default_value_t = 4000)]
    centres: usize,
    /// Noise norm relative to a centre's.
    #[arg(long, default_value_t = 0.7)]
    spread: f32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let v = clustered(cli.n, cli.dim, cli.centres, cli.spread, cli.seed);
    if let Some(dir) = cli.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    hetvis_indexer::npy::write(&cli.out, &v, cli.n, cli.dim)
        .with_context(|| format!("writing {}", cli.out.display()))?;
    eprintln!("wrote {} x {} to {}", cli.n, cli.dim, cli.out.display());
    Ok(())
}
