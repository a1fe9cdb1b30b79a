//! `hetvis-train smoke`: a small CNN on Fashion-MNIST, a libtorch sanity check.

use std::path::PathBuf;

use clap::Args;
use hetvis_models::atomic;
use hetvis_trainer::smoke;

use crate::common::Ctx;

#[derive(Args)]
pub struct SmokeArgs {
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch: i64,
    /// Directory for smoke.json.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, a: SmokeArgs) -> anyhow::Result<()> {
    let device = ctx.device;
    let report = smoke::run(&ctx.fashion, a.epochs, a.batch, device)?;
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
    if let Some(out) = a.out {
        let path = out.join("smoke.json");
        atomic::write(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
