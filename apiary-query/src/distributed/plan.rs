//! Splitting an optimized logical plan into a SQL fragment for workers and the plan the
//! coordinator finishes.
//!
//! 1. The **split frame** is the largest frame the plan scans exactly once. Its cells (after
//!    ledger pruning with the scan's filters) are divided over tasks.
//! 2. The **distributed subtree** is the largest subtree above that scan through which a
//!    union over disjoint cell subsets commutes: projections, filters, aliases, and joins in
//!    which the split side's rows are never needed together (inner and cross joins, outer
//!    joins that preserve the split side, semi, anti and mark joins from the split side).
//!    Subqueries inside expressions stop it. Every other frame in it is read whole by every
//!    task, at the version the coordinator planned with.
//! 3. Directly above it, an **aggregate** that decomposes (COUNT, SUM, MIN, MAX, AVG as SUM
//!    and COUNT, any of them DISTINCT by adding the argument to the partial grouping) runs
//!    partially in each task and finally at the coordinator; a **sort with a fetch** (top-k)
//!    or a **limit** is pushed into the tasks and applied again at the coordinator. Anything
//!    else (windows, grouping sets, ordered or filtered aggregates, …) stays at the
//!    coordinator over the tasks' rows: the answer is always the single-node answer.
//!
//! The fragment is produced with DataFusion's unparser, never by string concatenation, and
//! its columns are renamed `c0`, `c1`, … so that the coordinator maps them back by position.

use std::any::Any;
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result as DfResult, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Expr, JoinType, Limit, LogicalPlan, LogicalPlanBuilder, Sort, TableScan,
};
use datafusion::prelude::cast;
use datafusion::sql::unparser::Unparser;

use super::manifest::FramePin;
use crate::error::{QueryError, Result};
use crate::table::FrameIndex;
use crate::table::FrameTable;

/// The name the coordinator gives the table of gathered task results.
pub const PARTIALS: &str = "apiary_partials";

/// How the work above the scans was split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Partial aggregation in the tasks, final at the coordinator.
    PartialAggregate,
    /// Sort and fetch in the tasks and again at the coordinator.
    TopK,
    /// A limit in the tasks and again at the coordinator.
    Limit,
    /// Scans (with projections, filters, joins) in the tasks, the rest at the coordinator.
    Rows,
}

impl Shape {
    /// The lowercase name shown in `EXPLAIN`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Shape::PartialAggregate => "partial_aggregate",
            Shape::TopK => "top_k",
            Shape::Limit => "limit",
            Shape::Rows => "rows",
        }
    }
}

pub use crate::parts::SplitCell;

/// What every task of a distributed query runs.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// The SQL text.
    pub sql: String,
    /// Its result columns (`c0`, `c1`, …).
    pub schema: SchemaRef,
    /// The split frame at its version.
    pub split: FramePin,
    /// The split frame's cells that survive pruning.
    pub cells: Vec<SplitCell>,
    /// Other frames read whole, at their versions.
    pub pins: Vec<FramePin>,
    /// How the query was split.
    pub shape: Shape,
    /// The coordinator session's `USE` (`[hive]` or `[hive, box]`), for unqualified names.
    pub scope: Vec<String>,
    /// The options the coordinator's session changed, which tasks run with.
    pub settings: std::collections::BTreeMap<String, String>,
    /// What tasks ship of the frames they read (see [`Fragment::ships`]).
    pub shipping: super::ship::Shipping,
}

impl Fragment {
    /// Bytes of all cells.
    pub fn bytes(&self) -> u64 {
        self.cells.iter().map(|c| c.bytes).sum()
    }
}

/// The result of splitting: the coordinator's plan, with `partials` standing for the union
/// of the tasks' results.
#[derive(Debug, Clone)]
pub struct Split {
    /// The fragment.
    pub fragment: Fragment,
    /// Builds the coordinator's plan from a scan of the partials (a table with the
    /// fragment's schema, named [`PARTIALS`]).
    finish: Finish,
    path: Vec<usize>,
    root: LogicalPlan,
}

