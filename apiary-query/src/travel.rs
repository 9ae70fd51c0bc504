//! Time travel in SQL: version clauses on frames, and the `apiary.history` and
//! `apiary.changes` table functions.
//!
//! Every common spelling reads a past version, with one meaning:
//!
//! ```sql
//! SELECT … FROM f VERSION AS OF 12
//! SELECT … FROM f TIMESTAMP AS OF '2026-09-01T10:00:00Z'
//! SELECT … FROM f FOR SYSTEM_TIME AS OF now() - INTERVAL '1 hour'
//! SELECT … FROM f AT (VERSION => 12)          -- or AT (TIMESTAMP => …)
//! ```
//!
//! A time means the latest version committed at or before it, judged on the ledger's stamps
//! (the store's clock); a time without a zone is UTC. Before DataFusion plans a statement,
//! every version clause is resolved to a version number and **consumed**: the frame's name
//! becomes `frame@12` (see [`crate::catalog::split_versioned`]), under an alias of the name
//! as written, so columns qualify as before. A clause on anything that is not a frame (a
//! `WITH` query, a table function) is refused by name, never ignored: DataFusion's planner
//! would read the newest data instead.
//!
//! `apiary.history('h.b.f')` and `apiary.changes('h.b.f', from, to)` are resolved the same
//! way into tables of this statement alone.

use std::ops::ControlFlow;
use std::sync::Arc;

use apiary_ledger::{FrameRef, LedgerError};
use arrow_array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemorySchemaProvider,
    TableProvider,
};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionContext, lit};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart,
    Query, TableAlias, TableFactor, TableVersion, Value, Visit, VisitMut, Visitor, VisitorMut,
};

use crate::catalog::{ApiaryCatalog, VERSION_MARK};
use crate::error::{QueryError, Result};
use crate::table::{FrameIndex, FrameTable};

/// The hive name under which a statement's table-function results are planned (a name
/// no hive can have).
pub(crate) const RESULTS_HIVE: &str = "_apiary";
const RESULTS_BOX: &str = "results";

/// What a statement's rewriting produced: tables to plan it with, beside the frames.
#[derive(Default)]
pub(crate) struct Extras {
    tables: Vec<(String, Arc<dyn TableProvider>)>,
}

impl Extras {
    /// Whether the statement needs no table beyond the catalog's.
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// `base` with this statement's tables under [`RESULTS_HIVE`].
    pub(crate) fn catalog_list(
        self,
        base: Arc<dyn CatalogProviderList>,
    ) -> Result<Arc<dyn CatalogProviderList>> {
        let schema = MemorySchemaProvider::new();
        for (name, table) in self.tables {
            datafusion::catalog::SchemaProvider::register_table(&schema, name, table)?;
        }
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(RESULTS_BOX, Arc::new(schema))?;
        Ok(Arc::new(WithResults {
            base,
            results: Arc::new(catalog),
        }))
    }
}

/// A catalog list with one more catalog: this statement's table-function results.
#[derive(Debug)]
struct WithResults {
    base: Arc<dyn CatalogProviderList>,
    results: Arc<dyn CatalogProvider>,
}

impl CatalogProviderList for WithResults {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.base.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.base.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == RESULTS_HIVE {
            return Some(Arc::clone(&self.results));
        }
        self.base.catalog(name)
    }
}

/// What a statement's rewriting may read: the catalog, the session's `USE`, and a context
/// to evaluate time expressions in.
pub(crate) struct Travel<'a> {
    pub(crate) catalog: &'a ApiaryCatalog,
    pub(crate) scope: &'a [String],
    pub(crate) ctx: &'a SessionContext,
}

/// A table factor that needs resolving, in visiting order.
enum Job {
    /// A frame with a version clause.
    Version {
        name: ObjectName,
        clause: Box<TableVersion>,
    },
    /// `apiary.history(…)` or `apiary.changes(…)`.
    Function { which: Function, args: Vec<Expr> },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Function {
    History,
    Changes,
}

impl Function {
    fn of(name: &ObjectName) -> Option<Self> {
        match name_parts(name).ok()?.as_slice() {
            [a, f] if a == "apiary" && f == "history" => Some(Function::History),
            [a, f] if a == "apiary" && f == "changes" => Some(Function::Changes),
            _ => None,
        }
    }

