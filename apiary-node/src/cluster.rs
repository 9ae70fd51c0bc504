//! The node's part in distributed queries: who can take tasks (from membership), and the
//! worker loop that takes this node's tasks from the transport.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_query::QueryEngine;
use apiary_query::distributed::{
    Ended, ShuffleTransport, TaskFailure, TaskKey, TaskOutcome, TaskReport, TaskSpec,
    WorkerDirectory, WorkerInfo, run_task,
};
use apiary_storage::Clock;
use apiary_swarm::{Colony, Membership, NodeState, SwarmAgent, WorldView};

use crate::RunningNode;
use async_trait::async_trait;
use tokio::sync::watch;

/// Workers from the swarm: alive nodes of the running node's world view, or (for a process
/// that is not a node, such as `apiary sql`) a snapshot of the heartbeats aged on the
/// store's clock (see [`Snapshots`]).
pub(crate) struct SwarmDirectory {
    node: Arc<Mutex<Option<RunningNode>>>,
    snapshots: Snapshots,
}

impl std::fmt::Debug for SwarmDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmDirectory").finish_non_exhaustive()
    }
}

impl SwarmDirectory {
    pub(crate) fn new(
        node: Arc<Mutex<Option<RunningNode>>>,
        observer: Arc<dyn Membership>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let read: ReadView = Arc::new(move || {
            let observer = Arc::clone(&observer);
            Box::pin(async move { observer.snapshot().await })
        });
        Self {
            node,
            snapshots: Snapshots::new(read, clock),
        }
    }

    fn running(&self) -> Option<Arc<SwarmAgent>> {
        self.node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|n| Arc::clone(&n.agent))
    }
}

/// Reads the swarm once.
type ReadView = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, apiary_swarm::Result<WorldView>> + Send + Sync,
>;

/// A snapshot and when it was read (on the clock's monotonic time).
type Held = Option<(Duration, Arc<WorldView>)>;

/// A query uses no snapshot older than this (a node that left is given no task on a
/// view older than this).
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(2);

/// A query that finds the snapshot older than this starts reading a newer one in the
/// background, so that queries in a steady stream seldom wait for a read.
const SNAPSHOT_REFRESH: Duration = Duration::from_secs(1);

/// The heartbeat snapshots of a process that is not a node. Reading one is a LIST and a GET
/// per node: on a remote store, tens of milliseconds. A query uses the snapshot held if it
/// is younger than [`SNAPSHOT_MAX_AGE`], and waits for a read otherwise; once the snapshot
/// is older than [`SNAPSHOT_REFRESH`], a newer one is read in the background for the
/// queries after it. One read at a time.
struct Snapshots {
    read: ReadView,
    clock: Arc<dyn Clock>,
    /// The newest snapshot and when it was read (on `clock`'s monotonic time); shared, so
    /// that a query takes it without copying every node's heartbeat.
    held: Arc<Mutex<Held>>,
    /// Held while reading.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl Snapshots {
    fn new(read: ReadView, clock: Arc<dyn Clock>) -> Self {
        Self {
            read,
            clock,
            held: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// The held snapshot and its age, if it is younger than `limit`.
    fn younger_than(&self, limit: Duration) -> Option<(Duration, Arc<WorldView>)> {
        let now = self.clock.monotonic();
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (at, view) = held.as_ref()?;
        let age = now.saturating_sub(*at);
        (age < limit).then(|| (age, Arc::clone(view)))
    }

    /// A snapshot for a query (see the type's docs).
    async fn get(&self) -> apiary_swarm::Result<Arc<WorldView>> {
        if let Some((age, view)) = self.younger_than(SNAPSHOT_MAX_AGE) {
            if age >= SNAPSHOT_REFRESH {
                self.refresh_in_background();
            }
            return Ok(view);
        }
        let _reading = self.reading.lock().await;
        // Read by another query (or in the background) while this one waited.
        if let Some((_, view)) = self.younger_than(SNAPSHOT_MAX_AGE) {
            return Ok(view);
        }
        Self::read_into(&self.read, &self.clock, &self.held).await
    }

    async fn read_into(
        read: &ReadView,
        clock: &Arc<dyn Clock>,
        held: &Mutex<Held>,
    ) -> apiary_swarm::Result<Arc<WorldView>> {
        let at = clock.monotonic();
        let view = Arc::new(read().await?);
        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, Arc::clone(&view)));
        Ok(view)
    }

