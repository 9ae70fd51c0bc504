//! The [`ShuffleTransport`] seam: how tasks reach workers and results reach coordinators.
//!
//! The default, [`StorageShuffle`](crate::StorageShuffle), goes through the shared storage;
//! a researcher can plug in another (Arrow Flight, a message queue) behind the same trait and
//! check it with the conformance suite (`apiary_shuffle::conformance`, feature `testing`).
//!
//! # Contract
//!
//! * **Delivery.** A task published with [`publish_tasks`](ShuffleTransport::publish_tasks)
//!   is returned by [`poll_tasks`](ShuffleTransport::poll_tasks) of its node (`node_id`) at
//!   least once, as long as the query has not been [`finish`](ShuffleTransport::finish)ed,
//!   and never to another node. `poll_tasks` may return a task again (after a restart, or
//!   whenever the transport cannot tell): workers drop tasks they already took, by
//!   [`TaskKey`].
//! * **Results.** A task's rows are a stream of record batches: its worker writes them to
//!   the [`ResultWriter`] that [`open_result`](ShuffleTransport::open_result) gives, as it
//!   produces them, and [`finish`](ResultWriter::finish)es it with its report. A transport
//!   moves them in bounded chunks (the storage default: objects of a few MiB each, then an
//!   end object), so a task's output never needs to fit in memory, on either side. An
//!   outcome without rows ([`TaskOutcome::Empty`], [`TaskOutcome::Failed`]) is published
//!   with [`publish_outcome`](ShuffleTransport::publish_outcome).
//! * **Collection.** An ended result is returned by [`collect`](ShuffleTransport::collect)
//!   for that query whenever its key is asked for, whole or not at all: a result is
//!   [`TaskOutcome::Rows`] only once its writer finished, with the rows in hand and the
//!   names of the chunks still to read with [`read_chunk`](ShuffleTransport::read_chunk),
//!   which stay readable until the query is finished. Ending the same key twice keeps one of
//!   the results whole (workers produce the same rows for a key, not necessarily in the same
//!   chunks), never a mix of two.
//! * **Wake-up.** A transport that [`pushes_tasks`](ShuffleTransport::pushes_tasks) makes
//!   [`tasks_arrived`](ShuffleTransport::tasks_arrived) of a node return soon after tasks
//!   for it are published, so its worker polls at once; polling at an interval works
//!   with every transport.
//! * **Results pushed.** A transport may wake a waiting coordinator through
//!   [`results_arrived`](ShuffleTransport::results_arrived) when outcomes of its query
//!   arrive; looking at intervals works with every transport.
//! * **Ordering.** None across tasks: the coordinator orders nothing by arrival.
//! * **Crashes.** A worker that dies leaves its tasks without outcomes; the coordinator sees
//!   that through membership and deadlines and publishes a new attempt elsewhere. Outcomes of
//!   older attempts stay valid (every attempt computes the same answer) and may arrive late.
//!   A coordinator that dies leaves its query behind; [`sweep`](ShuffleTransport::sweep)
//!   removes queries older than a retention, whoever calls it. A query its coordinator
//!   [`renew`](ShuffleTransport::renew)ed within the retention is never swept.
//! * **Pickup.** A transport that [`reports_pickup`](ShuffleTransport::reports_pickup)
//!   returns [`TaskOutcome::Running`] from `collect` for a task soon (within a second) after
//!   [`poll_tasks`](ShuffleTransport::poll_tasks) has returned it, until its outcome is
//!   published; a task whose manifest its worker cannot read gets a failed outcome instead.
//! * **Claims.** [`claim`](ShuffleTransport::claim) arbitrates the cells tasks of one attempt
//!   round share: for a `(query, attempt, cell)`, exactly one task ever gets `true`, and it
//!   gets `true` again if it asks again (a claim whose response was lost is still its own).
//!   A transport that cannot arbitrate says so with
//!   [`can_claim`](ShuffleTransport::can_claim); its tasks then share nothing.
//! * **Cleanup.** After `finish`, nothing of the query remains and late outcomes for it are
//!   dropped or swept.
//! * **Cancellation.** After `finish` or [`cancel`](ShuffleTransport::cancel),
//!   [`wanted`](ShuffleTransport::wanted) answers `false` for every task of the query (where
//!   the transport can tell), so that workers stop what no one waits for.