#[derive(Debug, Clone)]
enum Finish {
    /// Map `c*` back to the replaced subtree's qualified names.
    Rename(DFSchemaRef),
    /// Final aggregation, then names.
    Aggregate {
        groups: usize,
        finals: Vec<Expr>,
        outputs: Vec<Expr>,
        schema: DFSchemaRef,
    },
}

impl Split {
    /// The coordinator's plan, reading partial results through `partials` (a scan of a table
    /// named [`PARTIALS`] with the fragment's schema).
    pub fn coordinator_plan(&self, partials: LogicalPlan) -> DfResult<LogicalPlan> {
        let replacement = match &self.finish {
            Finish::Rename(schema) => {
                let exprs = schema
                    .iter()
                    .enumerate()
                    .map(|(i, (q, f))| {
                        Expr::Column(Column::from_name(format!("c{i}")))
                            .alias_qualified(q.cloned(), f.name())
                    })
                    .collect::<Vec<_>>();
                LogicalPlanBuilder::from(partials).project(exprs)?.build()?
            }
            Finish::Aggregate {
                groups,
                finals,
                outputs,
                schema,
            } => {
                let group_exprs = (0..*groups)
                    .map(|i| Expr::Column(Column::from_name(format!("c{i}"))))
                    .collect::<Vec<_>>();
                let aggregated = LogicalPlanBuilder::from(partials)
                    .aggregate(group_exprs, finals.clone())?
                    .build()?;
                let exprs = schema
                    .iter()
                    .enumerate()
                    .map(|(i, (q, f))| {
                        let value = if i < *groups {
                            Expr::Column(Column::from_name(format!("c{i}")))
                        } else {
                            outputs[i - groups].clone()
                        };
                        cast(value, f.data_type().clone()).alias_qualified(q.cloned(), f.name())
                    })
                    .collect::<Vec<_>>();
                LogicalPlanBuilder::from(aggregated)
                    .project(exprs)?
                    .build()?
            }
        };
        replace_at(&self.root, &self.path, replacement)
    }
}

/// Splits `plan` (optimized) for distribution; `None` when it reads no frame that can be
/// split, or when the part to distribute cannot be written as SQL (then it runs locally).
/// `scope` is the session's `USE`, under which the fragment's names resolve.
pub fn split(plan: &LogicalPlan, state: &SessionState, scope: &[String]) -> Result<Option<Split>> {
    let Some((path, scan, table)) = choose_split_scan(plan) else {
        return Ok(None);
    };
    // Walk up from the scan while the union over cell subsets commutes.
    let nodes = nodes_on_path(plan, &path);
    let mut top = path.len(); // index into `nodes` of the subtree root (the scan itself)
    while top > 0 && commutes(nodes[top - 1], path[top - 1])? {
        top -= 1;
    }
    let subtree = nodes[top].clone();
    let Some(pinned) = frames_read(&subtree, &table) else {
        return Ok(None);
    };
    let shipping = super::ship::Shipping::new(Arc::clone(table.index()), &pinned);
    let pins = pinned.into_iter().map(|(pin, _)| pin).collect();
    // By default the tasks return the subtree's rows, and the coordinator does the rest.
    let mut fragment_plan = subtree.clone();
    let mut finish = Finish::Rename(Arc::clone(subtree.schema()));
    let mut replace_path = path[..top].to_vec();
    let mut shape = Shape::Rows;
    match top.checked_sub(1).map(|i| nodes[i]) {
        Some(LogicalPlan::Aggregate(agg)) => {
            if let Some((partial, d)) = super::decompose::decompose(agg, &subtree)? {
                fragment_plan = partial;
                finish = Finish::Aggregate {
                    groups: d.groups,
                    finals: d.finals,
                    outputs: d.outputs,
                    schema: Arc::clone(&agg.schema),
                };
                replace_path.pop();
                shape = Shape::PartialAggregate;
            }
        }
        Some(LogicalPlan::Sort(Sort {
            expr,
            fetch: Some(fetch),
            ..
        })) => {
            fragment_plan = LogicalPlan::Sort(Sort {
                expr: expr.clone(),
                input: Arc::new(subtree),
                fetch: Some(*fetch),
            });
            shape = Shape::TopK;
        }
        Some(LogicalPlan::Limit(limit)) => {
            if let Some(n) = limit_rows(limit) {
                fragment_plan = LogicalPlanBuilder::from(subtree)
                    .limit(0, Some(n))?
                    .build()?;
                shape = Shape::Limit;
            }
        }
        _ => {}
    }
    let (sql, schema) = match fragment_sql(fragment_plan, plan, state) {
        Ok(written) => written,
        Err(why) => {
            // The tasks read the split frame's scan alone (its columns, filters and limit)
            // and the coordinator does the rest: slower, never wrong.
            tracing::debug!(%why, "the fragment would not plan on a worker; distributing the scan alone");
            match fragment_sql(LogicalPlan::TableScan(scan.clone()), plan, state) {
                Ok(written) => {
                    finish = Finish::Rename(Arc::clone(nodes[path.len()].schema()));
                    replace_path = path.clone();
                    shape = Shape::Rows;
                    written
                }
                Err(why) => {
                    tracing::debug!(%why, "the scan cannot be distributed either; running locally");
                    return Ok(None);
                }
            }
        }
    };
    let cells = table
        .index()
        .select_cells(state, &scan.filters)
        .map_err(QueryError::from)?;
    Ok(Some(Split {
        fragment: Fragment {
            sql,
            schema,
            split: FramePin::new(table.index().frame(), table.index().version()),
            cells,
            pins,
            shape,
            scope: scope.to_vec(),
            settings: Default::default(),
            shipping,
        },
        finish,
        path: replace_path,
        root: plan.clone(),
    }))
}

