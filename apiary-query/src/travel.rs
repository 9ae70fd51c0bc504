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

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemorySchemaProvider,
    TableProvider,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, ObjectNamePart, Query, TableAlias,
    TableFactor, TableVersion, Visit, VisitMut, Visitor, VisitorMut,
};

mod clause;
mod functions;

pub(super) use crate::statement::{name_parts, normalize};

use crate::catalog::{ApiaryCatalog, VERSION_MARK};
use crate::error::{QueryError, Result};

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
                // Whether the version exists and is retained is checked once, when the planner
                // resolves `frame@version` in the catalog (its error is the ledger's).
                let version = travel.version(&frame, &clause).await?;
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

fn last_ident(name: &ObjectName) -> Ident {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.clone(),
        _ => Ident::new(name.to_string()),
    }
}
