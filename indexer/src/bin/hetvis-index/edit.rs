//! `remove` and `compact`: items leave the index by id at once (a write-ahead log entry), and their space is
//! reclaimed by a compaction.

use std::path::Path;
use std::time::Instant;

use hetvis_indexer::{compaction, Compaction, CompactionPolicy, Durability, Index, WriterLock};

pub fn warn_if_not_durable(dir: &Path, durability: Durability) {
    if let Durability::NotDurable(why) = durability {
        eprintln!(
            "warning: {} is saved but not yet durable ({why}): a power loss may bring back the previous version",
            dir.display()
        );
    }
}

/// Removes items by id. Ids that are not in the index are reported, not an error, so a retried removal succeeds.
pub fn remove(dir: &Path, ids: &[String]) -> anyhow::Result<()> {
    // Locked before reading, so no other writer's changes can be missed by this one.
    let lock = WriterLock::acquire(dir)?;
    let mut index = Index::open_without_graph(dir)?;
    let (missing, bytes) = index.remove_logged(&lock, ids)?;
    if !missing.is_empty() {
        eprintln!(
            "not in the index (nothing to remove): {}",
            missing.join(", ")
        );
    }
    println!(
        "removed {} from {} (logged {bytes} bytes): {} items searchable, {} removed rows awaiting compaction",
        ids.len() - missing.len(),
        dir.display(),
        index.live_len(),
        index.removed_rows().len()
    );
    compact_if_due(index, &lock)
}

/// Compacts when the default policy says so (after an `add` or `remove`).
pub fn compact_if_due(index: Index, lock: &WriterLock) -> anyhow::Result<()> {
    match CompactionPolicy::default().due(&index) {
        Some(kind) => run(index, lock, kind),
        None => Ok(()),
    }
}

/// Folds the write-ahead log into the stored files; with `reclaim` (and removed rows to reclaim) also rewrites
/// the index with its live items only and a graph built anew over them.
pub fn compact(dir: &Path, reclaim: bool) -> anyhow::Result<()> {
    let lock = WriterLock::acquire(dir)?;
    let index = Index::open_without_graph(dir)?;
    let kind = if reclaim && !index.removed_rows().is_empty() {
        Compaction::Reclaim
    } else {
        Compaction::Fold
    };
    run(index, &lock, kind)
}

fn run(index: Index, lock: &WriterLock, kind: Compaction) -> anyhow::Result<()> {
    let dir = lock.target();
    let (log, removed) = (index.log_stats(), index.removed_rows().len());
    let started = Instant::now();
    let (index, durability) = compaction::run(index, lock, kind)?;
    warn_if_not_durable(dir, durability);
    let reclaimed = match kind {
        Compaction::Reclaim => format!("{removed} removed rows reclaimed (graph rebuilt)"),
        Compaction::Fold => format!("{removed} removed rows kept"),
    };
    println!(
        "compacted {} in {:.1} s: folded a log of {} changes ({} bytes), {reclaimed}; {} items",
        dir.display(),
        started.elapsed().as_secs_f64(),
        log.changes,
        log.bytes,
        index.live_len()
    );
    Ok(())
}
