//! The worker loop: takes this node's tasks from the transport, runs each on a bee, stops
//! what its query no longer wants, and publishes how each ended.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apiary_query::QueryEngine;
use apiary_query::distributed::{
    Ended, ShuffleTransport, TaskFailure, TaskKey, TaskOutcome, TaskReport, TaskSpec, run_task,
};
use apiary_storage::Clock;
use apiary_swarm::{Colony, Discovery};
use tokio::sync::watch;

/// Counts of the tasks a node ran.
#[derive(Debug, Default)]
pub(crate) struct TaskCounts {
    pub(crate) ran: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// When a worker looks for tasks (see [`Discovery`]): on `clock`'s time, more rarely while
/// `activity` says the swarm is idle.
pub(crate) struct Polling {
    pub(crate) discovery: Discovery,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) activity: watch::Receiver<bool>,
}

/// Takes this node's tasks from the transport at the cadence of [`Discovery`] and runs each on a bee, until `stop` or until
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
        // Before the first task: its planning would otherwise pay for the planner's first use.
        if let Err(e) = engine.warm_up().await {
            tracing::warn!(error = %e, "warming up the query engine failed");
        }
        // Tasks already taken (a transport may deliver one again); bounded.
        let mut seen: HashSet<TaskKey> = HashSet::new();
        let mut order: VecDeque<TaskKey> = VecDeque::new();
        // When this node last found a task by looking and last finished one it found, on
        // `clock`'s monotonic time: pushed tasks do not quicken the looks (their coordinator
        // pushes its next ones too). A finishing task wakes the loop (the wake-up is kept if
        // the loop is busy looking), which notes the time if the task was found.
        let Polling {
            discovery,
            clock,
            mut activity,
        } = poll;
        let mut last_task: Option<Duration> = None;
        let mut last_finished: Option<Duration> = None;
        let finished = Arc::new(Finished::default());
        let mut watching = true;
        loop {
            let now = clock.monotonic();
            let swarm_active = *activity.borrow_and_update();
            let wait = discovery.interval(
                last_task.map(|t| now.saturating_sub(t)),
                last_finished.map(|t| now.saturating_sub(t)),
                swarm_active,
            );
            let woke = async {
                if !watching || swarm_active {
                    return std::future::pending().await;
                }
                activity.changed().await
            };
            tokio::select! {
                biased;
                // The swarm woke: look now, then at the active cadence.
                changed = woke => watching = changed.is_ok(),
                _ = stop.changed() => break,
                _ = async {
                    clock.sleep(wait).await;
                    bees.until_free().await;
                } => {}
                // The next query's tasks may already be waiting.
                _ = finished.wake.notified() => if finished.found.swap(false, Ordering::Relaxed) {
                    last_finished = Some(clock.monotonic());
                },
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
            let found: Vec<bool> = tasks.iter().map(|t| !transport.pushed(&t.key())).collect();
            if found.contains(&true) {
                last_task = Some(clock.monotonic());
            }
            for (task, found) in tasks.into_iter().zip(found) {
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
                        finished.done(found);
                        return;
                    };
                    let failed = matches!(ended, Ended::Outcome(TaskOutcome::Failed(_)));
                    // A task whose query let go of it while it ended (the coordinator
                    // finished with its answer in hand, or its link broke and another
                    // attempt took over) failed to tell an ear that is gone: that is not a
                    // failure of this node, and nothing is left to publish.
                    if failed && let Ok(false) = transport.wanted(&task.key()).await {
                        tracing::debug!(task = %task.key(), "task stopped: its query let go of it");
                        finished.done(found);
                        return;
                    }
                    counts.ran.fetch_add(1, Ordering::Relaxed);
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
                    finished.done(found);
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

/// How a finished task wakes the worker loop, and whether one of them was found by looking.
#[derive(Default)]
struct Finished {
    wake: tokio::sync::Notify,
    found: std::sync::atomic::AtomicBool,
}

impl Finished {
    fn done(&self, found: bool) {
        if found {
            self.found.store(true, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }
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
        biased;
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
