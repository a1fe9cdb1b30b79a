//! `hetvis-train eval`: evaluates a gallery run and query runs on the test split through ONNX Runtime.

use std::path::PathBuf;

use clap::Args;
use hetvis_trainer::eval;

use crate::common::{Ctx, DataArgs};

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    gallery: PathBuf,
    #[arg(long, num_args = 1..)]
    query: Vec<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(ctx: &Ctx, a: EvalArgs) -> anyhow::Result<()> {
    let (p, _) = ctx.gallery_preset(&a.gallery)?;
    let (ds, label) = ctx.dataset(&p, &a.data)?;
    let report = eval::run(
        &a.gallery,
        &a.query,
        &label,
        &ds.test,
        &a.out,
        &ctx.ort_config(),
    )?;
    print!("{}", eval::markdown(&report));
    println!(
        "wrote {} and {}",
        a.out.join("report.json").display(),
        a.out.join("report.md").display()
    );
    Ok(())
}
