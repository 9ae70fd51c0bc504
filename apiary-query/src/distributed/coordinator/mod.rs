//! The coordinator: assigns a fragment's cells to workers, waits for their results,
//! reassigns what a dead, leaving or slow worker holds, and merges the answers.

mod cleanup;
mod interval;
pub use cleanup::sweep_orphans;
mod output;
mod placement;
mod rounds;
#[cfg(test)]
mod tests;

use interval::result_interval;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::SpillMetrics;
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::spill::SpillManager;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use tokio_util::task::AbortOnDropHandle;

use super::Cluster;
use super::plan::Fragment;
use crate::error::QueryError;
use crate::session::QueryEngine;

use cleanup::Cleanup;
use output::{Output, Ready};
use rounds::{Attempts, Done, Stage};

/// One task as it ran, for `EXPLAIN ANALYZE`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRun {
    /// Task id.
    pub task_id: u32,
    /// Attempt whose result was used.
    pub attempt: u32,
    /// Node that produced it.
    pub node_id: String,
    /// Cells read (a part of a cell counts as one).
    pub cells: usize,
    /// Of those, cells another task was given and this one took (it finished first).
    pub stolen: usize,
    /// Bytes of those cells (of a part, its share of its cell's bytes).
    pub bytes: u64,
    /// Rows returned.
    pub rows: u64,
    /// Worker's time, in milliseconds.
    pub elapsed_ms: u64,
    /// Of the worker's time, parsing and planning the fragment.
    pub planning_ms: u64,
    /// Whether the worker reused the fragment's optimized plan from an earlier run.
    pub plan_reused: bool,
    /// From handing the task's latest attempt out to holding this result, on the
    /// coordinator's clock: the worker's time plus what the transport added (publishing,
    /// discovery, the result's way back). A late result of an earlier attempt is measured
    /// from the latest hand-out too.
    pub round_trip_ms: u64,
    /// How the result came back: `local` (the coordinator ran it), `storage`, `flight`, or
    /// what another transport calls itself.
    pub via: String,
    /// Cell reads the worker served from its cache, and those that went to storage.
    pub cache: (u64, u64),
    /// Bytes the worker read from storage.
    pub bytes_from_storage: u64,
    /// Why earlier attempts were abandoned.
    pub retried: Vec<String>,
}

/// The gathered results of a distributed fragment, as a table the coordinator's plan reads.
#[derive(Debug, Clone)]
pub struct DistributedTable {
    fragment: Arc<Fragment>,
    cluster: Cluster,
    engine: QueryEngine,
    shared: Shared,
}

impl DistributedTable {
    /// A table whose scan runs `fragment` over the swarm.
    pub fn new(fragment: Fragment, cluster: Cluster, engine: QueryEngine) -> Self {
        Self {
            fragment: Arc::new(fragment),
            cluster,
            engine,
            shared: Shared::default(),
        }
    }

    /// Hands the fragment's tasks out now, while the coordinator still plans what it does
    /// with their rows: the workers start that much sooner. The scan's execution takes the
    /// run up (its rows, its metrics); a table dropped before then (the query failed or was
    /// cancelled while planning) cancels it. The tasks the coordinator runs itself keep
    /// their rows in `runtime`'s memory pool, which must be the one the query executes in.
    pub fn start_now(&self, runtime: &Arc<RuntimeEnv>) -> DfResult<()> {
        let started = start(
            &self.fragment,
            &self.cluster,
            &self.engine,
            &self.shared,
            runtime,
        )?;
        *lock(&self.shared.early) = Some(started);
        Ok(())
    }
}

#[async_trait]
impl TableProvider for DistributedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.fragment.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DistributedExec::new(
            Arc::clone(&self.fragment),
            self.cluster.clone(),
            self.engine.clone(),
            projection.cloned(),
            self.shared.clone(),
        )?))
    }
}

/// What the scans of one [`DistributedTable`] share: a run started before execution, the
/// tasks as they ran, the metrics.
#[derive(Debug, Clone, Default)]
struct Shared {
    early: Arc<Mutex<Option<Started>>>,
    runs: Arc<Mutex<Vec<TaskRun>>>,
    metrics: ExecutionPlanMetricsSet,
}

/// A run under way: what the stream of its rows holds.
struct Started {
    query_id: String,
    cleanup: Arc<Cleanup>,
    results: tokio::sync::mpsc::UnboundedReceiver<Result<Ready, QueryError>>,
    driver: AbortOnDropHandle<()>,
}