/// The SQL text of `fragment_plan` with its columns renamed `c0`, `c1`, …, and their schema,
/// once it is known to plan as a worker will plan it (see [`super::check`]); `Err` says why
/// it cannot be written or would not plan.
fn fragment_sql(
    fragment_plan: LogicalPlan,
    plan: &LogicalPlan,
    state: &SessionState,
) -> std::result::Result<(String, SchemaRef), String> {
    let fragment_plan = rename_columns(fragment_plan).map_err(|e| e.strip_backtrace())?;
    let schema: SchemaRef = Arc::new(Schema::new(
        fragment_plan
            .schema()
            .fields()
            .iter()
            .map(|f| Arc::new(Field::new(f.name(), f.data_type().clone(), true)))
            .collect::<Vec<_>>(),
    ));
    let sql = Unparser::new(&super::dialect::FragmentDialect)
        .plan_to_sql(&fragment_plan)
        .map_err(|e| format!("it cannot be written as SQL: {}", e.strip_backtrace()))?
        .to_string();
    super::check::plans_like_a_worker(&sql, plan, state, &schema)
        .map_err(|why| format!("`{sql}` does not plan: {why}"))?;
    Ok((sql, schema))
}

fn limit_rows(limit: &Limit) -> Option<usize> {
    let fetch = match limit.fetch.as_deref()? {
        Expr::Literal(ScalarValue::Int64(Some(n)), _) if *n >= 0 => *n as usize,
        _ => return None,
    };
    let skip = match limit.skip.as_deref() {
        None => 0,
        Some(Expr::Literal(ScalarValue::Int64(Some(n)), _)) if *n >= 0 => *n as usize,
        Some(_) => return None,
    };
    fetch.checked_add(skip)
}

/// The output columns renamed `c0`, `c1`, … (the fragment's result schema).
fn rename_columns(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    let exprs = plan
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (q, f))| Expr::Column(Column::new(q.cloned(), f.name())).alias(format!("c{i}")))
        .collect::<Vec<_>>();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}

/// The frame `scan` reads, if it reads one.
pub(super) fn frame_table(scan: &TableScan) -> Option<FrameTable> {
    let provider = source_as_provider(&scan.source).ok()?;
    let any: &dyn Any = provider.as_ref();
    any.downcast_ref::<FrameTable>().cloned()
}

