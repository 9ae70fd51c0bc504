//! Distributed SQL: queries split into SQL fragments that workers run over subsets of a
//! frame's cells, with partial results moved by a [`ShuffleTransport`].
//!
//! * [`plan`]: which frame is split, what runs in the tasks (a fragment, as SQL text from
//!   DataFusion's unparser) and what the coordinator finishes.
//! * [`manifest`]: the task format workers read (documented there).
//! * [`ShuffleTransport`]: the seam; [`StorageShuffle`] is the default, through storage;
//!   `conformance` (feature `testing`) checks any implementation.
//! * [`coordinator`](DistributedExec): assignment by capacity, deadlines, reassignment,
//!   at most [`MAX_ATTEMPTS`] attempts per task, cleanup.
//! * [`run_task`]: what a worker does with a task: the same SQL checks as `sql`, a per-task
//!   catalog with only the task's cells, a result of the expected schema.

mod check;
pub(crate) mod claims;
mod coordinator;
mod counts;
mod decompose;
mod dialect;
pub mod plan;
pub mod progress;
mod ship;
mod splits;
mod task;

/// The shuffle seam, from `apiary-shuffle` (re-exported so the engine's users find it here).
#[cfg(feature = "testing")]
pub use apiary_shuffle::conformance;
pub use apiary_shuffle::{manifest, result, transport};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::distribute::DistributeMode;
pub use apiary_shuffle::{
    CHUNK_BYTES, ColumnSpec, DOORBELL_DIR, Delivered, FramePin, QUERIES_DIR, ResultWriter, Rows,
    ShippedFrame, ShuffleError, ShuffleTransport, StorageShuffle, TaskFailure, TaskKey,
    TaskOutcome, TaskReport, TaskSpec,
};
pub use coordinator::{DistributedExec, DistributedTable, TaskRun, sweep_orphans};
pub use counts::{CoordinatorCounts, CoordinatorTally};
pub use plan::{Fragment, Shape, SplitCell};
pub use ship::{SHIP_BYTES, Shipping};
pub use task::{Ended, run_task, run_task_into};

/// Attempts a task gets before the query fails.
pub const MAX_ATTEMPTS: u32 = 3;

/// A node that can run tasks, as the coordinator sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    /// Node id.
    pub node_id: String,
    /// Bees (cores that take tasks).
    pub bees: u32,
    /// Idle bees, as last published.
    pub idle_bees: u32,
    /// Memory per bee, in bytes.
    pub memory_per_bee: u64,
    /// Cells it reports cached (`hive/box/frame/path`), for placement.
    pub cached_cells: Vec<String>,
    /// What the node publishes of itself (see its heartbeat's attributes): a transport
    /// finds its peers' endpoints here.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Who can run tasks: the membership seen through the coordinator's eyes. Nodes that are
/// dead, suspect or leaving are not listed.
#[async_trait]
pub trait WorkerDirectory: Send + Sync + std::fmt::Debug + 'static {
    /// Nodes that can take tasks now.
    async fn workers(&self) -> crate::Result<Vec<WorkerInfo>>;

    /// This process's node id when it is a running node (its tasks then run in process).
    fn local_node(&self) -> Option<String>;
}

/// Tuning of distribution.
#[derive(Debug, Clone)]
pub struct DistributeSettings {
    /// `auto` distributes only when the cells to read exceed this many bytes.
    pub auto_min_bytes: u64,
    /// How long a task may run before it is reassigned.
    pub task_timeout: Duration,
    /// How long a task may wait to be taken by a node that has an idle bee before it is
    /// reassigned (with a transport that reports pickup).
    pub pickup_timeout: Duration,
    /// How often the coordinator looks for results (it starts faster and slows to this).
    pub result_poll: Duration,
    /// Query folders older than this are removed by whoever sweeps. A running query's
    /// coordinator renews its folder every third of it, so only a dead coordinator's is.
    pub orphan_retention: Duration,
    /// Fewest rows of a part when cells are cut into parts (a session's
    /// `SET apiary.min_part_rows = …` overrides it). The default is a row group of the cells
    /// Apiary writes: a Parquet read of a smaller part opens the cell, reads its footer and
    /// decodes pages it shares with the next part, which on the SSB benchmark's cells
    /// (375 000 rows, one row group) cost more than the balance it bought.
    pub min_part_rows: u64,
}

