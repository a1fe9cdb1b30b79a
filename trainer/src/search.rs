//! Compatibility-aware evolutionary search over the SPOS space (SPOS's algorithm with the paper's settings).
//!
//! Generation 0 is `population` random architectures under the FLOPs limit. Each later generation keeps the
//! `select` best architectures seen so far (elitism across generations) as parents and makes `crossover`
//! children by uniform crossover of two parents and `population - crossover` by mutation (each layer's block and
//! width re-drawn with probability `mutation_prob`); any child is replaced by a fresh random architecture with
//! probability `random_prob`. Children over the FLOPs limit, and architectures already evaluated (compared as
//! networks: two width choices that round to one width are one choice), are rejected before evaluation. Every
//! evaluated candidate is appended to a JSONL log; a re-run resumes from it (each generation's random stream is
//! seeded from the seed and the generation, so a resumed run proposes the same candidates).

use std::collections::HashSet;
use std::path::Path;

use hetvis_models::arch::spos::{BLOCK_CHOICES, LAYERS, WIDTH_CHOICES};
use hetvis_models::arch::{SposSpace, SposSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::sampling::sample_under;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    pub generations: usize,
    pub population: usize,
    /// Parents kept from all generations so far.
    pub select: usize,
    /// Children made by crossover per generation; the rest of the population by mutation.
    pub crossover: usize,
    pub mutation_prob: f64,
    pub random_prob: f64,
    pub seed: u64,
}

impl SearchConfig {
    /// The paper's settings (SPOS's, with CMP-NAS's crossover size).
    pub fn paper(seed: u64) -> Self {
        Self {
            generations: 20,
            population: 50,
            select: 10,
            crossover: 40,
            mutation_prob: 0.1,
            random_prob: 0.1,
            seed,
        }
    }
}

/// What the evaluator reports for a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rewards {
    /// M(q, q) on the validation split.
    pub homogeneous: f64,
    /// M(q, g) on the validation split.
    pub heterogeneous: f64,
    /// The reward the search maximises.
    pub reward: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub generation: usize,
    pub blocks: Vec<u8>,
    pub widths: Vec<u8>,
    pub mmacs: f64,
    pub rewards: Rewards,
}

impl Candidate {
    pub fn spec(&self, space: &SposSpace) -> SposSpec {
        SposSpec {
            space: space.clone(),
            blocks: self.blocks.clone(),
            widths: self.widths.clone(),
        }
    }
}

pub type Key = (Vec<u8>, Vec<u8>);

/// What makes two architectures one network: blocks and canonical widths ([`SposSpec::canonical`]).
pub fn key(a: &SposSpec) -> Key {
    let c = a.canonical();
    (c.blocks, c.widths)
}

/// The choice vector as drawn (widths filled in), which is how the log records a candidate.
fn choices(a: &SposSpec) -> Key {
    (a.blocks.clone(), (0..LAYERS).map(|i| a.width(i)).collect())
}

/// Uniform crossover: each layer's (block, width) pair from one parent or the other.
pub fn crossover(a: &SposSpec, b: &SposSpec, rng: &mut impl Rng) -> SposSpec {
    let (mut blocks, mut widths) = (Vec::with_capacity(LAYERS), Vec::with_capacity(LAYERS));
    for i in 0..LAYERS {
        let p = if rng.random_bool(0.5) { a } else { b };
        blocks.push(p.blocks[i]);
        widths.push(p.width(i));
    }
    SposSpec {
        space: a.space.clone(),
        blocks,
        widths,
    }
}

/// Mutation: each layer's block and width independently re-drawn with probability `p`.
pub fn mutate(a: &SposSpec, p: f64, rng: &mut impl Rng) -> SposSpec {
    let mut m = a.clone();
    m.widths = (0..LAYERS).map(|i| a.width(i)).collect();
    for i in 0..LAYERS {
        if rng.random_bool(p) {
            m.blocks[i] = rng.random_range(0..BLOCK_CHOICES as u8);
        }
        if rng.random_bool(p) {
            m.widths[i] = rng.random_range(0..WIDTH_CHOICES as u8);
        }
    }
    m
}

/// Keeps the `k` best candidates, best first (ties: earlier evaluated first).
fn top_k(all: &[Candidate], k: usize) -> Vec<&Candidate> {
    let mut v: Vec<&Candidate> = all.iter().collect();
    v.sort_by(|a, b| b.rewards.reward.total_cmp(&a.rewards.reward));
    v.truncate(k);
    v
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search log {path}: {message}")]
    Log { path: String, message: String },
    #[error(
        "no architecture under {limit:.2} MMACs found after {tries} random draws; raise the limit"
    )]
    NothingUnderLimit { limit: f64, tries: usize },
    #[error("evaluating a candidate: {0}")]
    Evaluate(String),
}

