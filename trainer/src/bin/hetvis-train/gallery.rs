//! `hetvis-train gallery`: trains the gallery model.

use std::path::PathBuf;

use clap::Args;
use hetvis_trainer::train;

use crate::common::{report_outcome, run_context, run_name, Ctx, DataArgs};

#[derive(Args)]
pub struct GalleryArgs {
    #[arg(long, default_value = "cpu")]
    preset: String,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(ctx: &Ctx, a: GalleryArgs) -> anyhow::Result<()> {
    let p = ctx.preset(&a.preset)?;
    let (ds, label) = ctx.dataset(&p, &a.data)?;
    let rc = run_context(ctx, &p, &a.preset, &ds, &label, &a.data);
    let config = rc.gallery_config(&run_name(&a.out));
    report_outcome(&train::run(&a.out, &config, &ds, ctx.device)?);
    Ok(())
}
