//! [`RequestStats`]: requests to a store by operation and outcome, with a histogram of how
//! long each took to be answered, for a node's `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Clock;
use crate::histogram::{DurationHistogram, HistogramSnapshot};

/// What a request asked of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET (whole object or range).
    Get,
    /// HEAD.
    Head,
    /// Unconditional PUT (multipart uploads and copies included).
    Put,
    /// Conditional PUT (`If-None-Match` or `If-Match`).
    ConditionalPut,
    /// LIST (one per page of up to 1000 keys).
    List,
    /// DELETE.
    Delete,
}

impl Operation {
    /// Every operation, in the order [`RequestStats`] reports them.
    pub const ALL: [Operation; 6] = [
        Operation::Get,
        Operation::Head,
        Operation::Put,
        Operation::ConditionalPut,
        Operation::List,
        Operation::Delete,
    ];

    /// Its name in metrics: `get`, `head`, `put`, `conditional_put`, `list`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::Put => "put",
            Operation::ConditionalPut => "conditional_put",
            Operation::List => "list",
            Operation::Delete => "delete",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with success.
    Ok,
    /// The object does not exist (a normal answer for probes and lookups).
    NotFound,
    /// A conditional read found the object unchanged (`304`).
    NotModified,
    /// A conditional write lost: the object exists, or changed (`409`/`412`).
    PreconditionFailed,
    /// Failed: a network error, a server error, a lost response.
    Error,
    /// Abandoned by its caller before an answer came (a timeout, a cancelled query).
    Cancelled,
}

impl Outcome {
    /// Every outcome, in the order [`RequestStats`] reports them.
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::NotModified,
        Outcome::PreconditionFailed,
        Outcome::Error,
        Outcome::Cancelled,
    ];

    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::NotModified => "not_modified",
            Outcome::PreconditionFailed => "precondition_failed",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome of a request that answered `result`.
    pub fn of<T>(result: &object_store::Result<T>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(object_store::Error::NotFound { .. }) => Outcome::NotFound,
            Err(object_store::Error::NotModified { .. }) => Outcome::NotModified,
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Outcome::PreconditionFailed,
            Err(_) => Outcome::Error,
        }
    }
}

/// Upper bounds, in seconds, of the request duration histogram's buckets (the last bucket,
/// `+Inf`, is implied): from a local folder's 1 ms to a struggling store's 10 s.
pub const DURATION_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

const OPS: usize = Operation::ALL.len();
const OUTCOMES: usize = Outcome::ALL.len();

/// Counters of requests by operation and outcome, and their durations: updated with one
/// relaxed atomic add per figure, read as a [`RequestStats`] snapshot.
#[derive(Debug)]
pub(crate) struct RequestLog {
    outcomes: [[AtomicU64; OUTCOMES]; OPS],
    durations: [DurationHistogram; OPS],
}

impl Default for RequestLog {
    fn default() -> Self {
        Self {
            outcomes: Default::default(),
            durations: std::array::from_fn(|_| DurationHistogram::new(&DURATION_BOUNDS)),
        }
    }
}

fn index<T: PartialEq>(all: &[T], item: &T) -> usize {
    all.iter().position(|x| x == item).unwrap_or(0)
}