impl fmt::Debug for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started")
            .field("query_id", &self.query_id)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a run of `fragment`: its rounds go on beside the stream of rows (which
/// [`Started`] becomes), so a slow reader of rows does not hold up the tasks; dropping it
/// stops them (and cancels the query).
fn start(
    fragment: &Arc<Fragment>,
    cluster: &Cluster,
    engine: &QueryEngine,
    shared: &Shared,
    runtime: &Arc<RuntimeEnv>,
) -> DfResult<Started> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        datafusion::error::DataFusionError::Execution(
            "a distributed query needs a Tokio runtime to run in".into(),
        )
    })?;
    let metrics = MetricBuilder::new(&shared.metrics);
    let query_id = format!("q-{}", cluster.random.id());
    let cleanup = Arc::new(Cleanup::new(cluster.clone(), query_id.clone()));
    let (ready, results) = tokio::sync::mpsc::unbounded_channel();
    let run = Run {
        fragment: Arc::clone(fragment),
        cluster: cluster.clone(),
        engine: engine.clone(),
        runs: Arc::clone(&shared.runs),
        phases: Phases {
            dispatch: metrics.clone().subset_time("dispatch_time", 0),
            wait: metrics.clone().subset_time("wait_time", 0),
        },
        query_id: query_id.clone(),
        cleanup: Arc::downgrade(&cleanup),
        ready,
        local_rows: LocalRowsPool {
            pool: Arc::clone(&runtime.memory_pool),
            spill: SpillManager::new(
                Arc::clone(runtime),
                SpillMetrics::new(&shared.metrics, 0),
                Arc::clone(&fragment.schema),
            ),
        },
        tasks: metrics.clone().global_counter("tasks"),
        looks: metrics.global_counter("result_looks"),
    };
    let driver = handle.spawn(async move {
        if let Err(e) = run.run().await {
            let _ = run.ready.send(Err(e));
        }
    });
    Ok(Started {
        query_id,
        cleanup,
        results,
        driver: AbortOnDropHandle::new(driver),
    })
}

/// Runs a fragment over the swarm and yields the tasks' rows (one partition).
#[derive(Debug)]
pub struct DistributedExec {
    fragment: Arc<Fragment>,
    cluster: Cluster,
    engine: QueryEngine,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    shared: Shared,
}

impl DistributedExec {
    fn new(
        fragment: Arc<Fragment>,
        cluster: Cluster,
        engine: QueryEngine,
        projection: Option<Vec<usize>>,
        shared: Shared,
    ) -> DfResult<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(fragment.schema.project(p)?),
            None => Arc::clone(&fragment.schema),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            fragment,
            cluster,
            engine,
            projection,
            schema,
            properties,
            shared,
        })
    }

    /// The tasks of the last execution.
    pub fn runs(&self) -> Vec<TaskRun> {
        lock(&self.shared.runs).clone()
    }

    /// The fragment.
    pub fn fragment(&self) -> &Fragment {
        &self.fragment
    }
}

impl DisplayAs for DistributedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = &self.fragment;
        write!(
            f,
            "DistributedExec: frame={}.{}.{}, version={}, shape={}, cells={}, bytes={}",
            fr.split.hive,
            fr.split.r#box,
            fr.split.frame,
            fr.split.version,
            fr.shape.as_str(),
            fr.cells.len(),
            fr.bytes()
        )?;
        let runs = self.runs();
        if !runs.is_empty() {
            let nodes: HashSet<&str> = runs.iter().map(|r| r.node_id.as_str()).collect();
            write!(f, ", tasks={}, nodes={}", runs.len(), nodes.len())?;
            for r in &runs {
                write!(
                    f,
                    "\n    task={} node={} attempt={} cells={} stolen={} bytes={} rows={} \
                     time={}ms planning={}ms plan={} round_trip={}ms via={} cache_hits={} \
                     cache_misses={} bytes_from_storage={}",
                    r.task_id,
                    r.node_id,
                    r.attempt,
                    r.cells,
                    r.stolen,
                    r.bytes,
                    r.rows,
                    r.elapsed_ms,
                    r.planning_ms,
                    if r.plan_reused { "reused" } else { "new" },
                    r.round_trip_ms,
                    r.via,
                    r.cache.0,
                    r.cache.1,
                    r.bytes_from_storage
                )?;
                for cause in &r.retried {
                    write!(f, " (retried: {cause})")?;
                }
            }
        }
        write!(f, "\n    fragment: {}", fr.sql)?;
        if !fr.settings.is_empty() {
            let settings: Vec<String> = fr
                .settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "\n    settings: {}", settings.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DistributedExec {
    fn name(&self) -> &str {
        "DistributedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        // A run started while the query was planned, else one now.
        let early = lock(&self.shared.early).take();
        let Started {
            query_id,
            cleanup,
            results,
            driver,
        } = match early {
            Some(started) => started,
            None => start(
                &self.fragment,
                &self.cluster,
                &self.engine,
                &self.shared,
                &context.runtime_env(),
            )?,
        };
        let output = Output {
            schema: Arc::clone(&self.schema),
            fragment_schema: Arc::clone(&self.fragment.schema),
            projection: self.projection.clone(),
            transport: Arc::clone(&self.cluster.transport),
            query_id,
            rows: MetricBuilder::new(&self.shared.metrics).output_rows(0),
            chunks: MemoryConsumer::new("DistributedExec result chunks")
                .register(context.memory_pool()),
        };
        Ok(output.stream(results, cleanup, driver))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.shared.metrics.clone_inner())
    }
}