use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::manifest::{TaskKey, TaskSpec};
use apiary_storage::ErrorKind;

/// What a worker reports about a task it ran (for `EXPLAIN ANALYZE` and statistics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The node that ran it.
    pub node_id: String,
    /// Rows in the result.
    pub rows: u64,
    /// Wall time from taking the task to publishing its outcome, in milliseconds.
    pub elapsed_ms: u64,
    /// Cell reads the worker served from its cache.
    #[serde(default)]
    pub cache_hits: u64,
    /// Cell reads that went to storage.
    #[serde(default)]
    pub cache_misses: u64,
    /// Bytes the worker read from storage.
    #[serde(default)]
    pub bytes_from_storage: u64,
    /// Of `elapsed_ms`, the time spent parsing and planning the fragment.
    #[serde(default)]
    pub planning_ms: u64,
    /// Whether the worker reused the optimized plan of an earlier run of the same fragment
    /// over the same cells (then only the physical plan was made).
    #[serde(default)]
    pub plan_reused: bool,
    /// For a task that shares cells ([`TaskSpec::shares`]): the cells it read (its unshared
    /// ones and the shared or stolen ones whose claim it won).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    /// For a task that shares cells: the cells its plan ruled out before reading (by the
    /// ledger's statistics or a limit); every task of the round rules out the same ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// How the result came back to the coordinator (`storage`, `flight`, `local`): set by
    /// the coordinator's transport when it collects it, not by the worker.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via: String,
}

/// A task's rows, as the coordinator receives them: some in hand, the rest in chunks it
/// reads one at a time with [`ShuffleTransport::read_chunk`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Rows that came with the outcome (all of a small result; the last chunk of a large
    /// one), in the task's schema.
    pub batches: Vec<RecordBatch>,
    /// The chunks holding the rest, in order, named as the transport names them.
    pub chunks: Vec<String>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// The result: rows in hand and chunks to read.
    Rows(Rows),
    /// Done, and the result has no rows (the coordinator need not fetch anything).
    Empty,
    /// Failed; the failure says why, and whether another attempt may succeed.
    Failed(TaskFailure),
    /// Not an end: the worker took the task and is running it (from transports that
    /// [report pickup](ShuffleTransport::reports_pickup)).
    Running,
}

/// Why a task failed, as its worker reports it: the kind of the error it met, whether a new
/// attempt (on this node or another) may succeed, and the message.
///
/// A deterministic failure (the query's own error, such as a cast the data cannot take, a
/// damaged cell, a fragment the worker refuses) fails the query at once with this kind and
/// message: every attempt would meet it again. Only failures of the machinery (storage or
/// a node unavailable, a node closing) are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// What kind of error it was.
    pub kind: ErrorKind,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// What went wrong, on one line.
    pub message: String,
}

impl TaskFailure {
    /// A failure of `kind`, retryable as [`TaskFailure::retryable_kind`] says.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            retryable: Self::retryable_kind(kind),
            message: message.into(),
        }
    }

    /// Whether a task that failed with `kind` is worth another attempt: not when the input,
    /// the stored data or a missing object is at fault, since every node would meet it again.
    /// Internal errors are retried: a bug that depends on timing may not recur elsewhere.
    pub fn retryable_kind(kind: ErrorKind) -> bool {
        !matches!(
            kind,
            ErrorKind::InvalidInput | ErrorKind::Corrupt | ErrorKind::NotFound
        )
    }
}

impl std::error::Error for TaskFailure {}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where a worker writes a task's rows as it produces them (see
/// [`ShuffleTransport::open_result`]). Dropped without [`finish`](Self::finish), the result
/// does not exist: the task's outcome is then published another way (a failure), and what
/// was sent goes with the query.
#[async_trait]
pub trait ResultWriter: Send {
    /// Appends `batch` (of the task's expected schema). A transport that streams sends a
    /// chunk whenever enough rows are in, so this may wait for a send (back pressure).
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;