    fn sql(&self) -> &'static str {
        match self {
            Function::History => "apiary.history",
            Function::Changes => "apiary.changes",
        }
    }
}

/// How a job's table factor is rewritten.
struct Replacement {
    name: ObjectName,
    /// The alias to give it when it has none: the name as written.
    alias: Ident,
}

/// Resolves and consumes every version clause and Apiary table function in `statement`.
pub(crate) async fn rewrite(statement: &mut DfStatement, travel: &Travel<'_>) -> Result<Extras> {
    let mut collector = Collect::default();
    if let ControlFlow::Break(e) = visit(statement, &mut collector) {
        return Err(e);
    }
    if collector.jobs.is_empty() {
        return Ok(Extras::default());
    }
    let mut extras = Extras::default();
    let mut replacements = Vec::with_capacity(collector.jobs.len());
    for (i, job) in collector.jobs.into_iter().enumerate() {
        replacements.push(match job {
            Job::Version { name, clause } => {
                let frame = travel.frame(&name)?;
                let version = travel.version(&frame, &clause).await?;
                // Resolving now checks the version exists and is retained, with the error
                // that says so; the planner then finds the same table in the catalog.
                travel.catalog.frame_table_at(&frame, version).await?;
                let written = last_ident(&name);
                let mut parts: Vec<ObjectNamePart> = [&frame.hive, &frame.r#box]
                    .into_iter()
                    .map(|p| ObjectNamePart::Identifier(Ident::with_quote('"', p.as_str())))
                    .collect();
                parts.push(ObjectNamePart::Identifier(Ident::with_quote(
                    '"',
                    format!("{}{VERSION_MARK}{version}", frame.frame),
                )));
                Replacement {
                    name: ObjectName(parts),
                    alias: written,
                }
            }
            Job::Function { which, args } => {
                let table = match which {
                    Function::History => travel.history(&args).await?,
                    Function::Changes => travel.changes(&args).await?,
                };
                let local = format!("{}_{i}", which.sql().replace('.', "_"));
                extras.tables.push((local.clone(), table));
                let name = ObjectName(
                    [RESULTS_HIVE, RESULTS_BOX, local.as_str()]
                        .into_iter()
                        .map(|p| ObjectNamePart::Identifier(Ident::with_quote('"', p)))
                        .collect(),
                );
                Replacement {
                    name,
                    alias: Ident::new(match which {
                        Function::History => "history",
                        Function::Changes => "changes",
                    }),
                }
            }
        });
    }
    let mut apply = Apply {
        replacements: replacements.into_iter(),
    };
    let _ = visit_mut(statement, &mut apply);
    Ok(extras)
}

fn visit<V: Visitor<Break = QueryError>>(
    statement: &DfStatement,
    visitor: &mut V,
) -> ControlFlow<QueryError> {
    match statement {
        DfStatement::Statement(s) => s.visit(visitor),
        DfStatement::Explain(explain) => visit(&explain.statement, visitor),
        _ => ControlFlow::Continue(()),
    }
}

fn visit_mut<V: VisitorMut<Break = ()>>(
    statement: &mut DfStatement,
    visitor: &mut V,
) -> ControlFlow<()> {
    match statement {
        DfStatement::Statement(s) => s.visit(visitor),
        DfStatement::Explain(explain) => visit_mut(&mut explain.statement, visitor),
        _ => ControlFlow::Continue(()),
    }
}

/// Whether a table factor is one [`rewrite`] resolves.
fn needs_rewrite(factor: &TableFactor) -> bool {
    matches!(factor, TableFactor::Table { name, version, args, .. }
        if version.is_some() || (args.is_some() && Function::of(name).is_some()))
}

/// Collects the jobs, and refuses version clauses on what is not a frame.
#[derive(Default)]
struct Collect {
    jobs: Vec<Job>,
    /// Names of the `WITH` queries in scope, innermost last.
    ctes: Vec<Vec<String>>,
}

impl Visitor for Collect {
    type Break = QueryError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<QueryError> {
        let names = query
            .with
            .iter()
            .flat_map(|w| &w.cte_tables)
            .map(|cte| normalize(&cte.alias.name))
            .collect();
        self.ctes.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<QueryError> {
        self.ctes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<QueryError> {
        if !needs_rewrite(factor) {
            return ControlFlow::Continue(());
        }
        let TableFactor::Table {
            name,
            version,
            args,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let job = match (version, args) {
            (Some(_), Some(_)) => {
                let what = match Function::of(name) {
                    Some(f) => format!("the table function `{}(…)`", f.sql()),
                    None => format!("the table function `{name}(…)`"),
                };
                Err(QueryError::Invalid(format!(
                    "a version clause reads a past version of a frame, not of {what}; remove \
                     it (apiary.history and apiary.changes take versions as arguments)"
                )))
            }
            (Some(clause), None) => {
                let written = name_parts(name).unwrap_or_default();
                if let [one] = written.as_slice()
                    && self.ctes.iter().flatten().any(|c| c == one)
                {
                    Err(QueryError::Invalid(format!(
                        "`{one}` is a WITH query, not a frame: a version clause ({clause}) \
                         reads a past version of a frame; put it on the frame inside the \
                         WITH query"
                    )))
                } else {
                    Ok(Job::Version {
                        name: name.clone(),
                        clause: Box::new(clause.clone()),
                    })
                }
            }
            (None, Some(list)) => function_args(name, &list.args).map(|args| Job::Function {
                which: Function::of(name).unwrap_or(Function::History),
                args,
            }),
            (None, None) => return ControlFlow::Continue(()),
        };
        match job {
            Ok(job) => {
                self.jobs.push(job);
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// Positional arguments of an Apiary table function.
fn function_args(name: &ObjectName, args: &[FunctionArg]) -> Result<Vec<Expr>> {
    args.iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
            other => Err(QueryError::Invalid(format!(
                "`{name}` takes positional arguments, not `{other}`"
            ))),
        })
        .collect()
}

/// Rewrites the collected table factors, in the same order.
struct Apply {
    replacements: std::vec::IntoIter<Replacement>,
}

impl VisitorMut for Apply {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if !needs_rewrite(factor) {
            return ControlFlow::Continue(());
        }
        let Some(replacement) = self.replacements.next() else {
            return ControlFlow::Break(());
        };
        if let TableFactor::Table {
            name,
            version,
            args,
            alias,
            ..
        } = factor
        {
            *name = replacement.name;
            *version = None;
            *args = None;
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: replacement.alias,
                    columns: Vec::new(),
                    at: None,
                });
            }
        }
        ControlFlow::Continue(())
    }
}

/// DataFusion's identifier rule: unquoted identifiers are lowercased, quoted ones kept.
fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn name_parts(name: &ObjectName) -> Result<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(normalize(ident)),
            ObjectNamePart::Function(_) => {
                Err(QueryError::Invalid(format!("`{name}` is not a plain name")))
            }
        })
        .collect()
}

