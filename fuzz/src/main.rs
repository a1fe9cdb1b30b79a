//! `hetvis-fuzz`: deterministic mutation fuzzing of the paths that take untrusted bytes, on stable Rust.
//!
//! `seed` writes the seed corpus; `run --target preprocess` decodes and preprocesses mutated images and checks
//! that no case panics or allocates above [`ImageLimits::peak_bytes`]; `run --target multipart` feeds mutated
//! bodies to the server's multipart readers (search and gallery upload) and checks that none panics. `make fuzz`
//! runs both with fixed case counts and seed.

mod alloc;
mod mutate;
mod seeds;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use clap::{Parser, Subcommand, ValueEnum};
use hetvis_models::preprocess::{preprocess_bytes, ImageLimits, PreprocessError, Preprocessing};
use hetvis_server::routes::{gallery, image_body};

use mutate::{mutate, Rng};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

#[derive(Debug, Parser)]
#[command(
    name = "hetvis-fuzz",
    about = "Deterministic mutation fuzzing of untrusted-input paths"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Target {
    /// Image decode + preprocess (the server's and indexer's path for every uploaded image).
    Preprocess,
    /// The server's multipart readers: `POST /search` and `POST /gallery` bodies.
    Multipart,
}

impl Target {
    fn dir(self) -> &'static str {
        match self {
            Target::Preprocess => "preprocess",
            Target::Multipart => "multipart",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the seed corpus (one folder per target).
    Seed {
        #[arg(long, env = "HETVIS_FUZZ_CORPUS", default_value = "fuzz/corpus")]
        corpus: PathBuf,
    },
    /// Runs mutated cases of one target.
    Run {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long, env = "HETVIS_FUZZ_CORPUS", default_value = "fuzz/corpus")]
        corpus: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        cases: u64,
        /// Seed of the mutations: the same seed replays the same cases.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where inputs that failed a check are written.
        #[arg(long, default_value = "target/fuzz-findings")]
        findings: PathBuf,
        #[arg(long)]
        no_progress: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed { corpus } => write_seeds(&corpus),
        Command::Run {
            target,
            corpus,
            cases,
            seed,
            findings,
            no_progress,
        } => run(target, &corpus, cases, seed, &findings, !no_progress),
    }
}

fn write_seeds(corpus: &Path) -> anyhow::Result<()> {
    for (target, files) in [
        (Target::Preprocess, seeds::images()),
        (Target::Multipart, seeds::multipart()),
    ] {
        let dir = corpus.join(target.dir());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in files {
            std::fs::write(dir.join(&name), bytes).with_context(|| format!("writing {name}"))?;
        }
    }
    println!("seed corpus written to {}", corpus.display());
    Ok(())
}

fn read_corpus(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "reading the corpus {} (run `hetvis-fuzz seed`)",
                dir.display()
            )
        })?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    let corpus: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    if corpus.is_empty() {
        bail!("the corpus {} is empty", dir.display());
    }
    Ok(corpus)
}

/// What one case did.
enum Outcome {
    Accepted,
    Refused(&'static str),
}

/// Limits of the preprocess target: the server's defaults scaled down, so cases stay fast.
fn fuzz_limits() -> ImageLimits {
    ImageLimits {
        max_width: 2048,
        max_height: 2048,
        max_alloc: 64 << 20,
    }
}

fn preprocess_case(bytes: &[u8], p: &Preprocessing) -> Outcome {
    match preprocess_bytes(bytes, p, fuzz_limits()) {
        Ok(v) => {
            assert_eq!(v.len(), p.numel(), "output length");
            assert!(v.iter().all(|x| x.is_finite()), "non-finite output");
            Outcome::Accepted
        }
        Err(e) => Outcome::Refused(match e {
            PreprocessError::Empty => "empty",
            PreprocessError::UnknownFormat => "unknown format",
            PreprocessError::TooLarge(_) => "too large",
            PreprocessError::Truncated => "truncated",
            PreprocessError::Decode(_) => "decode error",
            PreprocessError::Config(_) => "config",
        }),
    }
}

fn multipart_case(runtime: &tokio::runtime::Runtime, bytes: &[u8]) -> Outcome {
    let request = || {
        Request::post("/")
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={}", seeds::BOUNDARY),
            )
            .body(Body::from(bytes.to_vec()))
            .expect("a request")
    };
    runtime.block_on(async {
        let search = image_body::single_image(request()).await;
        let upload = gallery::read_uploads(request()).await;
        match (search.is_ok(), upload.is_ok()) {
            (true, true) => Outcome::Accepted,
            (true, false) => Outcome::Refused("upload refused"),
            (false, true) => Outcome::Refused("search refused"),
            (false, false) => Outcome::Refused("both refused"),
        }
    })
}

