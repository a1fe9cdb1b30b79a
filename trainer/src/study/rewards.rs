//! The reward ablation of CMP-NAS (paper Figure 6, supplementary Figure 1): super-networks trained with BCT
//! and without (vanilla), each searched with R1 = M(q, q), R2 = M(q, g) and R3 = both; the best `top`
//! architectures of each search are retrained from scratch with BCT and their test accuracies averaged. The
//! paper's finding to check: BCT super-networks beat vanilla ones, and R3 beats R1 and R2.
//!
//! Layout of `OUT`: `supernet-{bct,vanilla}/`, `search-{loss}-{reward}/` (each a full search directory),
//! `archs/{key}/` (one BCT retrain per distinct architecture, shared between searches that found it),
//! `eval/`, `rewards.json`, `rewards.md`, `rewards.svg`.

use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, SposSpec};
use hetvis_models::runtime::SessionConfig;
use serde::{Deserialize, Serialize};

use super::{evaluate, label, metric_of, result, to_json, write, StudyError};
use crate::cmpnas::{best_n, Reward, SupernetLoss};
use crate::context::Context;
use crate::eval::pct;
use crate::eval::Metrics;
use crate::plot::{scatter, Series};
use crate::preset::RewardMetric;
use crate::search::read_log;
use crate::tier::Tier;
use crate::train::{self, QueryMode};

#[derive(Debug, Clone)]
pub struct RewardsStudy {
    pub tier: Tier,
    pub top: usize,
    pub losses: Vec<SupernetLoss>,
    pub rewards: Vec<Reward>,
}

/// One search of the grid and its retrained best architectures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub loss: SupernetLoss,
    pub reward: Reward,
    /// Run names of the retrained architectures, best reward first.
    pub archs: Vec<String>,
    pub mean_homogeneous: Metrics,
    pub mean_heterogeneous: Metrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardsReport {
    pub budget_mmacs: f64,
    pub top: usize,
    pub protocol: String,
    pub paragon: Metrics,
    pub cells: Vec<Cell>,
}

/// A directory-safe name of an architecture: its block and width choices as digits.
pub fn arch_key(a: &SposSpec) -> String {
    let digits = |v: &[u8]| v.iter().map(|d| d.to_string()).collect::<String>();
    format!("b{}-w{}", digits(&a.blocks), digits(&a.widths))
}

fn mean(ms: &[&Metrics]) -> Metrics {
    let n = ms.len().max(1) as f64;
    let avg = |f: fn(&Metrics) -> f64| ms.iter().map(|m| f(m)).sum::<f64>() / n;
    Metrics {
        top1: avg(|m| m.top1),
        top5: avg(|m| m.top5),
        top10: avg(|m| m.top10),
        map_at_r: avg(|m| m.map_at_r),
        tar_at_far_1e_2: avg(|m| m.tar_at_far_1e_2),
        tar_at_far_1e_3: avg(|m| m.tar_at_far_1e_3),
        hubness: None,
    }
}