    /// Starts reading a newer snapshot unless a read is under way.
    fn refresh_in_background(&self) {
        let Ok(reading) = Arc::clone(&self.reading).try_lock_owned() else {
            return;
        };
        let (read, clock, held) = (
            Arc::clone(&self.read),
            Arc::clone(&self.clock),
            Arc::clone(&self.held),
        );
        tokio::spawn(async move {
            let _reading = reading;
            if let Err(e) = Self::read_into(&read, &clock, &held).await {
                // The held snapshot serves until it is too old; then a query reads and reports.
                tracing::warn!(error = %e, "reading the swarm's heartbeats failed");
            }
        });
    }
}

fn workers_of(view: &WorldView, me: Option<&str>) -> Vec<WorkerInfo> {
    view.nodes
        .iter()
        .filter(|n| n.state == NodeState::Alive || Some(n.node_id.as_str()) == me)
        .filter(|n| n.state != NodeState::Leaving && n.state != NodeState::Dead)
        .map(|n| WorkerInfo {
            node_id: n.node_id.to_string(),
            bees: n.heartbeat.capacity.bees.max(1),
            idle_bees: n.heartbeat.load.idle_bees,
            memory_per_bee: n.heartbeat.capacity.memory_per_bee_bytes,
            cached_cells: n.heartbeat.cache.hot_cells.clone(),
            attributes: n.heartbeat.attributes.clone(),
        })
        .collect()
}

#[async_trait]
impl WorkerDirectory for SwarmDirectory {
    async fn workers(&self) -> apiary_query::Result<Vec<WorkerInfo>> {
        if let Some(agent) = self.running() {
            return Ok(workers_of(&agent.view(), Some(agent.node_id().as_str())));
        }
        let view = self.snapshots.get().await.map_err(|e| {
            apiary_query::QueryError::failed(format!("reading the swarm: {e}"), e.kind(), e)
        })?;
        Ok(workers_of(&view, None))
    }

    fn local_node(&self) -> Option<String> {
        self.running().map(|agent| agent.node_id().to_string())
    }
}

