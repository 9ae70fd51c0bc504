//! What a coordinator counts of the distributed queries it ran: the figures an operator
//! watches, and the ones a simulation checks stay at zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counts of one coordinator (clones share them).
#[derive(Debug, Clone, Default)]
pub struct CoordinatorCounts {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    fragments: AtomicU64,
    tasks_given_up: AtomicU64,
    duplicate_reads: AtomicU64,
    splits_reused: AtomicU64,
}

/// A snapshot of [`CoordinatorCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoordinatorTally {
    /// Distributed fragments coordinated (a query with two split scans runs two).
    pub fragments: u64,
    /// Task attempts given up (failed, or their node gone or hung); their cells went to a
    /// later round.
    pub tasks_given_up: u64,
    /// Results refused because they held a cell another result of the same query had
    /// already delivered. Claims make every shared cell read by one task of a round and
    /// later rounds read only what is missing, so this stays 0: anything else means two
    /// tasks read one cell (a claim failed) and one of the results was thrown away.
    pub duplicate_reads: u64,
    /// Queries split as an earlier one was, with no new optimization: the same query over
    /// the same frame versions, in the same scope and settings (see `docs/distributed.md`).
    pub splits_reused: u64,
}

impl CoordinatorCounts {
    pub(crate) fn fragment(&self) {
        self.inner.fragments.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn given_up(&self) {
        self.inner.tasks_given_up.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn duplicate_read(&self) {
        self.inner.duplicate_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn split_reused(&self) {
        self.inner.splits_reused.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn tally(&self) -> CoordinatorTally {
        CoordinatorTally {
            fragments: self.inner.fragments.load(Ordering::Relaxed),
            tasks_given_up: self.inner.tasks_given_up.load(Ordering::Relaxed),
            duplicate_reads: self.inner.duplicate_reads.load(Ordering::Relaxed),
            splits_reused: self.inner.splits_reused.load(Ordering::Relaxed),
        }
    }
}
