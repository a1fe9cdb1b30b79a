//! tch vs PyTorch eager training throughput, side by side on the same libtorch build (the project venv).
//!
//! For each architecture: the trainer prints the lowered network (`hetvis-train step-bench --emit-net`), then
//! rounds alternate between `hetvis-train step-bench` (tch) and `benches/pytorch/train_step.py` (PyTorch eager
//! on the same graph), swapping which goes first each round. Reports the median images/s over all timed steps
//! of each side and the ratio tch / PyTorch.
//!
//! make bench-train   (builds the release trainer, installs PyTorch's Python dependencies into the venv)

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Parser;
use hetvis_benches::stats::median;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "target/release/hetvis-train")]
    trainer: PathBuf,
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "benches/pytorch/train_step.py")]
    script: PathBuf,
    #[arg(long, default_value = "cpu")]
    preset: String,
    #[arg(long, value_delimiter = ',', default_value = "gallery,mobilenetv2")]
    archs: Vec<String>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 8)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn rates(cmd: &mut Command) -> anyhow::Result<Vec<f64>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok(serde_json::from_value(v["images_per_s"].clone())?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let n = |v: usize| v.to_string();
    let mut results = Vec::new();
    println!(
        "| network | tch images/s (median) | PyTorch eager images/s (median) | tch / PyTorch |"
    );
    println!("|---|---:|---:|---:|");
    for arch in &cli.archs {
        let common = |c: &mut Command| {
            c.args([
                "--device",
                "cpu",
                "step-bench",
                "--arch",
                arch,
                "--preset",
                &cli.preset,
            ]);
        };
        let mut emit = Command::new(&cli.trainer);
        common(&mut emit);
        let net = emit
            .arg("--emit-net")
            .output()
            .context("running the trainer")?;
        if !net.status.success() {
            bail!("{}", String::from_utf8_lossy(&net.stderr));
        }
        let net_path =
            std::env::temp_dir().join(format!("hetvis-net-{arch}-{}.json", std::process::id()));
        std::fs::write(&net_path, &net.stdout)?;
        let (mut tch, mut torch) = (Vec::new(), Vec::new());
        // The same step settings for both sides.
        let step_args = [
            "--batch".to_owned(),
            n(cli.batch),
            "--warmup".to_owned(),
            n(cli.warmup),
            "--steps".to_owned(),
            n(cli.steps),
            "--threads".to_owned(),
            n(cli.threads),
        ];
        for round in 0..cli.rounds {
            let mut t = Command::new(&cli.trainer);
            common(&mut t);
            t.args(&step_args);
            let mut p = Command::new(&cli.python);
            p.arg(&cli.script).arg(&net_path).args(&step_args);
            if round % 2 == 0 {
                tch.extend(rates(&mut t)?);
                torch.extend(rates(&mut p)?);
            } else {
                torch.extend(rates(&mut p)?);
                tch.extend(rates(&mut t)?);
            }
        }
        let _ = std::fs::remove_file(&net_path);
        let (mt, mp) = (
            median(&tch).unwrap_or(f64::NAN),
            median(&torch).unwrap_or(f64::NAN),
        );
        println!(
            "| {arch} ({} preset, batch {}) | {mt:.0} | {mp:.0} | {:.3} |",
            cli.preset,
            cli.batch,
            mt / mp
        );
        results.push(serde_json::json!({
            "arch": arch, "preset": cli.preset, "batch": cli.batch, "threads": cli.threads,
            "tch_median_images_per_s": mt, "pytorch_median_images_per_s": mp, "ratio": mt / mp,
            "tch_samples": tch, "pytorch_samples": torch,
        }));
    }
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
