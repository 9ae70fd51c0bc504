//! The node's part in distributed queries: who can take tasks (from membership), and the
//! worker loop that takes this node's tasks from the transport.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiary_query::QueryEngine;
use apiary_query::distributed::{
    ShuffleTransport, TaskKey, TaskOutcome, WorkerDirectory, WorkerInfo, run_task,
};
use apiary_swarm::{Colony, Membership, NodeState, SwarmAgent, WorldView};

use crate::RunningNode;
use async_trait::async_trait;
use tokio::sync::watch;

/// Workers from the swarm: alive nodes of the running node's world view, or (for a process
/// that is not a node, such as `apiary sql`) a snapshot of the heartbeats aged on the
/// store's clock, reread at most every two seconds.
pub(crate) struct SwarmDirectory {
    node: Arc<Mutex<Option<RunningNode>>>,
    observer: Arc<dyn Membership>,
    snapshot: tokio::sync::Mutex<Option<(Instant, WorldView)>>,
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
    ) -> Self {
        Self {
            node,
            observer,
            snapshot: tokio::sync::Mutex::new(None),
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
        })
        .collect()
}

#[async_trait]
impl WorkerDirectory for SwarmDirectory {
    async fn workers(&self) -> apiary_query::Result<Vec<WorkerInfo>> {
        if let Some(agent) = self.running() {
            return Ok(workers_of(&agent.view(), Some(agent.node_id().as_str())));
        }
        let mut cached = self.snapshot.lock().await;
        if let Some((at, view)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(2)
        {
            return Ok(workers_of(view, None));
        }
        let view = self.observer.snapshot().await.map_err(|e| {
            apiary_query::QueryError::failed(format!("reading the swarm: {e}"), e.kind(), e)
        })?;
        let workers = workers_of(&view, None);
        *cached = Some((Instant::now(), view));
        Ok(workers)
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

/// Takes this node's tasks from the transport every `poll` and runs each on a bee, until
/// `stop` or until the node leaves (its bees closed: tasks it holds finish, no new ones are
/// taken).
pub(crate) fn spawn_worker(
    transport: Arc<dyn ShuffleTransport>,
    engine: QueryEngine,
    node_id: String,
    colony: Arc<Colony>,
    poll: Duration,
    counts: Arc<TaskCounts>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let bees = Arc::clone(colony.bees());
    tokio::spawn(async move {
        // Tasks already taken (a transport may deliver one again); bounded.
        let mut seen: HashSet<TaskKey> = HashSet::new();
        let mut order: VecDeque<TaskKey> = VecDeque::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = apiary_storage::time::sleep(poll) => {}
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
                tokio::spawn(async move {
                    // Leaving: the task is not taken, and the coordinator, which sees this
                    // node leave, reassigns it.
                    let Ok(_bee) = bees.acquire().await else {
                        return;
                    };
                    tracing::debug!(task = %task.key(), "running a task");
                    let (outcome, report) = run_task(&engine, &node_id, &task).await;
                    counts.ran.fetch_add(1, Ordering::Relaxed);
                    colony.record_task(matches!(outcome, TaskOutcome::Failed(_)));
                    if let TaskOutcome::Failed(cause) = &outcome {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(task = %task.key(), %cause, "task failed");
                    }
                    if let Err(e) = transport.publish_outcome(&task, outcome, &report).await {
                        tracing::warn!(task = %task.key(), error = %e, "task result not published; the coordinator will reassign it");
                    }
                });
            }
        }
    })
}
