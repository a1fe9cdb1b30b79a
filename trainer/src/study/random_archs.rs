//! Architecture-level compatibility study (the article's Q1/Q2 figures): `n` random architectures of the SPOS
//! space near one FLOPs budget, each trained with BCT and without it (vanilla = `independent`).
//! - (a) heterogeneous accuracy vs MMACs under BCT: a spread at equal MMACs means the architecture matters;
//! - (b) homogeneous vs heterogeneous accuracy of the vanilla models and (c) of the BCT models, with Kendall's
//!   tau of each: a low tau in (b) says ordinary NAS (which ranks by homogeneous accuracy) cannot find the
//!   compatible architecture; a higher one in (c) says BCT makes the two rankings agree.
//!
//! Layout of `OUT`: `archs.json` (the drawn architectures), `arch-NN/{bct,independent}` run directories,
//! `eval/`, `random_archs.json`, `random_archs.md` and the plots `a_het_vs_mmacs.svg`,
//! `b_vanilla_hom_vs_het.svg`, `c_bct_hom_vs_het.svg`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, SposSpec};
use hetvis_models::runtime::SessionConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{
    evaluate, gallery_manifest, kendall_tau, label, metric_of, pct, result, to_json, write,
    StudyError,
};
use crate::cmpnas::RewardMetric;
use crate::eval::Metrics;
use crate::pipeline::{Context, Tier};
use crate::plot::{scatter, Series};
use crate::supernet::sample;
use crate::train::{self, QueryMode};

