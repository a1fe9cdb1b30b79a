//! Architecture-level compatibility study (the article's Q1/Q2 figures): `n` random architectures of the SPOS
//! space near one FLOPs budget, each trained with BCT and without it (vanilla = `independent`).
//! - (a) heterogeneous accuracy vs MMACs under BCT: a spread at equal MMACs means the architecture matters;
//! - (b) homogeneous vs heterogeneous accuracy of the vanilla models and (c) of the BCT models, with Kendall's
//!   tau of each: a low tau in (b) says ordinary NAS (which ranks by homogeneous accuracy) cannot find the
//!   compatible architecture; a higher one in (c) says BCT makes the two rankings agree.
//!
//! - With `--supernet DIR` (a finished super-network of the same space and gallery), every drawn architecture is
//!   also scored by it as the search's finalists are (inherited weights, BN recalibrated, the whole validation
//!   split), and Kendall's tau of those scores against the retrained BCT accuracies says whether the
//!   super-network can rank architectures at all: a search over it is only as good as that ranking.
//!
//! Layout of `OUT`: `archs.json` (the drawn architectures), `arch-NN/{bct,independent}` run directories,
//! `eval/`, `random_archs.json`, `random_archs.md` and the plots `a_het_vs_mmacs.svg`,
//! `b_vanilla_hom_vs_het.svg`, `c_bct_hom_vs_het.svg`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, SposSpace, SposSpec};
use hetvis_models::runtime::SessionConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{evaluate, kendall_tau, label, metric_of, result, to_json, write, StudyError};
use crate::cmpnas::{self, Evaluator, Reward};
use crate::context::Context;
use crate::eval::pct;
use crate::eval::Metrics;
use crate::plot::{scatter, Series};
use crate::preset::RewardMetric;
use crate::sampling::sample;
use crate::search::Rewards;
use crate::tier::Tier;
use crate::train::{self, GalleryRun, QueryMode};

#[derive(Debug, Clone)]
pub struct RandomArchsStudy {
    pub n: usize,
    pub tier: Tier,
    /// The accuracy the plots and rank correlations use.
    pub metric: RewardMetric,
    pub seed: u64,
    /// A trained super-network to score the drawn architectures with (its ranking is then compared).
    pub supernet: Option<PathBuf>,
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
    /// The super-network's R3 score of this architecture (with `--supernet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supernet: Option<Rewards>,
}

/// Kendall's tau between a super-network's scores of the drawn architectures (R3 and its two parts, the
/// preset's reward metric on the validation split) and their retrained BCT accuracy (the study's metric, test
/// split). Near 0: the super-network cannot tell these architectures apart, whatever its search finds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupernetRanking {
    pub supernet: PathBuf,
    pub reward_metric: RewardMetric,
    /// R3's weights on its homogeneous and heterogeneous parts.
    pub r3_weights: (f64, f64),
    pub reward_vs_heterogeneous: f64,
    pub reward_vs_homogeneous: f64,
    pub heterogeneous_vs_heterogeneous: f64,
    pub homogeneous_vs_homogeneous: f64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supernet_ranking: Option<SupernetRanking>,
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
    let manifest = crate::train::gallery_manifest(gallery)?;
    let budget = study.tier.budget(manifest.mmacs);
    let space = crate::tier::space_for(ctx.preset, study.tier, budget);
    let window = ctx.preset.study.budget_window;
    let spec_of = |a: &SposSpec| ctx.preset.spec(Backbone::Spos(a.clone()));
    let archs = draw(study.n, budget, window, study.seed, &space, |a| {
        crate::tier::mmacs(&spec_of(a))
    })?;
    std::fs::create_dir_all(out).map_err(|e| StudyError::File {
        path: out.to_owned(),
        message: e.to_string(),
    })?;
    write(
        &out.join("archs.json"),
        &to_json(&archs.iter().map(|(a, m)| (a, m)).collect::<Vec<_>>()),
    )?;
    // Scored first: a super-network that cannot score these architectures fails before anything trains.
    let scores = match &study.supernet {
        Some(dir) => Some(score_with_supernet(ctx, gallery, dir, &space, &archs)?),
        None => None,
    };
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
            supernet: scores.as_ref().map(|s| s[i]),
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
        supernet_ranking: study.supernet.as_ref().map(|dir| {
            let c = &ctx.preset.cmpnas;
            supernet_ranking(dir, c.reward_metric, c.r3_weights, &results, &m)
        }),
        archs: results,
    };
    write_plots(&r, out)?;
    write(&out.join("random_archs.json"), &to_json(&r))?;
    write(&out.join("random_archs.md"), &markdown(&r))?;
    Ok(r)
}

