//! The coordinator: assigns a fragment's cells to workers, waits for their results,
//! reassigns what a dead, leaving or slow worker holds, and merges the answers.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::TryStreamExt;

use super::manifest::{TASK_FORMAT, TaskKey, TaskSpec, columns_of};
use super::plan::Fragment;
use super::task::coerce;
use super::transport::{Delivered, TaskFailure, TaskOutcome, TaskReport};
use super::{Cluster, MAX_ATTEMPTS, SplitCell, WorkerInfo, result};
use crate::error::QueryError;
use crate::session::QueryEngine;

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
}

impl DistributedTable {
    /// A table whose scan runs `fragment` over the swarm.
    pub fn new(fragment: Fragment, cluster: Cluster, engine: QueryEngine) -> Self {
        Self {
            fragment: Arc::new(fragment),
            cluster,
            engine,
        }
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
        )?))
    }
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
    runs: Arc<Mutex<Vec<TaskRun>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl DistributedExec {
    fn new(
        fragment: Arc<Fragment>,
        cluster: Cluster,
        engine: QueryEngine,
        projection: Option<Vec<usize>>,
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
            runs: Arc::default(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The tasks of the last execution.
    pub fn runs(&self) -> Vec<TaskRun> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
                     time={}ms planning={}ms plan={} round_trip={}ms cache_hits={} \
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
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let metrics = MetricBuilder::new(&self.metrics);
        let run = Run {
            fragment: Arc::clone(&self.fragment),
            cluster: self.cluster.clone(),
            engine: self.engine.clone(),
            runs: Arc::clone(&self.runs),
            phases: Phases {
                dispatch: metrics.clone().subset_time("dispatch_time", 0),
                wait: metrics.clone().subset_time("wait_time", 0),
            },
        };
        let projection = self.projection.clone();
        let rows = metrics.clone().output_rows(0);
        let tasks = metrics.global_counter("tasks");
        let stream = futures::stream::once(async move {
            let batches = run
                .run()
                .await
                .map_err(datafusion::error::DataFusionError::from)?;
            tasks.add(run.runs.lock().unwrap_or_else(|p| p.into_inner()).len());
            let projected = batches
                .into_iter()
                .map(|b| match &projection {
                    Some(p) => b.project(p).map_err(Into::into),
                    None => Ok(b),
                })
                .inspect(|b| {
                    if let Ok(b) = b {
                        rows.add(b.num_rows());
                    }
                })
                .collect::<Vec<DfResult<RecordBatch>>>();
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(projected))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One execution of a distributed fragment.
struct Run {
    fragment: Arc<Fragment>,
    cluster: Cluster,
    engine: QueryEngine,
    runs: Arc<Mutex<Vec<TaskRun>>>,
    phases: Phases,
}

/// Where the coordinator's time goes, for `EXPLAIN ANALYZE`.
struct Phases {
    /// Assigning the first round's tasks and handing them out (publishing them).
    dispatch: Time,
    /// From then until every unit's rows were in hand (later rounds included).
    wait: Time,
}

/// Where a task stands.
enum Stage {
    /// Handed out; no outcome yet.
    Running,
    /// Its result is in hand.
    Done(Done),
    /// Given up (it failed, its node went away, or it ran past the deadline): a later
    /// outcome of it is ignored, and a later round reads the cells it held.
    GivenUp,
}

/// A task of the query, in any round.
struct Pending {
    spec: TaskSpec,
    /// When it was handed out (coordinator's clock).
    since: Instant,
    stage: Stage,
    /// Whether its worker took it (see [`ShuffleTransport::reports_pickup`]).
    taken: bool,
}

/// The result a task delivered.
struct Done {
    report: TaskReport,
    rows: Vec<RecordBatch>,
    /// The units (cells and parts) whose rows these are.
    read: Vec<String>,
    /// From handing the task out to taking this result.
    round_trip: Duration,
}

/// The state of one query while it runs.
///
/// The query runs in rounds. A round hands every unit not yet read to the alive nodes, as
/// tasks that share units where the transport can arbitrate (see the manifest's "Shared
/// cells"): a task that finishes early reads units of one that lags. A unit is a cell or a
/// part of one (see the manifest's "Parts"): a round cuts cells into parts where there are
/// fewer cells than bees, and cuts the last cells of every task that shares, so tasks end
/// together. A round is over when each of its tasks has answered or been given up; the
/// units then neither read nor ruled out by a plan (those a given-up task held) go to the
/// next round, at most [`MAX_ATTEMPTS`] rounds. A result is taken only if none of its units
/// was read already, and a cell once cut is only ever handed out in those parts, so no
/// row is ever counted twice.
struct Attempts<'a> {
    run: &'a Run,
    query_id: String,
    /// Who coordinates (this node's id, or the process's).
    coordinator: String,
    /// This process's node id, when it is a node (its tasks run here).
    local: Option<String>,
    tasks: Vec<Pending>,
    /// The current round (the attempt number of its tasks).
    round: u32,
    /// The units that cover the split frame's cells, with their keys: every cell whole, or
    /// in parts once cut.
    units: Vec<(String, SplitCell)>,
    /// Units whose rows are in hand (by key).
    read: HashSet<String>,
    /// Units a task's plan ruled out (no rows to read).
    pruned: HashSet<String>,
    /// Why tasks were given up, in order, with their round.
    causes: Vec<(u32, String)>,
    /// Nodes that did not take a task they were given: later rounds leave them out.
    avoid: HashSet<String>,
    /// Local tasks report here; remote ones through the transport.
    tx: tokio::sync::mpsc::UnboundedSender<Delivered>,
    cleanup: Cleanup,
}

impl Run {
    async fn run(&self) -> Result<Vec<RecordBatch>, QueryError> {
        self.cluster.maybe_sweep();
        let workers = self.cluster.directory.workers().await?;
        let local = self.cluster.directory.local_node();
        let coordinator = local
            .clone()
            .unwrap_or_else(|| format!("client-{}", std::process::id()));
        let query_id = format!("q-{}", self.cluster.random.id());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut q = Attempts {
            run: self,
            cleanup: Cleanup {
                cluster: self.cluster.clone(),
                query_id: query_id.clone(),
                published: false,
            },
            query_id,
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
            tx,
        };
        let dispatching = Instant::now();
        q.next_round(self.fragment.cells.clone(), &workers).await?;
        let dispatched = dispatching.elapsed();
        self.phases.dispatch.add_duration(dispatched);

        // Results are looked for at intervals that grow with the wait (see
        // `result_interval`): waiting adds a small share to a query, and a long one costs few
        // requests.
        let started = Instant::now();
        let mut poll = result_interval(Duration::ZERO, None, self.cluster.settings.result_poll);
        let mut first_answer = None;
        let mut last_check = Instant::now();
        // A running query is renewed every third of the retention, so no sweep removes it.
        let renew_every = self.cluster.settings.orphan_retention / 3;
        let mut last_renewal = Instant::now();
        while !q.complete() {
            let mut gave_up = false;
            tokio::select! {
                Some(d) = rx.recv() => gave_up |= q.accept(d)?,
                _ = self.cluster.clock.sleep(poll) => {}
            }
            while let Ok(d) = rx.try_recv() {
                gave_up |= q.accept(d)?;
            }
            gave_up |= q.collect_remote().await?;
            if first_answer.is_none() && q.tasks.iter().any(|t| matches!(t.stage, Stage::Done(_))) {
                first_answer = Some(started.elapsed());
            }
            poll = result_interval(
                started.elapsed(),
                first_answer,
                self.cluster.settings.result_poll,
            );
            let due = last_check.elapsed() >= self.cluster.settings.result_poll;
            if due || gave_up || q.round_over() {
                last_check = Instant::now();
                q.advance().await?;
            }
            if q.cleanup.published && last_renewal.elapsed() >= renew_every {
                last_renewal = Instant::now();
                if let Err(e) = self
                    .cluster
                    .transport
                    .renew(&q.query_id, &q.coordinator)
                    .await
                {
                    tracing::warn!(query = %q.query_id, error = %e, "renewing the query failed");
                }
            }
        }
        self.phases.wait.add_duration(started.elapsed());
        let Attempts {
            tasks,
            cleanup,
            causes,
            units,
            ..
        } = q;
        let sizes: std::collections::HashMap<String, u64> =
            units.into_iter().map(|(key, c)| (key, c.bytes)).collect();
        let mut runs = Vec::new();
        let mut batches = Vec::new();
        for t in tasks {
            let retried = causes
                .iter()
                .filter(|(round, _)| *round < t.spec.attempt)
                .map(|(_, cause)| cause.clone())
                .collect();
            let Stage::Done(Done {
                report,
                rows,
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
                cache: (report.cache_hits, report.cache_misses),
                bytes_from_storage: report.bytes_from_storage,
                retried,
            });
            batches.extend(rows);
        }
        *self.runs.lock().unwrap_or_else(|p| p.into_inner()) = runs;
        tracing::debug!(
            query = %cleanup.query_id,
            dispatch_ms = dispatched.as_millis() as u64,
            wait_ms = started.elapsed().as_millis() as u64,
            "distributed fragment ran"
        );
        // The answer does not wait for the removal (see `Cluster::settle`).
        drop(cleanup);
        Ok(batches)
    }
}

impl Attempts<'_> {
    fn is_local(&self, node: &str) -> bool {
        node.is_empty() || self.local.as_deref() == Some(node)
    }

    /// Every unit read or ruled out.
    fn complete(&self) -> bool {
        self.left().next().is_none()
    }

    /// The units neither read nor ruled out.
    fn left(&self) -> impl Iterator<Item = &SplitCell> {
        self.units
            .iter()
            .filter(|(key, _)| !self.read.contains(key) && !self.pruned.contains(key))
            .map(|(_, c)| c)
    }

    /// Whether every task of the current round answered or was given up.
    fn round_over(&self) -> bool {
        !self
            .tasks
            .iter()
            .any(|t| t.spec.attempt == self.round && matches!(t.stage, Stage::Running))
    }

    /// Starts the next round over `cells` on `workers` (this process when there are none).
    async fn next_round(
        &mut self,
        cells: Vec<SplitCell>,
        workers: &[WorkerInfo],
    ) -> Result<(), QueryError> {
        self.round += 1;
        let can_cut = self
            .units
            .iter()
            .all(|(_, c)| crate::parts::splittable(&c.path));
        let bees: u32 = workers.iter().map(|w| w.bees.max(1)).sum();
        let min_rows = self.run.cluster.settings.min_part_rows;
        let cells = if can_cut {
            cut_for_bees(cells, bees, min_rows)
        } else {
            cells
        };
        let chosen: Vec<WorkerInfo>;
        let workers = if self.avoid.is_empty() {
            workers
        } else {
            chosen = workers
                .iter()
                .filter(|w| !self.avoid.contains(&w.node_id))
                .cloned()
                .collect();
            &chosen[..]
        };
        let mut shares = assign(&cells, &self.run.fragment.split, workers);
        let sharing = shares.len() > 1 && self.run.cluster.transport.can_claim();
        let sharing = if sharing {
            let unshared: Vec<usize> = shares
                .iter()
                .map(|(_, c)| super::claims::unshared(c.len()))
                .collect();
            if can_cut {
                for (_, cells) in &mut shares {
                    cut_last(cells, min_rows);
                }
            }
            let cells: Vec<Vec<String>> = shares
                .iter()
                .map(|(_, c)| c.iter().map(SplitCell::key).collect())
                .collect();
            super::claims::share_out(&cells, &unshared)
        } else {
            vec![(0, Vec::new()); shares.len()]
        };
        self.replace_cut(&shares);
        let fragment = &self.run.fragment;
        let mut specs = Vec::with_capacity(shares.len());
        for ((node, cells), (shared, steal)) in shares.into_iter().zip(sharing) {
            let spec = TaskSpec {
                format: TASK_FORMAT,
                query_id: self.query_id.clone(),
                task_id: self.tasks.len() as u32,
                attempt: self.round,
                node_id: node,
                coordinator: self.coordinator.clone(),
                split: fragment.split.clone(),
                bytes: cells.iter().map(|c| c.bytes).sum(),
                shared,
                steal,
                cells: cells.iter().map(SplitCell::key).collect(),
                pins: fragment.pins.clone(),
                sql: fragment.sql.clone(),
                scope: fragment.scope.clone(),
                settings: fragment.settings.clone(),
                schema: columns_of(&fragment.schema),
                timeout_ms: self.run.cluster.settings.task_timeout.as_millis() as u64,
            };
            specs.push(spec.clone());
            self.tasks.push(Pending {
                spec,
                since: Instant::now(),
                stage: Stage::Running,
                taken: false,
            });
        }
        self.dispatch(specs).await
    }

    /// Records the parts this round cut cells into: from now on those cells are read in
    /// these parts only.
    fn replace_cut(&mut self, shares: &[(String, Vec<SplitCell>)]) {
        let mut parts: std::collections::HashMap<&str, Vec<&SplitCell>> = Default::default();
        for c in shares.iter().flat_map(|(_, c)| c) {
            if c.part.is_some() {
                parts.entry(c.path.as_str()).or_default().push(c);
            }
        }
        if parts.is_empty() {
            return;
        }
        let units = std::mem::take(&mut self.units);
        for (key, unit) in units {
            match parts.get(unit.path.as_str()) {
                Some(cut) if unit.part.is_none() => {
                    let mut cut = cut.clone();
                    cut.sort_by_key(|c| c.part.as_ref().map(|r| r.start));
                    self.units
                        .extend(cut.into_iter().map(|c| (c.key(), c.clone())));
                }
                _ => self.units.push((key, unit)),
            }
        }
    }

    /// Hands `specs` out: local ones run in this process, the rest go through the transport.
    async fn dispatch(&mut self, specs: Vec<TaskSpec>) -> Result<(), QueryError> {
        let (mine, remote): (Vec<TaskSpec>, Vec<TaskSpec>) =
            specs.into_iter().partition(|s| self.is_local(&s.node_id));
        if !remote.is_empty() {
            self.cleanup.published = true;
            self.run
                .cluster
                .transport
                .publish_tasks(&self.query_id, &self.coordinator, &remote)
                .await?;
        }
        if mine.iter().any(|s| s.shares()) {
            // Claims are objects of the query: they are removed with it.
            self.cleanup.published = true;
        }
        for spec in mine {
            let engine = self.run.engine.clone();
            let transport = Arc::clone(&self.run.cluster.transport);
            let tx = self.tx.clone();
            let me = self
                .local
                .clone()
                .unwrap_or_else(|| spec.coordinator.clone());
            tokio::spawn(async move {
                let key = spec.key();
                // A panic in the engine is this task's failure, not a hang.
                let ran =
                    tokio::spawn(
                        async move { super::run_task(&engine, &me, &spec, &transport).await },
                    );
                let (outcome, report) = match ran.await {
                    Ok(done) => done,
                    Err(e) => (
                        TaskOutcome::Failed(TaskFailure::new(
                            apiary_storage::ErrorKind::Internal,
                            format!("the task panicked: {e}"),
                        )),
                        TaskReport::default(),
                    ),
                };
                let _ = tx.send(Delivered {
                    key,
                    outcome,
                    report,
                });
            });
        }
        Ok(())
    }

    /// Takes an outcome; returns whether it gave a task up (it failed). An outcome of a
    /// task already done or given up is ignored, and so is a result with a cell read
    /// already (the task is then given up: its cells are read again if still needed).
    fn accept(&mut self, d: Delivered) -> Result<bool, QueryError> {
        let schema = &self.run.fragment.schema;
        let Some(t) = self
            .tasks
            .iter_mut()
            .find(|t| t.spec.key() == d.key && matches!(t.stage, Stage::Running))
        else {
            return Ok(false);
        };
        let (report, rows) = match d.outcome {
            TaskOutcome::Running => {
                t.taken = true;
                return Ok(false);
            }
            TaskOutcome::Rows(ipc) => {
                let read = result::decode(&d.key.to_string(), &ipc)
                    .map_err(QueryError::from)
                    .and_then(|(meta, batches)| {
                        let rows = batches
                            .into_iter()
                            .map(|b| coerce(b, schema))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok((meta, rows))
                    });
                match read {
                    Ok((meta, rows)) => (
                        meta.as_deref()
                            .and_then(result::report_of)
                            .unwrap_or(d.report),
                        rows,
                    ),
                    Err(e) => {
                        // That attempt failed; its cells go to the next round.
                        t.stage = Stage::GivenUp;
                        self.causes.push((
                            t.spec.attempt,
                            format!(
                                "task {} (round {}): its result cannot be read: {e}",
                                t.spec.task_id, t.spec.attempt
                            ),
                        ));
                        return Ok(true);
                    }
                }
            }
            TaskOutcome::Empty => (d.report, Vec::new()),
            TaskOutcome::Failed(cause) => {
                let node = if d.report.node_id.is_empty() {
                    t.spec.node_id.clone()
                } else {
                    d.report.node_id.clone()
                };
                t.stage = Stage::GivenUp;
                if !cause.retryable {
                    // Every attempt would fail the same way: the query fails now, as it
                    // would have locally.
                    let (task_id, cells) = (t.spec.task_id, t.spec.cells.clone());
                    let message = format!(
                        "{} (task {task_id} of query {}, on {node})",
                        cause.message, self.query_id
                    );
                    self.causes.push((t.spec.attempt, message.clone()));
                    self.record_abandoned(task_id, cells);
                    return Err(match cause.kind {
                        apiary_storage::ErrorKind::InvalidInput => QueryError::Invalid(message),
                        kind => QueryError::failed(message, kind, cause),
                    });
                }
                self.causes.push((
                    t.spec.attempt,
                    format!(
                        "task {} (round {}) on {node}: {cause}",
                        t.spec.task_id, t.spec.attempt
                    ),
                ));
                return Ok(true);
            }
        };
        // A task that shares nothing reads all its cells (older workers report none).
        let (read, pruned) = if t.spec.shares() {
            (report.read.clone(), report.pruned.clone())
        } else {
            (t.spec.cells.clone(), Vec::new())
        };
        let named: HashSet<&String> = t
            .spec
            .cells
            .iter()
            .chain(t.spec.steal.iter().flatten())
            .collect();
        let foreign = read.iter().chain(&pruned).find(|c| !named.contains(c));
        let twice = read.iter().find(|c| self.read.contains(*c));
        if let Some(cell) = foreign.or(twice) {
            t.stage = Stage::GivenUp;
            self.causes.push((
                t.spec.attempt,
                format!(
                    "task {} (round {}) on {}: its result holds cell `{cell}`, which it was \
                     not given or which was read already",
                    t.spec.task_id, t.spec.attempt, report.node_id
                ),
            ));
            return Ok(true);
        }
        self.read.extend(read.iter().cloned());
        self.pruned.extend(pruned);
        t.stage = Stage::Done(Done {
            report,
            rows,
            read,
            round_trip: t.since.elapsed(),
        });
        Ok(false)
    }

    /// Outcomes of remote tasks published so far; returns whether a task was given up.
    async fn collect_remote(&mut self) -> Result<bool, QueryError> {
        if !self.cleanup.published {
            return Ok(false);
        }
        let wanted: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|t| matches!(t.stage, Stage::Running) && !self.is_local(&t.spec.node_id))
            .map(|t| t.spec.key())
            .collect();
        if wanted.is_empty() {
            return Ok(false);
        }
        let delivered = match self
            .run
            .cluster
            .transport
            .collect(&self.query_id, &wanted)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(query = %self.query_id, error = %e, "collecting results failed; retrying");
                return Ok(false);
            }
        };
        let mut gave_up = false;
        for d in delivered {
            gave_up |= self.accept(d)?;
        }
        Ok(gave_up)
    }

    /// Gives up the current round's tasks whose node is gone or that ran past the
    /// deadline; once the round is over, starts the next one over the cells still to read,
    /// or fails the query after [`MAX_ATTEMPTS`] rounds.
    async fn advance(&mut self) -> Result<(), QueryError> {
        let alive = match self.run.cluster.directory.workers().await {
            Ok(w) => w,
            Err(e) if !self.round_over() => {
                tracing::warn!(error = %e, "reading the swarm failed");
                return Ok(());
            }
            Err(_) => Vec::new(), // the next round runs here, in the coordinator
        };
        let idle: std::collections::HashMap<&str, u32> = alive
            .iter()
            .map(|w| (w.node_id.as_str(), w.idle_bees))
            .collect();
        let deadline = self.run.cluster.settings.task_timeout + Duration::from_secs(5);
        let pickup = self
            .run
            .cluster
            .transport
            .reports_pickup()
            .then_some(self.run.cluster.settings.pickup_timeout);
        let local = self.local.clone();
        for t in self
            .tasks
            .iter_mut()
            .filter(|t| matches!(t.stage, Stage::Running))
        {
            let node = t.spec.node_id.as_str();
            let here = node.is_empty() || local.as_deref() == Some(node);
            let waiting = t.since.elapsed();
            let cause = if !here && !idle.contains_key(node) {
                format!("node {node} is no longer available (dead, suspect or leaving)")
            } else if waiting > deadline {
                format!("node {node} ran past the task deadline")
            } else if !here
                && !t.taken
                && pickup.is_some_and(|p| waiting > p)
                && idle.get(node).is_some_and(|&bees| bees > 0)
            {
                // A node busy with other work takes its tasks when a bee is free; one with
                // an idle bee that has not taken the task in this long is hung, or cannot
                // read it. Later rounds of this query leave it out.
                self.avoid.insert(node.to_string());
                format!(
                    "node {node} did not take the task within {waiting:.1?} although it had an \
                     idle bee (is it hung, or running another version of Apiary?)"
                )
            } else {
                continue;
            };
            t.stage = Stage::GivenUp;
            self.causes.push((
                t.spec.attempt,
                format!(
                    "task {} (round {}): {cause}",
                    t.spec.task_id, t.spec.attempt
                ),
            ));
        }
        if !self.round_over() || self.complete() {
            return Ok(());
        }
        let left: Vec<SplitCell> = self.left().cloned().collect();
        if self.round >= MAX_ATTEMPTS {
            return Err(self.abandon(&left));
        }
        self.next_round(left, &alive).await
    }

    /// Records the query's failure to read `left` and returns the error naming it.
    fn abandon(&self, left: &[SplitCell]) -> QueryError {
        let split = &self.run.fragment.split;
        let cells: Vec<String> = left.iter().map(SplitCell::key).collect();
        // The last round's first given-up task names the failure.
        let task_id = self
            .tasks
            .iter()
            .rev()
            .find(|t| matches!(t.stage, Stage::GivenUp))
            .map_or(0, |t| t.spec.task_id);
        self.record_abandoned(task_id, cells.clone());
        let mut shown = cells;
        if shown.len() > 5 {
            let more = shown.len() - 5;
            shown.truncate(5);
            shown.push(format!("and {more} more"));
        }
        QueryError::Execution(format!(
            "task {task_id} of query {} (frame {}.{}.{} v{}, cells {}) failed {} times: {}",
            self.query_id,
            split.hive,
            split.r#box,
            split.frame,
            split.version,
            shown.join(", "),
            self.round,
            self.causes
                .iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

impl Attempts<'_> {
    /// Keeps task `task_id` (which held `cells`) among the coordinator's abandoned tasks,
    /// with every cause so far.
    fn record_abandoned(&self, task_id: u32, cells: Vec<String>) {
        let split = &self.run.fragment.split;
        self.run.cluster.abandoned.record(super::Abandoned {
            query_id: self.query_id.clone(),
            task_id,
            frame: format!("{}.{}.{}", split.hive, split.r#box, split.frame),
            version: split.version,
            cells,
            causes: self.causes.iter().map(|(_, c)| c.clone()).collect(),
        });
    }
}

/// Removes the query's objects however the coordinator leaves (an answer, an error, a
/// cancellation), in the background: the answer never waits for it.
struct Cleanup {
    cluster: Cluster,
    query_id: String,
    published: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.published {
            return;
        }
        let transport = Arc::clone(&self.cluster.transport);
        let query_id = self.query_id.clone();
        let removal = async move {
            if let Err(e) = transport.finish(&query_id).await {
                tracing::warn!(query = %query_id, error = %e, "query objects not removed; a sweep will");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.cluster.background.spawn_on(removal, &handle);
            }
            Err(_) => tracing::warn!(
                query = %self.query_id,
                "no runtime to remove the query's objects; a sweep will"
            ),
        }
    }
}

/// How long the coordinator waits before looking for results again, `elapsed` into the
/// wait, once `first` the first task answered (if one has), never longer than `max`.
///
/// A twenty-fifth of the time spent (at least 2 ms): waiting adds about a fiftieth to a query
/// on average, and a long one costs few requests (about sixty per tenfold of its time, until
/// `max` bounds them). Once a task has answered, the others are due (shares are cut to
/// finish together): for a quarter of the time until that first answer, results are looked
/// for every fiftieth of it (at least every millisecond), at most about a dozen looks more.
fn result_interval(elapsed: Duration, first: Option<Duration>, max: Duration) -> Duration {
    match first {
        Some(first) if elapsed < first + first / 4 => {
            (first / 50).clamp(Duration::from_millis(1), max)
        }
        _ => (elapsed / 25).clamp(Duration::from_millis(2), max),
    }
}

/// Most parts one cell is cut into.
const MAX_PARTS: u64 = 64;

/// How many cells at the end of a task that shares are cut into parts, and into how many.
const CUT_LAST: (usize, u64) = (2, 4);

/// Cells cut so that every bee has about two units to read, where there are fewer cells
/// than that (a large cell is read by several nodes at once); parts have at least
/// `min_rows` rows.
fn cut_for_bees(cells: Vec<SplitCell>, bees: u32, min_rows: u64) -> Vec<SplitCell> {
    let want = u64::from(bees) * 2;
    let whole = cells.iter().filter(|c| c.part.is_none()).count() as u64;
    if whole == 0 || cells.len() as u64 >= want {
        return cells;
    }
    let each = want.div_ceil(whole).min(MAX_PARTS);
    cells
        .into_iter()
        .flat_map(|c| {
            let parts = each.min(c.rows / min_rows.max(1));
            c.cut(parts)
        })
        .collect()
}

/// The last [`CUT_LAST`] whole cells of a task's list cut into parts (with at least
/// `min_rows` rows each), in place: the shared end of the list is where its owner and the
/// thieves meet, so the task that ends last ends at most a part behind.
fn cut_last(cells: &mut Vec<SplitCell>, min_rows: u64) {
    let (last, parts) = CUT_LAST;
    let from = cells.len().saturating_sub(last);
    let tail: Vec<SplitCell> = cells.drain(from..).collect();
    for c in tail {
        let parts = parts.min(c.rows / min_rows.max(1));
        cells.extend(c.cut(parts));
    }
}

/// How much more reading a cell costs a node that must fetch it than one that has it cached.
/// Large enough that a holder keeps its cells while the loads are close; small enough that a
/// warm node never takes more than 5/9 of a two-node split, and that the split evens out as
/// the other nodes' caches fill (a cell cached everywhere costs the same everywhere).
const MISS_COST: f64 = 1.25;

/// Cells to nodes: cached ones first, largest first, each onto the node that would finish
/// its share soonest, counting a share as its cost per bee (a cell costs its bytes on a node
/// that has it cached or when no node has it, [`MISS_COST`] times its bytes elsewhere); a tie
/// goes to a holder.
/// A node's share is cut into tasks of at most its memory (bees × memory per bee), so no
/// task asks more than the node holds. With no workers, everything becomes one task for the
/// coordinator itself (node `""`).
fn assign(
    cells: &[SplitCell],
    split: &super::FramePin,
    workers: &[WorkerInfo],
) -> Vec<(String, Vec<SplitCell>)> {
    if workers.is_empty() {
        return vec![(String::new(), cells.to_vec())];
    }
    let mut load: Vec<f64> = vec![0.0; workers.len()];
    let mut share: Vec<Vec<super::SplitCell>> = vec![Vec::new(); workers.len()];
    let frame = format!("{}/{}/{}/", split.hive, split.r#box, split.frame);
    let cached: Vec<HashSet<&str>> = workers
        .iter()
        .map(|w| {
            w.cached_cells
                .iter()
                .filter_map(|c| c.strip_prefix(frame.as_str()))
                .collect()
        })
        .collect();
    // Cells some node has cached go first, while every node still has room to take them at
    // their cost; cells no node has cost the same anywhere and even out the loads after.
    let is_cached = |c: &super::SplitCell| cached.iter().any(|set| set.contains(c.path.as_str()));
    let mut cells = cells.to_vec();
    cells.sort_by(|a, b| {
        is_cached(b)
            .cmp(&is_cached(a))
            .then_with(|| b.bytes.cmp(&a.bytes))
            .then_with(|| a.path.cmp(&b.path))
    });
    for cell in cells {
        let held: Vec<bool> = cached
            .iter()
            .map(|set| set.contains(cell.path.as_str()))
            .collect();
        let anywhere = held.contains(&true);
        let cost = |i: usize| {
            let miss = if anywhere && !held[i] { MISS_COST } else { 1.0 };
            cell.bytes.max(1) as f64 * miss
        };
        let finish = |i: usize| (load[i] + cost(i)) / f64::from(workers[i].bees.max(1));
        let i = (0..workers.len())
            .min_by(|&a, &b| {
                finish(a)
                    .total_cmp(&finish(b))
                    .then_with(|| held[b].cmp(&held[a]))
            })
            .unwrap_or(0);
        load[i] += cost(i);
        share[i].push(cell);
    }
    let mut out = Vec::new();
    for (w, cells) in workers.iter().zip(share) {
        if cells.is_empty() {
            continue;
        }
        let cap = (u64::from(w.bees.max(1)) * w.memory_per_bee).max(1);
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for c in cells {
            if !chunk.is_empty() && bytes + c.bytes > cap {
                out.push((w.node_id.clone(), std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += c.bytes;
            chunk.push(c);
        }
        out.push((w.node_id.clone(), chunk));
    }
    out
}

impl Cluster {
    /// Sweeps orphaned queries in the background, at most once per half retention.
    fn maybe_sweep(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.settings.orphan_retention / 2);
        if !due {
            return;
        }
        *last = Some(Instant::now());
        let transport = Arc::clone(&self.transport);
        let retention = self.settings.orphan_retention;
        self.background.spawn(async move {
            match transport.sweep(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    queries = n,
                    "removed queries left by coordinators that died"
                ),
                Err(e) => tracing::debug!(error = %e, "sweeping old queries failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::{FramePin, Shape, SplitCell};

    fn worker(id: &str, bees: u32) -> WorkerInfo {
        WorkerInfo {
            node_id: id.into(),
            bees,
            idle_bees: bees,
            memory_per_bee: 1 << 30,
            cached_cells: vec![],
        }
    }

    fn fragment(sizes: &[u64]) -> Fragment {
        Fragment {
            sql: "SELECT 1".into(),
            schema: Arc::new(arrow_schema::Schema::empty()),
            split: FramePin {
                hive: "h".into(),
                r#box: "b".into(),
                frame: "f".into(),
                version: 1,
            },
            cells: sizes
                .iter()
                .enumerate()
                .map(|(i, &bytes)| SplitCell {
                    path: format!("c{i}"),
                    bytes,
                    rows: bytes * 10_000,
                    part: None,
                })
                .collect(),
            pins: vec![],
            shape: Shape::Rows,
            scope: vec![],
            settings: Default::default(),
        }
    }

    /// Looks made while waiting `total` for results, the first answering at `first`.
    fn looks(total: Duration, first: Option<Duration>) -> (u32, Duration) {
        let max = Duration::from_millis(250);
        let (mut at, mut looks, mut longest) = (Duration::ZERO, 0, Duration::ZERO);
        while at < total {
            let seen = first.filter(|f| at >= *f);
            let wait = result_interval(at, seen, max);
            // How much longer than a twenty-fifth of the wait so far (or 2 ms) a result that
            // lands just after a look can go unseen.
            longest = longest.max(wait.saturating_sub((at / 25).max(Duration::from_millis(2))));
            at += wait;
            looks += 1;
        }
        (looks, longest)
    }

    #[test]
    fn results_are_looked_for_often_early_and_rarely_late() {
        // Never more than a twenty-fifth of the time spent (or 2 ms) between looks.
        for first in [None, Some(Duration::from_millis(300))] {
            let (n, longest) = looks(Duration::from_secs(1), first);
            assert_eq!(longest, Duration::ZERO, "{first:?}");
            assert!(n <= 115, "{first:?}: {n} looks in 1 s");
        }
        // A 10-minute task: bounded by `max` at the end, about 2 500 looks, not 300 000.
        let (n, _) = looks(Duration::from_secs(600), Some(Duration::from_secs(60)));
        assert!(n <= 2_600, "{n} looks in 10 minutes");
        // After a first answer the next look comes sooner.
        let t = Duration::from_millis(200);
        assert!(result_interval(t, Some(t), Duration::from_secs(1)) < t / 25);
        assert_eq!(
            result_interval(t * 2, Some(t), Duration::from_secs(1)),
            t * 2 / 25
        );
    }

    #[test]
    fn every_cell_once_balanced_by_bees() {
        let f = fragment(&[10; 12]);
        let plan = assign(&f.cells, &f.split, &[worker("a", 1), worker("b", 2)]);
        let mut all: Vec<String> = plan
            .iter()
            .flat_map(|(_, c)| c.iter().map(|c| c.path.clone()))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 12);
        let bytes = |n: &str| -> u64 {
            plan.iter()
                .filter(|(w, _)| w == n)
                .flat_map(|(_, c)| c)
                .map(|c| c.bytes)
                .sum()
        };
        assert_eq!(bytes("a"), 40);
        assert_eq!(bytes("b"), 80);
    }

    /// Every cell's rows, from the units that cover them: each cell whole once, or its
    /// parts covering its rows once, in order.
    fn assert_covers(units: &[SplitCell], cells: &[SplitCell]) {
        for cell in cells {
            let mut mine: Vec<&SplitCell> = units.iter().filter(|u| u.path == cell.path).collect();
            mine.sort_by_key(|u| u.part.as_ref().map(|r| r.start));
            match mine[..] {
                [whole] if whole.part.is_none() => continue,
                _ => {}
            }
            let mut next = 0;
            for u in mine {
                let rows = u.part.clone().expect("a whole cell beside its parts");
                assert_eq!(rows.start, next, "{units:?}");
                next = rows.end;
            }
            assert_eq!(next, cell.rows, "{units:?}");
        }
    }

    #[test]
    fn few_large_cells_are_cut_so_every_bee_has_work() {
        // Two cells of 1.2M rows for six bees: each in six parts (twelve, two per bee).
        let f = fragment(&[120, 120]);
        const MIN: u64 = 64 * 1024;
        let cut = cut_for_bees(f.cells.clone(), 6, MIN);
        assert_eq!(cut.len(), 12);
        assert_covers(&cut, &f.cells);
        assert_eq!(cut.iter().map(|c| c.bytes).sum::<u64>(), 240);
        // Enough cells already, or cells too small to cut: unchanged.
        let many = fragment(&[10; 12]);
        assert_eq!(cut_for_bees(many.cells.clone(), 6, MIN), many.cells);
        let small = fragment(&[1, 1]);
        assert_eq!(cut_for_bees(small.cells.clone(), 6, MIN), small.cells);
        // The plan over parts still gives every unit once, balanced.
        let plan = assign(&cut, &f.split, &[worker("a", 3), worker("b", 3)]);
        let units: Vec<SplitCell> = plan.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(units.len(), 12);
        assert_covers(&units, &f.cells);
        assert_eq!(bytes_of(&plan, "a"), 120);
    }

    #[test]
    fn a_tasks_last_cells_are_cut_into_parts() {
        let f = fragment(&[10, 20, 30, 40]);
        let keys = |cells: &[SplitCell]| cells.iter().map(SplitCell::key).collect::<Vec<_>>();
        let mut cells = f.cells.clone();
        cut_last(&mut cells, 64 * 1024);
        assert_eq!(
            keys(&cells),
            [
                "c0",
                "c1",
                "c2#0-75000",
                "c2#75000-150000",
                "c2#150000-225000",
                "c2#225000-300000",
                "c3#0-100000",
                "c3#100000-200000",
                "c3#200000-300000",
                "c3#300000-400000",
            ]
        );
        assert_covers(&cells, &f.cells);
        // Parts have at least `min_rows` rows: a smaller cell is cut into fewer parts, or
        // stays whole.
        let mut small = fragment(&[10, 20, 1]).cells;
        cut_last(&mut small, 64 * 1024);
        assert_eq!(
            keys(&small),
            [
                "c0",
                "c1#0-66666",
                "c1#66666-133333",
                "c1#133333-200000",
                "c2"
            ]
        );
    }

    fn bytes_of(plan: &[(String, Vec<SplitCell>)], node: &str) -> u64 {
        plan.iter()
            .filter(|(w, _)| w == node)
            .flat_map(|(_, c)| c)
            .map(|c| c.bytes)
            .sum()
    }

    #[test]
    fn a_warm_node_takes_at_most_five_ninths_and_the_split_evens_out() {
        // `a` has every cell cached, `b` none: `a` keeps more, but not all.
        let f = fragment(&[10; 18]);
        let mut a = worker("a", 1);
        a.cached_cells = (0..18).map(|i| format!("h/b/f/c{i}")).collect();
        let plan = assign(&f.cells, &f.split, &[a.clone(), worker("b", 1)]);
        let first = bytes_of(&plan, "a");
        assert!((90..=100).contains(&first), "{first}: {plan:?}");
        // `b` caches what it is given (and keeps it): within a few queries the split is even.
        let mut b = worker("b", 1);
        let mut plan = plan;
        for _ in 0..4 {
            b.cached_cells.extend(
                plan.iter()
                    .filter(|(w, _)| w == "b")
                    .flat_map(|(_, c)| c.iter().map(|c| format!("h/b/f/{}", c.path))),
            );
            b.cached_cells.sort();
            b.cached_cells.dedup();
            plan = assign(&f.cells, &f.split, &[a.clone(), b.clone()]);
        }
        assert_eq!(bytes_of(&plan, "a"), 90, "{plan:?}");
        assert_eq!(bytes_of(&plan, "b"), 90, "{plan:?}");
    }

    #[test]
    fn cached_cells_stay_with_their_node_and_tasks_fit_memory() {
        let f = fragment(&[10, 10, 10, 10]);
        let mut a = worker("a", 1);
        a.cached_cells = vec!["h/b/f/c3".into()];
        let plan = assign(&f.cells, &f.split, &[a, worker("b", 1)]);
        let a_cells: Vec<&str> = plan
            .iter()
            .filter(|(w, _)| w == "a")
            .flat_map(|(_, c)| c.iter().map(|c| c.path.as_str()))
            .collect();
        assert!(a_cells.contains(&"c3"), "{plan:?}");

        let mut small = worker("s", 1);
        small.memory_per_bee = 15;
        let plan = assign(&f.cells, &f.split, &[small]);
        assert_eq!(
            plan.len(),
            4,
            "a 15-byte node gets one 10-byte cell per task: {plan:?}"
        );
        assert!(
            assign(&f.cells, &f.split, &[])
                .iter()
                .all(|(w, _)| w.is_empty())
        );
    }
}
