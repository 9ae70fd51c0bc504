//! The SQL front door: a [`QueryEngine`] per node and a [`SqlSession`] per client session.

use std::sync::Arc;

use apiary_cache::{CachingStore, ColumnTier};
use apiary_ledger::{FrameRef, Registry};
use arrow_array::RecordBatch;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use std::panic::AssertUnwindSafe;

use futures::{FutureExt, TryStreamExt};

use crate::catalog::{ApiaryCatalog, HiveList, NO_BOX, NO_HIVE, PinKey, Pinned};
use crate::distribute::{DistributeMode, Distributor};
use crate::error::{QueryError, Result};
use crate::fragments::{FragmentKey, FragmentPlans};
use crate::memory::{self, Admission, Budget};
use crate::output::{self, QueryResult};
use crate::scans::{OnlyApiaryStorage, ScanStores};
use crate::statement::{self, Command};

mod distribution;
mod warm;
use datafusion::logical_expr::LogicalPlan;
use distribution::Distributed;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// How queries run on this node.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Partitions a scan is split into: the node's bees (cores).
    pub target_partitions: usize,
    /// Memory each query may hold, in bytes, where no [`Admission`](crate::Admission)
    /// (a node's bees) decides it; `None` for no limit.
    pub memory_limit: Option<usize>,
    /// Where queries spill when their memory is full (the system's temporary directory when
    /// `None`, or the admission's).
    pub scratch_dir: Option<std::path::PathBuf>,
    /// The most the memory tier of decoded columns holds, in bytes (0 turns it off).
    pub memory_tier: u64,
    /// The memory queries' pools and the tier share, in bytes: the tier never holds more
    /// than what the pools leave of it.
    pub memory_budget: u64,
    /// The clock distributed tasks time themselves and their claims on.
    pub clock: Arc<dyn apiary_storage::Clock>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            target_partitions: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_limit: None,
            scratch_dir: None,
            memory_tier: 0,
            memory_budget: 0,
            clock: apiary_storage::SystemClock::shared(),
        }
    }
}

/// Runs SQL over one storage root. Cheap to share; every session starts from the same
/// prepared DataFusion state (functions, configuration, catalog, object store).
#[derive(Debug, Clone)]
pub struct QueryEngine {
    catalog: Arc<ApiaryCatalog>,
    cells: Arc<CachingStore>,
    state: SessionState,
    distributor: Option<Arc<dyn Distributor>>,
    distribute: DistributeMode,
    pub(crate) budget: Budget,
    /// Optimized plans of recent distributed tasks' fragments.
    fragments: Arc<FragmentPlans>,
    clock: Arc<dyn apiary_storage::Clock>,
    /// Statements run, by outcome, and their durations.
    queries: crate::query_stats::QueryStats,
}