impl Default for DistributeSettings {
    fn default() -> Self {
        Self {
            auto_min_bytes: 64 << 20,
            task_timeout: Duration::from_secs(600),
            pickup_timeout: Duration::from_secs(20),
            result_poll: Duration::from_millis(250),
            orphan_retention: Duration::from_secs(900),
            min_part_rows: apiary_ledger::cells::encode::ROW_GROUP_ROWS as u64,
        }
    }
}

impl DistributeSettings {
    /// Refuses settings that cannot work together, naming both.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::QueryError::Invalid(m));
        if self.task_timeout.is_zero() || self.pickup_timeout.is_zero() {
            return bad(
                "the task timeout (--task-timeout, APIARY_TASK_TIMEOUT) and the pickup \
                 timeout (--pickup-timeout, APIARY_PICKUP_TIMEOUT) must be longer than zero"
                    .into(),
            );
        }
        if self.orphan_retention < Duration::from_millis(100) {
            return bad(format!(
                "the query retention (--query-retention, APIARY_QUERY_RETENTION) is {:?}; a \
                 running query renews its folder every third of it, so give it at least 100ms",
                self.orphan_retention
            ));
        }
        Ok(())
    }
}

/// What a query engine needs to distribute: a transport, a directory of workers, tuning.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Moves tasks and results.
    pub transport: Arc<dyn ShuffleTransport>,
    /// Who can run tasks.
    pub directory: Arc<dyn WorkerDirectory>,
    /// Tuning.
    pub settings: DistributeSettings,
    /// The clock the coordinator polls on.
    pub clock: Arc<dyn apiary_storage::Clock>,
    /// Query ids.
    pub random: apiary_storage::Random,
    /// Tasks this coordinator abandoned after their last attempt, kept for diagnosis.
    pub abandoned: AbandonedTasks,
    /// What this coordinator counted of its distributed queries.
    pub counts: CoordinatorCounts,
    /// When this coordinator last swept old queries.
    last_sweep: Arc<std::sync::Mutex<Option<std::time::Duration>>>,
    /// Removals of finished queries' objects and sweeps, which run after the answer is
    /// returned (see [`Cluster::settle`]).
    background: tokio_util::task::TaskTracker,
    /// The splits of recent queries (clones share them).
    splits: Arc<splits::SplitCache>,
}

impl Cluster {
    /// A cluster over `transport` and `directory`.
    pub fn new(
        transport: Arc<dyn ShuffleTransport>,
        directory: Arc<dyn WorkerDirectory>,
        settings: DistributeSettings,
    ) -> Self {
        Self {
            transport,
            directory,
            settings,
            clock: apiary_storage::SystemClock::shared(),
            random: apiary_storage::Random::process(),
            abandoned: AbandonedTasks::default(),
            counts: CoordinatorCounts::default(),
            last_sweep: Arc::default(),
            background: tokio_util::task::TaskTracker::new(),
            splits: Arc::new(splits::split_cache()),
        }
    }

    /// Waits for the background work of queries that already returned: removing their
    /// objects from the transport, and sweeps. A query's answer does not wait for its
    /// cleanup; a process about to exit (a one-shot `apiary sql`) calls this so that it
    /// leaves nothing behind for the sweep to find.
    pub async fn settle(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }

    /// Uses `clock` and `random` instead of the system's.
    pub fn with_time(
        mut self,
        clock: Arc<dyn apiary_storage::Clock>,
        random: apiary_storage::Random,
    ) -> Self {
        self.clock = clock;
        self.random = random;
        self
    }
}

