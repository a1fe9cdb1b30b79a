//! Background compaction of the served index. Uploads and removals only append to the write-ahead log; once the
//! log passes the policy's threshold a compaction starts on its own thread after the change that crossed it:
//!
//! - a *fold* saves the live index (graph included) under the writer mutex: searches go on (they only read),
//!   changes wait for it (a request that waits past its deadline is answered 202 and finishes later);
//! - a *reclaim* builds the compacted index from a snapshot without holding anything (the long part: a graph
//!   built anew), then, under the writer mutex, catches up with the changes logged meanwhile, saves it and swaps
//!   it in. Both copies are in memory meanwhile.
//!
//! One compaction at a time, and none before the graph is ready (a fold would store no graph).

use std::sync::PoisonError;
use std::time::Instant;

use hetvis_indexer::{Compaction, IndexError};
use serde::Serialize;

use crate::state::{GraphState, SharedState};

/// What `/readyz` and `/v1/info` report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionStatus {
    /// `idle`, `fold`, `reclaim` (running) or `failed`.
    pub state: &'static str,
    /// Compactions finished since start-up.
    pub runs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CompactionStatus {
    pub fn idle() -> Self {
        Self {
            state: "idle",
            ..Self::default()
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, "fold" | "reclaim")
    }
}

fn label(kind: Compaction) -> &'static str {
    match kind {
        Compaction::Fold => "fold",
        Compaction::Reclaim => "reclaim",
    }
}

/// Starts a compaction when the policy says one is due and none is running. Call it with no index lock held.
pub fn start_if_due(state: &SharedState) {
    if state.writer_lock.is_none() || state.graph_state() != GraphState::Ready {
        return;
    }
    let Some(kind) = state.compaction_policy.due(&state.read_index()) else {
        return;
    };
    {
        let mut status = state
            .compaction
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if status.running() {
            return;
        }
        status.state = label(kind);
        status.error = None;
    }
    let shared = state.clone();
    let spawned = std::thread::Builder::new()
        .name("compaction".into())
        .spawn(move || {
            let started = Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&shared, kind)))
                    .unwrap_or_else(|panic| {
                        Err(IndexError::InvalidParams(format!(
                            "the compaction panicked: {}",
                            hetvis_indexer::panic_message(panic.as_ref())
                        )))
                    });
            finish(&shared, kind, started, outcome);
        });
    if let Err(e) = spawned {
        finish(
            state,
            kind,
            Instant::now(),
            Err(IndexError::InvalidParams(e.to_string())),
        );
    }
}

fn finish(
    state: &SharedState,
    kind: Compaction,
    started: Instant,
    outcome: Result<(), IndexError>,
) {
    let seconds = started.elapsed().as_secs_f64();
    let mut status = state
        .compaction
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match outcome {
        Ok(()) => {
            tracing::info!(kind = label(kind), seconds, "index compacted");
            state
                .metrics
                .compactions
                .with_label_values(&[label(kind), "ok"])
                .inc();
            status.state = "idle";
            status.runs += 1;
            status.last_seconds = Some(seconds);
        }
        Err(e) => {
            // The log and the stored files are as they were: nothing is lost, the next change tries again.
            tracing::error!(kind = label(kind), error = %e, "index compaction failed");
            state
                .metrics
                .compactions
                .with_label_values(&[label(kind), "failed"])
                .inc();
            status.state = "failed";
            status.error = Some(e.to_string());
        }
    }
    drop(status);
    let index = state.read_index();
    state.metrics.log_bytes.set(index.log_stats().bytes as i64);
    state.metrics.index_size.set(index.live_len() as i64);
}

fn run(state: &SharedState, kind: Compaction) -> Result<(), IndexError> {
    let lock = state
        .writer_lock
        .as_ref()
        .ok_or_else(|| IndexError::InvalidParams("no writer lock".into()))?;
    if hetvis_models::failpoint::fail("compaction") {
        return Err(IndexError::InvalidParams(
            "injected compaction failure".into(),
        ));
    }
    match kind {
        Compaction::Fold => {
            let _writer = state.writer.blocking_lock();
            let saved = state.read_index().save(lock)?;
            state.write_index().rebase(saved)
        }
        Compaction::Reclaim => {
            let (snapshot, seen) = {
                let _writer = state.writer.blocking_lock();
                let index = state.read_index();
                (index.clone_without_graph(), index.log_stats().changes)
            };
            let mut compacted = snapshot.compacted()?;
            drop(snapshot);
            let _writer = state.writer.blocking_lock();
            let logged = state.read_index().logged_changes(lock)?;
            let seen = usize::try_from(seen)
                .unwrap_or(usize::MAX)
                .min(logged.len());
            compacted.catch_up(&logged[seen..])?;
            let saved = compacted.save(lock)?;
            compacted.rebase(saved)?;
            *state.write_index() = compacted;
            Ok(())
        }
    }
}
