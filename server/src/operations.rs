//! Gallery changes whose request ended before they did (202 Accepted): their state, readable at
//! `GET /operations/{id}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

#[allow(unused_imports)] // named by the schema attribute
use crate::routes::gallery::AddResponse;

/// Operations remembered; the oldest finished ones are forgotten past this.
const KEEP: usize = 1024;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum OperationState {
    Running,
    Committed {
        #[schema(value_type = AddResponse)]
        result: serde_json::Value,
    },
    Failed {
        status: u16,
        error: String,
    },
}

#[derive(Debug)]
pub struct Operations {
    /// Distinguishes this process's ids from an earlier one's.
    epoch: u64,
    next: AtomicU64,
    /// Locked only to read or write one entry (never across work or an await).
    states: Mutex<BTreeMap<u64, OperationState>>,
}

impl Default for Operations {
    fn default() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            epoch,
            next: AtomicU64::new(1),
            states: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Operations {
    /// Registers a running operation; returns its id.
    pub fn start(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.insert(n, OperationState::Running);
        while states.len() > KEEP {
            let oldest_done = states
                .iter()
                .find(|(_, s)| !matches!(s, OperationState::Running))
                .map(|(k, _)| *k);
            match oldest_done {
                Some(k) => states.remove(&k),
                None => break,
            };
        }
        format!("{:x}-{n}", self.epoch)
    }

    pub fn finish(&self, id: &str, state: OperationState) {
        if let Some(n) = self.number(id) {
            self.states
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(n, state);
        }
    }

    pub fn get(&self, id: &str) -> Option<OperationState> {
        let n = self.number(id)?;
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&n)
            .cloned()
    }

    fn number(&self, id: &str) -> Option<u64> {
        let (epoch, n) = id.split_once('-')?;
        (u64::from_str_radix(epoch, 16).ok()? == self.epoch)
            .then(|| n.parse().ok())
            .flatten()
    }
}

/// Runs a gallery change as an operation of its own: it finishes whatever happens to the request (past the
/// deadline the timeout answers 202 with the id set in `slot`, rather than 503), and its outcome is recorded by
/// the task, not the request, for `GET /operations/{id}`.
pub async fn run_as_operation<T, F>(
    state: &crate::state::SharedState,
    slot: &crate::work::CommitSlot,
    change: F,
) -> Result<T, crate::error::ApiError>
where
    T: Serialize + Send + 'static,
    F: std::future::Future<Output = Result<T, crate::error::ApiError>> + Send + 'static,
{
    let operation = state.operations.start();
    slot.set(&operation);
    let shared = state.clone();
    let task = tokio::spawn(async move {
        let result = change.await;
        shared.operations.finish(
            &operation,
            match &result {
                Ok(r) => OperationState::Committed {
                    result: serde_json::to_value(r).unwrap_or_default(),
                },
                Err(e) => OperationState::Failed {
                    status: e.status().as_u16(),
                    error: e.to_string(),
                },
            },
        );
        result
    });
    task.await.map_err(crate::error::ApiError::from)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_finished_ones_are_forgotten_oldest_first() {
        let ops = Operations::default();
        let first = ops.start();
        assert!(matches!(ops.get(&first), Some(OperationState::Running)));
        ops.finish(
            &first,
            OperationState::Failed {
                status: 409,
                error: "x".into(),
            },
        );
        assert!(matches!(
            ops.get(&first),
            Some(OperationState::Failed { .. })
        ));
        assert!(ops.get("0-1").is_none() && ops.get("junk").is_none());
        let running = ops.start();
        for _ in 0..KEEP {
            let id = ops.start();
            ops.finish(
                &id,
                OperationState::Committed {
                    result: serde_json::json!({}),
                },
            );
        }
        assert!(
            ops.get(&first).is_none(),
            "the oldest finished one goes first"
        );
        assert!(matches!(ops.get(&running), Some(OperationState::Running)));
    }
}
