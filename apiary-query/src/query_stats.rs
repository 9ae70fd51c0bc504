//! What an engine counts of the SQL it ran: statements by outcome, and how long they took
//! (from the start of planning to the end of their rows, or to their error or cancellation).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apiary_storage::{DurationHistogram, ErrorKind, HistogramSnapshot};

/// Upper bounds of the duration buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its rows ran to their end.
    Ok,
    /// Its rows were dropped before their end.
    Cancelled,
    /// It failed with an error of this kind.
    Failed(ErrorKind),
}

impl Outcome {
    /// Every outcome, in the order [`QueryTally::outcomes`] lists them.
    pub fn all() -> impl Iterator<Item = Outcome> {
        [Outcome::Ok, Outcome::Cancelled]
            .into_iter()
            .chain(ErrorKind::ALL.into_iter().map(Outcome::Failed))
    }

    /// Its name: `ok`, `cancelled`, or the error kind's (`invalid_input`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed(kind) => kind.as_str(),
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Cancelled => 1,
            Outcome::Failed(kind) => {
                2 + ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
            }
        }
    }
}

/// How many outcomes there are.
const OUTCOMES: usize = 2 + ErrorKind::ALL.len();

/// The counts of one engine (clones share them).
#[derive(Debug, Clone)]
pub struct QueryStats {
    inner: Arc<Counters>,
}

impl Default for QueryStats {
    fn default() -> Self {
        Self {
            inner: Arc::new(Counters {
                outcomes: Default::default(),
                durations: DurationHistogram::new(&DURATION_BUCKETS),
            }),
        }
    }
}

#[derive(Debug)]
struct Counters {
    outcomes: [AtomicU64; OUTCOMES],
    durations: DurationHistogram,
}

/// A snapshot of [`QueryStats`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTally {
    /// Statements by outcome name (every [`Outcome`], in order).
    pub outcomes: Vec<(&'static str, u64)>,
    /// How long they took, bucketed at [`DURATION_BUCKETS`].
    pub durations: HistogramSnapshot,
}

impl QueryStats {
    /// Counts one statement that ended with `outcome` after `elapsed`.
    pub fn record(&self, outcome: Outcome, elapsed: Duration) {
        self.inner.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.inner.durations.record(elapsed, 1);
    }

    /// The counts now.
    pub fn tally(&self) -> QueryTally {
        let outcomes = Outcome::all()
            .map(|o| {
                (
                    o.as_str(),
                    self.inner.outcomes[o.index()].load(Ordering::Relaxed),
                )
            })
            .collect();
        QueryTally {
            outcomes,
            durations: self.inner.durations.snapshot(),
        }
    }
}

/// Rows of a statement, counted into [`QueryStats`] when they end: `ok` at their end, the
/// error's kind at their first error, `cancelled` when dropped before either.
pub(crate) struct Recorded {
    inner: Option<datafusion::physical_plan::SendableRecordBatchStream>,
    stats: QueryStats,
    clock: Arc<dyn apiary_storage::Clock>,
    started: Duration,
    done: bool,
    /// The statement's place in the running list (it leaves the list when this drops).
    ticket: crate::running::Ticket,
    /// Resolves when the statement is cancelled.
    cancelled: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Recorded {
    /// `inner`, counting its statement, which started at `started` on `clock`.
    pub(crate) fn wrap(
        inner: datafusion::physical_plan::SendableRecordBatchStream,
        stats: QueryStats,
        clock: Arc<dyn apiary_storage::Clock>,
        started: Duration,
        ticket: crate::running::Ticket,
    ) -> datafusion::physical_plan::SendableRecordBatchStream {
        let schema = inner.schema();
        let recorded = Self {
            inner: Some(inner),
            stats,
            clock,
            started,
            done: false,
            cancelled: Box::pin(ticket.cancelled()),
            ticket,
        };
        Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, recorded))
    }

    fn finish(&mut self, outcome: Outcome) {
        if !self.done {
            self.done = true;
            let elapsed = self.clock.monotonic().saturating_sub(self.started);
            self.stats.record(outcome, elapsed);
        }
    }
}

impl futures::Stream for Recorded {
    type Item = datafusion::error::Result<arrow_array::RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.inner.is_some() && self.cancelled.as_mut().poll(cx).is_ready() {
            // Stop its work now (a distributed query abandons its tasks as it drops).
            self.inner = None;
            self.finish(Outcome::Cancelled);
            let error = self.ticket.error();
            return std::task::Poll::Ready(Some(Err(
                datafusion::error::DataFusionError::External(Box::new(error)),
            )));
        }
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = inner.as_mut().poll_next(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.finish(Outcome::Ok),
            std::task::Poll::Ready(Some(Err(e))) => {
                self.finish(Outcome::Failed(crate::error::datafusion_kind(e)));
            }
            _ => {}
        }
        polled
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_cumulative_buckets_and_outcomes_are_counted() {
        let stats = QueryStats::default();
        stats.record(Outcome::Ok, Duration::from_micros(500));
        stats.record(Outcome::Ok, Duration::from_millis(20));
        stats.record(
            Outcome::Failed(ErrorKind::InvalidInput),
            Duration::from_secs(500),
        );
        stats.record(
            Outcome::Failed(ErrorKind::Internal),
            Duration::from_millis(1),
        );
        let t = stats.tally();
        assert_eq!(t.durations.count, 4);
        assert_eq!(t.outcomes[0], ("ok", 2));
        assert_eq!(t.outcomes[2], ("invalid_input", 1));
        assert_eq!(t.outcomes[9], ("internal", 1));
        assert_eq!(t.durations.buckets[0], (0.001, 2)); // 0.5 ms and exactly 1 ms
        assert_eq!(t.durations.buckets[4], (0.025, 3));
        assert_eq!(*t.durations.buckets.last().unwrap(), (f64::INFINITY, 4));
        assert!(
            (t.durations.sum_seconds - 500.0215).abs() < 1e-6,
            "{}",
            t.durations.sum_seconds
        );
    }
}