impl QueryEngine {
    /// An engine over `registry`, reading cells through the registry's storage backend.
    pub fn new(registry: Arc<Registry>, options: QueryOptions) -> Result<Self> {
        let cells = Arc::new(CachingStore::new(registry.backend().object_store()));
        let tier = ColumnTier::new(options.memory_tier, options.memory_budget)
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        let tier = Arc::new(tier);
        let scans = Arc::new(ScanStores::new(Arc::clone(&cells), Arc::clone(&tier)));
        let objects = Arc::new(OnlyApiaryStorage(Arc::clone(&scans)));
        let runtime = RuntimeEnvBuilder::new().with_object_store_registry(objects);
        let config = SessionConfig::new()
            .with_target_partitions(options.target_partitions.max(1))
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(NO_HIVE, NO_BOX);
        let catalog = Arc::new(ApiaryCatalog::new(registry, scans));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_catalog_list(Arc::new(HiveList(Arc::clone(&catalog))))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::exec::YieldingJoins))
            .build();
        Ok(Self {
            catalog,
            cells,
            state,
            distributor: None,
            distribute: DistributeMode::default(),
            budget: Budget::fixed(options.memory_limit, options.scratch_dir, tier),
            fragments: Arc::default(),
            clock: options.clock,
            queries: crate::query_stats::QueryStats::default(),
        })
    }

    /// The SQL statements this engine's sessions ran: by outcome, and their durations.
    pub fn query_stats(&self) -> crate::query_stats::QueryTally {
        self.queries.tally()
    }

    /// The clock distributed tasks time themselves on.
    pub fn clock(&self) -> &Arc<dyn apiary_storage::Clock> {
        &self.clock
    }

    /// Installs (or removes) what admits queries on this node (its bees): from then on a
    /// query waits for one and runs with its memory, and a distributed task with its bee's.
    pub fn set_admission(&self, admission: Option<Arc<dyn Admission>>) {
        self.budget.set_admission(admission);
    }

    /// Installs (or removes) the node's cell cache: frame scans then read cells from local
    /// disk when they can, and fetch them into the cache when they cannot.
    pub fn set_cell_cache(&self, cache: Option<Arc<apiary_cache::CellCache>>) {
        self.cells.set_cache(cache);
    }

    /// The memory tier of decoded columns (see [`ColumnTier`]).
    pub fn memory_tier(&self) -> &Arc<ColumnTier> {
        self.catalog.scans().tier()
    }

    /// The node's cell cache, if one is installed.
    pub fn cell_cache(&self) -> Option<Arc<apiary_cache::CellCache>> {
        self.cells.cache()
    }

    /// This engine, distributing queries through `distributor` (the distributed layer's
    /// `Cluster`, say).
    pub fn with_distributor(mut self, distributor: Arc<dyn Distributor>) -> Self {
        self.distributor = Some(distributor);
        self
    }

    /// The options a session with `state` changed from this engine's (its `SET datafusion.…`
    /// and `SET TIME ZONE`), which a distributed query's tasks run with. The number of partitions
    /// stays each worker's own: it follows the bees of the node that runs the task.
    pub fn changed_settings(&self, state: &SessionState) -> BTreeMap<String, String> {
        let base: HashMap<String, Option<String>> = self
            .state
            .config_options()
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        state
            .config_options()
            .entries()
            .into_iter()
            .filter(|e| {
                statement::settable(&e.key)
                    && e.key != "datafusion.execution.target_partitions"
                    && base.get(&e.key) != Some(&e.value)
            })
            .filter_map(|e| Some((e.key, e.value?)))
            .collect()
    }

    /// This engine with `mode` as every new session's `apiary.distribute`.
    pub fn with_distribute(mut self, mode: DistributeMode) -> Self {
        self.distribute = mode;
        self
    }

    /// A new session: `USE` and `SET` in it last until it is dropped and affect no other.
    pub fn session(&self) -> SqlSession {
        SqlSession {
            catalog: Arc::clone(&self.catalog),
            ctx: SessionContext::new_with_state(self.state.clone()),
            current: Vec::new(),
            distribute: self.distribute,
            min_part_rows: None,
            engine: self.clone(),
            last_plan: None,
        }
    }

    /// Runs a distributed task's fragment: exactly one read-only query, over a catalog that
    /// holds only `pins` (each frame at its version, the split frame with only the task's
    /// cells). Never distributed again. The optimized plan of a fragment run lately over the
    /// same pins is reused (see `crate::fragments`). `prepare` sees the physical plan before
    /// it runs (a task that shares cells hands its split scan their queue there).
    pub async fn run_fragment(
        &self,
        sql: &str,
        scope: &[String],
        settings: &BTreeMap<String, String>,
        pins: HashMap<PinKey, Pinned>,
        prepare: impl FnOnce(&Arc<dyn ExecutionPlan>) -> Result<()>,
    ) -> Result<RunningFragment> {
        let runtime = self.budget.task_runtime(self.state.runtime_env())?;
        // The engine's state, or a copy with the coordinator session's settings.
        let state = if settings.is_empty() {
            Cow::Borrowed(&self.state)
        } else {
            let mut state = self.state.clone();
            for (key, value) in settings {
                state
                    .config_mut()
                    .options_mut()
                    .set(key, value)
                    .map_err(|e| {
                        QueryError::Invalid(format!(
                            "the setting `{key}` = `{value}` the coordinator sent: {}",
                            e.strip_backtrace()
                        ))
                    })?;
            }
            Cow::Owned(state)
        };
        let key = FragmentKey::new(sql, scope, settings, &pins);
        let (plan, plan_reused) = match self.fragments.get(&key) {
            Some(plan) => (plan, true),
            None => {
                let plan = self.plan_fragment(&state, sql, scope, pins).await?;
                self.fragments.put(key, plan.clone());
                (plan, false)
            }
        };
        // The plan's tables are resolved already: the state plans it physically.
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, state.as_ref())
            .await?;
        prepare(&physical)?;
        let task = Arc::new(TaskContext::from(state.as_ref()).with_runtime(runtime));
        let stream = datafusion::physical_plan::execute_stream(Arc::clone(&physical), task)?;
        Ok(RunningFragment {
            plan: physical,
            stream,
            plan_reused,
        })
    }

    /// The optimized logical plan of a fragment (see [`run_fragment`](Self::run_fragment)),
    /// checked to be one read-only query.
    async fn plan_fragment(
        &self,
        base: &SessionState,
        sql: &str,
        scope: &[String],
        pins: HashMap<PinKey, Pinned>,
    ) -> Result<LogicalPlan> {
        let mut commands = statement::parse(sql)?;
        let command = match (commands.pop(), commands.is_empty()) {
            (Some(c), true) if c.is_query() => c,
            _ => {
                return Err(QueryError::Rejected {
                    statement: "this fragment".into(),
                    instead: "a task runs exactly one read-only SELECT".into(),
                });
            }
        };
        let Command::DataFusion(statement) = command else {
            return Err(QueryError::Invalid("a fragment must be a query".into()));
        };
        let catalog = Arc::new(self.catalog.pinned(pins));
        let mut state = SessionStateBuilder::new_from_existing(base.clone())
            .with_catalog_list(Arc::new(HiveList(catalog)))
            .build();
        if let Some(hive) = scope.first() {
            let options = state.config_mut().options_mut();
            options.catalog.default_catalog = hive.clone();
            options.catalog.default_schema =
                scope.get(1).cloned().unwrap_or_else(|| NO_BOX.to_string());
        }
        let plan = state.statement_to_plan(*statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        Ok(state.optimize(&plan)?)
    }

    /// Runs `sql` (one or more statements) in a fresh session and returns the last
    /// statement's result.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.session().sql(sql).await
    }

    /// The catalog (registry access and scan indexes).
    pub fn catalog(&self) -> &Arc<ApiaryCatalog> {
        &self.catalog
    }
}