    /// Ends the result with `report`: from now on [`ShuffleTransport::collect`] returns it
    /// as [`TaskOutcome::Rows`].
    async fn finish(self: Box<Self>, report: &TaskReport) -> Result<()>;
}

/// The writer of a transport that does not stream: it keeps every row and publishes them as
/// one outcome when finished (what [`ShuffleTransport::open_result`] gives by default).
struct WholeResult<'a, T: ShuffleTransport + ?Sized> {
    transport: &'a T,
    task: &'a TaskSpec,
    batches: Vec<RecordBatch>,
}

#[async_trait]
impl<T: ShuffleTransport + ?Sized> ResultWriter for WholeResult<'_, T> {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.batches.push(batch);
        Ok(())
    }

    async fn finish(self: Box<Self>, report: &TaskReport) -> Result<()> {
        let rows = Rows {
            batches: self.batches,
            chunks: Vec::new(),
        };
        self.transport
            .publish_outcome(self.task, TaskOutcome::Rows(rows), report)
            .await
    }
}

/// An outcome with its report, as the coordinator receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// Which attempt.
    pub key: TaskKey,
    /// Its outcome.
    pub outcome: TaskOutcome,
    /// What the worker reported.
    pub report: TaskReport,
}

/// Moves tasks from a coordinator to workers and results back. See the module docs for the
/// contract every implementation keeps.
///
/// # Implementing one
///
/// A transport of your own implements the required methods (publish, poll, outcome, collect,
/// finish, sweep) and whichever capabilities it has (streamed results, push wake-ups,
/// pickup reports, claims), runs `conformance::run_all` over itself (feature `testing`),
/// and is plugged into a node with `Apiary::builder(…).transport(…)` or, in a custom node
/// binary, `apiary::cli::main(|b| b.transport_with(…))`. `apiary-node/examples/
/// custom_transport.rs` is a whole one, in memory. A wrapper is the smallest: this one
/// counts the tasks published and delegates everything to the storage shuffle.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use apiary_shuffle::{Delivered, Result, ShuffleTransport, StorageShuffle, TaskKey, TaskSpec};
/// # use apiary_shuffle::{ResultWriter, TaskOutcome, TaskReport};
/// # use arrow_array::RecordBatch;
/// # use arrow_schema::SchemaRef;
///
/// #[derive(Debug)]
/// struct Counted {
///     inner: StorageShuffle,
///     published: AtomicUsize,
/// }
///
/// #[async_trait::async_trait]
/// impl ShuffleTransport for Counted {
///     async fn publish_tasks(&self, query: &str, coordinator: &str, tasks: &[TaskSpec]) -> Result<()> {
///         self.published.fetch_add(tasks.len(), Ordering::Relaxed);
///         self.inner.publish_tasks(query, coordinator, tasks).await
///     }
///     async fn poll_tasks(&self, node_id: &str) -> Result<Vec<TaskSpec>> {
///         self.inner.poll_tasks(node_id).await
///     }
///     async fn collect(&self, query_id: &str, wanted: &[TaskKey]) -> Result<Vec<Delivered>> {
///         self.inner.collect(query_id, wanted).await
///     }
///     // … and every other method, delegated the same way:
/// #   fn open_result<'a>(&'a self, task: &'a TaskSpec, schema: SchemaRef) -> Box<dyn ResultWriter + 'a> {
/// #       self.inner.open_result(task, schema)
/// #   }
/// #   async fn read_chunk(&self, query_id: &str, chunk: &str) -> Result<Vec<RecordBatch>> {
/// #       self.inner.read_chunk(query_id, chunk).await
/// #   }
/// #   async fn publish_outcome(&self, task: &TaskSpec, outcome: TaskOutcome, report: &TaskReport) -> Result<()> {
/// #       self.inner.publish_outcome(task, outcome, report).await
/// #   }
/// #   async fn tasks_arrived(&self, node_id: &str) { self.inner.tasks_arrived(node_id).await }
/// #   fn pushes_tasks(&self) -> bool { self.inner.pushes_tasks() }
/// #   fn pushed(&self, task: &TaskKey) -> bool { self.inner.pushed(task) }
/// #   fn pushes_results(&self, query_id: &str) -> bool { self.inner.pushes_results(query_id) }
/// #   fn reports_pickup(&self) -> bool { self.inner.reports_pickup() }
/// #   fn can_claim(&self) -> bool { self.inner.can_claim() }
/// #   async fn claim(&self, task: &TaskKey, cell: &str) -> Result<bool> { self.inner.claim(task, cell).await }
/// #   async fn renew(&self, query_id: &str, coordinator: &str) -> Result<()> { self.inner.renew(query_id, coordinator).await }
/// #   async fn wanted(&self, task: &TaskKey) -> Result<bool> { self.inner.wanted(task).await }
/// #   async fn cancel(&self, query_id: &str) -> Result<()> { self.inner.cancel(query_id).await }
///     async fn finish(&self, query_id: &str) -> Result<()> {
///         self.inner.finish(query_id).await
///     }
///     async fn sweep(&self, retention: std::time::Duration) -> Result<usize> {
///         self.inner.sweep(retention).await
///     }
/// }
///
/// let transport = Counted {
///     inner: StorageShuffle::new(apiary_storage::memory()),
///     published: AtomicUsize::new(0),
/// };
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert!(transport.poll_tasks("node-a").await.unwrap().is_empty(), "nothing published");
/// # });
/// ```
#[async_trait]
pub trait ShuffleTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes tasks of `query_id` (a new query's, or new attempts of its tasks); returns
    /// once each is visible to its node.
    async fn publish_tasks(
        &self,
        query_id: &str,
        coordinator: &str,
        tasks: &[TaskSpec],
    ) -> Result<()>;

    /// Tasks meant for `node_id` that may not have been returned before. Cheap when there is
    /// nothing new: this is what an idle node calls every poll.
    async fn poll_tasks(&self, node_id: &str) -> Result<Vec<TaskSpec>>;

    /// Opens the result of `task`'s attempt, whose rows have `schema`. The default keeps
    /// every row in memory and publishes them as one [`TaskOutcome::Rows`] when finished: a
    /// transport that streams returns a writer that sends chunks as they fill.
    fn open_result<'a>(
        &'a self,
        task: &'a TaskSpec,
        schema: SchemaRef,
    ) -> Box<dyn ResultWriter + 'a> {
        let _ = schema;
        Box::new(WholeResult {
            transport: self,
            task,
            batches: Vec::new(),
        })
    }

    /// Reads a chunk of a result of `query_id`, one that [`collect`](Self::collect) named
    /// in [`Rows::chunks`]. A transport that names no chunks never gets here.
    async fn read_chunk(&self, query_id: &str, chunk: &str) -> Result<Vec<RecordBatch>> {
        let _ = query_id;
        Err(crate::ShuffleError::Invalid(format!(
            "this shuffle transport names no chunks, so `{chunk}` is not one of its results"
        )))
    }

    /// Publishes how an attempt ended: [`TaskOutcome::Empty`] or [`TaskOutcome::Failed`]
    /// (rows go through [`open_result`](Self::open_result); a transport takes
    /// [`TaskOutcome::Rows`] here too, as its default writer's end).
    async fn publish_outcome(
        &self,
        task: &TaskSpec,
        outcome: TaskOutcome,
        report: &TaskReport,
    ) -> Result<()>;

    /// Returns when tasks for `node_id` may have arrived: a push transport (one whose
    /// coordinator sends tasks to their node) wakes the node's worker here at once, and the
    /// worker then calls [`poll_tasks`](Self::poll_tasks) without waiting for its next
    /// poll. The default never returns: the worker polls at its interval.
    async fn tasks_arrived(&self, node_id: &str) {
        let _ = node_id;
        std::future::pending::<()>().await
    }

    /// Returns when outcomes of `query_id` may have arrived: a transport whose results are
    /// pushed to the coordinator (a stream from the worker) wakes it here, and it then calls
    /// [`collect`](Self::collect) at once. The default never returns: the coordinator looks
    /// for results at intervals, which works with every transport.
    async fn results_arrived(&self, query_id: &str) {
        let _ = query_id;
        std::future::pending::<()>().await
    }

    /// Whether every outcome of `query_id` so far reaches its coordinator with a wake-up of
    /// [`results_arrived`](Self::results_arrived) (every task of it went out over a link
    /// that pushes its results back). The coordinator then looks for results only when woken
    /// and at its regular check for dead nodes and deadlines, instead of every few
    /// milliseconds. Once a task of the query goes another way, it must say no. The default:
    /// no.
    fn pushes_results(&self, query_id: &str) -> bool {
        let _ = query_id;
        false
    }

    /// A hint that tasks for `node_ids` may be published soon: the coordinator found them
    /// alive and is planning its split. A transport that talks to nodes directly may open
    /// its links now, so that publishing does not wait for them. It must return at once
    /// (any work goes to the background) and cannot fail; a link that does not open is
    /// found out when tasks are published. The default does nothing.
    fn warm(&self, node_ids: &[String]) {
        let _ = node_ids;
    }

    /// Whether [`tasks_arrived`](Self::tasks_arrived) wakes a worker when its tasks are
    /// published (the conformance suite then checks that it does).
    fn pushes_tasks(&self) -> bool {
        false
    }

    /// Whether `task`, which [`poll_tasks`](Self::poll_tasks) just returned, was pushed to
    /// this process rather than found by looking. A worker looks more often for a while after
    /// it found a task (the next query of a burst is likely to come the same way); a pushed
    /// task's coordinator pushes its next tasks too, so after one the worker keeps its
    /// regular cadence. The default: never pushed.
    fn pushed(&self, task: &TaskKey) -> bool {
        let _ = task;
        false
    }

    /// Whether [`collect`](Self::collect) reports tasks a worker took and has not finished
    /// ([`TaskOutcome::Running`]). A coordinator then reassigns a task that no worker took
    /// soon after it was published, although its node had an idle bee (a node that is hung,
    /// or runs a version that cannot read the task); without it, only the run deadline does.
    fn reports_pickup(&self) -> bool {
        false
    }

    /// Whether [`claim`](Self::claim) works; without it, tasks share no cells (a node that
    /// finishes early cannot help one that lags).
    fn can_claim(&self) -> bool {
        false
    }

    /// Claims `cell` for `task` among the tasks of its query and attempt round: `true` when
    /// `task` holds it (now or from an earlier call), `false` when another task does.
    async fn claim(&self, task: &TaskKey, cell: &str) -> Result<bool> {
        let _ = (task, cell);
        Err(crate::ShuffleError::Invalid(
            "this shuffle transport cannot claim cells".into(),
        ))
    }

    /// The outcomes available now among `wanted` (all keys of one query).
    async fn collect(&self, query_id: &str, wanted: &[TaskKey]) -> Result<Vec<Delivered>>;

    /// Renews a running query, so that [`sweep`](Self::sweep) does not take it for one whose
    /// coordinator died, however long its tasks run; its coordinator calls this at least
    /// every third of the retention while it waits.
    async fn renew(&self, query_id: &str, coordinator: &str) -> Result<()> {
        let _ = (query_id, coordinator);
        Ok(())
    }

    /// Whether `task`'s query still waits for it: `false` once its coordinator finished,
    /// cancelled or abandoned the query. A worker asks about once a second while the task
    /// runs and stops it when it is no longer wanted. A transport that cannot tell answers
    /// `true` (the task then runs to its end or its timeout).
    async fn wanted(&self, task: &TaskKey) -> Result<bool> {
        let _ = task;
        Ok(true)
    }

    /// Stops the query: nothing of it remains, as after [`finish`](Self::finish), and its
    /// running tasks stop at their next check of [`wanted`](Self::wanted). A coordinator
    /// cancels a query it gives up (an error, a dropped stream, Ctrl-C).
    async fn cancel(&self, query_id: &str) -> Result<()> {
        self.finish(query_id).await
    }

    /// Removes everything of the query.
    async fn finish(&self, query_id: &str) -> Result<()>;

    /// Removes queries older than `retention` (left by coordinators that died); returns how
    /// many.
    async fn sweep(&self, retention: Duration) -> Result<usize>;
}
