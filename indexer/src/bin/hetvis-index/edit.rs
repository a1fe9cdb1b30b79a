//! `remove` and `compact`: items leave the index by id at once (a write-ahead log entry), and their space is
//! reclaimed by a compaction.

use std::path::Path;
use std::time::Instant;

use hetvis_indexer::{Compaction, Durability, EmbeddedStore};

use crate::place::Place;

pub fn warn_if_not_durable(dir: &Path, durability: Durability) {
    if let Durability::NotDurable(why) = durability {
        eprintln!(
            "warning: {} is saved but not yet durable ({why}): a power loss may bring back the previous version",
            dir.display()
        );
    }
}

/// Removes items by id. Ids that are not in the gallery are reported, not an error, so a retried removal
/// succeeds. An index directory logs the removal and reclaims the rows at a compaction; Milvus deletes them.
pub fn remove(place: &Place, ids: &[String]) -> anyhow::Result<()> {
    let mut store = place.open_for_changes()?;
    let missing = store.remove(ids)?;
    if !missing.is_empty() {
        eprintln!(
            "not in the gallery (nothing to remove): {}",
            missing.join(", ")
        );
    }
    store.settle()?;
    println!(
        "removed {} from {}: {} items searchable",
        ids.len() - missing.len(),
        store.location(),
        store.live_len()?
    );
    Ok(())
}

/// Folds the write-ahead log into the stored files; with `reclaim` (and removed rows to reclaim) also rewrites
/// the index with its live items only and a graph built anew over them.
pub fn compact(dir: &Path, reclaim: bool) -> anyhow::Result<()> {
    let mut store = EmbeddedStore::open(dir)?;
    let index = store.index();
    let (log, removed) = (index.log_stats(), index.removed_rows().len());
    let kind = if reclaim && removed > 0 {
        Compaction::Reclaim
    } else {
        Compaction::Fold
    };
    let started = Instant::now();
    let durability = store.compact(kind)?;
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
        store.index().live_len()
    );
    Ok(())
}