/// Scores each architecture with a finished super-network of the same space and gallery, as the search
/// re-scores its finalists.
fn score_with_supernet(
    ctx: &Context,
    gallery: &Path,
    dir: &Path,
    space: &SposSpace,
    archs: &[(SposSpec, f64)],
) -> Result<Vec<Rewards>, StudyError> {
    let invalid = |why: String| StudyError::Invalid(format!("{}: {why}", dir.display()));
    // Checked before the weights load: another space's weights would fail to load with a shape error.
    let run = cmpnas::read_run(dir)?;
    let done = train::epochs_done(dir);
    if done < run.preset.epochs {
        return Err(invalid(format!(
            "the super-network has trained {done} of {} epochs",
            run.preset.epochs
        )));
    }
    if &run.space != space {
        return Err(invalid(format!(
            "a super-network of another space ({:?}) than the study's ({space:?})",
            run.space
        )));
    }
    let theirs = crate::train::gallery_manifest(&run.gallery).map_err(|e| {
        invalid(format!(
            "its gallery {} (the path as given when it was trained) is not readable: {e}",
            run.gallery.display()
        ))
    })?;
    if theirs.compat_id != crate::train::gallery_manifest(gallery)?.compat_id {
        return Err(invalid(format!(
            "trained against another gallery ({}) than the study's ({})",
            run.gallery.display(),
            gallery.display()
        )));
    }
    let (sn, _) = cmpnas::load_supernet(dir, ctx.device)?;
    let g = GalleryRun::load(gallery, ctx.preset.classifier, ctx.device)?;
    let evaluator = Evaluator::rescorer(
        ctx.data,
        &g,
        &ctx.preset.cmpnas,
        Reward::R3,
        run.preset.batch,
    );
    let bar = crate::progress::bar(
        archs.len() as u64,
        "scoring with the super-network {bar:30} {pos}/{len} {elapsed}",
    );
    let mut scores = Vec::with_capacity(archs.len());
    for (arch, _) in archs {
        scores.push(evaluator.evaluate(&sn, arch).map_err(invalid)?);
        bar.inc(1);
    }
    bar.finish();
    Ok(scores)
}

