//! The embedded index against a Milvus collection, on the same gallery embedded once: recall@10 of each against
//! exact search, agreement of their top-10, search latency, and the insert rate into Milvus against the embedding
//! rate.
//!
//! scripts/milvus.sh start runs/bench/milvus
//! target/release/backends --milvus http://127.0.0.1:19530 --work runs/bench/backends --json runs/bench/backends.json
//!
//! The gallery is the Fashion-MNIST training split embedded by a random-weight ResNet-50 x0.25 (32 px, 128-d),
//! as in the `index` benchmark, or `--model`; the queries are test images embedded by the same model. The
//! embedded index is saved to `--work` (for a server load run on it afterwards).
//!
//! Sizing: the embedded index's bytes on disk and its resident memory once opened in a fresh process (graph
//! loaded); with `--milvus-dir` (the folder given to `scripts/milvus.sh start`), the growth of the Milvus
//! processes' resident memory and of its data folder from before the collection exists to when its index is
//! served.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hetvis_benches::gallery_model::{self, GallerySpec};
use hetvis_benches::stats::{median, quantile};
use hetvis_benches::{disk, rss};
use hetvis_indexer::pipeline::{embed_catalog, Catalog, PipelineConfig, Source, SourceOptions};
use hetvis_indexer::{GalleryModel, HnswParams, Index, MilvusStore, MilvusTarget, SearchMode};
use hetvis_milvus::ConnectOptions;
use hetvis_models::data::fashion_mnist::Split;
use hetvis_models::embed::Embedder;
use hetvis_models::runtime::{self, SessionConfig};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Embedded HNSW index vs a Milvus collection on the same gallery")]
struct Cli {
    #[arg(long, required_unless_present = "measure_open")]
    milvus: Option<String>,
    /// The folder Milvus was started with (`scripts/milvus.sh start DIR`): its memory and disk are measured.
    #[arg(long)]
    milvus_dir: Option<PathBuf>,
    /// Internal: open this index directory, print its rows and this process's memory growth as JSON, and exit.
    #[arg(long, hide = true)]
    measure_open: Option<PathBuf>,
    #[arg(long, default_value = "hetvis_bench_backends")]
    collection: String,
    /// A gallery model (default: a random-weight ResNet-50 x0.25, 32 px, 128-d exported into --work).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "runs/bench/backends")]
    work: PathBuf,
    /// Gallery images (the first N of the Fashion-MNIST training split).
    #[arg(long, default_value_t = 60_000)]
    n: usize,
    /// Query images (the first N of the test split).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    ef: Vec<usize>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn fashion(split: Split, n: usize) -> anyhow::Result<Catalog> {
    let source = Source::FashionMnist {
        root: SourceOptions::default().fashion_mnist_root,
        split,
    };
    let mut c = source.catalog()?;
    c.truncate(n);
    Ok(c)
}

/// Per-query latencies in ms; median and p99.
fn latency(ms: &[f64]) -> serde_json::Value {
    json!({"p50_ms": median(ms), "p99_ms": quantile(ms, 0.99)})
}

/// `--measure-open`: what an opened index (files read, graph loaded) holds in memory, in a process that has
/// done nothing else.
fn measure_open(dir: &std::path::Path) -> anyhow::Result<()> {
    let before = rss::resident_bytes().unwrap_or(0);
    let index = Index::open(dir)?;
    let grown = rss::resident_bytes().unwrap_or(0).saturating_sub(before);
    println!("{}", json!({"rows": index.len(), "resident_bytes": grown}));
    Ok(())
}

/// The embedded index in `dir`: bytes on disk, and memory once opened in a fresh process.
fn embedded_sizing(dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--measure-open")
        .arg(dir)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "measuring the opened index failed");
    let opened: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rows = opened["rows"].as_f64().unwrap_or(0.0).max(1.0);
    let memory = opened["resident_bytes"].as_f64().unwrap_or(0.0);
    let disk = disk::tree_bytes(dir)? as f64;
    Ok(json!({
        "memory_bytes": memory, "memory_bytes_per_vector": memory / rows,
        "disk_bytes": disk, "disk_bytes_per_vector": disk / rows,
    }))
}

/// Resident memory of the Milvus processes and bytes under their data folder.
#[derive(Clone, Copy)]
struct MilvusFootprint {
    memory: u64,
    disk: u64,
}

fn milvus_footprint(dir: &std::path::Path) -> anyhow::Result<MilvusFootprint> {
    let pid: u32 = std::fs::read_to_string(dir.join("milvus.pid"))?
        .trim()
        .parse()?;
    Ok(MilvusFootprint {
        memory: rss::group_resident_bytes(pid)
            .with_context(|| format!("no process of Milvus's group {pid} (is it running?)"))?,
        disk: disk::tree_bytes(&dir.join("data"))?,
    })
}