/// Counts of the tasks a node ran.
#[derive(Debug, Default)]
pub(crate) struct TaskCounts {
    pub(crate) ran: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// For this long after it was last given a task, a node looks for tasks more often.
const BUSY_WINDOW: Duration = Duration::from_secs(60);

/// For this long after it finished a task, a node looks for tasks every [`HOT_INTERVAL`].
const HOT_WINDOW: Duration = Duration::from_millis(100);

/// How often a node looks for tasks just after it finished one.
const HOT_INTERVAL: Duration = Duration::from_millis(1);

/// How long a worker waits before it looks for tasks again, given the configured `poll`,
/// the time `given` since it was last given a task and the time `finished` since it last
/// finished one (`None`: never).
///
/// Queries come in bursts (a dashboard's panels, a notebook's cells, a script's statements),
/// and a burst's next query waits for discovery like its first:
/// * A script's next statement is usually published within milliseconds of the answer to
///   the last, so for [`HOT_WINDOW`] after finishing a task a node looks every
///   [`HOT_INTERVAL`] (or every `poll`, if that is shorter). That is at most 100 looks per
///   task; on a remote store a look takes longer than the interval, so far fewer.
/// * For [`BUSY_WINDOW`] after a task a node looks four times as often (at most every
///   millisecond), and the wait for the next query's tasks falls to a quarter.
///
/// An idle node looks every `poll`, so what idling costs stays what the setting says.
pub(crate) fn discovery_interval(
    poll: Duration,
    given: Option<Duration>,
    finished: Option<Duration>,
) -> Duration {
    if finished.is_some_and(|f| f < HOT_WINDOW) {
        return poll.min(HOT_INTERVAL);
    }
    match given {
        Some(given) if given < BUSY_WINDOW => (poll / 4).max(poll.min(HOT_INTERVAL)),
        _ => poll,
    }
}

/// When a worker looks for tasks: every `interval` of `clock`'s time while idle (see
/// [`discovery_interval`]).
pub(crate) struct Polling {
    pub(crate) interval: Duration,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Takes this node's tasks from the transport every `poll.interval` (more often for a while
/// after a task, see [`discovery_interval`]) and runs each on a bee, until `stop` or until
/// the node leaves (its bees closed: tasks it holds finish, no new ones are taken).
///
/// While every bee is busy the node does not look: a task found then could only wait for a
/// bee, and each look would take time from the work on the node's cores. A look that falls
/// due meanwhile happens as soon as a bee is released (a finished task wakes the loop at
/// once, as after any task).
pub(crate) fn spawn_worker(
    transport: Arc<dyn ShuffleTransport>,
    engine: QueryEngine,
    node_id: String,
    colony: Arc<Colony>,
    poll: Polling,
    counts: Arc<TaskCounts>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let bees = Arc::clone(colony.bees());
    tokio::spawn(async move {
        // Tasks already taken (a transport may deliver one again); bounded.
        let mut seen: HashSet<TaskKey> = HashSet::new();
        let mut order: VecDeque<TaskKey> = VecDeque::new();
        // When this node was last given a task and last finished one, on `clock`'s
        // monotonic time. A finishing task wakes the loop (the wake-up is kept if the loop
        // is busy looking), which notes the time.
        let Polling { interval, clock } = poll;
        let mut last_task: Option<Duration> = None;
        let mut last_finished: Option<Duration> = None;
        let finished = Arc::new(tokio::sync::Notify::new());
        loop {
            let now = clock.monotonic();
            let wait = discovery_interval(
                interval,
                last_task.map(|t| now.saturating_sub(t)),
                last_finished.map(|t| now.saturating_sub(t)),
            );
            tokio::select! {
                _ = stop.changed() => break,
                _ = async {
                    clock.sleep(wait).await;
                    bees.until_free().await;
                } => {}
                // The next query's tasks may already be waiting.
                _ = finished.notified() => last_finished = Some(clock.monotonic()),
                // A push transport says tasks arrived: no wait for the next poll.
                _ = transport.tasks_arrived(&node_id) => {}
            }
            if !bees.accepting() {
                break;
            }
            let tasks = match transport.poll_tasks(&node_id).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for tasks failed");
                    continue;
                }
            };
            if !tasks.is_empty() {
                last_task = Some(clock.monotonic());
            }
            for task in tasks {
                let key = task.key();
                if !seen.insert(key.clone()) {
                    continue;
                }
                order.push_back(key);
                if order.len() > 4096
                    && let Some(old) = order.pop_front()
                {
                    seen.remove(&old);
                }
                let bees = Arc::clone(&bees);
                let transport = Arc::clone(&transport);
                let engine = engine.clone();
                let node_id = node_id.clone();
                let counts = Arc::clone(&counts);
                let colony = Arc::clone(&colony);
                let finished = Arc::clone(&finished);
                let clock = Arc::clone(&clock);
                tokio::spawn(async move {
                    // Leaving: the task is not taken, and the coordinator, which sees this
                    // node leave, reassigns it.
                    let Ok(bee) = bees.acquire().await else {
                        return;
                    };
                    tracing::debug!(task = %task.key(), "running a task");
                    let run = run_task(&engine, &node_id, &task, &transport);
                    let Some((ended, report)) =
                        until_unwanted(run, transport.as_ref(), &clock, &task.key()).await
                    else {
                        tracing::debug!(task = %task.key(), "task stopped: its query was cancelled");
                        // What the task wrote before it stopped (a claim in flight when the
                        // query was removed) goes too.
                        if let Err(e) = transport.cancel(&task.query_id).await {
                            tracing::debug!(task = %task.key(), error = %e, "cleaning up a cancelled query failed");
                        }
                        finished.notify_one();
                        return;
                    };
                    counts.ran.fetch_add(1, Ordering::Relaxed);
                    let failed = matches!(ended, Ended::Outcome(TaskOutcome::Failed(_)));
                    colony.record_task(failed);
                    if let Ended::Outcome(TaskOutcome::Failed(cause)) = &ended {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(task = %task.key(), %cause, "task failed");
                    }
                    // Rows went out as the task ran (its result writer); what is left to
                    // publish is an outcome without rows.
                    if let Ended::Outcome(outcome) = ended {
                        publish(transport.as_ref(), &clock, &task, outcome, &report).await;
                    }
                    // The bee goes back, and the loop looks for the next task, before the
                    // check below.
                    drop(bee);
                    finished.notify_one();
                    // An outcome published after its query was finished or cancelled (the
                    // coordinator failed it on another task's error, say) would stay
                    // behind: it is removed at once rather than by a sweep.
                    if let Ok(false) = transport.wanted(&task.key()).await
                        && let Err(e) = transport.cancel(&task.query_id).await
                    {
                        tracing::debug!(task = %task.key(), error = %e, "removing a late outcome failed");
                    }
                });
            }
        }
    })
}

