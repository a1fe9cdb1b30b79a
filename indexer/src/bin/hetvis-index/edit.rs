//! `remove` and `compact`: items leave the index by id at once, and their space is reclaimed by a compaction.

use std::path::Path;

use hetvis_indexer::{Durability, Index, WriterLock};

fn warn_if_not_durable(dir: &Path, durability: Durability) {
    if let Durability::NotDurable(why) = durability {
        eprintln!(
            "warning: {} is saved but not yet durable ({why}): a power loss may bring back the previous version",
            dir.display()
        );
    }
}

/// Removes items by id. Ids that are not in the index are reported, not an error, so a retried removal succeeds.
pub fn remove(dir: &Path, ids: &[String]) -> anyhow::Result<()> {
    // Locked before reading, so no other writer's changes can be lost by this save.
    let lock = WriterLock::acquire(dir)?;
    let mut index = Index::open(dir)?;
    let missing = index.remove(ids);
    if !missing.is_empty() {
        eprintln!(
            "not in the index (nothing to remove): {}",
            missing.join(", ")
        );
    }
    let removed = ids.len() - missing.len();
    if removed > 0 {
        warn_if_not_durable(dir, index.save(&lock)?);
    }
    println!(
        "removed {removed} from {}: {} items searchable, {} removed rows awaiting `hetvis-index compact`",
        dir.display(),
        index.live_len(),
        index.removed_rows().len()
    );
    Ok(())
}

/// Rewrites the index with its live items only and a graph built anew over them.
pub fn compact(dir: &Path) -> anyhow::Result<()> {
    let lock = WriterLock::acquire(dir)?;
    let index = Index::open_without_graph(dir)?;
    let reclaimed = index.removed_rows().len();
    let started = std::time::Instant::now();
    let compact = index.compacted()?;
    drop(index);
    warn_if_not_durable(dir, compact.save(&lock)?);
    println!(
        "compacted {}: {} items, {reclaimed} removed rows reclaimed, graph rebuilt in {:.1} s",
        dir.display(),
        compact.live_len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
