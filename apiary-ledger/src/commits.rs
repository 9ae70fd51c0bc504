//! [`CommitTally`]: how a process's conditional puts of ledger entries ended, for a node's
//! `/metrics` (`apiary_ledger_commits_total{outcome}`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apiary_storage::{CreateOutcome, ErrorKind, StorageError};

/// Counts attempts to create a ledger entry (a frame's next version, a registry change) by
/// outcome. Clones share one tally; [`LedgerConfig`](crate::LedgerConfig) carries the one
/// a registry and its frame ledgers count into.
#[derive(Debug, Clone, Default)]
pub struct CommitTally(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    committed: AtomicU64,
    conflict: AtomicU64,
    outcome_unknown: AtomicU64,
    failed: AtomicU64,
}

/// Attempts to create a ledger entry so far, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitCounts {
    /// The entry was created: a commit.
    pub committed: u64,
    /// Another writer created that version first (the commit retries against it, or the
    /// change was found applied already).
    pub conflict: u64,
    /// The storage could not tell whether the entry was created, even after reading it
    /// back; the caller was told the outcome is unknown.
    pub outcome_unknown: u64,
    /// The request failed and certainly created nothing.
    pub failed: u64,
}

impl CommitCounts {
    /// `(outcome, count)` pairs as `/metrics` labels them.
    pub fn by_outcome(&self) -> [(&'static str, u64); 4] {
        [
            ("committed", self.committed),
            ("conflict", self.conflict),
            ("outcome_unknown", self.outcome_unknown),
            ("failed", self.failed),
        ]
    }
}

impl CommitTally {
    /// Counts one attempt that ended with `result`.
    pub(crate) fn record(&self, result: &apiary_storage::Result<CreateOutcome>) {
        let c = &self.0;
        let counter = match result {
            Ok(CreateOutcome::Created(_)) => &c.committed,
            Ok(CreateOutcome::AlreadyExists(_)) => &c.conflict,
            Err(e) if is_unknown(e) => &c.outcome_unknown,
            Err(_) => &c.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> CommitCounts {
        let c = &self.0;
        CommitCounts {
            committed: c.committed.load(Ordering::Relaxed),
            conflict: c.conflict.load(Ordering::Relaxed),
            outcome_unknown: c.outcome_unknown.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

fn is_unknown(e: &StorageError) -> bool {
    e.kind() == ErrorKind::OutcomeUnknown
}
