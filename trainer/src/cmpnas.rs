//! CMP-NAS: BCT training of the super-network, then the compatibility-aware search over it.

use std::path::{Path, PathBuf};

use hetvis_models::arch::{Backbone, SposSpace, SposSpec};
use hetvis_models::metrics::{evaluate as retrieval, Labelled, MetricsConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::compat::CompatPreset;
use crate::data::{Dataset, Split3};
use crate::preset::{ClassifierPreset, CmpNasPreset, RewardMetric, Schedule, SupernetPreset};
use crate::search::{self, Candidate, Rewards, SearchConfig};
use crate::supernet::{recalibrate_bn, transition, ChildSampler, SuperNet};
use crate::tch_net::TchNet;
use crate::train::{
    compatibility_loss, fit, gallery_embeddings, FitConfig, GalleryRun, TrainError,
};

/// How the super-network is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SupernetLoss {
    /// Own classifier plus BCT's influence loss through the gallery's frozen classifier.
    Bct,
    /// Own classifier only (the ablation).
    Vanilla,
}

/// Which reward the search maximises (paper Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reward {
    /// R1 = M(q, q): what ordinary NAS optimises.
    R1,
    /// R2 = M(q, g): heterogeneous accuracy only.
    R2,
    /// R3 = w_hom * M(q, q) + w_het * M(q, g).
    R3,
}

/// What a super-network directory holds besides its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupernetRun {
    pub space: SposSpace,
    pub input_size: usize,
    pub embedding_dim: usize,
    pub classes: usize,
    pub loss: SupernetLoss,
    pub gallery: PathBuf,
    pub classifier: ClassifierPreset,
    pub preset: SupernetPreset,
    pub bct_weight: f64,
    /// The compatibility objective of a `bct` super-network (absent in the records of plain-BCT runs).
    #[serde(default, skip_serializing_if = "CompatPreset::is_default")]
    pub compat: CompatPreset,
    pub seed: u64,
    /// The budget (MMACs) the sampling epochs' children are narrowed to fit, for
    /// [`ChildSampling::UnderBudget`]; `None` for uniform children (and runs written before this existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_under_mmacs: Option<f64>,
}

impl SupernetRun {
    /// A fresh super-network of this run's shape.
    pub fn build(&self, device: Device) -> Result<SuperNet, hetvis_models::arch::ArchError> {
        SuperNet::new(
            self.space.clone(),
            self.input_size,
            self.embedding_dim,
            self.classes,
            self.classifier,
            device,
        )
    }
}

/// The record of a super-network directory (`supernet.json`), without loading its weights.
pub fn read_run(dir: &Path) -> Result<SupernetRun, TrainError> {
    let path = dir.join("supernet.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::File {
        path: path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::File {
        path,
        message: e.to_string(),
    })
}