impl RequestLog {
    /// Counts `n` requests of `op` that ended with `outcome`, without a duration (the
    /// further pages of one listing).
    pub(crate) fn count(&self, op: Operation, outcome: Outcome, n: u64) {
        let (o, r) = (index(&Operation::ALL, &op), index(&Outcome::ALL, &outcome));
        self.outcomes[o][r].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` requests of `op` that ended with `outcome` after `took`.
    pub(crate) fn record(&self, op: Operation, outcome: Outcome, took: Duration, n: u64) {
        self.count(op, outcome, n);
        self.durations[index(&Operation::ALL, &op)].record(took, n);
    }

    /// The figures so far.
    pub(crate) fn snapshot(&self) -> RequestStats {
        let operations = Operation::ALL
            .iter()
            .enumerate()
            .map(|(o, &operation)| {
                let outcomes = Outcome::ALL
                    .iter()
                    .enumerate()
                    .map(|(r, &outcome)| (outcome, self.outcomes[o][r].load(Ordering::Relaxed)))
                    .collect();
                OperationStats {
                    operation,
                    outcomes,
                    durations: self.durations[o].snapshot(),
                }
            })
            .collect();
        RequestStats { operations }
    }
}

/// One request being timed: recorded when it is [`finish`](Self::finish)ed, or as
/// [`Outcome::Cancelled`] if it is dropped first (its caller gave up on it).
pub(crate) struct Timed {
    log: Arc<RequestLog>,
    clock: Arc<dyn Clock>,
    op: Operation,
    n: u64,
    started: Duration,
    outcome: Option<Outcome>,
}

impl Timed {
    /// Starts timing `n` requests of `op`.
    pub(crate) fn start(
        log: &Arc<RequestLog>,
        clock: &Arc<dyn Clock>,
        op: Operation,
        n: u64,
    ) -> Self {
        Self {
            log: Arc::clone(log),
            clock: Arc::clone(clock),
            op,
            n,
            started: clock.monotonic(),
            outcome: None,
        }
    }

    /// Records the request as answered with `result`, and hands `result` back.
    pub(crate) fn finish<T>(mut self, result: object_store::Result<T>) -> object_store::Result<T> {
        self.outcome = Some(Outcome::of(&result));
        result
    }

    /// Notes that the request failed (a listing whose stream yielded an error); recorded
    /// when dropped.
    pub(crate) fn failed(&mut self) {
        self.outcome = Some(Outcome::Error);
    }

    /// Notes that the request was answered (a listing that reached its end); recorded when
    /// dropped, unless it failed.
    pub(crate) fn answered(&mut self) {
        self.outcome.get_or_insert(Outcome::Ok);
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let took = self.clock.monotonic().saturating_sub(self.started);
        let outcome = self.outcome.unwrap_or(Outcome::Cancelled);
        self.log.record(self.op, outcome, took, self.n);
    }
}

/// Requests to a store so far, by operation: how each ended and how long each took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestStats {
    /// One entry per [`Operation`], in [`Operation::ALL`]'s order.
    pub operations: Vec<OperationStats>,
}

/// One operation's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    /// Which operation.
    pub operation: Operation,
    /// Requests by outcome, one entry per [`Outcome`] in [`Outcome::ALL`]'s order.
    pub outcomes: Vec<(Outcome, u64)>,
    /// How long the timed requests took, bucketed at [`DURATION_BOUNDS`] (a listing's
    /// further pages are counted in `outcomes`, not timed).
    pub durations: HistogramSnapshot,
}

impl RequestStats {
    /// Requests of `op` that ended with `outcome`.
    pub fn count(&self, op: Operation, outcome: Outcome) -> u64 {
        self.operations
            .iter()
            .filter(|s| s.operation == op)
            .flat_map(|s| &s.outcomes)
            .filter(|(o, _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn requests_are_counted_by_outcome_and_bucketed_by_duration() {
        let log = Arc::new(RequestLog::default());
        let manual = Arc::new(ManualClock::new());
        let clock: Arc<dyn Clock> = manual.clone();
        let t = Timed::start(&log, &clock, Operation::Get, 1);
        manual.advance(Duration::from_millis(3));
        let _ = t.finish::<()>(Err(object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        }));
        let t = Timed::start(&log, &clock, Operation::ConditionalPut, 1);
        manual.advance(Duration::from_secs(30));
        let _ = t.finish::<()>(Err(object_store::Error::AlreadyExists {
            path: "x".into(),
            source: "taken".into(),
        }));
        drop(Timed::start(&log, &clock, Operation::List, 2));
        log.count(Operation::List, Outcome::Ok, 4);

        let stats = log.snapshot();
        assert_eq!(stats.count(Operation::Get, Outcome::NotFound), 1);
        assert_eq!(stats.count(Operation::Get, Outcome::Ok), 0);
        assert_eq!(
            stats.count(Operation::ConditionalPut, Outcome::PreconditionFailed),
            1
        );
        assert_eq!(stats.count(Operation::List, Outcome::Cancelled), 2);
        assert_eq!(stats.count(Operation::List, Outcome::Ok), 4);
        let get = &stats.operations[0];
        // 3 ms lands in the 5 ms bucket, not below it.
        assert_eq!(get.durations.buckets[1], (0.0025, 0));
        assert_eq!(get.durations.buckets[2], (0.005, 1));
        assert_eq!(get.durations.count, 1);
        assert!((get.durations.sum_seconds - 0.003).abs() < 1e-9);
        let put = &stats.operations[3];
        assert_eq!(
            put.durations.buckets[DURATION_BOUNDS.len() - 1].1,
            0,
            "30 s is over 10 s"
        );
        assert_eq!(put.durations.buckets.last(), Some(&(f64::INFINITY, 1)));
        let list = &stats.operations[4];
        assert_eq!(
            list.durations.count, 2,
            "further pages are counted, not timed"
        );
    }
}