fn supernet_ranking(
    dir: &Path,
    reward_metric: RewardMetric,
    r3_weights: (f64, f64),
    results: &[ArchResult],
    m: &dyn Fn(&Metrics) -> f64,
) -> SupernetRanking {
    let scored: Vec<(&Rewards, &Trained)> = results
        .iter()
        .filter_map(|r| r.supernet.as_ref().map(|s| (s, &r.bct)))
        .collect();
    let tau = |score: fn(&Rewards) -> f64, acc: fn(&Trained) -> &Metrics| {
        let (x, y): (Vec<f64>, Vec<f64>) =
            scored.iter().map(|(s, t)| (score(s), m(acc(t)))).unzip();
        kendall_tau(&x, &y)
    };
    SupernetRanking {
        supernet: dir.to_owned(),
        reward_metric,
        r3_weights,
        reward_vs_heterogeneous: tau(|s| s.reward, |t| &t.heterogeneous),
        reward_vs_homogeneous: tau(|s| s.reward, |t| &t.homogeneous),
        heterogeneous_vs_heterogeneous: tau(|s| s.heterogeneous, |t| &t.heterogeneous),
        homogeneous_vs_homogeneous: tau(|s| s.homogeneous, |t| &t.homogeneous),
    }
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
    if let Some(k) = &r.supernet_ranking {
        s += &format!(
            "- Super-network `{}` (R3 = {} hom. + {} het. {}, validation split) against the retrained BCT \
             {metric}, Kendall tau: R3 vs het. {:.3}, R3 vs hom. {:.3}, its het. vs het. {:.3}, its hom. vs hom. \
             {:.3}.\n\n",
            k.supernet.display(),
            k.r3_weights.0,
            k.r3_weights.1,
            label(&k.reward_metric),
            k.reward_vs_heterogeneous,
            k.reward_vs_homogeneous,
            k.heterogeneous_vs_heterogeneous,
            k.homogeneous_vs_homogeneous
        );
    }
    let scored = r.supernet_ranking.is_some();
    s += "| Architecture | MMACs | Vanilla hom. | Vanilla het. | BCT hom. | BCT het. |";
    s += if scored {
        " Super-network hom. | het. | R3 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---:|---:|---:|---:|---:|\n"
    };
    for a in &r.archs {
        s += &format!(
            "| {} | {:.2} | {} | {} | {} | {} |",
            a.name,
            a.mmacs,
            m(&a.vanilla.homogeneous),
            m(&a.vanilla.heterogeneous),
            m(&a.bct.homogeneous),
            m(&a.bct.heterogeneous)
        );
        if let Some(w) = &a.supernet {
            s += &format!(
                " {:.3} | {:.3} | {:.3} |",
                w.homogeneous, w.heterogeneous, w.reward
            );
        } else if scored {
            s += " | | |";
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use hetvis_models::arch::{SposSpace, Stem};

    fn scored(name: &str, supernet: (f64, f64), retrained: (f64, f64)) -> ArchResult {
        let metrics = |top1: f64| Metrics {
            top1,
            top5: 0.0,
            top10: 0.0,
            map_at_r: 0.0,
            tar_at_far_1e_2: 0.0,
            tar_at_far_1e_3: 0.0,
            hubness: None,
        };
        let trained = Trained {
            homogeneous: metrics(retrained.0),
            heterogeneous: metrics(retrained.1),
        };
        ArchResult {
            name: name.into(),
            blocks: vec![],
            widths: vec![],
            mmacs: 0.5,
            bct: trained.clone(),
            vanilla: trained,
            supernet: Some(Rewards {
                homogeneous: supernet.0,
                heterogeneous: supernet.1,
                reward: supernet.0 + supernet.1,
            }),
        }
    }

    #[test]
    fn supernet_ranking_compares_its_scores_with_the_retrained_accuracies() {
        // The super-network orders heterogeneous accuracy exactly as retraining does and homogeneous exactly
        // the other way round; its R3 follows the heterogeneous part, which spreads more.
        let rank = |results: &[ArchResult]| {
            supernet_ranking(
                Path::new("sn"),
                RewardMetric::MapAtR,
                (1.0, 1.0),
                results,
                &|m: &Metrics| m.top1,
            )
        };
        let results = [
            scored("a", (0.50, 0.60), (0.80, 0.70)),
            scored("b", (0.52, 0.65), (0.79, 0.75)),
            scored("c", (0.54, 0.70), (0.78, 0.79)),
        ];
        let k = rank(&results);
        assert_eq!(k.heterogeneous_vs_heterogeneous, 1.0);
        assert_eq!(k.homogeneous_vs_homogeneous, -1.0);
        assert_eq!(k.reward_vs_heterogeneous, 1.0);
        assert_eq!(k.reward_vs_homogeneous, -1.0);
        // Swapping a and b's retrained heterogeneous accuracy: 2 concordant pairs, 1 discordant.
        let swapped = [
            scored("a", (0.50, 0.60), (0.80, 0.75)),
            scored("b", (0.52, 0.65), (0.79, 0.70)),
            scored("c", (0.54, 0.70), (0.78, 0.79)),
        ];
        let k = rank(&swapped);
        assert!((k.heterogeneous_vs_heterogeneous - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn drawn_architectures_are_distinct_and_near_the_budget() {
        let space = SposSpace::new(0.5, Stem::Imagenet);
        let cost = |a: &SposSpec| {
            crate::tier::mmacs(&hetvis_models::arch::ModelSpec::new(
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