/// A distributed task's fragment, started (see [`QueryEngine::run_fragment`]).
pub struct RunningFragment {
    /// The physical plan, whose metrics fill in as the stream is read.
    pub plan: Arc<dyn ExecutionPlan>,
    /// The fragment's rows.
    pub stream: SendableRecordBatchStream,
    /// Whether the optimized plan of an earlier run of the same fragment was reused.
    pub plan_reused: bool,
}

impl std::fmt::Debug for RunningFragment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningFragment")
            .field("plan", &self.plan.name())
            .field("plan_reused", &self.plan_reused)
            .finish_non_exhaustive()
    }
}

/// One client's session: its current hive and box (`USE`) and its settings (`SET`).
pub struct SqlSession {
    catalog: Arc<ApiaryCatalog>,
    ctx: SessionContext,
    current: Vec<String>,
    distribute: DistributeMode,
    /// `apiary.min_part_rows`, when set (else the cluster's setting).
    min_part_rows: Option<u64>,
    engine: QueryEngine,
    /// The physical plan of the last query started, for watching its progress.
    last_plan: Option<Arc<dyn ExecutionPlan>>,
}

impl std::fmt::Debug for SqlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSession")
            .field("session_id", &self.ctx.session_id())
            .field("current", &self.current)
            .finish()
    }
}

impl SqlSession {
    /// Runs `sql` (one or more `;`-separated statements) and returns the last statement's
    /// result; earlier statements run to completion first.
    pub async fn sql(&mut self, sql: &str) -> Result<QueryResult> {
        let stream = self.sql_stream(sql).await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok(QueryResult::new(schema, batches))
    }

