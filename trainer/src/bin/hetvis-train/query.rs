//! `hetvis-train query`: trains a compact query model against a finished gallery run.

use std::path::PathBuf;

use clap::Args;
use hetvis_trainer::train::{self, QueryMode};

use crate::common::{query_spec, report_outcome, run_context, run_name, CompatArgs, Ctx, DataArgs};

#[derive(Args)]
pub struct QueryArgs {
    #[arg(long)]
    gallery: PathBuf,
    /// `mobilenetv2`, `shufflenetv2` (the preset's scaled baselines) or a spec JSON (backbone or full spec).
    #[arg(long)]
    arch: String,
    #[arg(long, value_enum, default_value_t = QueryMode::Bct)]
    mode: QueryMode,
    /// Start from these network weights (safetensors named like the architecture's layers, e.g. a pruned
    /// gallery's init.safetensors). `finetune` without it starts from the gallery's own weights.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Default: the gallery run's preset.
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compat: CompatArgs,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(ctx: &Ctx, a: QueryArgs) -> anyhow::Result<()> {
    let (mut p, preset) = match a.preset {
        Some(name) => (ctx.preset(&name)?, name),
        None => ctx.gallery_preset(&a.gallery)?,
    };
    a.compat.apply(&mut p);
    let (ds, label) = ctx.dataset(&p, &a.data)?;
    let rc = run_context(ctx, &p, &preset, &ds, &label, &a.data);
    let mut config = rc.query_config(
        &run_name(&a.out),
        query_spec(&a.arch, &p)?,
        a.mode,
        &a.gallery,
    );
    config.init = a.init;
    report_outcome(&train::run(&a.out, &config, &ds, ctx.device)?);
    Ok(())
}
