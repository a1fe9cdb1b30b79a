//! Work that outlives its request: the admission permit travels with it.
//!
//! The request timeout drops a request's future, but blocking work it started (a decode, an exact scan, a
//! save) runs on. The permit that admitted the request is shared (`Arc`) with every piece of such work and is
//! returned only when the last one ends, so `--max-in-flight` bounds the work running, not only the requests
//! still waiting for an answer.

use std::sync::{Arc, OnceLock};

use tokio::sync::OwnedSemaphorePermit;

/// A request's admission permit (set by the admission middleware), cloned into the work it starts.
#[derive(Debug, Clone)]
pub struct Admitted(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl Admitted {
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(permit))
    }
}

/// Set by a handler once it has started a commit that will finish whatever happens to the request: the
/// timeout then answers 202 with this operation id instead of 503, since the change will be made.
#[derive(Debug, Clone, Default)]
pub struct CommitSlot(Arc<OnceLock<String>>);

impl CommitSlot {
    pub fn set(&self, operation: &str) {
        let _ = self.0.set(operation.to_owned());
    }

    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}
