//! `info` (files checked, no graph built) and `verify` (HNSW recall against exact search).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use hetvis_indexer::recall::{ground_truth, recall_at_k, sample_rows};
use hetvis_indexer::{Index, SearchMode};

pub fn info(dir: &Path, json: bool) -> anyhow::Result<()> {
    // Files checked and the write-ahead log replayed; no graph is loaded.
    let index = Index::open_without_graph(dir)?;
    let m = index.manifest();
    let removed = index.removed_rows();
    let log = index.log_stats();
    let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unlabelled = 0;
    for (_, r) in index
        .records()
        .iter()
        .enumerate()
        .filter(|(row, _)| !removed.contains(row))
    {
        match &r.label {
            Some(l) => *labels.entry(l.as_str()).or_default() += 1,
            None => unlabelled += 1,
        }
    }
    if json {
        let v = serde_json::json!({
            "path": dir, "manifest": m, "labels": labels, "unlabelled": unlabelled, "checksums": "ok",
            "items": index.live_len(), "removed": removed.len(), "stored_rows": index.base_rows(),
            "log": { "bytes": log.bytes, "changes": log.changes, "added": log.added, "removed": log.removed },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("index       {}", dir.display());
    println!("format      {} (written by {})", m.format_version, m.writer);
    println!(
        "gallery     {} (compat_id {}, model sha256 {})",
        m.gallery.name, m.gallery.compat_id, m.gallery.sha256
    );
    println!("vectors     {} x {}-d, metric {}", m.count, m.dim, m.metric);
    println!(
        "items       {} searchable, {} removed rows awaiting `hetvis-index compact`",
        index.live_len(),
        removed.len()
    );
    println!(
        "log         {} changes (+{} -{}) in {} bytes since the {} stored rows",
        log.changes,
        log.added,
        log.removed,
        log.bytes,
        index.base_rows()
    );
    println!(
        "hnsw        M={} ef_construction={} ef_search={}",
        m.hnsw.m, m.hnsw.ef_construction, m.hnsw.ef_search
    );
    for (name, f) in &m.files {
        println!(
            "file        {name}: {} bytes, sha256 {} (ok)",
            f.bytes, f.sha256
        );
    }
    let mut by_count: Vec<(&str, usize)> = labels.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!(
        "labels      {} distinct, {unlabelled} unlabelled",
        by_count.len()
    );
    for (label, n) in by_count.iter().take(20) {
        println!("  {n:>8}  {label}");
    }
    if by_count.len() > 20 {
        println!("  ... and {} more", by_count.len() - 20);
    }
    Ok(())
}

/// What `verify` measures.
pub struct VerifyOptions {
    /// Stored vectors used as queries (spread evenly over the gallery).
    pub queries: usize,
    pub k: usize,
    /// HNSW ef values (empty: the gallery's ef_search).
    pub ef: Vec<usize>,
    pub min_recall: Option<f64>,
    pub json: bool,
}

/// One ef's measurement.
pub struct Measured {
    pub ef: usize,
    pub recall: f64,
    pub ms_per_query: f64,
}

pub fn verify(dir: &Path, opts: &VerifyOptions) -> anyhow::Result<()> {
    let opened = Instant::now();
    let index = Index::open(dir)?;
    let open_seconds = opened.elapsed().as_secs_f64();
    if index.is_empty() {
        bail!("{} holds no vectors", dir.display());
    }
    let efs = if opts.ef.is_empty() {
        vec![index.params().ef_search]
    } else {
        opts.ef.clone()
    };
    let qs: Vec<Vec<f32>> = sample_rows(index.len(), opts.queries)
        .into_iter()
        .map(|r| index.vector(r).to_vec())
        .collect();
    let truth = ground_truth(&index, &qs, opts.k);
    let exact_ms = mean_ms(&index, &qs, opts.k, None, SearchMode::Exact);
    let measured: Vec<Measured> = efs
        .iter()
        .map(|&ef| Measured {
            ef,
            recall: recall_at_k(&index, &qs, &truth, ef),
            ms_per_query: mean_ms(&index, &qs, opts.k, Some(ef), SearchMode::Hnsw),
        })
        .collect();
    let report = Report {
        location: dir.display().to_string(),
        vectors: index.len(),
        queries: qs.len(),
        open: format!(
            "opened (files verified, HNSW graph loaded or rebuilt) in {open_seconds:.2} s"
        ),
        extra: serde_json::json!({"path": dir, "open_seconds": open_seconds, "exact_ms_per_query": exact_ms}),
        exact_ms: Some(exact_ms),
    };
    report_recall(&report, opts, &measured)
}

/// What a recall report says besides the measurements.
pub struct Report {
    pub location: String,
    pub vectors: usize,
    pub queries: usize,
    /// How the gallery was opened or read, for the text report.
    pub open: String,
    /// Fields of the JSON report.
    pub extra: serde_json::Value,
    pub exact_ms: Option<f64>,
}

/// Prints recall at each ef (text or JSON) and fails below `--min-recall`.
pub fn report_recall(
    r: &Report,
    opts: &VerifyOptions,
    measured: &[Measured],
) -> anyhow::Result<()> {
    let k = opts.k;
    let rows: Vec<_> = measured
        .iter()
        .map(|m| serde_json::json!({"ef": m.ef, "recall": m.recall, "hnsw_ms_per_query": m.ms_per_query}))
        .collect();
    if opts.json {
        let mut v = serde_json::json!({
            "location": r.location, "vectors": r.vectors, "queries": r.queries, "k": k, "results": rows,
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), r.extra.as_object()) {
            obj.extend(extra.clone());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let exact = r
            .exact_ms
            .map_or(String::new(), |ms| format!(", exact {ms:.3} ms/query"));
        for m in measured {
            println!(
                "recall@{k} = {:.4} at ef={} ({} queries; HNSW {:.3} ms/query{exact})",
                m.recall, m.ef, r.queries, m.ms_per_query
            );
        }
        println!("{}: {} vectors; {}", r.location, r.vectors, r.open);
    }
    if let Some(min) = opts.min_recall {
        let worst = measured
            .iter()
            .map(|m| m.recall)
            .fold(f64::INFINITY, f64::min);
        if worst < min {
            bail!("recall@{k} {worst:.4} is below --min-recall {min}");
        }
    }
    Ok(())
}

/// Mean single-query latency (one thread), over up to 200 of the queries.
fn mean_ms(index: &Index, qs: &[Vec<f32>], k: usize, ef: Option<usize>, mode: SearchMode) -> f64 {
    let sample = &qs[..qs.len().min(200)];
    let started = Instant::now();
    for q in sample {
        let _ = index.search_rows(q, k, ef, mode);
    }
    started.elapsed().as_secs_f64() * 1e3 / sample.len().max(1) as f64
}