fn run(
    target: Target,
    corpus: &Path,
    cases: u64,
    seed: u64,
    findings: &Path,
    progress: bool,
) -> anyhow::Result<()> {
    let corpus = read_corpus(&corpus.join(target.dir()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting a runtime")?;
    // Two input sizes: a small model's and the paper's 224 px.
    let sizes = [Preprocessing::imagenet(32), Preprocessing::imagenet(224)];
    let mut rng = Rng::new(seed);
    let mut counts: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let (mut failures, mut max_peak, mut max_ratio) = (0u64, 0usize, 0f64);
    let bar = hetvis_models::progress::bar(
        cases,
        "{elapsed_precise} [{bar:40}] {pos}/{len} cases {msg}",
        progress,
    );
    let started = std::time::Instant::now();
    for case in 0..cases {
        let base = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        // One case in 16 runs a seed unchanged, so the valid path is exercised throughout.
        let input = if rng.below(16) == 0 {
            base.clone()
        } else {
            mutate(base, other, &mut rng)
        };
        let p = &sizes[rng.below(sizes.len())];
        let (result, peak) = alloc::peak_during(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| match target {
                Target::Preprocess => preprocess_case(&input, p),
                Target::Multipart => multipart_case(&runtime, &input),
            }))
        });
        let bound = fuzz_limits().peak_bytes(p);
        max_peak = max_peak.max(peak);
        let problem = match &result {
            Err(_) => Some("panicked"),
            Ok(_) if matches!(target, Target::Preprocess) && peak as u64 > bound => {
                Some("allocated above the bound")
            }
            Ok(_) => None,
        };
        if matches!(target, Target::Preprocess) {
            max_ratio = max_ratio.max(peak as f64 / bound as f64);
        }
        match (problem, result) {
            (Some(what), _) => {
                failures += 1;
                std::fs::create_dir_all(findings)?;
                let path = findings.join(format!("{}-seed{seed}-case{case}.bin", target.dir()));
                std::fs::write(&path, &input)?;
                eprintln!(
                    "case {case}: {what} (peak {peak} bytes); input in {}",
                    path.display()
                );
            }
            (None, Ok(Outcome::Accepted)) => *counts.entry("accepted").or_default() += 1,
            (None, Ok(Outcome::Refused(why))) => *counts.entry(why).or_default() += 1,
            (None, Err(_)) => unreachable!("a panic is a problem"),
        }
        if case % 1000 == 0 {
            bar.set_position(case);
        }
    }
    bar.finish_and_clear();
    println!(
        "{} target: {cases} cases (seed {seed}) in {:.1} s; {failures} failed; peak allocation {:.1} MiB{}",
        target.dir(),
        started.elapsed().as_secs_f64(),
        max_peak as f64 / (1 << 20) as f64,
        if matches!(target, Target::Preprocess) {
            format!(" ({:.0}% of the bound at most)", max_ratio * 100.0)
        } else {
            String::new()
        }
    );
    for (outcome, n) in &counts {
        println!("  {outcome}: {n}");
    }
    if failures > 0 {
        bail!(
            "{failures} of {cases} cases failed; inputs in {}",
            findings.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself, on the committed corpus: `make fuzz` runs the long version.
    #[test]
    fn a_short_run_of_each_target_passes_on_the_committed_corpus() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let findings = tempfile::tempdir().unwrap();
        for target in [Target::Preprocess, Target::Multipart] {
            run(target, &corpus, 300, 3, findings.path(), false).unwrap();
        }
    }

    #[test]
    fn the_committed_corpus_is_what_seed_writes() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (target, files) in [
            (Target::Preprocess, seeds::images()),
            (Target::Multipart, seeds::multipart()),
        ] {
            for (name, bytes) in files {
                let path = corpus.join(target.dir()).join(&name);
                let committed = std::fs::read(&path).unwrap_or_default();
                assert!(
                    committed == bytes,
                    "{} differs from `hetvis-fuzz seed`",
                    path.display()
                );
            }
        }
    }
}