fn last_ident(name: &ObjectName) -> Ident {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.clone(),
        _ => Ident::new(name.to_string()),
    }
}

impl Travel<'_> {
    /// `parts` as a frame, completed from the session's `USE`.
    fn frame_of(&self, parts: &[String]) -> Result<FrameRef> {
        crate::session::resolve_in(parts, self.scope)
    }

    fn frame(&self, name: &ObjectName) -> Result<FrameRef> {
        self.frame_of(&name_parts(name)?)
    }

    /// The version a clause names.
    async fn version(&self, frame: &FrameRef, clause: &TableVersion) -> Result<u64> {
        match clause {
            TableVersion::VersionAsOf(e) => version_number(e, "VERSION AS OF"),
            TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
                self.version_at(frame, e).await
            }
            TableVersion::Function(Expr::Function(f)) => {
                let which = f.name.to_string().to_ascii_uppercase();
                if which != "AT" {
                    return Err(QueryError::Invalid(format!(
                        "`{clause}` is not supported: use AT (VERSION => n) or \
                         AT (TIMESTAMP => time) (for the version before one, ask for it)"
                    )));
                }
                let FunctionArguments::List(list) = &f.args else {
                    return Err(at_usage(clause));
                };
                let [arg] = list.args.as_slice() else {
                    return Err(at_usage(clause));
                };
                let (key, value) = match arg {
                    FunctionArg::Named {
                        name,
                        arg: FunctionArgExpr::Expr(value),
                        ..
                    } => (name.value.to_ascii_uppercase(), value),
                    FunctionArg::ExprNamed {
                        name: Expr::Identifier(name),
                        arg: FunctionArgExpr::Expr(value),
                        ..
                    } => (name.value.to_ascii_uppercase(), value),
                    _ => return Err(at_usage(clause)),
                };
                match key.as_str() {
                    "VERSION" => version_number(value, "AT (VERSION => …)"),
                    "TIMESTAMP" => self.version_at(frame, value).await,
                    _ => Err(at_usage(clause)),
                }
            }
            TableVersion::Changes { .. } => Err(QueryError::Invalid(
                "CHANGES (…) is not supported here: use the table function \
                 apiary.changes('hive.box.frame', from_version, to_version)"
                    .into(),
            )),
            other => Err(QueryError::Invalid(format!(
                "`{other}` is not a version clause Apiary reads: use VERSION AS OF n or \
                 TIMESTAMP AS OF time"
            ))),
        }
    }

    /// The version of `frame` at the time `expr` evaluates to.
    async fn version_at(&self, frame: &FrameRef, expr: &Expr) -> Result<u64> {
        let at = self.time_ms(expr).await?;
        let ledger = self.catalog.registry().ledger(frame).await?;
        Ok(ledger.version_at_time(at).await?.version)
    }

    /// Evaluates `expr` (a constant expression) to milliseconds since the epoch, UTC.
    async fn time_ms(&self, expr: &Expr) -> Result<i64> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let not_a_time = |why: String| {
            QueryError::Invalid(format!(
                "`{expr}` is not a time ({why}): a time travel clause takes a timestamp such \
                 as '2026-09-01T10:00:00Z' or now() - INTERVAL '1 hour' (a time without a \
                 zone is UTC)"
            ))
        };
        let batches = self
            .ctx
            .sql_with_options(&format!("SELECT {expr}"), options)
            .await
            .map_err(|e| not_a_time(e.strip_backtrace()))?
            .collect()
            .await
            .map_err(|e| not_a_time(e.strip_backtrace()))?;
        let column = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(batch) if batch.num_columns() == 1 && batch.num_rows() == 1 => {
                Arc::clone(batch.column(0))
            }
            _ => return Err(not_a_time("it is not one value".into())),
        };
        let ms_type = DataType::Timestamp(TimeUnit::Millisecond, None);
        // A zoned timestamp holds UTC; a zoneless one is read as UTC; a string is parsed
        // (with its offset, if it has one).
        let column = match column.data_type() {
            DataType::Timestamp(_, Some(_)) => arrow_cast::cast(
                &column,
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            )
            .map_err(|e| not_a_time(e.to_string()))?,
            DataType::Timestamp(_, None)
            | DataType::Date32
            | DataType::Date64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View => {
                arrow_cast::cast(&column, &ms_type).map_err(|e| not_a_time(e.to_string()))?
            }
            other => return Err(not_a_time(format!("it is {other}"))),
        };
        let ms = match column.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, _) => column
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .filter(|a| !a.is_null(0))
                .map(|a| a.value(0)),
            _ => None,
        };
        ms.ok_or_else(|| not_a_time("it is null".into()))
    }

    /// A frame name given as a string argument.
    fn frame_arg(&self, function: Function, arg: Option<&Expr>) -> Result<FrameRef> {
        let usage = || {
            QueryError::Invalid(match function {
                Function::History => "apiary.history takes a frame's name as a string: \
                    apiary.history('hive.box.frame')"
                    .into(),
                Function::Changes => "apiary.changes takes a frame's name and two versions: \
                    apiary.changes('hive.box.frame', from_version, to_version)"
                    .into(),
            })
        };
        let Some(Expr::Value(v)) = arg else {
            return Err(usage());
        };
        let (Value::SingleQuotedString(text) | Value::DoubleQuotedString(text)) = &v.value else {
            return Err(usage());
        };
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        self.frame_of(&parts)
    }

    /// `apiary.history('h.b.f')`: one row per commit.
    async fn history(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        if args.len() != 1 {
            return Err(QueryError::Invalid(
                "apiary.history takes one argument: apiary.history('hive.box.frame')".into(),
            ));
        }
        let frame = self.frame_arg(Function::History, args.first())?;
        let ledger = self.catalog.registry().ledger(&frame).await?;
        let commits = ledger.history().await?;
        if commits.is_empty() {
            return Err(QueryError::Ledger(LedgerError::NotFound {
                what: format!("frame `{frame}`"),
            }));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("version", DataType::UInt64, false),
            Field::new(
                "committed_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("operation", DataType::Utf8, false),
            Field::new("cells_added", DataType::UInt64, false),
            Field::new("cells_removed", DataType::UInt64, false),
            Field::new("rows_added", DataType::UInt64, false),
            Field::new("rows_removed", DataType::UInt64, false),
            Field::new("writer", DataType::Utf8, true),
        ]));
        let u64s = |f: fn(&apiary_ledger::Commit) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(commits.iter().map(f)))
        };
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                u64s(|c| c.version),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        commits.iter().map(|c| c.committed_at_ms),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter_values(
                    commits.iter().map(|c| c.operation.as_str()),
                )),
                u64s(|c| c.cells_added),
                u64s(|c| c.cells_removed),
                u64s(|c| c.rows_added),
                u64s(|c| c.rows_removed),
                Arc::new(StringArray::from_iter(
                    commits.iter().map(|c| c.writer.as_deref()),
                )),
            ],
        )
        .map_err(|e| QueryError::Execution(format!("the history table: {e}")))?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    /// `apiary.changes('h.b.f', from, to)`: the rows added and removed between two
    /// versions, read from the cells that differ between them only. Rows that a commit
    /// in between removed and another added back unchanged (a compaction) cancel out.
    async fn changes(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let [frame_arg, from, to] = args else {
            return Err(QueryError::Invalid(
                "apiary.changes takes three arguments: apiary.changes('hive.box.frame', \
                 from_version, to_version)"
                    .into(),
            ));
        };
        let frame = self.frame_arg(Function::Changes, Some(frame_arg))?;
        let from = version_number(from, "apiary.changes's from_version")?;
        let to = version_number(to, "apiary.changes's to_version")?;
        if from >= to {
            return Err(QueryError::Invalid(format!(
                "apiary.changes needs from_version < to_version, not {from} and {to}"
            )));
        }
        let old = self.catalog.frame_table_at(&frame, from).await?;
        let new = self.catalog.frame_table_at(&frame, to).await?;
        let (Some(old_live), Some(new_live)) = (old.index().source(), new.index().source()) else {
            return Err(QueryError::Invalid(format!(
                "frame `{frame}` has no cells to compare at versions {from} and {to}"
            )));
        };
        if old_live.incarnation != new_live.incarnation {
            return Err(QueryError::Invalid(format!(
                "frame `{frame}` was dropped and created again between versions {from} and \
                 {to}; compare versions of one incarnation (apiary.history shows its creates)"
            )));
        }
        let side = |cells_of: &apiary_ledger::LiveFrame,
                    other: &apiary_ledger::LiveFrame,
                    version: u64|
         -> Result<Arc<dyn TableProvider>> {
            let mut subset = new_live.clone();
            subset.cells = cells_of
                .cells
                .iter()
                .filter(|(path, _)| !other.cells.contains_key(*path))
                .map(|(path, cell)| (path.clone(), cell.clone()))
                .collect();
            let index = FrameIndex::build(&frame, version, &subset)?;
            Ok(Arc::new(FrameTable::new(
                Arc::new(index),
                Arc::clone(self.catalog.scans()),
            )))
        };
        let added = self.ctx.read_table(side(new_live, old_live, to)?)?;
        let removed = self.ctx.read_table(side(old_live, new_live, from)?)?;
        let with_kind = |df: datafusion::dataframe::DataFrame, kind: &str| {
            let mut columns: Vec<datafusion::prelude::Expr> = df
                .schema()
                .columns()
                .into_iter()
                .map(datafusion::prelude::Expr::Column)
                .collect();
            columns.push(lit(kind.to_string()).alias("_change_type"));
            df.select(columns)
        };
        let inserts = with_kind(added.clone().except(removed.clone())?, "insert")?;
        let deletes = with_kind(removed.except(added)?, "delete")?;
        Ok(inserts.union(deletes)?.into_view())
    }
}

fn at_usage(clause: &TableVersion) -> QueryError {
    QueryError::Invalid(format!(
        "`{clause}`: AT takes one of VERSION => n or TIMESTAMP => time"
    ))
}

/// A version number written as a literal.
fn version_number(expr: &Expr, what: &str) -> Result<u64> {
    let text = match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(n.as_str()),
            _ => None,
        },
        _ => None,
    };
    text.and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
        QueryError::Invalid(format!(
            "{what} takes a version number (0, 1, 2, …), not `{expr}`; for a time use \
             TIMESTAMP AS OF"
        ))
    })
}
