//! [`RequestTrace`]: the requests stores saw, written down in order (see
//! [`InstrumentedStore::with_trace`](crate::InstrumentedStore::with_trace)).

use std::sync::{Arc, Mutex};

/// The requests that one or more [`InstrumentedStore`](crate::InstrumentedStore)s saw, in
/// the order they were made, each with its time on the store's clock, its operation, its
/// key and the fault it drew: what a simulation compares to prove that a seed replays the
/// same history.
#[derive(Debug, Clone, Default)]
pub struct RequestTrace(Arc<Mutex<Vec<String>>>);

impl RequestTrace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// The requests so far, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}
