//! `hetvis-train search`: the compatibility-aware evolutionary search over a tier's super-network.

use std::path::PathBuf;

use clap::Args;
use hetvis_trainer::cmpnas::{Reward, SupernetLoss};
use hetvis_trainer::context::Context;
use hetvis_trainer::tier::Tier;
use hetvis_trainer::train;

use crate::common::{run_context, CompatArgs, Ctx, DataArgs};

#[derive(Args)]
pub struct SearchArgs {
    #[arg(long)]
    gallery: PathBuf,
    #[arg(long)]
    tier: Tier,
    #[arg(long, value_enum, default_value_t = Reward::R3)]
    reward: Reward,
    #[arg(long, value_enum, default_value_t = SupernetLoss::Bct)]
    loss: SupernetLoss,
    /// Super-network directory (default: OUT/supernet); share one across searches of the same tier.
    #[arg(long)]
    supernet: Option<PathBuf>,
    /// Seed of the search alone (default: --seed, which also seeds the super-network), to search one
    /// trained super-network again with another seed.
    #[arg(long)]
    search_seed: Option<u64>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compat: CompatArgs,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(ctx: &Ctx, a: SearchArgs) -> anyhow::Result<()> {
    let (mut p, preset) = ctx.gallery_preset(&a.gallery)?;
    a.compat.apply(&mut p);
    let (ds, label) = ctx.dataset(&p, &a.data)?;
    let rc = Context {
        search_seed: a.search_seed,
        ..run_context(ctx, &p, &preset, &ds, &label, &a.data)
    };
    let budget = a.tier.budget(train::gallery_manifest(&a.gallery)?.mmacs);
    let sn_dir = a.supernet.unwrap_or_else(|| a.out.join("supernet"));
    let s = rc.search(
        &a.gallery, a.tier, budget, a.loss, a.reward, &sn_dir, &a.out,
    )?;
    let scored_on = if s.finalists.is_empty() {
        "as logged"
    } else {
        "re-scored on the whole validation split"
    };
    println!(
        "best of {} candidates under {budget:.2} MMACs: {:.2} MMACs, reward {:.4} (hom {:.4}, het {:.4}; {scored_on}); wrote {}",
        s.evaluated,
        s.best.mmacs,
        s.best.rewards.reward,
        s.best.rewards.homogeneous,
        s.best.rewards.heterogeneous,
        a.out.join("best.json").display()
    );
    Ok(())
}