/// One execution of a distributed fragment: the rounds, which send each result they
/// accept to the stream of rows.
struct Run {
    fragment: Arc<Fragment>,
    cluster: Cluster,
    engine: QueryEngine,
    runs: Arc<Mutex<Vec<TaskRun>>>,
    phases: Phases,
    query_id: String,
    /// The query's cleanup, owned by the stream of rows: gone once the stream is.
    cleanup: Weak<Cleanup>,
    /// Where accepted results go, then [`Ready::Complete`] (or an error).
    ready: tokio::sync::mpsc::UnboundedSender<Result<Ready, QueryError>>,
    /// Where the rows of tasks this process runs are kept.
    local_rows: LocalRowsPool,
    /// Tasks run (for `EXPLAIN ANALYZE`).
    tasks: datafusion::physical_plan::metrics::Count,
    /// Times the coordinator looked for results (for `EXPLAIN ANALYZE`).
    looks: datafusion::physical_plan::metrics::Count,
}

/// The query's memory pool and spill files, for the rows of tasks the coordinator runs.
#[derive(Clone)]
pub(super) struct LocalRowsPool {
    pool: Arc<dyn MemoryPool>,
    spill: SpillManager,
}

impl LocalRowsPool {
    /// Room for the rows of task `task_id`.
    pub(super) fn rows(&self, task_id: u32) -> output::LocalRows {
        let reservation = MemoryConsumer::new(format!("DistributedExec task {task_id} rows"))
            .with_can_spill(true)
            .register(&self.pool);
        output::LocalRows::new(reservation, self.spill.clone())
    }
}

/// Where the coordinator's time goes, for `EXPLAIN ANALYZE`.
struct Phases {
    /// Assigning the first round's tasks and handing them out (publishing them).
    dispatch: Time,
    /// From then until every unit's rows were in hand (later rounds included).
    wait: Time,
}

