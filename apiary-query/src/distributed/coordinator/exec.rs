//! The coordinator's side of a plan: the table whose scan runs a fragment over the swarm,
//! and the execution plan that yields the tasks' rows, starting the run (or taking up the
//! one started while the query was planned).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, SpillMetrics,
};
use datafusion::physical_plan::spill::SpillManager;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use tokio_util::task::AbortOnDropHandle;

use super::cleanup::Cleanup;
use super::output::{Output, Ready};
use super::{LocalRowsPool, Phases, Run, TaskRun};
use crate::distributed::Cluster;
use crate::distributed::plan::Fragment;
use crate::error::QueryError;
use crate::session::QueryEngine;

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
