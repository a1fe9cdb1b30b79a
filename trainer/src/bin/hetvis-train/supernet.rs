//! `hetvis-train supernet`: trains (or resumes) a tier's super-network.

use std::path::PathBuf;

use clap::Args;
use hetvis_trainer::cmpnas::{self, SupernetLoss};
use hetvis_trainer::tier::Tier;
use hetvis_trainer::train;

use crate::common::{run_context, CompatArgs, Ctx, DataArgs};

#[derive(Args)]
pub struct SupernetArgs {
    #[arg(long)]
    gallery: PathBuf,
    /// `23x` (times fewer MMACs than the gallery model) or an MMACs budget.
    #[arg(long)]
    tier: Tier,
    #[arg(long, value_enum, default_value_t = SupernetLoss::Bct)]
    loss: SupernetLoss,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compat: CompatArgs,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(ctx: &Ctx, a: SupernetArgs) -> anyhow::Result<()> {
    let (mut p, preset) = ctx.gallery_preset(&a.gallery)?;
    a.compat.apply(&mut p);
    let (ds, label) = ctx.dataset(&p, &a.data)?;
    let rc = run_context(ctx, &p, &preset, &ds, &label, &a.data);
    let budget = a.tier.budget(train::gallery_manifest(&a.gallery)?.mmacs);
    let run = rc.supernet_run(&a.gallery, a.tier, budget, a.loss);
    cmpnas::train_supernet(&a.out, &run, &ds, ctx.device, p.augment)?;
    println!(
        "{}: super-network for {budget:.2} MMACs (SPOS multiplier {}) trained with {:?} loss",
        a.out.display(),
        run.space.multiplier,
        a.loss
    );
    Ok(())
}
