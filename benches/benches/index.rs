//! Indexing and search at Fashion-MNIST scale, as one bounded run (a `harness = false` bench binary):
//!
//! - indexing throughput of the pipeline (decode/preprocess in parallel + batched inference) against raw ONNX
//!   Runtime batch inference on already-preprocessed inputs, with the same model: the pipeline overhead;
//! - HNSW build time (parallel insertion) and recall at each ef_construction asked for, and the open time
//!   (checksums alone, checksums + the stored graph loaded, checksums + graph rebuild);
//! - search latency (one thread, median and p99) and recall@10 against exact search at several ef, with
//!   Fashion-MNIST test images as queries;
//! - memory per vector: RSS growth while building the graph, and while opening the whole index.
//!
//! `cargo bench -p hetvis-benches --bench index`. Sizes and model come from the environment:
//! `HETVIS_BENCH_N` gallery images from the train split (60000), `HETVIS_BENCH_RAW_N` images per round of
//! the raw-vs-pipeline comparison (2000) and `HETVIS_BENCH_ROUNDS` rounds (5), `HETVIS_BENCH_QUERIES` test images as queries (1000), `HETVIS_BENCH_EFS`
//! (10,16,32,64,128,256), `HETVIS_BENCH_BATCH` (64), `HETVIS_BENCH_THREADS` ONNX Runtime intra-op threads (0 =
//! its choice), `HETVIS_BENCH_MODEL` an existing gallery model instead of the random-weight ResNet described by
//! `HETVIS_BENCH_DEPTH` (50), `HETVIS_BENCH_WIDTH` (0.25), `HETVIS_BENCH_PX` (32), `HETVIS_BENCH_DIM` (128);
//! `HETVIS_BENCH_M` (16) and `HETVIS_BENCH_EF_CONSTRUCTIONS` (200; a list builds and measures each);
//! `HETVIS_BENCH_OUT` also writes the JSON summary to that file.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use hetvis_benches::gallery_model::{self, GallerySpec};
use hetvis_benches::rss::resident_bytes;
use hetvis_benches::stats::{median, quantile};
use hetvis_indexer::graph::Graph;
use hetvis_indexer::pipeline::{embed_catalog, PipelineConfig, Source, SourceOptions};
use hetvis_indexer::recall::{ground_truth, recall_at_k};
use hetvis_indexer::store;
use hetvis_indexer::{GalleryModel, HnswParams, Index, SearchMode};
use hetvis_models::data::fashion_mnist::FashionMnist;
use hetvis_models::data::Split;
use hetvis_models::embed::Embedder;
use hetvis_models::preprocess::preprocess_gray;
use hetvis_models::runtime::{self, SessionConfig};
use rayon::prelude::*;
use serde_json::json;

const K: usize = 10;

struct Config {
    n: usize,
    raw_n: usize,
    rounds: usize,
    queries: usize,
    efs: Vec<usize>,
    m: usize,
    ef_constructions: Vec<usize>,
    batch: usize,
    threads: usize,
    model: Option<PathBuf>,
    gallery: GallerySpec,
    out: Option<PathBuf>,
}

fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        _ => Ok(default),
    }
}

/// A comma-separated list of numbers from the environment.
fn list(name: &str, default: &str) -> anyhow::Result<Vec<usize>> {
    let text: String = env_or(name, default.to_owned())?;
    text.split(',')
        .map(|s| s.trim().parse().with_context(|| format!("{name}={text:?}")))
        .collect()
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let n = env_or("HETVIS_BENCH_N", 60_000)?;
        Ok(Self {
            n,
            raw_n: env_or("HETVIS_BENCH_RAW_N", 2_000usize)?.min(n),
            rounds: env_or("HETVIS_BENCH_ROUNDS", 5usize)?.max(1),
            queries: env_or("HETVIS_BENCH_QUERIES", 1000)?,
            efs: list("HETVIS_BENCH_EFS", "10,16,32,64,128,256")?,
            m: env_or("HETVIS_BENCH_M", HnswParams::default().m)?,
            ef_constructions: list(
                "HETVIS_BENCH_EF_CONSTRUCTIONS",
                &HnswParams::default().ef_construction.to_string(),
            )?,
            batch: env_or("HETVIS_BENCH_BATCH", 64)?,
            threads: env_or("HETVIS_BENCH_THREADS", 0)?,
            model: std::env::var_os("HETVIS_BENCH_MODEL").map(PathBuf::from),
            gallery: GallerySpec {
                depth: env_or("HETVIS_BENCH_DEPTH", 50)?,
                width: env_or("HETVIS_BENCH_WIDTH", 0.25)?,
                input_px: env_or("HETVIS_BENCH_PX", 32)?,
                dim: env_or("HETVIS_BENCH_DIM", 128)?,
            },
            out: std::env::var_os("HETVIS_BENCH_OUT").map(PathBuf::from),
        })
    }
}