impl Run {
    async fn run(&self) -> Result<(), QueryError> {
        self.cluster.maybe_sweep();
        self.cluster.counts.fragment();
        let workers = self.cluster.directory.workers().await?;
        let local = self.cluster.directory.local_node();
        let coordinator = local
            .clone()
            .unwrap_or_else(|| format!("client-{}", std::process::id()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut q = Attempts {
            run: self,
            cleanup: Weak::clone(&self.cleanup),
            published: false,
            renewal: None,
            query_id: self.query_id.clone(),
            coordinator,
            local,
            tasks: Vec::new(),
            round: 0,
            units: self
                .fragment
                .cells
                .iter()
                .map(|c| (c.key(), c.clone()))
                .collect(),
            read: HashSet::new(),
            pruned: HashSet::new(),
            causes: Vec::new(),
            avoid: HashSet::new(),
            local_tasks: tokio::task::JoinSet::new(),
            tx,
        };
        let clock = Arc::clone(&self.cluster.clock);
        let since = |at: Duration| clock.monotonic().saturating_sub(at);
        let dispatching = clock.monotonic();
        q.next_round(self.fragment.cells.clone(), &workers).await?;
        let dispatched = since(dispatching);
        self.phases.dispatch.add_duration(dispatched);

        // Results are looked for at intervals that grow with the wait (see
        // `result_interval`): waiting adds a small share to a query, and a long one costs few
        // requests.
        let started = clock.monotonic();
        let mut poll = result_interval(Duration::ZERO, None, self.cluster.settings.result_poll);
        let mut first_answer = None;
        let mut last_check = clock.monotonic();
        // While it runs, the query is renewed from its first publication on a task of its
        // own (`Attempts::renewal`): a slow listing or a long round here must not delay it.
        while !q.complete() {
            let mut gave_up = false;
            let published = q.published;
            // Where every result is pushed, a look only follows a wake-up, and the timer
            // waits for the next check of the round (dead nodes, deadlines).
            let wait = if published && self.cluster.transport.pushes_results(&self.query_id) {
                self.cluster
                    .settings
                    .result_poll
                    .saturating_sub(since(last_check))
            } else {
                poll
            };
            tokio::select! {
                biased;
                Some((d, rows)) = rx.recv() => gave_up |= q.accept(d, rows)?,
                _ = self.cluster.clock.sleep(wait) => {}
                // A transport that pushes results wakes the wait at once.
                _ = self.cluster.transport.results_arrived(&self.query_id), if published => {}
            }
            while let Ok((d, rows)) = rx.try_recv() {
                gave_up |= q.accept(d, rows)?;
            }
            self.looks.add(1);
            gave_up |= q.collect_remote().await?;
            if first_answer.is_none() && q.tasks.iter().any(|t| matches!(t.stage, Stage::Done(_))) {
                first_answer = Some(since(started));
            }
            poll = result_interval(
                since(started),
                first_answer,
                self.cluster.settings.result_poll,
            );
            let due = since(last_check) >= self.cluster.settings.result_poll;
            if due || gave_up || q.round_over() {
                last_check = clock.monotonic();
                q.advance().await?;
            }
        }
        self.phases.wait.add_duration(since(started));
        let Attempts {
            tasks,
            causes,
            units,
            renewal,
            ..
        } = q;
        let sizes: std::collections::HashMap<String, u64> =
            units.into_iter().map(|(key, c)| (key, c.bytes)).collect();
        let mut runs = Vec::new();
        for t in tasks {
            let retried = causes
                .iter()
                .filter(|(round, _)| *round < t.spec.attempt)
                .map(|(_, cause)| cause.clone())
                .collect();
            let Stage::Done(Done {
                report,
                read,
                round_trip,
            }) = t.stage
            else {
                continue;
            };
            let own: HashSet<&String> = t.spec.cells.iter().collect();
            runs.push(TaskRun {
                task_id: t.spec.task_id,
                attempt: t.spec.attempt,
                node_id: report.node_id,
                cells: read.len(),
                stolen: read.iter().filter(|c| !own.contains(c)).count(),
                bytes: read
                    .iter()
                    .map(|c| sizes.get(c).copied().unwrap_or(0))
                    .sum(),
                rows: report.rows,
                elapsed_ms: report.elapsed_ms,
                planning_ms: report.planning_ms,
                plan_reused: report.plan_reused,
                round_trip_ms: round_trip.as_millis() as u64,
                via: if report.via.is_empty() {
                    "transport".into()
                } else {
                    report.via.clone()
                },
                cache: (report.cache_hits, report.cache_misses),
                bytes_from_storage: report.bytes_from_storage,
                retried,
            });
        }
        self.tasks.add(runs.len());
        *self.runs.lock().unwrap_or_else(|p| p.into_inner()) = runs;
        tracing::debug!(
            query = %self.query_id,
            dispatch_ms = dispatched.as_millis() as u64,
            wait_ms = since(started).as_millis() as u64,
            "distributed fragment ran"
        );
        // Every row is accepted: the query is answered (its removal is a finish, not a
        // cancellation), though its chunks are still being read.
        if let Some(cleanup) = self.cleanup.upgrade() {
            cleanup.answered.store(true, Ordering::Relaxed);
        }
        let _ = self.ready.send(Ok(Ready::Complete));
        // The query's renewal (from its first publication) lives on while the stream reads
        // its chunks, so no sweep takes them. The stream holds this driver and drops it with
        // the query's cleanup when it ends or is dropped; that ends the renewal too.
        let Some(_renewal) = renewal else {
            return Ok(());
        };
        std::future::pending().await
    }
}

impl Run {
    /// Renews query `query_id` every third of the orphan retention until the handle is
    /// dropped (the query ends, or is dropped itself).
    pub(super) fn renew_while_running(
        &self,
        query_id: &str,
        coordinator: &str,
    ) -> AbortOnDropHandle<()> {
        let (transport, clock) = (
            Arc::clone(&self.cluster.transport),
            Arc::clone(&self.cluster.clock),
        );
        let every = self.cluster.settings.orphan_retention / 3;
        let (query_id, coordinator) = (query_id.to_string(), coordinator.to_string());
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                clock.sleep(every).await;
                if let Err(e) = transport.renew(&query_id, &coordinator).await {
                    tracing::warn!(query = %query_id, error = %e, "renewing the query failed");
                }
            }
        }))
    }
}