/// Bytes of the largest frame `plan` reads anywhere (subqueries included), before any
/// pruning: an upper bound on what a split of the plan, optimized, could distribute. `None`
/// when it reads no frame.
pub fn largest_frame_bytes(plan: &LogicalPlan) -> Option<u64> {
    let mut largest = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(table) = frame_table(scan)
        {
            largest = largest.max(Some(table.index().bytes()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    largest
}

/// The frame scan to split: the largest frame scanned exactly once, with its path.
fn choose_split_scan(plan: &LogicalPlan) -> Option<(Vec<usize>, TableScan, FrameTable)> {
    let mut scans: Vec<(Vec<usize>, TableScan, FrameTable)> = Vec::new();
    collect_scans(plan, &mut Vec::new(), &mut scans);
    let count = |t: &FrameTable| {
        scans
            .iter()
            .filter(|(_, _, o)| {
                o.index().frame() == t.index().frame() && o.index().version() == t.index().version()
            })
            .count()
    };
    scans
        .iter()
        .filter(|(_, _, t)| count(t) == 1)
        .max_by_key(|(_, _, t)| t.index().bytes())
        .cloned()
}

fn collect_scans(
    plan: &LogicalPlan,
    path: &mut Vec<usize>,
    out: &mut Vec<(Vec<usize>, TableScan, FrameTable)>,
) {
    if let LogicalPlan::TableScan(scan) = plan
        && let Some(table) = frame_table(scan)
    {
        out.push((path.clone(), scan.clone(), table));
    }
    for (i, input) in plan.inputs().into_iter().enumerate() {
        path.push(i);
        collect_scans(input, path, out);
        path.pop();
    }
}

fn nodes_on_path<'a>(plan: &'a LogicalPlan, path: &[usize]) -> Vec<&'a LogicalPlan> {
    let mut nodes = vec![plan];
    let mut at = plan;
    for &i in path {
        at = at.inputs()[i];
        nodes.push(at);
    }
    nodes
}

fn has_subquery(plan: &LogicalPlan) -> DfResult<bool> {
    let mut found = false;
    for e in plan.expressions() {
        e.apply(|e| {
            if matches!(
                e,
                Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::ScalarSubquery(_)
                    | Expr::SetComparison(_)
                    | Expr::OuterReferenceColumn(..)
            ) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    Ok(found)
}

/// Whether a union over disjoint subsets of the rows coming from input `child` passes
/// through `parent` unchanged.
fn commutes(parent: &LogicalPlan, child: usize) -> Result<bool> {
    if has_subquery(parent)? {
        return Ok(false);
    }
    Ok(match parent {
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => true,
        LogicalPlan::Join(join) => {
            let left = child == 0;
            match join.join_type {
                JoinType::Inner => true,
                JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                    left
                }
                JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark => !left,
                JoinType::Full => false,
            }
        }
        _ => false,
    })
}

/// Every frame `subtree` reads other than `split`, at the version the plan holds, with its
/// index there; `None` when it reads a table that is not a frame (workers could not resolve
/// it).
fn frames_read(
    subtree: &LogicalPlan,
    split: &FrameTable,
) -> Option<Vec<(FramePin, Arc<FrameIndex>)>> {
    let mut pins = Vec::new();
    let mut foreign = false;
    let _ = subtree.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match frame_table(scan) {
                Some(t)
                    if t.index().frame() == split.index().frame()
                        && t.index().version() == split.index().version() => {}
                Some(t) => pins.push((
                    FramePin::new(t.index().frame(), t.index().version()),
                    Arc::clone(t.index()),
                )),
                None => foreign = true,
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if foreign {
        return None;
    }
    pins.sort_by(|(a, _), (b, _)| {
        (&a.hive, &a.r#box, &a.frame, a.version).cmp(&(&b.hive, &b.r#box, &b.frame, b.version))
    });
    pins.dedup_by(|(a, _), (b, _)| a == b);
    Some(pins)
}

/// `plan` with the node at `path` replaced by `new`.
fn replace_at(plan: &LogicalPlan, path: &[usize], new: LogicalPlan) -> DfResult<LogicalPlan> {
    let Some((&first, rest)) = path.split_first() else {
        return Ok(new);
    };
    let mut inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
    inputs[first] = replace_at(&inputs[first], rest, new)?;
    plan.with_new_exprs(plan.expressions(), inputs)
}