/// Preprocesses the first `n` training images up front, as raw inference gets them; returns them and the
/// preprocessing rate (all rayon threads).
fn preprocessed(embedder: &Embedder, n: usize) -> anyhow::Result<(Vec<f32>, f64)> {
    let train = FashionMnist::from_env().load(Split::Train)?;
    let pre = embedder.manifest().preprocessing.clone();
    let per = pre.numel();
    let started = Instant::now();
    let inputs: Vec<f32> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut out = Vec::with_capacity(per);
            preprocess_gray(
                train.image(i),
                train.cols as u32,
                train.rows as u32,
                &pre,
                &mut out,
            );
            out
        })
        .collect();
    Ok((inputs, n as f64 / started.elapsed().as_secs_f64()))
}

/// Images/s of `embed` calls alone over preprocessed inputs.
fn raw_inference(embedder: &mut Embedder, inputs: &[f32], batch: usize) -> anyhow::Result<f64> {
    let per = embedder.input_len();
    let started = Instant::now();
    for chunk in inputs.chunks(per * batch) {
        embedder.embed(chunk)?;
    }
    Ok((inputs.len() / per) as f64 / started.elapsed().as_secs_f64())
}

/// Raw inference and the pipeline on the same images, alternated for `rounds` so that load from other processes
/// hits both alike; returns (raw, pipeline) images/s per round.
fn throughput_rounds(
    embedder: &mut Embedder,
    inputs: &[f32],
    rounds: usize,
    config: &PipelineConfig,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let n = inputs.len() / embedder.input_len();
    embedder.embed(&inputs[..embedder.input_len() * config.batch.min(n)])?; // warm-up
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let raw = raw_inference(embedder, inputs, config.batch)?;
        let run = embed_catalog(fashion(Split::Train, n)?, embedder, config)?;
        out.push((raw, run.images_per_second()));
    }
    Ok(out)
}

fn fashion(split: Split, n: usize) -> anyhow::Result<hetvis_indexer::pipeline::Catalog> {
    let source = Source::FashionMnist {
        root: SourceOptions::default().fashion_mnist_root,
        split,
    };
    let mut c = source.catalog()?;
    c.truncate(n);
    Ok(c)
}

fn mib(bytes: f64) -> f64 {
    bytes / (1 << 20) as f64
}

/// Set in the child process that measures memory: the index directory to open.
const MEMORY_PROBE_ENV: &str = "HETVIS_BENCH_MEMORY_OF";