#[derive(Debug, Clone, Copy)]
pub struct RandomArchsStudy {
    pub n: usize,
    pub tier: Tier,
    /// The accuracy the plots and rank correlations use.
    pub metric: RewardMetric,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trained {
    pub homogeneous: Metrics,
    pub heterogeneous: Metrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchResult {
    pub name: String,
    pub blocks: Vec<u8>,
    pub widths: Vec<u8>,
    pub mmacs: f64,
    pub bct: Trained,
    pub vanilla: Trained,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RandomArchsReport {
    pub budget_mmacs: f64,
    pub window: f64,
    pub spos_multiplier: f64,
    pub metric: RewardMetric,
    pub protocol: String,
    pub paragon: Metrics,
    pub archs: Vec<ArchResult>,
    /// Kendall's tau between homogeneous and heterogeneous accuracy, vanilla training (plot b).
    pub tau_vanilla: f64,
    /// The same under BCT (plot c).
    pub tau_bct: f64,
    /// Lowest and highest heterogeneous accuracy under BCT (plot a's spread).
    pub bct_heterogeneous_range: (f64, f64),
}

/// Draws `n` distinct architectures of `space`-like uniform samples whose MMACs lie within `window` of
/// `budget` (rejection sampling, seeded).
pub fn draw(
    n: usize,
    budget: f64,
    window: f64,
    seed: u64,
    space: &hetvis_models::arch::SposSpace,
    mmacs: impl Fn(&SposSpec) -> f64,
) -> Result<Vec<(SposSpec, f64)>, StudyError> {
    const ATTEMPTS_PER_ARCH: usize = 2000;
    let attempts = ATTEMPTS_PER_ARCH * n;
    let mut rng = StdRng::seed_from_u64(seed);
    let (lo, hi) = (budget * (1.0 - window), budget * (1.0 + window));
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..attempts {
        if out.len() == n {
            break;
        }
        let a = sample(space, &mut rng);
        let m = mmacs(&a);
        if (lo..=hi).contains(&m) && seen.insert((a.blocks.clone(), a.widths.clone())) {
            out.push((a, m));
        }
    }
    if out.len() < n {
        return Err(StudyError::Invalid(format!(
            "found only {} of {n} architectures within {lo:.2}..{hi:.2} MMACs in {attempts} draws; widen the \
             preset's study.budget_window",
            out.len()
        )));
    }
    Ok(out)
}

pub fn run(
    ctx: &Context,
    gallery: &Path,
    study: &RandomArchsStudy,
    out: &Path,
    ort: &SessionConfig,
) -> Result<RandomArchsReport, StudyError> {
    let manifest = gallery_manifest(gallery)?;
    let budget = study.tier.budget(manifest.mmacs);
    let space = crate::pipeline::space_for(ctx.preset, study.tier, budget);
    let window = ctx.preset.study.budget_window;
    let spec_of = |a: &SposSpec| ctx.preset.spec(Backbone::Spos(a.clone()));
    let archs = draw(study.n, budget, window, study.seed, &space, |a| {
        crate::pipeline::mmacs(&spec_of(a))
    })?;
    std::fs::create_dir_all(out).map_err(|e| StudyError::File {
        path: out.to_owned(),
        message: e.to_string(),
    })?;
    write(
        &out.join("archs.json"),
        &to_json(&archs.iter().map(|(a, m)| (a, m)).collect::<Vec<_>>()),
    )?;
    let modes = [QueryMode::Bct, QueryMode::Independent];
    let mut runs: Vec<PathBuf> = Vec::new();
    for (i, (arch, _)) in archs.iter().enumerate() {
        for mode in modes {
            let dir = out.join(format!("arch-{i:02}")).join(mode.name());
            let name = format!("arch{i:02}-{}", mode.name());
            train::run(
                &dir,
                &ctx.query_config(&name, spec_of(arch), mode, gallery),
                ctx.data,
                ctx.device,
            )?;
            runs.push(dir);
        }
    }
    let report = evaluate(ctx, gallery, &runs, out, ort)?;
    let mut results = Vec::new();
    for (i, (arch, mmacs)) in archs.iter().enumerate() {
        let trained = |mode: QueryMode| -> Result<Trained, StudyError> {
            let q = result(&report, &format!("arch{i:02}-{}", mode.name()))?;
            Ok(Trained {
                homogeneous: q.homogeneous.clone(),
                heterogeneous: q.heterogeneous.clone(),
            })
        };
        results.push(ArchResult {
            name: format!("arch{i:02}"),
            blocks: arch.blocks.clone(),
            widths: arch.widths.clone(),
            mmacs: *mmacs,
            bct: trained(QueryMode::Bct)?,
            vanilla: trained(QueryMode::Independent)?,
        });
    }
    let m = |t: &Metrics| metric_of(t, study.metric);
    let pairs = |pick: fn(&ArchResult) -> &Trained| -> (Vec<f64>, Vec<f64>) {
        results
            .iter()
            .map(|r| (m(&pick(r).homogeneous), m(&pick(r).heterogeneous)))
            .unzip()
    };
    let (vh, vx) = pairs(|r| &r.vanilla);
    let (bh, bx) = pairs(|r| &r.bct);
    let range = bx
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let r = RandomArchsReport {
        budget_mmacs: budget,
        window,
        spos_multiplier: space.multiplier,
        metric: study.metric,
        protocol: report.protocol.clone(),
        paragon: report.paragon.metrics.clone(),
        tau_vanilla: kendall_tau(&vh, &vx),
        tau_bct: kendall_tau(&bh, &bx),
        bct_heterogeneous_range: range,
        archs: results,
    };
    write_plots(&r, out)?;
    write(&out.join("random_archs.json"), &to_json(&r))?;
    write(&out.join("random_archs.md"), &markdown(&r))?;
    Ok(r)
}

fn write_plots(r: &RandomArchsReport, out: &Path) -> Result<(), StudyError> {
    let metric = label(&r.metric);
    let m = |t: &Metrics| metric_of(t, r.metric);
    let points = |f: &dyn Fn(&ArchResult) -> (f64, f64)| -> Vec<(f64, f64, String)> {
        r.archs
            .iter()
            .map(|a| {
                let (x, y) = f(a);
                (x, y, String::new())
            })
            .collect()
    };
    let a = scatter(
        &format!(
            "(a) heterogeneous {metric} vs MMACs, BCT, {} random architectures",
            r.archs.len()
        ),
        "query MMACs",
        &format!("heterogeneous {metric}"),
        &[Series {
            name: "BCT",
            color: "#d62728",
            points: points(&|a| (a.mmacs, m(&a.bct.heterogeneous))),
        }],
        false,
        false,
    );
    let hom_het = |title: &str,
                   name: &'static str,
                   color: &'static str,
                   pick: fn(&ArchResult) -> &Trained| {
        scatter(
            title,
            &format!("homogeneous {metric}"),
            &format!("heterogeneous {metric}"),
            &[Series {
                name,
                color,
                points: points(&|a| (m(&pick(a).homogeneous), m(&pick(a).heterogeneous))),
            }],
            false,
            false,
        )
    };
    let b = hom_het(
        &format!("(b) vanilla training: Kendall tau {:.3}", r.tau_vanilla),
        "vanilla",
        "#1f77b4",
        |a| &a.vanilla,
    );
    let c = hom_het(
        &format!("(c) BCT: Kendall tau {:.3}", r.tau_bct),
        "BCT",
        "#d62728",
        |a| &a.bct,
    );
    write(&out.join("a_het_vs_mmacs.svg"), &a)?;
    write(&out.join("b_vanilla_hom_vs_het.svg"), &b)?;
    write(&out.join("c_bct_hom_vs_het.svg"), &c)
}

pub fn markdown(r: &RandomArchsReport) -> String {
    let metric = label(&r.metric);
    let m = |t: &Metrics| pct(metric_of(t, r.metric));
    let mut s = format!(
        "# Architecture-level compatibility: {} random architectures\n\n{}\n\nSPOS space x{} within {:.0}% of \
         {:.2} MMACs; {metric} in %. Paragon: {}.\n\n",
        r.archs.len(),
        r.protocol,
        r.spos_multiplier,
        100.0 * r.window,
        r.budget_mmacs,
        m(&r.paragon)
    );
    s += &format!(
        "- (a) heterogeneous {metric} under BCT ranges from {} to {} at about the same MMACs.\n",
        pct(r.bct_heterogeneous_range.0),
        pct(r.bct_heterogeneous_range.1)
    );
    s += &format!(
        "- Kendall tau of homogeneous vs heterogeneous {metric}: (b) vanilla {:.3}, (c) BCT {:.3}.\n\n",
        r.tau_vanilla, r.tau_bct
    );
    s += "| Architecture | MMACs | Vanilla hom. | Vanilla het. | BCT hom. | BCT het. |\n";
    s += "|---|---:|---:|---:|---:|---:|\n";
    for a in &r.archs {
        s += &format!(
            "| {} | {:.2} | {} | {} | {} | {} |\n",
            a.name,
            a.mmacs,
            m(&a.vanilla.homogeneous),
            m(&a.vanilla.heterogeneous),
            m(&a.bct.homogeneous),
            m(&a.bct.heterogeneous)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use hetvis_models::arch::{SposSpace, Stem};

    #[test]
    fn drawn_architectures_are_distinct_and_near_the_budget() {
        let space = SposSpace::new(0.5, Stem::Imagenet);
        let cost = |a: &SposSpec| {
            crate::pipeline::mmacs(&hetvis_models::arch::ModelSpec::new(
                Backbone::Spos(a.clone()),
                32,
                16,
            ))
        };
        let reference = cost(&SposSpec::reference_in(space.clone()));
        let drawn = draw(8, reference, 0.15, 3, &space, cost).unwrap();
        assert_eq!(drawn.len(), 8);
        let keys: HashSet<_> = drawn.iter().map(|(a, _)| (&a.blocks, &a.widths)).collect();
        assert_eq!(keys.len(), 8);
        for (a, m) in &drawn {
            assert!(
                (m / reference - 1.0).abs() <= 0.15 + 1e-12,
                "{m} vs {reference}"
            );
            assert_eq!(*m, cost(a));
        }
        // Seeded: the same draw again.
        let again = draw(8, reference, 0.15, 3, &space, cost).unwrap();
        assert_eq!(drawn[0].0, again[0].0);
        // An impossible window is an error, not a hang.
        assert!(draw(1, reference * 100.0, 0.01, 3, &space, cost).is_err());
    }
}