/// Trains (or resumes, or finds finished) the super-network in `dir` and returns it.
pub fn train_supernet(
    dir: &Path,
    run: &SupernetRun,
    data: &Dataset,
    device: Device,
    augment: bool,
) -> Result<SuperNet, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::File {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    crate::train::claim_record(dir, &dir.join("supernet.json"), run)?;
    let gallery = GalleryRun::load(&run.gallery, run.classifier, device)?;
    // Seeded like every training run, so the initial weights and batch order do not depend on what ran
    // earlier in this process.
    tch::manual_seed(run.seed as i64);
    let mut sn = run.build(device)?;
    if run.loss == SupernetLoss::Bct
        && run.classifier.init == crate::preset::HeadInit::Gallery
        && !sn.head.start_from(&gallery.head)
    {
        tracing::warn!("gallery classifier has other classes; the super-network starts a new one");
    }
    let mut rng = StdRng::seed_from_u64(run.seed);
    let p = run.preset;
    let name = dir
        .file_name()
        .map_or("supernet".into(), |s| s.to_string_lossy().into_owned());
    let mut vs = std::mem::replace(&mut sn.vs, tch::nn::VarStore::new(device));
    let steps_per_epoch = (data.train.len() / p.batch).max(1);
    let (mut step_epoch, mut step_in_epoch) = (usize::MAX, 0);
    let cached = match run.loss {
        SupernetLoss::Bct if run.compat.objective.needs_gallery_embeddings() => {
            Some(gallery_embeddings(&gallery, &run.compat, data, device)?)
        }
        _ => None,
    };
    let sampler = ChildSampler::new(&sn, run.train_under_mmacs)?;
    let probe = ChildProbe::new(&sn, &sampler, run.seed);
    let result = fit(
        &FitConfig {
            dir,
            name: &name,
            schedule: Schedule {
                epochs: p.epochs,
                batch: p.batch,
                lr: p.lr,
            },
            augment,
        },
        &mut vs,
        data,
        device,
        |x, y, rows, epoch| {
            let e = if epoch < p.warmup_epochs {
                sn.warmup.forward_t(x, true)
            } else if epoch < p.warmup_epochs + p.transition_epochs {
                if epoch != step_epoch {
                    (step_epoch, step_in_epoch) = (epoch, 0);
                }
                let done = (epoch - p.warmup_epochs) * steps_per_epoch + step_in_epoch;
                step_in_epoch += 1;
                let progress = done as f64 / (p.transition_epochs * steps_per_epoch) as f64;
                sn.mixture(&transition(progress, &mut rng))
                    .expect("transition paths lower")
                    .forward_t(x, true)
            } else {
                let arch = sampler.draw(&sn, &mut rng);
                sn.child(&arch)
                    .expect("sampled architectures lower")
                    .forward_t(x, true)
            };
            let mut loss = sn.head.loss(&e, y) * run.compat.cls_weight;
            if run.loss == SupernetLoss::Bct {
                loss += compatibility_loss(
                    &run.compat,
                    run.bct_weight,
                    &gallery,
                    cached.as_ref(),
                    &e,
                    y,
                    rows,
                );
            }
            let correct = sn
                .head
                .logits(&e, None)
                .argmax(-1, false)
                .eq_tensor(y)
                .sum(Kind::Int64);
            (loss, correct)
        },
        || probe.accuracy(&sn, data),
    );
    sn.vs = vs;
    result?;
    Ok(sn)
}

/// The validation signal of super-network training: the mean own-head accuracy of a few fixed random children
/// (drawn as the training children are), each with BN recalibrated. (The train accuracy of the warm-up or transition paths says little about the
/// single-path children the search will score.)
struct ChildProbe {
    children: Vec<SposSpec>,
}

impl ChildProbe {
    const CHILDREN: usize = 3;
    const BN_BATCHES: usize = 5;
    const VAL_LIMIT: usize = 2000;

    fn new(sn: &SuperNet, sampler: &ChildSampler, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        Self {
            children: (0..Self::CHILDREN)
                .map(|_| sampler.draw(sn, &mut rng))
                .collect(),
        }
    }

    fn accuracy(&self, sn: &SuperNet, data: &Dataset) -> f64 {
        let n = data.val.len().min(Self::VAL_LIMIT) as i64;
        if n == 0 {
            return f64::NAN;
        }
        let val = Split3 {
            x: data.val.x.narrow(0, 0, n),
            y: data.val.y.narrow(0, 0, n),
        };
        let mut sum = 0.0;
        for arch in &self.children {
            let Ok(mut child) = sn.child(arch) else {
                return f64::NAN;
            };
            recalibrate_bn(&mut child, &data.train, Self::BN_BATCHES, 128);
            let e = embed(&child, &val, 0);
            let pred = tch::no_grad(|| sn.head.logits(&e, None).argmax(-1, false));
            sum += pred
                .eq_tensor(&val.y)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
        }
        sum / self.children.len() as f64
    }
}

/// Loads a finished (or partly trained) super-network from its directory.
pub fn load_supernet(dir: &Path, device: Device) -> Result<(SuperNet, SupernetRun), TrainError> {
    let run = read_run(dir)?;
    let mut sn = run.build(device)?;
    sn.vs.load(dir.join("checkpoint.safetensors"))?;
    Ok((sn, run))
}

/// Embeds a split with a tch network in inference mode.
pub fn embed(net: &TchNet, split: &Split3, limit: usize) -> Tensor {
    let n = if limit == 0 {
        split.len()
    } else {
        limit.min(split.len())
    };
    tch::no_grad(|| {
        let parts: Vec<Tensor> = (0..n)
            .step_by(512)
            .map(|s| net.forward_t(&split.x.narrow(0, s as i64, 512.min(n - s) as i64), false))
            .collect();
        Tensor::cat(&parts, 0)
    })
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default()
}