/// Every candidate a search logged so far (none when the log does not exist yet).
pub fn read_log(log: &Path) -> Result<Vec<Candidate>, SearchError> {
    let log_err = |e: &dyn std::fmt::Display| SearchError::Log {
        path: log.display().to_string(),
        message: e.to_string(),
    };
    match std::fs::read_to_string(log) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| log_err(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(log_err(&e)),
    }
}

/// Runs (or resumes) the search. `mmacs(arch)` counts FLOPs; `evaluate(arch)` trains nothing, only scores.
/// `on_generation(g, best, mean)` reports progress. Returns every evaluated candidate.
pub fn run(
    space: &SposSpace,
    config: &SearchConfig,
    max_mmacs: f64,
    log: &Path,
    mut mmacs: impl FnMut(&SposSpec) -> f64,
    mut evaluate: impl FnMut(&SposSpec) -> Result<Rewards, String>,
    mut on_generation: impl FnMut(usize, f64, f64),
) -> Result<Vec<Candidate>, SearchError> {
    let log_err = |e: &dyn std::fmt::Display| SearchError::Log {
        path: log.display().to_string(),
        message: e.to_string(),
    };
    let mut all = read_log(log)?;
    let mut seen: HashSet<Key> = all.iter().map(|c| key(&c.spec(space))).collect();
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| log_err(&e))?;

    for generation in 0..config.generations {
        let mut rng = StdRng::seed_from_u64(
            config.seed ^ (generation as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        // Parents: the best of all earlier generations (elitism), as they stood when this generation began.
        let earlier: Vec<Candidate> = all
            .iter()
            .filter(|c| c.generation < generation)
            .cloned()
            .collect();
        let earlier_keys: HashSet<Key> = earlier.iter().map(|c| key(&c.spec(space))).collect();
        let parents: Vec<SposSpec> = top_k(&earlier, config.select)
            .iter()
            .map(|c| c.spec(space))
            .collect();
        // What this generation logged, as drawn: a log written before candidates were compared as networks can
        // hold a network twice, and its generations are replayed as they were proposed, not re-drawn.
        let logged: HashSet<Key> = all
            .iter()
            .filter(|c| c.generation == generation)
            .map(|c| choices(&c.spec(space)))
            .collect();
        let mut proposed: Vec<SposSpec> = Vec::new();
        let mut proposed_keys: HashSet<Key> = HashSet::new();
        let mut proposed_choices: HashSet<Key> = HashSet::new();
        let mut tries = 0usize;
        let budget = config.population * 200;
        while proposed.len() < config.population {
            tries += 1;
            if tries > budget {
                if proposed.is_empty() && all.is_empty() {
                    return Err(SearchError::NothingUnderLimit {
                        limit: max_mmacs,
                        tries,
                    });
                }
                break;
            }
            let child = if parents.len() < 2 || rng.random_bool(config.random_prob) {
                match sample_under(space, max_mmacs, &mut mmacs, &mut rng) {
                    Some(a) => a,
                    None => continue,
                }
            } else if proposed.len() < config.crossover {
                let a = &parents[rng.random_range(0..parents.len())];
                let b = &parents[rng.random_range(0..parents.len())];
                crossover(a, b, &mut rng)
            } else {
                mutate(
                    &parents[rng.random_range(0..parents.len())],
                    config.mutation_prob,
                    &mut rng,
                )
            };
            let k = key(&child);
            let drawn = choices(&child);
            if proposed_choices.contains(&drawn) {
                continue;
            }
            // Duplicates of this generation are skipped; candidates seen in earlier generations are known.
            if !logged.contains(&drawn)
                && (proposed_keys.contains(&k)
                    || earlier_keys.contains(&k)
                    || mmacs(&child) > max_mmacs)
            {
                continue;
            }
            proposed_keys.insert(k);
            proposed_choices.insert(drawn);
            proposed.push(child);
        }
        for arch in proposed {
            let k = key(&arch);
            if seen.contains(&k) {
                continue; // evaluated before an interruption
            }
            let rewards = evaluate(&arch).map_err(SearchError::Evaluate)?;
            let c = Candidate {
                generation,
                blocks: arch.blocks.clone(),
                widths: (0..LAYERS).map(|i| arch.width(i)).collect(),
                mmacs: mmacs(&arch),
                rewards,
            };
            use std::io::Write;
            let line = serde_json::to_string(&c).map_err(|e| log_err(&e))?;
            writeln!(writer, "{line}").map_err(|e| log_err(&e))?;
            seen.insert(k);
            all.push(c);
        }
        let this: Vec<f64> = all
            .iter()
            .filter(|c| c.generation == generation)
            .map(|c| c.rewards.reward)
            .collect();
        // Best so far as of this generation: on a resume `all` already holds later generations.
        let best = all
            .iter()
            .filter(|c| c.generation <= generation)
            .map(|c| c.rewards.reward)
            .fold(f64::NEG_INFINITY, f64::max);
        let mean = this.iter().sum::<f64>() / this.len().max(1) as f64;
        on_generation(generation, best, mean);
    }
    Ok(all)
}

/// The best candidate of a search.
pub fn best(all: &[Candidate]) -> Option<&Candidate> {
    top_k(all, 1).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::sample;
    use hetvis_models::arch::{Backbone, ModelSpec};

    fn space() -> SposSpace {
        SposSpace::default()
    }

    fn flops(a: &SposSpec) -> f64 {
        let spec = ModelSpec::new(Backbone::Spos(a.clone()), 32, 16);
        hetvis_models::flops::count(&spec.lower().unwrap())
            .unwrap()
            .mmacs()
    }

    /// Layers whose block matches a target pattern: a property the search can climb.
    fn block_pattern_reward(a: &SposSpec) -> Result<Rewards, String> {
        let x = (0..LAYERS)
            .filter(|&i| a.blocks[i] as usize == i % 4)
            .count() as f64;
        Ok(Rewards {
            homogeneous: 0.0,
            heterogeneous: x,
            reward: x,
        })
    }

    /// Runs a search again over its log with [`block_pattern_reward`]: every candidate, how many it evaluated,
    /// and the best reward it reported per generation.
    fn resume(
        space: &SposSpace,
        config: &SearchConfig,
        limit: f64,
        log: &Path,
    ) -> (Vec<Candidate>, usize, Vec<f64>) {
        let (mut evaluated, mut bests) = (0, Vec::new());
        let all = run(
            space,
            config,
            limit,
            log,
            flops,
            |a| {
                evaluated += 1;
                block_pattern_reward(a)
            },
            |_, best, _| bests.push(best),
        )
        .unwrap();
        (all, evaluated, bests)
    }

    #[test]
    fn uniform_sampling_covers_every_choice() {
        let mut rng = StdRng::seed_from_u64(1);
        let (mut blocks, mut widths) = ([0usize; BLOCK_CHOICES], [0usize; WIDTH_CHOICES]);
        for _ in 0..400 {
            let a = sample(&space(), &mut rng);
            a.validate().unwrap();
            a.blocks.iter().for_each(|&b| blocks[b as usize] += 1);
            a.widths.iter().for_each(|&w| widths[w as usize] += 1);
        }
        // 8000 draws each: every choice appears, roughly uniformly.
        assert!(
            blocks.iter().all(|&c| (1700..2300).contains(&c)),
            "{blocks:?}"
        );
        assert!(
            widths.iter().all(|&c| (650..950).contains(&c)),
            "{widths:?}"
        );
    }

    #[test]
    fn crossover_takes_every_layer_from_a_parent_and_mutation_is_rare() {
        let mut rng = StdRng::seed_from_u64(2);
        let a = SposSpec {
            space: space(),
            blocks: vec![0; LAYERS],
            widths: vec![0; LAYERS],
        };
        let b = SposSpec {
            space: space(),
            blocks: vec![3; LAYERS],
            widths: vec![9; LAYERS],
        };
        let c = crossover(&a, &b, &mut rng);
        for i in 0..LAYERS {
            assert!(
                (c.blocks[i], c.widths[i]) == (0, 0) || (c.blocks[i], c.widths[i]) == (3, 9),
                "layer {i}"
            );
        }
        assert!(c.blocks.contains(&0) && c.blocks.contains(&3));
        let changed: usize = (0..200)
            .map(|_| {
                let m = mutate(&a, 0.1, &mut rng);
                (0..LAYERS).filter(|&i| m.blocks[i] != 0).count()
                    + (0..LAYERS).filter(|&i| m.widths[i] != 0).count()
            })
            .sum();
        // Expected: 200 x 40 genes x 0.1 x (3/4 or 9/10 chance the redraw differs) ~ 660.
        assert!((450..900).contains(&changed), "{changed}");
        assert_eq!(mutate(&a, 0.0, &mut rng), a);
    }

    #[test]
    fn rejects_over_budget_keeps_elites_and_never_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.jsonl");
        let limit = flops(&SposSpec::reference()) * 0.8;
        let config = SearchConfig {
            generations: 4,
            population: 12,
            select: 4,
            crossover: 8,
            mutation_prob: 0.1,
            random_prob: 0.1,
            seed: 3,
        };
        let reward = block_pattern_reward;
        let mut bests = Vec::new();
        let all = run(
            &space(),
            &config,
            limit,
            &log,
            flops,
            reward,
            |_, best, _| bests.push(best),
        )
        .unwrap();
        assert!(all.iter().all(|c| c.mmacs <= limit));
        let keys: HashSet<Key> = all.iter().map(|c| key(&c.spec(&space()))).collect();
        assert_eq!(keys.len(), all.len(), "an architecture was evaluated twice");
        // Elitism: the best reward so far never drops, and it improves on generation 0.
        assert!(bests.windows(2).all(|w| w[1] >= w[0]), "{bests:?}");
        assert!(bests[3] > bests[0], "{bests:?}");
        // Resuming from the log evaluates nothing new for finished generations.
        let (again, evaluated, resumed_bests) = resume(&space(), &config, limit, &log);
        assert_eq!(evaluated, 0);
        // ... and reports the same progress per generation, not the final best for every one.
        assert_eq!(resumed_bests, bests);
        assert_eq!(again.len(), all.len());
    }

    #[test]
    fn a_logged_network_is_known_under_either_of_two_width_choices_that_make_it() {
        // x0.1 (the 80x tier): in the first stage, scales 0.2 and 0.4 both round to one mid channel, and 1.0
        // and 1.2 to four. Rewrite a finished search's log with the twin choices (the same networks, the same
        // rewards): resumed, the search must find every network it proposes already evaluated.
        let space = SposSpace::new(0.1, hetvis_models::arch::Stem::Small);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("search_log.jsonl");
        let config = SearchConfig {
            generations: 4,
            population: 12,
            select: 4,
            crossover: 6,
            mutation_prob: 0.1,
            random_prob: 0.1,
            seed: 5,
        };
        let reward = block_pattern_reward;
        let limit = flops(&SposSpec::reference_in(space.clone()));
        let all = run(&space, &config, limit, &log, flops, reward, |_, _, _| {}).unwrap();
        let networks: HashSet<Key> = all.iter().map(|c| key(&c.spec(&space))).collect();
        assert_eq!(networks.len(), all.len(), "one network evaluated twice");

        let mut twins = 0;
        let lines: Vec<String> = all
            .iter()
            .map(|c| {
                let mut t = c.clone();
                for w in &mut t.widths[..4] {
                    if *w == 0 || *w == 4 {
                        *w += 1;
                        twins += 1;
                    }
                }
                assert_eq!(key(&t.spec(&space)), key(&c.spec(&space)));
                serde_json::to_string(&t).unwrap()
            })
            .collect();
        assert!(twins > 0);
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let (again, evaluated, _) = resume(&space, &config, limit, &log);
        assert_eq!(
            evaluated, 0,
            "a logged network evaluated again under its twin choice"
        );
        assert_eq!(again.len(), all.len());
    }

    #[test]
    fn random_candidates_fit_a_budget_at_the_narrow_end_of_the_space() {
        let space = space();
        let narrowest = SposSpec {
            space: space.clone(),
            blocks: vec![0; LAYERS],
            widths: vec![0; LAYERS],
        };
        // Just above the narrowest child: uniform draws essentially never fit.
        let limit = flops(&narrowest) * 1.3;
        let mut rng = StdRng::seed_from_u64(5);
        let uniform_fits = (0..100)
            .filter(|_| flops(&sample(&space, &mut rng)) <= limit)
            .count();
        assert_eq!(uniform_fits, 0);
        let mut count = flops;
        let drawn: Vec<SposSpec> = (0..30)
            .filter_map(|_| sample_under(&space, limit, &mut count, &mut rng))
            .collect();
        assert!(drawn.len() >= 15, "only {} of 30 fit", drawn.len());
        assert!(drawn.iter().all(|a| flops(a) <= limit));
        // Still varied: blocks as drawn, and not all the same architecture.
        let distinct: HashSet<Key> = drawn.iter().map(key).collect();
        assert_eq!(distinct.len(), drawn.len());
        assert!(drawn.iter().any(|a| a.blocks.contains(&3)));
        // An impossible budget gives nothing rather than looping.
        assert!(sample_under(&space, 0.001, &mut count, &mut rng).is_none());
    }

    #[test]
    fn an_impossible_budget_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = SearchConfig {
            generations: 1,
            population: 2,
            ..SearchConfig::paper(0)
        };
        let err = run(
            &space(),
            &config,
            0.001,
            &dir.path().join("l"),
            flops,
            |_| unreachable!(),
            |_, _, _| {},
        );
        assert!(matches!(err, Err(SearchError::NothingUnderLimit { .. })));
    }
}