/// Opens the index in a fresh process and returns its RSS growth by part. In-process figures would be wrong:
/// the allocator reuses memory the benchmark freed earlier (e.g. per-item vectors of the same size).
fn memory_in_child(dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .env(MEMORY_PROBE_ENV, dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "memory probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The child's side: the same steps as `Index::open`, with RSS read between them.
fn memory_probe(dir: &std::path::Path) -> anyhow::Result<()> {
    let rss = || resident_bytes().context("no /proc/self/statm");
    let r0 = rss()?;
    let stored = store::read_verified(dir)?;
    let r1 = rss()?;
    let graph = Graph::build(&stored.manifest.hnsw, &stored.vectors)?;
    let r2 = rss()?;
    let ids: std::collections::HashMap<String, usize> = stored
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let r3 = rss()?;
    let v = json!({
        "data_bytes": r1.saturating_sub(r0), "graph_bytes": r2.saturating_sub(r1),
        "id_map_bytes": r3.saturating_sub(r2), "total_bytes": r3.saturating_sub(r0),
    });
    println!("{v}");
    std::hint::black_box((graph, ids));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Some(dir) = std::env::var_os(MEMORY_PROBE_ENV) {
        return memory_probe(std::path::Path::new(&dir));
    }
    let cfg = Config::from_env()?;
    runtime::init(None)?;
    let tmp = tempfile::tempdir()?;
    let (model_path, model_desc) = match &cfg.model {
        Some(p) => (p.clone(), p.display().to_string()),
        None => (
            gallery_model::export(tmp.path(), &cfg.gallery)?,
            cfg.gallery.describe(),
        ),
    };
    let session = SessionConfig {
        intra_threads: cfg.threads,
        ..Default::default()
    };
    let mut embedder = Embedder::load(&model_path, &session)?;
    let dim = embedder.dim();
    let threads = rayon::current_num_threads();
    println!(
        "index bench: {model_desc} ({:.1} MMACs), {} gallery images, {} queries, batch {}, {threads} rayon threads",
        embedder.manifest().mmacs,
        cfg.n,
        cfg.queries,
        cfg.batch
    );

    // Throughput: raw inference against the pipeline on the same images, then the whole gallery.
    let pipeline = PipelineConfig {
        batch: cfg.batch,
        progress: false,
        ..Default::default()
    };
    let (inputs, preprocess_ips) = preprocessed(&embedder, cfg.raw_n)?;
    let rounds = throughput_rounds(&mut embedder, &inputs, cfg.rounds, &pipeline)?;
    drop(inputs);
    let raw: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let piped: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    let ratios: Vec<f64> = rounds.iter().map(|r| r.0 / r.1).collect();
    let (raw_ips, pipeline_ips, overhead) = (
        median(&raw).unwrap_or(f64::NAN),
        median(&piped).unwrap_or(f64::NAN),
        median(&ratios).unwrap_or(f64::NAN),
    );
    println!(
        "raw ONNX Runtime {raw_ips:.0} images/s vs pipeline {pipeline_ips:.0} images/s (medians of {} alternating rounds of {} images): overhead x{overhead:.3}; preprocessing alone {preprocess_ips:.0} images/s",
        cfg.rounds, cfg.raw_n
    );
    let run = embed_catalog(fashion(Split::Train, cfg.n)?, &mut embedder, &pipeline)?;
    anyhow::ensure!(
        run.failures.is_empty(),
        "failures: {:?}",
        &run.failures[..1]
    );
    let gallery_ips = run.images_per_second();
    println!(
        "gallery embedding (pipeline): {} images in {:.1} s, {gallery_ips:.0} images/s",
        run.items.len(),
        run.seconds,
    );
    let queries: Vec<Vec<f32>> =
        embed_catalog(fashion(Split::Test, cfg.queries)?, &mut embedder, &pipeline)?
            .items
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    drop(embedder);

    // HNSW build at each ef_construction (parallel insertion), with recall@10 at every ef.
    let n = run.items.len();
    let gallery = GalleryModel {
        name: "bench".into(),
        compat_id: "bench-space".into(),
        sha256: String::new(),
    };
    let defaults = HnswParams::default();
    let mut builds = Vec::new();
    let mut kept: Option<Index> = None;
    let mut truth = None;
    for &ef_construction in &cfg.ef_constructions {
        let params = HnswParams {
            m: cfg.m,
            ef_construction,
            ..defaults
        };
        let mut index = Index::new(gallery.clone(), dim, params)?;
        let started = Instant::now();
        index.add(run.items.clone())?;
        let build_s = started.elapsed().as_secs_f64();
        let truth = truth.get_or_insert_with(|| ground_truth(&index, &queries, K));
        let recalls: Vec<f64> = cfg
            .efs
            .iter()
            .map(|&ef| recall_at_k(&index, &queries, truth, ef))
            .collect();
        let shown: Vec<String> = cfg
            .efs
            .iter()
            .zip(&recalls)
            .map(|(ef, r)| format!("ef={ef}: {r:.4}"))
            .collect();
        println!(
            "HNSW build M={} ef_construction={ef_construction}: {build_s:.1} s ({:.0} vectors/s); recall@10 {}",
            params.m,
            n as f64 / build_s,
            shown.join(", ")
        );
        builds.push(json!({
            "m": params.m, "ef_construction": ef_construction, "build_s": build_s,
            "recall_at_10": cfg.efs.iter().zip(&recalls).map(|(ef, r)| json!({"ef": ef, "recall": r})).collect::<Vec<_>>(),
        }));
        if kept.is_none() || ef_construction == defaults.ef_construction {
            kept = Some(index);
        }
    }
    drop(run.items);
    let (Some(index), Some(truth)) = (kept, truth) else {
        anyhow::bail!("HETVIS_BENCH_EF_CONSTRUCTIONS is empty");
    };
    let params = *index.params();

    // Persist, then open: verification alone, with the stored graph, and with a parallel graph rebuild.
    let dir = tmp.path().join("idx");
    let started = Instant::now();
    let _ = index.save_exclusive(&dir)?;
    let save_s = started.elapsed().as_secs_f64();
    let disk: u64 = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let memory = memory_in_child(&dir)?;
    let started = Instant::now();
    drop(Index::open_without_graph(&dir)?);
    let verify_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    drop(Index::open(&dir)?);
    let open_s = started.elapsed().as_secs_f64();
    // What opening cost before the graph was stored, and still costs for an index without one.
    let started = Instant::now();
    let unbuilt = Index::open_without_graph(&dir)?;
    drop(unbuilt.build_graph()?);
    drop(unbuilt);
    let rebuild_s = started.elapsed().as_secs_f64();
    let per_vector = |key: &str| memory[key].as_f64().unwrap_or(f64::NAN) / n as f64;
    println!(
        "save {save_s:.2} s ({:.1} MiB on disk, {:.0} bytes/vector); open without graph (verify) {verify_s:.2} s; open with the stored graph {open_s:.2} s; open + graph rebuild {rebuild_s:.1} s",
        mib(disk as f64),
        disk as f64 / n as f64,
    );
    println!(
        "memory per vector (RSS growth in a fresh process): vectors + records {:.0} B, HNSW graph {:.0} B, id map {:.0} B, whole index {:.0} B",
        per_vector("data_bytes"),
        per_vector("graph_bytes"),
        per_vector("id_map_bytes"),
        per_vector("total_bytes"),
    );

    // Search latency (one thread) and all-threads throughput per ef, on the kept index.
    let latencies = |mode: SearchMode, ef: Option<usize>| -> Vec<f64> {
        queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let hits = index.search_rows(q, K, ef, mode);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                std::hint::black_box(hits).ok();
                ms
            })
            .collect()
    };
    let exact = latencies(SearchMode::Exact, None);
    let exact_med = median(&exact).unwrap_or(f64::NAN);
    println!("exact search: median {exact_med:.3} ms/query");
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>10}",
        "ef", "recall@10", "median ms", "p99 ms", "QPS (all)"
    );
    let mut rows = Vec::new();
    for &ef in &cfg.efs {
        let recall = recall_at_k(&index, &queries, &truth, ef);
        let lat = latencies(SearchMode::Hnsw, Some(ef));
        let started = Instant::now();
        queries.par_iter().for_each(|q| {
            let _ = std::hint::black_box(index.search_rows(q, K, Some(ef), SearchMode::Hnsw));
        });
        let qps = queries.len() as f64 / started.elapsed().as_secs_f64();
        let (med, p99) = (
            median(&lat).unwrap_or(f64::NAN),
            quantile(&lat, 0.99).unwrap_or(f64::NAN),
        );
        println!("{ef:>6} {recall:>10.4} {med:>12.3} {p99:>12.3} {qps:>10.0}");
        rows.push(json!({"ef": ef, "recall_at_10": recall, "median_ms": med, "p99_ms": p99, "qps_all_threads": qps}));
    }
    let default_recall = recall_at_k(&index, &queries, &truth, params.ef_search);
    println!(
        "searched index's parameters (M={} ef_construction={} ef_search={}): recall@10 {default_recall:.4} ({})",
        params.m,
        params.ef_construction,
        params.ef_search,
        if default_recall >= 0.99 {
            "meets >= 0.99"
        } else {
            "BELOW 0.99"
        }
    );

    let summary = json!({
        "model": model_desc, "gallery": n, "queries": queries.len(), "dim": dim, "batch": cfg.batch,
        "raw_onnx_images_per_s": raw_ips, "preprocess_images_per_s": preprocess_ips,
        "pipeline_images_per_s": pipeline_ips, "pipeline_overhead": overhead,
        "throughput_rounds": rounds, "gallery_pipeline_images_per_s": gallery_ips,
        "hnsw": params, "builds": builds, "open_s": open_s, "open_rebuild_s": rebuild_s, "open_without_graph_s": verify_s, "save_s": save_s,
        "memory_bytes": memory, "memory_bytes_per_vector": {
            "data": per_vector("data_bytes"), "graph": per_vector("graph_bytes"),
            "id_map": per_vector("id_map_bytes"), "total": per_vector("total_bytes"),
        },
        "disk_bytes_per_vector": disk as f64 / n as f64, "exact_median_ms": exact_med,
        "search": rows, "default_recall_at_10": default_recall,
    });
    println!("{summary}");
    if let Some(out) = &cfg.out {
        // Relative paths are relative to benches/, where cargo runs benchmarks.
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