/// Scores candidates: recalibrate BN, embed the validation split, M(q, q) and M(q, g) against the gallery's
/// validation embeddings (computed once).
pub struct Evaluator<'a> {
    data: &'a Dataset,
    gallery_val: Vec<f32>,
    labels: Vec<u32>,
    limit: usize,
    bn_batches: usize,
    bn_batch: usize,
    metric: RewardMetric,
    reward: Reward,
    r3_weights: (f64, f64),
}

impl<'a> Evaluator<'a> {
    /// The search's evaluator: the preset's validation subset and BN batches.
    pub fn new(
        data: &'a Dataset,
        gallery: &GalleryRun,
        preset: &CmpNasPreset,
        reward: Reward,
        bn_batch: usize,
    ) -> Self {
        Self::sized(
            data,
            gallery,
            preset,
            reward,
            bn_batch,
            preset.val_limit,
            preset.bn_batches,
        )
    }

    /// The evaluator that re-scores the search's best ([`Rescore`]): the whole validation split.
    pub fn rescorer(
        data: &'a Dataset,
        gallery: &GalleryRun,
        preset: &CmpNasPreset,
        reward: Reward,
        bn_batch: usize,
    ) -> Self {
        let bn_batches = preset.rescore.bn_batches.max(preset.bn_batches);
        Self::sized(data, gallery, preset, reward, bn_batch, 0, bn_batches)
    }

    /// `val_limit` validation images (0 = all) and `bn_batches` BN batches.
    fn sized(
        data: &'a Dataset,
        gallery: &GalleryRun,
        preset: &CmpNasPreset,
        reward: Reward,
        bn_batch: usize,
        val_limit: usize,
        bn_batches: usize,
    ) -> Self {
        let limit = if val_limit == 0 {
            data.val.len()
        } else {
            val_limit.min(data.val.len())
        };
        let labels = data.val.labels()[..limit].to_vec();
        Self {
            data,
            gallery_val: to_vec(&embed(&gallery.net, &data.val, limit)),
            labels,
            limit,
            bn_batches,
            bn_batch,
            metric: preset.reward_metric,
            reward,
            r3_weights: preset.r3_weights,
        }
    }

    pub fn evaluate(&self, sn: &SuperNet, arch: &SposSpec) -> Result<Rewards, String> {
        let mut child = sn.child(arch).map_err(|e| e.to_string())?;
        recalibrate_bn(&mut child, &self.data.train, self.bn_batches, self.bn_batch);
        let q = to_vec(&embed(&child, &self.data.val, self.limit));
        let dim = sn.embedding_dim;
        let cfg = MetricsConfig {
            leave_one_out: true,
            fars: if self.metric == RewardMetric::TarAtFar1e3 {
                vec![1e-3]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let qe = Labelled::new(&q, &self.labels, dim);
        let ge = Labelled::new(&self.gallery_val, &self.labels, dim);
        let hom = self.metric.of(&retrieval(qe, qe, &cfg));
        let het = self.metric.of(&retrieval(qe, ge, &cfg));
        let reward = match self.reward {
            Reward::R1 => hom,
            Reward::R2 => het,
            Reward::R3 => self.r3_weights.0 * hom + self.r3_weights.1 * het,
        };
        Ok(Rewards {
            homogeneous: hom,
            heterogeneous: het,
            reward,
        })
    }
}

/// The outcome of a search directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchSummary {
    pub max_mmacs: f64,
    pub reward: Reward,
    pub metric: RewardMetric,
    pub evaluated: usize,
    /// The winner: the best finalist when the search re-scored its best, else the best candidate logged.
    pub best: Candidate,
    /// Best-so-far and mean reward per generation.
    pub per_generation: Vec<(usize, f64, f64)>,
    /// The search's best candidates with their rewards re-scored on the whole validation split, best first
    /// ([`Rescore`]); empty when the search did not re-score.
    #[serde(default)]
    pub finalists: Vec<Candidate>,
    /// How the finalists were re-scored, so a re-run can reuse them instead of scoring again (which, on
    /// another thread count or device, could reorder a close pair and change a finished winner).
    #[serde(default)]
    pub rescored_with: Option<RescoreBasis>,
}

/// The finalists' count and the evaluation they were re-scored with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RescoreBasis {
    pub top: usize,
    pub val_images: usize,
    pub bn_batches: usize,
}