#[async_trait]
impl crate::Distributor for Cluster {
    async fn distribute(
        &self,
        request: crate::DistributeRequest<'_>,
    ) -> crate::Result<crate::Distribution> {
        use crate::Distribution::Local;
        let crate::DistributeRequest {
            plan,
            state,
            mode,
            scope,
            min_part_rows,
            engine,
            explaining,
            runtime,
        } = request;
        let mut cluster = self.clone();
        if let Some(rows) = min_part_rows {
            cluster.settings.min_part_rows = rows;
        }
        let threshold = cluster.settings.auto_min_bytes;
        let small = |bytes: u64, alive: Option<usize>| {
            let alive = alive.map_or(String::new(), |n| format!("; {}", alive_text(n)));
            format!(
                "reads {} < {} (APIARY_DISTRIBUTE_MIN_BYTES){alive}; SET apiary.distribute = \
                 'always' to split it",
                crate::size_text(bytes),
                crate::size_text(threshold)
            )
        };
        // Optimizing the plan to split it is as costly as planning the query again: skip it
        // when no frame the query reads is large enough for `auto` to distribute (a split
        // never reads more than its frame holds).
        if mode == DistributeMode::Auto {
            match plan::largest_frame_bytes(plan) {
                None => return Ok(Local("the query reads no frame".into())),
                Some(bytes) if bytes < threshold => {
                    // Who is alive costs a look at the swarm: only an EXPLAIN pays it.
                    let alive = match explaining {
                        true => Some(cluster.directory.workers().await?.len()),
                        false => None,
                    };
                    return Ok(Local(small(bytes, alive)));
                }
                Some(_) => {}
            }
        }
        // Who is there decides before the optimization does: a node alone in its swarm (or
        // an embedded Apiary with no nodes) plans its queries once. For a node this reads
        // its world view in memory; elsewhere, a snapshot of the heartbeats.
        let workers = cluster.directory.workers().await?;
        let local = cluster.directory.local_node();
        let others: Vec<String> = workers
            .iter()
            .filter(|w| Some(&w.node_id) != local.as_ref())
            .map(|w| w.node_id.clone())
            .collect();
        if mode != DistributeMode::Never && !others.is_empty() {
            // Links to the workers open while the split is planned.
            cluster.transport.warm(&others);
        }
        let others = !others.is_empty();
        let go = match mode {
            DistributeMode::Never => false,
            DistributeMode::Always => !workers.is_empty(),
            DistributeMode::Auto => others,
        };
        if !go {
            return Ok(Local(match mode {
                DistributeMode::Never => "apiary.distribute = 'never'".into(),
                _ if workers.is_empty() => "no node is alive to take tasks".into(),
                _ => "no other node is alive; SET apiary.distribute = 'always' to split it \
                      over this one's bees"
                    .into(),
            }));
        }
        let settings = engine.changed_settings(state);
        let key = splits::SplitKey::of(plan, scope, &settings);
        let kept = key.as_ref().and_then(|key| cluster.splits.get(key));
        let mut split = match kept {
            Some(split) => {
                cluster.counts.split_reused();
                split
            }
            None => {
                let optimized = state.optimize(plan)?;
                let Some(split) = plan::split(&optimized, state, scope)? else {
                    return Ok(Local("no frame scan of this plan can be split".into()));
                };
                if let Some(key) = key {
                    cluster.splits.put(key, split.clone());
                }
                split
            }
        };
        let bytes = split.fragment.bytes();
        if split.fragment.cells.is_empty() {
            return Ok(Local("no cell is left to read after pruning".into()));
        }
        if mode == DistributeMode::Auto && bytes < threshold {
            return Ok(Local(small(bytes, Some(workers.len()))));
        }
        split.fragment.settings = settings;
        let table = DistributedTable::new(split.fragment.clone(), cluster, engine);
        if !explaining {
            // The workers start while the coordinator plans the rest (an EXPLAIN starts
            // nothing: plain, it runs nothing; with ANALYZE, its run is timed in full).
            table.start_now(runtime)?;
        }
        let partials = datafusion::logical_expr::LogicalPlanBuilder::scan(
            plan::PARTIALS,
            datafusion::datasource::provider_as_source(Arc::new(table)),
            None,
        )?
        .build()?;
        Ok(crate::Distribution::Split(
            split.coordinator_plan(partials)?,
        ))
    }
}

/// `1 node alive`, `4 nodes alive`.
fn alive_text(n: usize) -> String {
    match n {
        1 => "1 node alive".into(),
        n => format!("{n} nodes alive"),
    }
}

/// A task given up after its last attempt failed, as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Abandoned {
    /// The query.
    pub query_id: String,
    /// The task.
    pub task_id: u32,
    /// `hive.box.frame` it read.
    pub frame: String,
    /// The frame version.
    pub version: u64,
    /// Its cells.
    pub cells: Vec<String>,
    /// Why each attempt failed.
    pub causes: Vec<String>,
}

/// The tasks a coordinator abandoned: a count, and the most recent ones (at most 100).
#[derive(Debug, Clone, Default)]
pub struct AbandonedTasks {
    inner: Arc<std::sync::Mutex<(u64, std::collections::VecDeque<Abandoned>)>>,
}

impl AbandonedTasks {
    const KEPT: usize = 100;

    fn record(&self, task: Abandoned) {
        tracing::warn!(query = %task.query_id, task = task.task_id, causes = ?task.causes, "task abandoned");
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 += 1;
        inner.1.push_back(task);
        while inner.1.len() > Self::KEPT {
            inner.1.pop_front();
        }
    }

    /// How many were abandoned since the coordinator started.
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The most recent ones, oldest first.
    pub fn recent(&self) -> Vec<Abandoned> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .iter()
            .cloned()
            .collect()
    }
}
