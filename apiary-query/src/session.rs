//! The SQL front door: a [`QueryEngine`] per node and a [`SqlSession`] per client session.

use std::sync::Arc;

use apiary_cache::{CachingStore, ColumnTier};
use apiary_ledger::{FrameRef, Registry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::catalog::{ApiaryCatalog, HiveList, NO_BOX, NO_HIVE, PinKey, Pinned};
use crate::distribute::{DistributeMode, Distributor};
use crate::error::{QueryError, Result};
use crate::fragments::{FragmentKey, FragmentPlans};
use crate::memory::{self, Admission, Budget};
use crate::output::{self, QueryResult};
use crate::scans::{OnlyApiaryStorage, ScanStores};
use crate::statement::{self, Command};

mod client;
mod distribution;
mod warm;
pub use client::SqlSession;
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
    /// Statements running now.
    running: crate::running::RunningQueries,
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
            .with_optimizer_rule(crate::star::rule())
            .with_physical_optimizer_rule(Arc::new(crate::exec::YieldingJoins))
            .build();
        Ok(Self {
            catalog,
            cells,
            state,
            distributor: None,
            distribute: DistributeMode::default(),
            budget: Budget::fixed(options.memory_limit, options.scratch_dir, tier),
            fragments: Arc::new(crate::fragments::fragment_plans()),
            running: crate::running::RunningQueries::new(
                Arc::clone(&options.clock),
                apiary_storage::Random::process(),
            ),
            clock: options.clock,
            queries: crate::query_stats::QueryStats::default(),
        })
    }

    /// The SQL statements this engine's sessions ran: by outcome, and their durations.
    pub fn query_stats(&self) -> crate::query_stats::QueryTally {
        self.queries.tally()
    }

    /// The statements this engine's sessions are running now, each cancellable by id.
    pub fn running(&self) -> &crate::running::RunningQueries {
        &self.running
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

    /// Installs (or, with `None`, removes) what answers `apiary.system.*` in SQL (see
    /// [`system`](crate::system)).
    pub fn set_system_tables(&self, tables: Option<Arc<dyn crate::system::SystemTables>>) {
        self.catalog.set_system_tables(tables);
    }

    /// Cells this engine's frame scans selected (after pruning) since it started, and their
    /// bytes in storage, whether then read from memory, the cache or storage.
    pub fn scanned(&self) -> (u64, u64) {
        self.catalog.scans().scanned()
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

    /// The prepared DataFusion state every session starts from (for tests that plan SQL
    /// below the session).
    #[cfg(test)]
    pub(crate) fn base_state(&self) -> SessionState {
        self.state.clone()
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
            client: "sql".into(),
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