/// The best `n` distinct networks of `space`, best first. A log written before searches compared canonical
/// widths ([`SposSpec::canonical`]) can hold one network under two choice vectors; only its first is kept.
pub fn best_n(all: &[Candidate], n: usize, space: &SposSpace) -> Vec<Candidate> {
    let mut v = all.to_vec();
    v.sort_by(|a, b| b.rewards.reward.total_cmp(&a.rewards.reward));
    let mut networks = std::collections::HashSet::new();
    v.retain(|c| networks.insert(search::key(&c.spec(space))));
    v.truncate(n);
    v
}

/// Re-scores the `top` best networks of `all` with `score`; returns them best first by the new reward.
pub fn rescore(
    all: &[Candidate],
    top: usize,
    space: &SposSpace,
    mut score: impl FnMut(&Candidate) -> Result<Rewards, String>,
) -> Result<Vec<Candidate>, String> {
    let mut finalists = best_n(all, top, space);
    for c in &mut finalists {
        c.rewards = score(c)?;
    }
    finalists.sort_by(|a, b| b.rewards.reward.total_cmp(&a.rewards.reward));
    Ok(finalists)
}

/// What a search directory's log was scored with, kept in its `search.json`. A re-run resumes only the same
/// search: another seed, reward, budget or validation subset would append its candidates to the log and mix
/// two searches' rewards without a word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRun {
    pub config: SearchConfig,
    pub max_mmacs: f64,
    pub reward: Reward,
    pub metric: RewardMetric,
    pub r3_weights: (f64, f64),
    pub val_images: usize,
    pub bn_batches: usize,
    pub space: SposSpace,
}

/// Records `run` in `out/search.json`, or checks it against the one recorded there. A log without a record (a
/// search older than the record) is adopted as it stands.
pub fn claim_search_dir(out: &Path, run: &SearchRun) -> Result<(), TrainError> {
    let path = out.join("search.json");
    if !path.exists() && out.join("search_log.jsonl").exists() {
        tracing::warn!(
            "{}: a search log without search.json (an older search); resuming it as this search",
            out.display()
        );
    }
    crate::train::claim_record(out, &path, run)
}

