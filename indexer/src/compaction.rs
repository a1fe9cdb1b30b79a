//! When to compact an index, and how. A *fold* saves the whole index, so the write-ahead log starts empty
//! again: it keeps the cost of opening (which replays the log, inserting its rows into the graph) bounded. A
//! *reclaim* also drops removed rows, which needs a graph built anew (`hnsw_rs` cannot unlink points): worth it
//! only once removed rows are a good share of the index.

use crate::atomic_dir::{Durability, WriterLock};
use crate::error::IndexError;
use crate::index::Index;

/// What a compaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compaction {
    /// Save everything with the log folded in; removed rows stay (and keep routing graph searches).
    Fold,
    /// Fold, and rewrite without removed rows, with a graph built anew over the live ones.
    Reclaim,
}

/// Thresholds of automatic compaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    /// Fold once the log holds this many changed items (added or removed) ...
    pub min_log_items: u64,
    /// ... or this share of the stored rows, whichever is larger: replaying the log on open then costs at most
    /// about this share of a build.
    pub log_ratio: f64,
    /// Fold once the log is this large, whatever it holds.
    pub max_log_bytes: u64,
    /// Reclaim once removed rows are this share of all rows.
    pub reclaim_ratio: f64,
}

impl Default for CompactionPolicy {
    /// At a million stored rows a fold every 50,000 changed items (a log of about 25-30 MB at d=128), whose
    /// replay on open costs about 20 s of inserts on 2 cores; a reclaim when a fifth of the rows are removed.
    fn default() -> Self {
        Self {
            min_log_items: 10_000,
            log_ratio: 0.05,
            max_log_bytes: 256 << 20,
            reclaim_ratio: 0.2,
        }
    }
}

impl CompactionPolicy {
    /// The compaction `index` is due for, if any.
    pub fn due(&self, index: &Index) -> Option<Compaction> {
        let removed = index.removed_rows().len() as f64;
        if removed > 0.0 && removed >= self.reclaim_ratio * index.len() as f64 {
            return Some(Compaction::Reclaim);
        }
        let log = index.log_stats();
        let items = log.added + log.removed;
        let threshold = (self.min_log_items as f64).max(self.log_ratio * index.base_rows() as f64);
        (items > 0 && (items as f64 >= threshold || log.bytes >= self.max_log_bytes))
            .then_some(Compaction::Fold)
    }
}

/// Compacts the locked directory `index` was opened from, and returns the index as now saved (its log empty).
/// A fold stores the graph: the one installed, else the stored one (extended by the log's rows) or one built.
pub fn run(
    mut index: Index,
    lock: &WriterLock,
    kind: Compaction,
) -> Result<(Index, Durability), IndexError> {
    let mut index = match kind {
        Compaction::Reclaim => index.compacted()?,
        Compaction::Fold => {
            if !index.has_graph() {
                let (graph, how) = index.load_or_build_graph()?;
                tracing::info!(
                    vectors = index.len(),
                    "{how} the HNSW graph to fold the log into"
                );
                index.install_graph(graph)?;
            }
            index
        }
    };
    let saved = index.save(lock)?;
    let durability = saved.durability.clone();
    index.rebase(saved)?;
    Ok((index, durability))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GalleryModel, HnswParams, Record, WriterLock};

    fn index(dir: &std::path::Path, n: usize) -> (Index, WriterLock) {
        let gallery = GalleryModel {
            name: "g".into(),
            compat_id: "c".into(),
            sha256: "0".into(),
        };
        let mut index = Index::new(gallery, 2, HnswParams::default()).unwrap();
        index
            .add(
                (0..n)
                    .map(|i| (Record::new(format!("{i}")), vec![1.0, i as f32]))
                    .collect(),
            )
            .unwrap();
        let lock = WriterLock::acquire(dir).unwrap();
        let saved = index.save(&lock).unwrap();
        index.rebase(saved).unwrap();
        (index, lock)
    }

    #[test]
    fn folds_past_the_log_threshold_and_reclaims_past_the_removed_share() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut index, lock) = index(&tmp.path().join("idx"), 100);
        let policy = CompactionPolicy {
            min_log_items: 10,
            log_ratio: 0.05,
            max_log_bytes: 1 << 30,
            reclaim_ratio: 0.2,
        };
        assert_eq!(policy.due(&index), None);
        let ids: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        index.remove_logged(&lock, &ids).unwrap();
        assert_eq!(policy.due(&index), None, "9 changed items, threshold 10");
        index
            .add_logged(&lock, vec![(Record::new("new"), vec![0.5, 0.5])])
            .unwrap();
        assert_eq!(policy.due(&index), Some(Compaction::Fold));
        let more: Vec<String> = (9..21).map(|i| i.to_string()).collect();
        index.remove_logged(&lock, &more).unwrap();
        assert_eq!(
            policy.due(&index),
            Some(Compaction::Reclaim),
            "21 of 101 rows removed"
        );
        let bytes = CompactionPolicy {
            max_log_bytes: 100,
            min_log_items: 1_000,
            reclaim_ratio: 1.0,
            ..policy
        };
        assert_eq!(bytes.due(&index), Some(Compaction::Fold));
    }
}
