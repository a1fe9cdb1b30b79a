//! `hetvis-train study`: the paper's compatibility studies, sized by the preset's `study` section.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hetvis_models::prune::PruneCriterion;
use hetvis_trainer::cmpnas::{Reward, SupernetLoss};
use hetvis_trainer::preset::RewardMetric;
use hetvis_trainer::study;
use hetvis_trainer::tier::Tier;
use hetvis_trainer::train::QueryMode;

use crate::common::{run_context, Ctx, DataArgs};

#[derive(Subcommand)]
pub enum StudyCommand {
    /// Weight-level compatibility (supplementary Table 4): the gallery ResNet pruned by each criterion and
    /// amount, trained with each mode; writes pruning.md and pruning.json.
    Pruning(PruningArgs),
    /// Architecture-level compatibility (the Q1/Q2 figures): N random architectures near a budget, BCT and
    /// vanilla; writes random_archs.md/.json, three plots and the Kendall taus.
    RandomArchs(RandomArchsArgs),
    /// Reward ablation (supplementary Figure 1): R1/R2/R3 searches over BCT and vanilla super-networks, the
    /// best architectures of each retrained with BCT and averaged; writes rewards.md/.json/.svg.
    Rewards(RewardsArgs),
}

/// What every study takes: the gallery run to compare against, data, and the output directory.
#[derive(Args, Clone)]
pub struct StudyBase {
    #[arg(long)]
    gallery: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct PruningArgs {
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [PruneCriterion::Magnitude, PruneCriterion::Channel])]
    criteria: Vec<PruneCriterion>,
    /// Fractions of the inner filters removed (default: the preset's, 0.3,0.5,0.7,0.9).
    #[arg(long, value_delimiter = ',')]
    amounts: Option<Vec<f64>>,
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [QueryMode::Independent, QueryMode::Finetune, QueryMode::Bct, QueryMode::Kd])]
    modes: Vec<QueryMode>,
    #[command(flatten)]
    base: StudyBase,
}

#[derive(Args)]
pub struct RandomArchsArgs {
    #[arg(long, default_value_t = 20)]
    n: usize,
    #[arg(long)]
    tier: Tier,
    /// The accuracy plotted and rank-correlated.
    #[arg(long, value_enum, default_value_t = RewardMetric::Top1)]
    metric: RewardMetric,
    /// A finished super-network of the tier (same space and gallery): also score every architecture with it
    /// and report how its ranking agrees with the retrained accuracies (Kendall's tau).
    #[arg(long)]
    supernet: Option<PathBuf>,
    #[command(flatten)]
    base: StudyBase,
}

#[derive(Args)]
pub struct RewardsArgs {
    #[arg(long)]
    tier: Tier,
    /// Architectures retrained per search (default: the preset's study.top).
    #[arg(long)]
    top: Option<usize>,
    #[command(flatten)]
    base: StudyBase,
}

pub fn run(ctx: &Ctx, study: StudyCommand) -> anyhow::Result<()> {
    let StudyBase { gallery, data, out } = match &study {
        StudyCommand::Pruning(a) => &a.base,
        StudyCommand::RandomArchs(a) => &a.base,
        StudyCommand::Rewards(a) => &a.base,
    }
    .clone();
    let (gallery, out) = (&gallery, &out);
    let (p, preset) = ctx.gallery_preset(gallery)?;
    let p = p.for_study();
    let (ds, label) = ctx.dataset(&p, &data)?;
    let rc = run_context(ctx, &p, &preset, &ds, &label, &data);
    let ort = ctx.ort_config();
    match study {
        StudyCommand::Pruning(a) => {
            let grid = study::pruning::PruningStudy {
                criteria: a.criteria,
                amounts: a.amounts.unwrap_or_else(|| p.study.prune_amounts.clone()),
                modes: a.modes,
            };
            let table = study::pruning::run(&rc, gallery, &grid, out, &ort)?;
            print!("{}", study::pruning::markdown(&table));
            println!("wrote {}", out.join("pruning.md").display());
        }
        StudyCommand::RandomArchs(a) => {
            let s = study::random_archs::RandomArchsStudy {
                n: a.n,
                tier: a.tier,
                metric: a.metric,
                seed: rc.seed,
                supernet: a.supernet,
            };
            let r = study::random_archs::run(&rc, gallery, &s, out, &ort)?;
            print!("{}", study::random_archs::markdown(&r));
            println!("wrote {}", out.join("random_archs.md").display());
        }
        StudyCommand::Rewards(a) => {
            let s = study::rewards::RewardsStudy {
                tier: a.tier,
                top: a.top.unwrap_or(p.study.top),
                losses: vec![SupernetLoss::Bct, SupernetLoss::Vanilla],
                rewards: vec![Reward::R1, Reward::R2, Reward::R3],
            };
            let r = study::rewards::run(&rc, gallery, &s, out, &ort)?;
            print!("{}", study::rewards::markdown(&r));
            println!("wrote {}", out.join("rewards.md").display());
        }
    }
    Ok(())
}