    /// Like [`sql`](Self::sql), but the last statement's rows are streamed as they are
    /// produced.
    pub async fn sql_stream(&mut self, sql: &str) -> Result<SendableRecordBatchStream> {
        // A panic inside the parser or planner on hostile input must not take the node down:
        // it becomes this query's error.
        let clock = Arc::clone(&self.engine.clock);
        let stats = self.engine.queries.clone();
        let started = clock.monotonic();
        let result = match AssertUnwindSafe(self.sql_stream_inner(sql))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown cause");
                Err(QueryError::Execution(format!(
                    "the query engine failed on this statement ({what}); nothing was changed"
                )))
            }
        };
        match result {
            Ok(rows) => Ok(crate::query_stats::Recorded::wrap(
                rows, stats, clock, started,
            )),
            Err(e) => {
                let elapsed = clock.monotonic().saturating_sub(started);
                stats.record(crate::query_stats::outcome_of(e.kind()), elapsed);
                Err(e)
            }
        }
    }

    async fn sql_stream_inner(&mut self, sql: &str) -> Result<SendableRecordBatchStream> {
        self.last_plan = None;
        let mut commands = statement::parse(sql)?;
        let last = commands
            .pop()
            .ok_or_else(|| QueryError::Invalid("no statement".into()))?;
        for command in commands {
            let stream = self.run(command).await?;
            let _: Vec<RecordBatch> = stream.try_collect().await?;
        }
        self.run(last).await
    }

    /// The physical plan of the last query this session started (DataFusion statements
    /// only), whose metrics fill in as its stream is read: watch a running query with
    /// [`QueryProgress::of`](crate::distributed::progress::QueryProgress::of).
    pub fn last_plan(&self) -> Option<Arc<dyn ExecutionPlan>> {
        self.last_plan.clone()
    }

    /// The hive and box `USE` selected, if any.
    pub fn current(&self) -> (Option<&str>, Option<&str>) {
        (
            self.current.first().map(String::as_str),
            self.current.get(1).map(String::as_str),
        )
    }

    async fn run(&mut self, command: Command) -> Result<SendableRecordBatchStream> {
        let registry = Arc::clone(self.catalog.registry());
        let result = match command {
            Command::DataFusion(statement) => return self.run_datafusion(*statement).await,
            Command::Use(parts) => {
                self.use_scope(parts).await?;
                QueryResult::empty()
            }
            Command::SetApiary { key, value } => {
                match key.as_str() {
                    "distribute" => self.distribute = DistributeMode::parse(&value)?,
                    "min_part_rows" => {
                        let rows = value.trim().parse::<u64>().ok();
                        self.min_part_rows = Some(rows.filter(|r| *r > 0).ok_or_else(|| {
                            QueryError::Invalid(format!(
                                "apiary.min_part_rows is a number of rows above 0, not `{value}`"
                            ))
                        })?);
                    }
                    other => {
                        return Err(QueryError::Invalid(format!(
                            "`apiary.{other}` is not a setting; Apiary's settings are \
                             apiary.distribute ('auto', 'always' or 'never') and \
                             apiary.min_part_rows (fewest rows of a part of a cell a \
                             distributed query cuts)"
                        )));
                    }
                }
                QueryResult::empty()
            }
            Command::ShowHives => output::show_hives(&registry).await?,
            Command::ShowBoxes(scope) => {
                let hive = match scope {
                    Some(parts) if parts.len() == 1 => Some(parts[0].clone()),
                    Some(parts) => {
                        return Err(QueryError::Invalid(format!(
                            "SHOW BOXES IN takes a hive name, not `{}`",
                            parts.join(".")
                        )));
                    }
                    None => self.current.first().cloned(),
                };
                output::show_boxes(&registry, hive.as_deref()).await?
            }
            Command::ShowFrames(scope) => {
                let scope = match scope {
                    Some(parts) if parts.len() <= 2 => parts,
                    Some(parts) => {
                        return Err(QueryError::Invalid(format!(
                            "SHOW FRAMES IN takes `hive` or `hive.box`, not `{}`",
                            parts.join(".")
                        )));
                    }
                    None => self.current.clone(),
                };
                output::show_frames(&registry, &scope).await?
            }
            Command::Describe(parts) => {
                let frame = self.resolve(&parts)?;
                let table = self.catalog.frame_table(&frame).await?;
                output::describe(&table)?
            }
        };
        Ok(result.into_stream())
    }

    async fn run_datafusion(
        &mut self,
        mut statement: datafusion::sql::parser::Statement,
    ) -> Result<SendableRecordBatchStream> {
        let travel = crate::travel::Travel {
            catalog: &self.catalog,
            scope: &self.current,
            ctx: &self.ctx,
        };
        let extras = crate::travel::rewrite(&mut statement, &travel).await?;
        let mut state = self.ctx.state();
        if !extras.is_empty() {
            let list = extras.catalog_list(Arc::clone(state.catalog_list()))?;
            state = SessionStateBuilder::new_from_existing(state)
                .with_catalog_list(list)
                .build();
        }
        let plan = state.statement_to_plan(statement).await?;
        // Defence in depth: the statement was classified already; the plan must agree.
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(true)
            .verify_plan(&plan)?;
        let Distributed {
            plan,
            split: distributed,
            local_because,
        } = self.maybe_distribute(plan).await?;
        // A query that runs here waits for a free bee and runs under a memory pool of the
        // bees it holds. A distributed one holds none while it waits for its tasks (which
        // hold bees where they run), so coordinators can never wait on each other's bees;
        // it merges within one bee's memory.
        // Planned with the session's state; executed in a task context whose runtime holds
        // this query's memory pool (no copy of the session state per query).
        let base = self.ctx.runtime_env();
        let (grant, runtime) = if distributed {
            (None, self.engine.budget.task_runtime(&base)?)
        } else {
            self.engine.budget.admit_query(&base).await?
        };
        let frame = self.ctx.execute_logical_plan(plan).await?;
        let task = Arc::new(frame.task_ctx().with_runtime(runtime));
        let physical = frame.create_physical_plan().await?;
        self.last_plan = Some(Arc::clone(&physical));
        let stream = datafusion::physical_plan::execute_stream(physical, task)?;
        let stream = match local_because {
            Some(why) => {
                output::with_explain_row(stream, "apiary_distribution", &format!("local: {why}"))
            }
            None => stream,
        };
        Ok(memory::holding(stream, grant))
    }

    /// The session's `apiary.distribute` setting.
    pub fn distribute(&self) -> DistributeMode {
        self.distribute
    }

    /// `parts` as a frame: `hive.box.frame`, or completed from `USE`.
    fn resolve(&self, parts: &[String]) -> Result<FrameRef> {
        resolve_in(parts, &self.current)
    }

    async fn use_scope(&mut self, parts: Vec<String>) -> Result<()> {
        let registry = self.catalog.registry();
        match parts.as_slice() {
            [hive] => {
                registry.get_hive(hive).await?;
            }
            [hive, r#box] => {
                registry.get_box(hive, r#box).await?;
            }
            _ => {
                return Err(QueryError::Invalid(format!(
                    "USE takes `hive` or `hive.box`, not `{}`",
                    parts.join(".")
                )));
            }
        }
        let catalog = parts[0].clone();
        let schema = parts.get(1).cloned().unwrap_or_else(|| NO_BOX.to_string());
        {
            let state = self.ctx.state_ref();
            let mut state = state.write();
            let options = state.config_mut().options_mut();
            options.catalog.default_catalog = catalog;
            options.catalog.default_schema = schema;
        }
        self.current = parts;
        Ok(())
    }
}

/// `parts` as a frame: `hive.box.frame`, or completed from `current` (a session's `USE`).
pub(crate) fn resolve_in(parts: &[String], current: &[String]) -> Result<FrameRef> {
    let full: Vec<&str> = match (parts.len(), current.len()) {
        (3, _) => parts.iter().map(String::as_str).collect(),
        (2, n) if n >= 1 => vec![current[0].as_str(), &parts[0], &parts[1]],
        (1, 2) => vec![current[0].as_str(), &current[1], &parts[0]],
        _ => {
            return Err(QueryError::Invalid(format!(
                "`{}` does not say which hive and box it is in: write hive.box.frame, or \
                 run `USE hive.box` first in this session",
                parts.join(".")
            )));
        }
    };
    Ok(FrameRef::new(full[0], full[1], full[2])?)
}
