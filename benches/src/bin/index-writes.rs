//! What changing a large index costs: additions and removals through the write-ahead log (time, bytes written,
//! against the index's size), opening with the log replayed, folding the log in, resident memory after an open
//! with the graph read or memory-mapped, and a server's time from start to a ready graph.
//!
//! target/release/index-writes --index runs/bench/1m-index --work runs/bench/writes \
//!     --query-model runs/bench/photo/query-mobilenetv2-x1.0.onnx --json runs/bench/index-writes.json
//!
//! The index is copied into `--work` first and only the copy is changed. Memory is measured in fresh processes
//! (this binary re-run with `open`), so nothing measured before pollutes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hetvis_benches::stats::{median, quantile};
use hetvis_benches::{process, rss, vectors, write_json};
use hetvis_indexer::{compaction, Compaction, Index, Record, WriterLock};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    about = "Costs of changing a large index: log appends, replay, fold, memory, server start"
)]
struct Cli {
    #[command(subcommand)]
    phase: Option<Phase>,
    /// The index to measure (copied, never changed).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Scratch folder for the copy.
    #[arg(long, default_value = "runs/bench/writes")]
    work: PathBuf,
    /// Items per addition and per removal.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Single-item additions timed one by one (an upload's log append and fsync).
    #[arg(long, default_value_t = 100)]
    singles: usize,
    /// A query model of the index's space: with it, hetvis-serve's time from start to a ready graph is measured.
    #[arg(long)]
    query_model: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Phase {
    /// Open an index in this fresh process and print its time and resident memory as JSON.
    Open {
        index: PathBuf,
        /// Memory-map the graph's copy of the vectors (hnsw_rs `ReloadOptions::set_mmap`) instead of reading it.
        #[arg(long)]
        mmap: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Phase::Open { index, mmap }) = &cli.phase {
        println!("{}", open_in_this_process(index, *mmap)?);
        return Ok(());
    }
    let source = cli.index.clone().context("--index is required")?;
    let mut out = json!({
        "index": source,
        "n": cli.n,
        "cpu": cpu_model(),
    });
    let idx = cli.work.join("idx");
    let started = Instant::now();
    copy_index(&source, &idx)?;
    let index_bytes = dir_bytes(&idx)?;
    out["index_bytes"] = json!(index_bytes);
    eprintln!(
        "copied {} ({:.1} GB) in {:.1} s",
        source.display(),
        index_bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );

    let lock = WriterLock::acquire(&idx)?;
    let t = Instant::now();
    let mut index = Index::open_without_graph(&idx)?;
    out["open_without_graph_seconds"] = json!(t.elapsed().as_secs_f64());
    let (stored, dim) = (index.len(), index.dim());
    out["stored_rows"] = json!(stored);
    out["dim"] = json!(dim);
    eprintln!("opened {stored} x {dim} without the graph");

    // One addition of n vectors and one removal of n ids, each a single log entry.
    let adds = vectors::clustered(cli.n + cli.singles, dim, 64, 0.7, 99);
    let items: Vec<(Record, Vec<f32>)> = adds
        .chunks(dim)
        .take(cli.n)
        .enumerate()
        .map(|(i, v)| (Record::new(format!("bench-add/{i}")), v.to_vec()))
        .collect();
    let t = Instant::now();
    let bytes = index.add_logged(&lock, items)?;
    out["add"] = change_figures(t.elapsed(), bytes, index_bytes);
    let ids: Vec<String> = index
        .records()
        .iter()
        .step_by((stored / cli.n).max(1))
        .take(cli.n)
        .map(|r| r.id.clone())
        .collect();
    let t = Instant::now();
    let (missing, bytes) = index.remove_logged(&lock, &ids)?;
    anyhow::ensure!(missing.is_empty(), "ids to remove were missing");
    out["remove"] = change_figures(t.elapsed(), bytes, index_bytes);
    let mut single_ms = Vec::new();
    for (i, v) in adds.chunks(dim).skip(cli.n).enumerate() {
        let t = Instant::now();
        index.add_logged(
            &lock,
            vec![(Record::new(format!("bench-one/{i}")), v.to_vec())],
        )?;
        single_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out["single_add_ms"] = json!({
        "count": single_ms.len(),
        "p50": median(&single_ms),
        "p99": quantile(&single_ms, 0.99),
    });
    let log = index.log_stats();
    out["log_bytes"] = json!(log.bytes);
    eprintln!("logged: {}", serde_json::to_string(&out)?);
    drop(index);

    // Opening replays the log: the stored graph is loaded and the logged rows inserted into it.
    let t = Instant::now();
    let index = Index::open(&idx)?;
    out["open_with_log_seconds"] = json!(t.elapsed().as_secs_f64());
    anyhow::ensure!(
        index.live_len() == stored + cli.singles,
        "unexpected size after replay"
    );

    // The fold: what every change cost before the log (a save of the whole index).
    let t = Instant::now();
    let (index, _) = compaction::run(index, &lock, Compaction::Fold)?;
    out["fold"] = json!({
        "seconds": t.elapsed().as_secs_f64(),
        "bytes_written": dir_bytes(&idx)?,
    });
    drop(index);
    drop(lock);
    eprintln!("folded: {}", out["fold"]);

    // Memory after an open, in fresh processes.
    for (key, mmap) in [("open_read", false), ("open_mmap", true)] {
        let exe = std::env::current_exe()?;
        let output = Command::new(exe)
            .args(["open", idx.to_str().context("UTF-8 path")?])
            .args(mmap.then_some("--mmap"))
            .output()?;
        if !output.status.success() {
            bail!(
                "open{}: {}",
                if mmap { " --mmap" } else { "" },
                String::from_utf8_lossy(&output.stderr)
            );
        }
        out[key] = serde_json::from_slice(&output.stdout)?;
        eprintln!("{key}: {}", out[key]);
    }

    if let Some(query) = &cli.query_model {
        out["serve"] = serve_start(&idx, query)?;
        eprintln!("serve: {}", out["serve"]);
    }
    out["wall_seconds"] = json!(started.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(path) = &cli.json {
        write_json(path, &out)?;
    }
    Ok(())
}

fn change_figures(took: Duration, bytes: u64, index_bytes: u64) -> Value {
    json!({
        "seconds": took.as_secs_f64(),
        "bytes_written": bytes,
        "share_of_index": bytes as f64 / index_bytes as f64,
    })
}

/// Opens `dir` (files verified, graph loaded, log replayed) and reports the time and resident memory growth.
fn open_in_this_process(dir: &Path, mmap: bool) -> anyhow::Result<Value> {
    let before = rss::resident_bytes().unwrap_or(0);
    let t = Instant::now();
    let figures = |rows: usize| {
        let seconds = t.elapsed().as_secs_f64();
        let grown = rss::resident_bytes().unwrap_or(0).saturating_sub(before);
        json!({
            "seconds": seconds,
            "rows": rows,
            "resident_bytes": grown,
            "bytes_per_vector": grown as f64 / rows.max(1) as f64,
        })
    };
    if !mmap {
        let index = Index::open(dir)?;
        return Ok(figures(index.len()));
    }
    // The library reads the graph's points; hnsw_rs can map them instead, but only through a loader borrowed
    // mutably for the graph's whole life, which is measured here directly.
    let index = Index::open_without_graph(dir)?;
    let mut io = hnsw_rs::hnswio::HnswIo::new(dir, hetvis_indexer::graph::GRAPH_BASENAME);
    io.set_options(hnsw_rs::hnswio::ReloadOptions::default().set_mmap(true));
    let graph: hnsw_rs::hnsw::Hnsw<f32, hnsw_rs::prelude::DistL2> = io.load_hnsw()?;
    anyhow::ensure!(
        graph.get_nb_point() == index.len(),
        "the graph does not cover the index"
    );
    Ok(figures(index.len()))
}

/// hetvis-serve on the index: seconds until it listens, and until `/readyz` says the graph is ready.
fn serve_start(idx: &Path, query: &Path) -> anyhow::Result<Value> {
    let serve = std::env::current_exe()?
        .parent()
        .context("binary folder")?
        .join("hetvis-serve");
    let mut cmd = Command::new(serve);
    cmd.args(["--index", idx.to_str().context("UTF-8 path")?])
        .args(["--query-model", query.to_str().context("UTF-8 path")?])
        .args(["--addr", "127.0.0.1:0"]);
    let t = Instant::now();
    let service = process::start(cmd)?;
    let listening = t.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    process::wait_for_graph(&rt, service.addr, Duration::from_secs(1800))?;
    let ready = t.elapsed().as_secs_f64();
    let readyz = process::get_json(&rt, service.addr, "/readyz")?;
    Ok(json!({
        "listening_seconds": listening,
        "graph_ready_seconds": ready,
        "readyz": readyz,
    }))
}

fn copy_index(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "errors.jsonl" {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}
