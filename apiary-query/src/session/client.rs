//! A client's SQL session: its `USE` and `SET`, and the statements it runs.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;
use futures::{FutureExt, TryStreamExt};

use super::*;

/// One client's session: its current hive and box (`USE`) and its settings (`SET`).
pub struct SqlSession {
    pub(super) catalog: Arc<ApiaryCatalog>,
    pub(super) ctx: SessionContext,
    pub(super) current: Vec<String>,
    pub(super) distribute: DistributeMode,
    /// `apiary.min_part_rows`, when set (else the cluster's setting).
    pub(super) min_part_rows: Option<u64>,
    pub(super) engine: QueryEngine,
    /// The physical plan of the last query started, for watching its progress.
    pub(super) last_plan: Option<Arc<dyn ExecutionPlan>>,
    /// Who runs its statements, as the running queries list them (`api`, `python`, …).
    pub(super) client: String,
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
        let ticket = self.engine.running.start(sql, &self.client);
        let run = AssertUnwindSafe(self.sql_stream_inner(sql)).catch_unwind();
        let result = match tokio::select! {
            biased;
            ran = run => Some(ran),
            _ = ticket.cancelled() => None,
        } {
            None => {
                // Cancelled while planning (or running an earlier statement of `sql`).
                let elapsed = clock.monotonic().saturating_sub(started);
                stats.record(crate::query_stats::Outcome::Cancelled, elapsed);
                return Err(ticket.error());
            }
            Some(Ok(result)) => result,
            Some(Err(panic)) => {
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
                rows, stats, clock, started, ticket,
            )),
            Err(e) => {
                let elapsed = clock.monotonic().saturating_sub(started);
                stats.record(crate::query_stats::Outcome::Failed(e.kind()), elapsed);
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

    /// Names who runs this session's statements in the list of running queries (`api`,
    /// `python`, `shell`; default `sql`).
    pub fn set_client(&mut self, client: impl Into<String>) {
        self.client = client.into();
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
        // A query that runs here waits for a free bee and runs under a memory pool of the
        // bees it holds. A distributed one holds none while it waits for its tasks (which
        // hold bees where they run), so coordinators can never wait on each other's bees;
        // it merges within one bee's memory (a split may start its tasks while it is
        // planned, so that pool is made first).
        // Planned with the session's state; executed in a task context whose runtime holds
        // this query's memory pool (no copy of the session state per query).
        let base = self.ctx.runtime_env();
        let unadmitted = self.engine.budget.task_runtime(&base)?;
        let Distributed {
            plan,
            split: distributed,
            local_because,
        } = self.maybe_distribute(plan, &unadmitted).await?;
        // A look at the node's own state (`apiary.system.*`, answered from memory) does not
        // wait for a bee: it must answer on a saturated node, when it is needed most.
        let (grant, runtime) = if distributed || reads_only_system_tables(&plan) {
            (None, unadmitted)
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

/// Whether `plan` reads tables and all of them are `apiary.system.*` ones.
fn reads_only_system_tables(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let (mut scans, mut system) = (0, true);
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans += 1;
            system &= scan.table_name.catalog() == Some(crate::system::SYSTEM_HIVE)
                && scan.table_name.schema() == Some(crate::system::SYSTEM_BOX);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    scans > 0 && system
}