/// Runs (or resumes) a search into `out`. With `rescore` (an evaluator and a count), the winner is the best of
/// that many of the search's best, re-scored ([`Rescore`]).
#[allow(clippy::too_many_arguments)]
pub fn search_dir(
    out: &Path,
    sn: &SuperNet,
    evaluator: &Evaluator,
    rescorer: Option<(&Evaluator, usize)>,
    config: &SearchConfig,
    max_mmacs: f64,
    reward: Reward,
    metric: RewardMetric,
) -> Result<SearchSummary, TrainError> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::File {
        path: out.to_owned(),
        message: e.to_string(),
    })?;
    claim_search_dir(
        out,
        &SearchRun {
            config: *config,
            max_mmacs,
            reward,
            metric,
            r3_weights: evaluator.r3_weights,
            val_images: evaluator.limit,
            bn_batches: evaluator.bn_batches,
            space: sn.space.clone(),
        },
    )?;
    let mmacs = |a: &SposSpec| sn.child_mmacs(a);
    let bar = crate::progress::bar(
        config.generations as u64,
        "{prefix:>12} [{bar:25}] gen {pos}/{len} {msg} (eta {eta})",
    );
    bar.set_prefix("search");
    let mut per_generation = Vec::new();
    let all = search::run(
        &sn.space,
        config,
        max_mmacs,
        &out.join("search_log.jsonl"),
        mmacs,
        |a| evaluator.evaluate(sn, a),
        |g, best, mean| {
            per_generation.push((g, best, mean));
            bar.set_message(format!("best {best:.4} mean {mean:.4}"));
            bar.inc(1);
            tracing::info!(generation = g, best, mean, "search generation done");
        },
    )
    .map_err(|e| TrainError::File {
        path: out.to_owned(),
        message: e.to_string(),
    })?;
    bar.finish_and_clear();
    let no_candidate = || TrainError::File {
        path: out.to_owned(),
        message: "no candidate evaluated".into(),
    };
    let previous: Option<SearchSummary> = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let basis = rescorer
        .filter(|(_, top)| *top > 1)
        .map(|(r, top)| RescoreBasis {
            top,
            val_images: r.limit,
            bn_batches: r.bn_batches,
        });
    let reusable = previous.filter(|p| {
        p.evaluated == all.len() && p.rescored_with == basis && !p.finalists.is_empty()
    });
    let finalists = match (rescorer, reusable) {
        (Some(_), Some(p)) => {
            tracing::info!(
                "the finalists of this finished search were re-scored before; reusing them"
            );
            p.finalists
        }
        (Some((rescorer, top)), None) if top > 1 => {
            let score = |c: &Candidate| rescorer.evaluate(sn, &c.spec(&sn.space));
            let f = rescore(&all, top, &sn.space, score).map_err(|message| TrainError::File {
                path: out.to_owned(),
                message,
            })?;
            for (rank, c) in f.iter().enumerate() {
                tracing::info!(
                    rank,
                    generation = c.generation,
                    mmacs = c.mmacs,
                    reward = c.rewards.reward,
                    "finalist re-scored on the whole validation split"
                );
            }
            f
        }
        _ => Vec::new(),
    };
    let best = finalists
        .first()
        .or_else(|| search::best(&all))
        .cloned()
        .ok_or_else(no_candidate)?;
    let summary = SearchSummary {
        max_mmacs,
        reward,
        metric,
        evaluated: all.len(),
        best: best.clone(),
        per_generation,
        finalists,
        rescored_with: basis,
    };
    let write = |name: &str, text: String| -> Result<(), TrainError> {
        Ok(hetvis_models::atomic::write(
            &out.join(name),
            text.as_bytes(),
        )?)
    };
    let best_spec = Backbone::Spos(best.spec(&sn.space));
    write(
        "best.json",
        serde_json::to_string_pretty(&best_spec).unwrap_or_default(),
    )?;
    write(
        "summary.json",
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    write(
        "reward.svg",
        crate::plot::reward_per_generation(&summary.per_generation, &format!("{reward:?}")),
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::ChildSampling;

    fn candidate(reward: f64, layer0: u8) -> Candidate {
        let mut blocks = vec![0; 20];
        blocks[0] = layer0;
        Candidate {
            generation: 0,
            blocks,
            widths: vec![4; 20],
            mmacs: 1.0,
            rewards: Rewards {
                homogeneous: 0.0,
                heterogeneous: reward,
                reward,
            },
        }
    }

    #[test]
    fn rescoring_picks_among_the_best_by_the_new_reward_and_scores_no_others() {
        // Search rewards 0.9 > 0.8 > 0.7 > 0.6; on more data the third is the best and the first the worst.
        let all = vec![
            candidate(0.7, 2),
            candidate(0.9, 0),
            candidate(0.6, 3),
            candidate(0.8, 1),
        ];
        let truth = [0.5, 0.6, 0.8, 0.99];
        let mut scored = Vec::new();
        let finalists = rescore(&all, 3, &SposSpace::default(), |c| {
            scored.push(c.blocks[0]);
            let r = truth[c.blocks[0] as usize];
            Ok(Rewards {
                homogeneous: 0.0,
                heterogeneous: r,
                reward: r,
            })
        })
        .unwrap();
        scored.sort();
        assert_eq!(scored, [0, 1, 2], "only the three best are re-scored");
        let order: Vec<u8> = finalists.iter().map(|c| c.blocks[0]).collect();
        assert_eq!(order, [2, 1, 0]);
        assert_eq!(finalists[0].rewards.reward, 0.8);
    }

    #[test]
    fn the_best_networks_count_one_network_logged_under_two_width_choices_once() {
        // x0.1: width choices 0 and 1 of layer 3 are both one mid channel, so the two best are one network.
        let narrow = SposSpace::new(0.1, hetvis_models::arch::Stem::Small);
        let mut alias = candidate(0.9, 0);
        alias.widths[3] = 0;
        let mut twin = candidate(0.9, 0);
        twin.widths[3] = 1;
        let all = vec![alias, twin, candidate(0.8, 1), candidate(0.7, 2)];
        let top: Vec<(u8, u8)> = best_n(&all, 3, &narrow)
            .iter()
            .map(|c| (c.blocks[0], c.widths[3]))
            .collect();
        assert_eq!(top, [(0, 0), (1, 4), (2, 4)]);
        // In the full space those widths differ, and both are kept.
        assert_eq!(best_n(&all, 3, &SposSpace::default()).len(), 3);
        assert_eq!(best_n(&all, 3, &SposSpace::default())[1].widths[3], 1);
    }

    /// A `supernet.json` as written before under-budget sampling existed.
    const SUPERNET_BEFORE_UNDER_BUDGET: &str = r#"{"space": {"multiplier": 0.25, "stem": "small", "scaled_stem": false},
        "input_size": 32, "embedding_dim": 128, "classes": 10, "loss": "bct", "gallery": "g",
        "classifier": {"scale": 16.0, "margin": 0.2},
        "preset": {"epochs": 5, "warmup_epochs": 1, "transition_epochs": 1, "batch": 128, "lr": 0.1},
        "bct_weight": 1.0, "seed": 0}"#;

    #[test]
    fn a_super_network_written_before_under_budget_sampling_reads_as_uniform() {
        let run: SupernetRun = serde_json::from_str(SUPERNET_BEFORE_UNDER_BUDGET).unwrap();
        assert_eq!(run.preset.sampling, ChildSampling::Uniform);
        assert_eq!(run.train_under_mmacs, None);
        // And a uniform run still writes no budget, so it compares equal to what it read back.
        let text = serde_json::to_string(&run).unwrap();
        assert!(!text.contains("train_under_mmacs"), "{text}");
        // Only the tiny preset (which exercises the option end to end) trains children under the budget: at
        // 80x in the cpu preset it ranked its own winner first, which retrained worst of three (README).
        for (name, sampling) in [
            ("cpu", ChildSampling::Uniform),
            ("tiny", ChildSampling::UnderBudget),
            ("paper", ChildSampling::Uniform),
        ] {
            let p = crate::preset::load(name, None).unwrap();
            assert_eq!(p.cmpnas.supernet.sampling, sampling, "{name}");
        }
    }

    #[test]
    fn a_recorded_budget_reads_back_equal_so_the_super_network_resumes() {
        // A computed budget with 17 significant digits: serde_json without `float_roundtrip` parses this one
        // a unit in the last place off, and the resumed run would be refused as different.
        let mut run: SupernetRun = serde_json::from_str(SUPERNET_BEFORE_UNDER_BUDGET).unwrap();
        for budget in [
            0.09144338512092887,
            1.761992347826087,
            40.5 / 80.0,
            1.0 / 3.0,
        ] {
            run.train_under_mmacs = Some(budget);
            let back: SupernetRun =
                serde_json::from_str(&serde_json::to_string_pretty(&run).unwrap()).unwrap();
            assert_eq!(back, run, "{budget}");
        }
    }

    fn search_run(seed: u64) -> SearchRun {
        SearchRun {
            config: SearchConfig::paper(seed),
            max_mmacs: 40.5 / 23.0,
            reward: Reward::R3,
            metric: RewardMetric::MapAtR,
            r3_weights: (1.0, 1.0),
            val_images: 2000,
            bn_batches: 10,
            space: SposSpace::new(0.25, hetvis_models::arch::Stem::Small),
        }
    }

    #[test]
    fn a_search_directory_resumes_only_the_same_search() {
        let dir = tempfile::tempdir().unwrap();
        claim_search_dir(dir.path(), &search_run(0)).unwrap();
        assert!(dir.path().join("search.json").exists());
        claim_search_dir(dir.path(), &search_run(0)).unwrap();

        let err = claim_search_dir(dir.path(), &search_run(1)).unwrap_err();
        assert!(matches!(err, TrainError::ConfigMismatch { .. }), "{err}");
        assert!(err.to_string().contains("config.seed"), "{err}");
        let other_reward = SearchRun {
            reward: Reward::R2,
            ..search_run(0)
        };
        let err = claim_search_dir(dir.path(), &other_reward).unwrap_err();
        assert!(err.to_string().contains("reward"), "{err}");
        // The refused searches left the record as it was.
        claim_search_dir(dir.path(), &search_run(0)).unwrap();
    }

    #[test]
    fn a_search_log_older_than_the_record_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("search_log.jsonl"), "").unwrap();
        claim_search_dir(dir.path(), &search_run(3)).unwrap();
        let back: SearchRun =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("search.json")).unwrap())
                .unwrap();
        assert_eq!(back, search_run(3));
    }
}