pub fn run(
    ctx: &Context,
    gallery: &Path,
    study: &RewardsStudy,
    out: &Path,
    ort: &SessionConfig,
) -> Result<RewardsReport, StudyError> {
    let manifest = crate::train::gallery_manifest(gallery)?;
    let budget = study.tier.budget(manifest.mmacs);
    let mut grid = Vec::new();
    let mut runs: Vec<PathBuf> = Vec::new();
    for &loss in &study.losses {
        let sn_dir = out.join(format!("supernet-{}", label(&loss)));
        let space = crate::tier::space_for(ctx.preset, study.tier, budget);
        for &reward in &study.rewards {
            let search_dir = out.join(format!("search-{}-{}", label(&loss), label(&reward)));
            ctx.search(
                gallery,
                study.tier,
                budget,
                loss,
                reward,
                &sn_dir,
                &search_dir,
            )?;
            let all = read_log(&search_dir.join("search_log.jsonl"))
                .map_err(|e| StudyError::Invalid(e.to_string()))?;
            let mut names = Vec::new();
            for c in best_n(&all, study.top, &space) {
                let arch = c.spec(&space);
                let key = arch_key(&arch);
                let dir = out.join("archs").join(&key);
                let name = format!("arch-{key}");
                let spec = ctx.preset.spec(Backbone::Spos(arch));
                train::run(
                    &dir,
                    &ctx.query_config(&name, spec, QueryMode::Bct, gallery),
                    ctx.data,
                    ctx.device,
                )?;
                if !runs.contains(&dir) {
                    runs.push(dir);
                }
                names.push(name);
            }
            grid.push((loss, reward, names));
        }
    }
    let report = evaluate(ctx, gallery, &runs, out, ort)?;
    let mut cells = Vec::new();
    for (loss, reward, archs) in grid {
        let evaluated = archs
            .iter()
            .map(|n| result(&report, n))
            .collect::<Result<Vec<_>, _>>()?;
        cells.push(Cell {
            loss,
            reward,
            mean_homogeneous: mean(&evaluated.iter().map(|q| &q.homogeneous).collect::<Vec<_>>()),
            mean_heterogeneous: mean(
                &evaluated
                    .iter()
                    .map(|q| &q.heterogeneous)
                    .collect::<Vec<_>>(),
            ),
            archs,
        });
    }
    let r = RewardsReport {
        budget_mmacs: budget,
        top: study.top,
        protocol: report.protocol.clone(),
        paragon: report.paragon.metrics.clone(),
        cells,
    };
    write(&out.join("rewards.json"), &to_json(&r))?;
    write(&out.join("rewards.md"), &markdown(&r))?;
    write(&out.join("rewards.svg"), &plot(&r, RewardMetric::Top1))?;
    Ok(r)
}

pub fn markdown(r: &RewardsReport) -> String {
    let mut s = format!(
        "# Reward ablation: super-network training x search reward\n\n{}\n\nBudget {:.2} MMACs; the best {} \
         architectures of each search retrained with BCT; mean test accuracy in %. Paragon top-1 {}.\n\n",
        r.protocol,
        r.budget_mmacs,
        r.top,
        pct(r.paragon.top1)
    );
    s += "| Super-network | Reward | Hom. top-1 | Het. top-1 | Hom. mAP@R | Het. mAP@R | Architectures |\n";
    s += "|---|---|---:|---:|---:|---:|---:|\n";
    for c in &r.cells {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            label(&c.loss),
            label(&c.reward).to_uppercase(),
            pct(c.mean_homogeneous.top1),
            pct(c.mean_heterogeneous.top1),
            pct(c.mean_homogeneous.map_at_r),
            pct(c.mean_heterogeneous.map_at_r),
            c.archs.len()
        );
    }
    s
}

/// Mean homogeneous vs heterogeneous accuracy of each cell, one series per super-network loss.
pub fn plot(r: &RewardsReport, metric: RewardMetric) -> String {
    let series: Vec<Series> = [
        (SupernetLoss::Bct, "#d62728"),
        (SupernetLoss::Vanilla, "#1f77b4"),
    ]
    .into_iter()
    .map(|(loss, color)| Series {
        name: if loss == SupernetLoss::Bct {
            "BCT super-network"
        } else {
            "vanilla super-network"
        },
        color,
        points: r
            .cells
            .iter()
            .filter(|c| c.loss == loss)
            .map(|c| {
                (
                    metric_of(&c.mean_homogeneous, metric),
                    metric_of(&c.mean_heterogeneous, metric),
                    label(&c.reward).to_uppercase(),
                )
            })
            .collect(),
    })
    .collect();
    scatter(
        &format!("Reward ablation: mean of the best {} architectures", r.top),
        "homogeneous accuracy",
        "heterogeneous accuracy",
        &series,
        false,
        true,
    )
}