fn milvus_sizing(
    before: MilvusFootprint,
    after: MilvusFootprint,
    rows: usize,
) -> serde_json::Value {
    let memory = after.memory as f64 - before.memory as f64;
    let disk = after.disk as f64 - before.disk as f64;
    let rows = rows.max(1) as f64;
    json!({
        "memory_before_bytes": before.memory, "memory_after_bytes": after.memory,
        "memory_bytes_per_vector": memory / rows,
        "disk_before_bytes": before.disk, "disk_after_bytes": after.disk,
        "disk_bytes_per_vector": disk / rows,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.measure_open {
        return measure_open(dir);
    }
    let milvus_uri = cli.milvus.clone().context("--milvus URI")?;
    let started = Instant::now();
    runtime::init(None)?;
    std::fs::create_dir_all(&cli.work)?;
    let model_path = match &cli.model {
        Some(p) => p.clone(),
        None => gallery_model::export(
            &cli.work,
            &GallerySpec {
                depth: 50,
                width: 0.25,
                input_px: 32,
                dim: 128,
            },
        )?,
    };
    let mut embedder = Embedder::load(&model_path, &SessionConfig::default())?;
    let manifest = embedder.manifest().clone();
    let sha256 = hetvis_indexer::checksum::sha256_file(&model_path)?.0;
    let pipeline = PipelineConfig {
        progress: false,
        ..Default::default()
    };
    let gallery = embed_catalog(fashion(Split::Train, cli.n)?, &mut embedder, &pipeline)?;
    let embed_ips = gallery.images_per_second();
    eprintln!(
        "embedded {} images at {embed_ips:.0} images/s",
        gallery.items.len()
    );
    let queries: Vec<Vec<f32>> =
        embed_catalog(fashion(Split::Test, cli.queries)?, &mut embedder, &pipeline)?
            .items
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    drop(embedder);
    let params = HnswParams::default();
    let model = GalleryModel::from_manifest(&manifest, &sha256);

    // The embedded index.
    let t = Instant::now();
    let mut index = Index::new(model.clone(), manifest.embedding_dim, params)?;
    index.add(gallery.items.clone())?;
    let embedded_build = t.elapsed().as_secs_f64();
    let index_dir = cli.work.join("index");
    let _ = index.save_exclusive(&index_dir)?;
    let embedded_size = embedded_sizing(&index_dir)?;
    eprintln!("embedded index: {embedded_size}");

    // The Milvus collection, built from the same vectors.
    let target = MilvusTarget {
        connect: ConnectOptions::new(milvus_uri),
        collection: cli.collection.clone(),
    };
    MilvusStore::drop_collection(&target)?;
    let footprint_before = cli
        .milvus_dir
        .as_deref()
        .map(milvus_footprint)
        .transpose()?;
    let store = MilvusStore::create(&target, model, manifest.embedding_dim, params)?;
    let t = Instant::now();
    let inserted = store.add(gallery.items)?;
    let insert_seconds = t.elapsed().as_secs_f64();
    store.flush()?;
    let t = Instant::now();
    store.wait_index_built(inserted, Duration::from_secs(1800))?;
    let index_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        store.live_len()? == inserted,
        "Milvus holds another count than was inserted"
    );
    eprintln!("inserted {inserted} rows into Milvus in {insert_seconds:.1} s, index built {index_seconds:.1} s later");
    let milvus_size = match (footprint_before, cli.milvus_dir.as_deref()) {
        (Some(before), Some(dir)) => {
            let size = milvus_sizing(before, milvus_footprint(dir)?, inserted);
            eprintln!("Milvus: {size}");
            size
        }
        _ => serde_json::Value::Null,
    };

    // Exact neighbours, then each backend at each ef.
    let truth: Vec<Vec<String>> = queries
        .iter()
        .map(|q| {
            Ok(index
                .search_exact(q, 10)?
                .into_iter()
                .map(|h| h.id)
                .collect())
        })
        .collect::<anyhow::Result<_>>()?;
    let recall = |found: &[Vec<String>]| {
        let hits: usize = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|id| t.contains(id)).count())
            .sum();
        hits as f64 / (10 * truth.len()) as f64
    };
    let mut rows = Vec::new();
    for &ef in &cli.ef {
        let (mut local, mut local_ms) = (Vec::new(), Vec::new());
        let (mut remote, mut remote_ms) = (Vec::new(), Vec::new());
        for q in &queries {
            let t = Instant::now();
            let h = index.search_rows(q, 10, Some(ef), SearchMode::Hnsw)?;
            local_ms.push(t.elapsed().as_secs_f64() * 1e3);
            local.push(
                h.into_iter()
                    .map(|h| index.records()[h.row].id.clone())
                    .collect::<Vec<_>>(),
            );
            let t = Instant::now();
            let h = store.search(q, 10, Some(ef), false)?;
            remote_ms.push(t.elapsed().as_secs_f64() * 1e3);
            remote.push(h.into_iter().map(|h| h.id).collect::<Vec<_>>());
        }
        let overlap: usize = local
            .iter()
            .zip(&remote)
            .map(|(a, b)| a.iter().filter(|id| b.contains(id)).count())
            .sum();
        let row = json!({
            "ef": ef,
            "embedded": {"recall_at_10": recall(&local), "search": latency(&local_ms)},
            "milvus": {"recall_at_10": recall(&remote), "search": latency(&remote_ms)},
            "top10_overlap": overlap as f64 / (10 * queries.len()) as f64,
        });
        eprintln!("{row}");
        rows.push(row);
    }
    MilvusStore::drop_collection(&target)?;
    let out = json!({
        "model": manifest.name, "mmacs": manifest.mmacs, "dim": manifest.embedding_dim,
        "gallery": inserted, "queries": queries.len(), "hnsw": params,
        "embedding_images_per_second": embed_ips,
        "embedded_build_seconds": embedded_build,
        "milvus_insert": {"seconds": insert_seconds, "rows_per_second": inserted as f64 / insert_seconds, "index_built_after_seconds": index_seconds},
        "by_ef": rows,
        "sizing": {"embedded": embedded_size, "milvus": milvus_size},
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(p) = &cli.json {
        hetvis_benches::write_json(p, &out)?;
    }
    Ok(())
}