/// How often a running task asks whether its query still wants it.
const WANTED_CHECK: Duration = Duration::from_secs(1);

/// `run`'s output, or `None` once the transport says `task`'s query no longer wants it (the
/// task is then dropped: its plan stops, its memory and bee are released). A failed check
/// keeps the task running.
async fn until_unwanted<T>(
    run: impl std::future::Future<Output = T>,
    transport: &dyn ShuffleTransport,
    clock: &Arc<dyn Clock>,
    task: &TaskKey,
) -> Option<T> {
    let unwanted = async {
        loop {
            clock.sleep(WANTED_CHECK).await;
            match transport.wanted(task).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    tracing::debug!(task = %task, error = %e, "checking the task's query failed")
                }
            }
        }
    };
    tokio::select! {
        out = run => Some(out),
        () = unwanted => None,
    }
}

/// Publishes how `task` ended (no rows, or a failure; rows go out through the result
/// writer, and a writer that fails makes the task's outcome a failure). A failed publish is
/// tried again twice (storage hiccups), and an outcome that still cannot be published is
/// reported as a small failed outcome, so that the coordinator reassigns the task at once
/// instead of waiting out its deadline.
async fn publish(
    transport: &dyn ShuffleTransport,
    clock: &Arc<dyn Clock>,
    task: &TaskSpec,
    outcome: TaskOutcome,
    report: &TaskReport,
) {
    let mut last = None;
    for pause in [
        Duration::ZERO,
        Duration::from_millis(100),
        Duration::from_millis(500),
    ] {
        if !pause.is_zero() {
            clock.sleep(pause).await;
        }
        match transport
            .publish_outcome(task, outcome.clone(), report)
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(task = %task.key(), error = %e, "publishing a task's outcome failed");
                last = Some(e);
            }
        }
    }
    if matches!(outcome, TaskOutcome::Failed(_)) {
        return;
    }
    let failure = TaskFailure::new(
        apiary_storage::ErrorKind::Unavailable,
        format!(
            "the task ran but its result could not be published: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        ),
    );
    if let Err(e) = transport
        .publish_outcome(task, TaskOutcome::Failed(failure), report)
        .await
    {
        tracing::warn!(task = %task.key(), error = %e, "task outcome not published; the coordinator will reassign it at its deadline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Snapshots over a reader that counts its reads, fails while `failing`, and returns only
    /// when `gate` gives it a permit; each view is told apart by `polls` (the read's number).
    struct Reader {
        reads: Arc<AtomicU64>,
        gate: Arc<tokio::sync::Semaphore>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    fn snapshots() -> (Snapshots, Reader, apiary_storage::ManualClock) {
        let reader = Reader {
            reads: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            failing: Arc::default(),
        };
        let (reads, gate, failing) = (
            Arc::clone(&reader.reads),
            Arc::clone(&reader.gate),
            Arc::clone(&reader.failing),
        );
        let read: ReadView = Arc::new(move || {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            let (gate, failing) = (Arc::clone(&gate), Arc::clone(&failing));
            Box::pin(async move {
                gate.acquire().await.expect("gate").forget();
                if failing.load(Ordering::SeqCst) {
                    return Err(apiary_swarm::SwarmError::UnknownNode(
                        "the store is down".into(),
                    ));
                }
                Ok(WorldView {
                    polls: n,
                    ..WorldView::default()
                })
            })
        });
        let clock = apiary_storage::ManualClock::new();
        (Snapshots::new(read, Arc::new(clock.clone())), reader, clock)
    }

    /// Waits (on real time, briefly) until the held snapshot is read number `n`.
    async fn held_becomes(s: &Snapshots, n: u64) {
        for _ in 0..2000 {
            if s.younger_than(Duration::MAX)
                .is_some_and(|(_, v)| v.polls == n)
            {
                return;
            }
            apiary_storage::time::sleep(MS).await;
        }
        panic!("snapshot {n} was never held");
    }

    /// The snapshot a query gets without waiting for a read (a read held at the gate would
    /// keep it waiting: that fails).
    async fn at_once(s: &Snapshots) -> u64 {
        tokio::time::timeout(Duration::from_secs(5), s.get())
            .await
            .expect("the query waited for a read")
            .expect("snapshot")
            .polls
    }

    #[tokio::test]
    async fn queries_in_a_stream_use_the_snapshot_while_a_newer_one_is_read() {
        let (s, reader, clock) = snapshots();
        // No snapshot yet: the first query waits for one.
        reader.gate.add_permits(1);
        assert_eq!(s.get().await.unwrap().polls, 1);
        // Young: used as it is, nothing read.
        clock.advance(SNAPSHOT_REFRESH - MS);
        assert_eq!(s.get().await.unwrap().polls, 1);
        assert_eq!(reader.reads.load(Ordering::SeqCst), 1);
        // Older: still used at once (the read below is held at the gate), and a newer one
        // is read in the background, one read however many queries ask.
        clock.advance(MS);
        assert_eq!(at_once(&s).await, 1);
        assert_eq!(at_once(&s).await, 1);
        tokio::task::yield_now().await;
        assert_eq!(reader.reads.load(Ordering::SeqCst), 2);
        reader.gate.add_permits(1);
        held_becomes(&s, 2).await;
        assert_eq!(s.get().await.unwrap().polls, 2);
        // Too old: never used; the query waits for a new reading.
        clock.advance(SNAPSHOT_MAX_AGE);
        let waiting = s.get();
        tokio::pin!(waiting);
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "a snapshot past the maximum age was used"
        );
        reader.gate.add_permits(1);
        assert_eq!(waiting.await.unwrap().polls, 3);
        assert_eq!(reader.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_background_read_keeps_the_snapshot_until_its_maximum_age() {
        let (s, reader, clock) = snapshots();
        reader.gate.add_permits(1);
        assert_eq!(s.get().await.unwrap().polls, 1);
        reader.failing.store(true, Ordering::SeqCst);
        reader.gate.add_permits(100);
        clock.advance(SNAPSHOT_REFRESH);
        assert_eq!(at_once(&s).await, 1);
        // The failed read is over once another can start.
        for _ in 0..2000 {
            if reader.reads.load(Ordering::SeqCst) == 2 && s.reading.try_lock().is_ok() {
                break;
            }
            apiary_storage::time::sleep(MS).await;
        }
        assert_eq!(at_once(&s).await, 1, "kept after the failure");
        // Too old, and the store still down: the query reports it.
        clock.advance(SNAPSHOT_MAX_AGE);
        let err = s.get().await.unwrap_err();
        assert!(err.to_string().contains("the store is down"), "{err}");
    }

    #[test]
    fn a_node_looks_more_often_for_a_minute_after_a_task() {
        let second = Duration::from_secs(1);
        let at = |given, finished| discovery_interval(second, given, finished);
        // Idle (never given a task, or not for a minute): the configured interval.
        assert_eq!(at(None, None), second);
        assert_eq!(at(Some(BUSY_WINDOW), Some(BUSY_WINDOW)), second);
        assert_eq!(at(Some(10 * BUSY_WINDOW), None), second);
        // Busy: a quarter of it.
        assert_eq!(at(Some(Duration::ZERO), None), second / 4);
        assert_eq!(at(Some(BUSY_WINDOW - MS), None), second / 4);
        assert_eq!(at(Some(BUSY_WINDOW - MS), Some(HOT_WINDOW)), second / 4);
        assert_eq!(discovery_interval(20 * MS, Some(MS), None), 5 * MS);
        // Never below a millisecond, nor above the configured interval.
        assert_eq!(discovery_interval(2 * MS, Some(MS), None), MS);
        assert_eq!(discovery_interval(MS / 2, Some(MS), None), MS / 2);
    }

    #[test]
    fn a_node_looks_every_millisecond_just_after_it_finished_a_task() {
        let second = Duration::from_secs(1);
        for finished in [Duration::ZERO, HOT_WINDOW / 2, HOT_WINDOW - MS] {
            assert_eq!(discovery_interval(second, Some(MS), Some(finished)), MS);
        }
        assert_eq!(
            discovery_interval(second, Some(HOT_WINDOW), Some(HOT_WINDOW)),
            second / 4
        );
        // A shorter configured interval stays.
        assert_eq!(
            discovery_interval(MS / 4, Some(MS), Some(Duration::ZERO)),
            MS / 4
        );
    }
}
