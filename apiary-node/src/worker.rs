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
use apiary_swarm::Colony;
use tokio::sync::watch;

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
        // Before the first task: its planning would otherwise pay for the planner's first use.
        if let Err(e) = engine.warm_up().await {
            tracing::warn!(error = %e, "warming up the query engine failed");
        }
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
