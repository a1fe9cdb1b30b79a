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

pub fn verify(
    dir: &Path,
    queries: usize,
    k: usize,
    efs: &[usize],
    min_recall: Option<f64>,
    json: bool,
) -> anyhow::Result<()> {
    let opened = Instant::now();
    let index = Index::open(dir)?;
    let open_seconds = opened.elapsed().as_secs_f64();
    if index.is_empty() {
        bail!("{} holds no vectors", dir.display());
    }
    let efs = if efs.is_empty() {
        vec![index.params().ef_search]
    } else {
        efs.to_vec()
    };
    let qs: Vec<Vec<f32>> = sample_rows(index.len(), queries)
        .into_iter()
        .map(|r| index.vector(r).to_vec())
        .collect();
    let truth = ground_truth(&index, &qs, k);
    let exact_ms = mean_ms(&index, &qs, k, None, SearchMode::Exact);
    let mut rows = Vec::new();
    for &ef in &efs {
        let recall = recall_at_k(&index, &qs, &truth, ef);
        let hnsw_ms = mean_ms(&index, &qs, k, Some(ef), SearchMode::Hnsw);
        rows.push(serde_json::json!({"ef": ef, "recall": recall, "hnsw_ms_per_query": hnsw_ms}));
        if !json {
            println!(
                "recall@{k} = {recall:.4} at ef={ef} ({} queries; HNSW {hnsw_ms:.3} ms/query, exact {exact_ms:.3} ms/query)",
                qs.len()
            );
        }
    }
    if json {
        let v = serde_json::json!({
            "path": dir, "vectors": index.len(), "queries": qs.len(), "k": k,
            "open_seconds": open_seconds, "exact_ms_per_query": exact_ms, "results": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} vectors; opened (files verified, HNSW graph loaded or rebuilt) in {open_seconds:.2} s",
            index.len()
        );
    }
    if let Some(min) = min_recall {
        let worst = rows
            .iter()
            .filter_map(|r| r["recall"].as_f64())
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
