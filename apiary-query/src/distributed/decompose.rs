//! Aggregates split in two: a partial aggregation each task runs over its cells, and the
//! final one the coordinator runs over the tasks' rows (COUNT, SUM, MIN, MAX, AVG as a sum
//! and a count, any of them DISTINCT by grouping on the argument in the tasks).

use std::sync::Arc;

use arrow_schema::DataType;
use datafusion::common::{Column, Result as DfResult, ScalarValue};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, lit, when};
use datafusion::prelude::cast;

use crate::error::Result;

/// The coordinator's half of a decomposed aggregate, over the tasks' columns `c0`, `c1`, …
#[derive(Debug)]
pub(super) struct Decomposed {
    /// How many of the columns are the query's groups (the first ones).
    pub(super) groups: usize,
    /// The final aggregates, named `f0`, `f1`, …
    pub(super) finals: Vec<Expr>,
    /// The query's aggregates, as expressions of the finals.
    pub(super) outputs: Vec<Expr>,
}

/// Partial and final aggregation of `agg` over `input`, or `None` if it does not decompose.
pub(super) fn decompose(
    agg: &Aggregate,
    input: &LogicalPlan,
) -> Result<Option<(LogicalPlan, Decomposed)>> {
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    let schema = input.schema();
    let groups = agg.group_expr.len();
    // Partial grouping: the query's keys, then each DISTINCT argument.
    let mut partial_groups: Vec<Expr> = agg.group_expr.clone();
    let mut partial_aggs: Vec<Expr> = Vec::new();
    let mut finals: Vec<Expr> = Vec::new();
    let mut outputs: Vec<Expr> = Vec::new();
    // Column names in the partials: groups c0.., distinct keys next, partial aggregates last.
    let mut pending: Vec<Pending> = Vec::new();
    for e in &agg.aggr_expr {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Ok(None);
        };
        if params.filter.is_some() || !params.order_by.is_empty() || params.null_treatment.is_some()
        {
            return Ok(None);
        }
        let name = func.name().to_ascii_lowercase();
        if params.distinct {
            if params.args.len() != 1
                || !matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg")
            {
                return Ok(None);
            }
            let key = match partial_groups.iter().position(|g| g == &params.args[0]) {
                Some(k) => k,
                None => {
                    partial_groups.push(params.args[0].clone());
                    partial_groups.len() - 1
                }
            };
            pending.push(Pending::Distinct {
                func: Arc::clone(func),
                key,
            });
            continue;
        }
        match name.as_str() {
            "count" | "sum" | "min" | "max" => {
                let merge = if name == "count" {
                    sum_udaf()
                } else {
                    Arc::clone(func)
                };
                pending.push(Pending::Merge {
                    func: merge,
                    partial: partial_index(&mut partial_aggs, inner.clone()),
                });
            }
            "avg" => {
                let [arg] = params.args.as_slice() else {
                    return Ok(None);
                };
                let t = arg.get_type(schema.as_ref())?;
                if !t.is_numeric()
                    || matches!(
                        t,
                        DataType::Decimal32(..)
                            | DataType::Decimal64(..)
                            | DataType::Decimal128(..)
                            | DataType::Decimal256(..)
                    )
                {
                    return Ok(None);
                }
                // The partial sum and count of AVG(x) (x numeric, cast to a float by the
                // planner). DataFusion names a cast by what it casts, so `sum(CAST(x AS
                // DOUBLE))` would be named like the query's own `SUM(x)`, and a worker could
                // not plan both in one SELECT: the conversion is a call, `arrow_cast`, whose
                // name is its own. The count counts `x` itself (a cast of a number is never
                // NULL where the number is not), so it is the query's `COUNT(x)` if it has one.
                let base = uncast_number(arg, schema.as_ref())?;
                let float = if base.get_type(schema.as_ref())? == DataType::Float64 {
                    base.clone()
                } else {
                    datafusion::functions::core::expr_fn::arrow_cast(base.clone(), lit("Float64"))
                };
                let sum = partial_index(
                    &mut partial_aggs,
                    Expr::AggregateFunction(AggregateFunction::new_udf(
                        sum_udaf(),
                        vec![float],
                        false,
                        None,
                        vec![],
                        None,
                    )),
                );
                let count = partial_index(
                    &mut partial_aggs,
                    Expr::AggregateFunction(AggregateFunction::new_udf(
                        count_udaf(),
                        vec![base],
                        false,
                        None,
                        vec![],
                        None,
                    )),
                );
                pending.push(Pending::Avg { sum, count });
            }
            _ => return Ok(None),
        }
    }
    let first_partial = partial_groups.len();
    let col = |i: usize| Expr::Column(Column::from_name(format!("c{i}")));
    let mut next_final = 0usize;
    let mut add_final = |finals: &mut Vec<Expr>, e: Expr| {
        let name = format!("f{next_final}");
        next_final += 1;
        finals.push(e.alias(&name));
        Expr::Column(Column::from_name(name))
    };
    for p in pending {
        let out = match p {
            Pending::Merge { func, partial } => add_final(
                &mut finals,
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    func,
                    vec![col(first_partial + partial)],
                    false,
                    None,
                    vec![],
                    None,
                )),
            ),
            Pending::Distinct { func, key } => add_final(
                &mut finals,
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    func,
                    vec![col(key)],
                    true,
                    None,
                    vec![],
                    None,
                )),
            ),
            Pending::Avg { sum, count } => {
                let total = add_final(
                    &mut finals,
                    Expr::AggregateFunction(AggregateFunction::new_udf(
                        sum_udaf(),
                        vec![col(first_partial + sum)],
                        false,
                        None,
                        vec![],
                        None,
                    )),
                );
                let n = add_final(
                    &mut finals,
                    Expr::AggregateFunction(AggregateFunction::new_udf(
                        sum_udaf(),
                        vec![col(first_partial + count)],
                        false,
                        None,
                        vec![],
                        None,
                    )),
                );
                when(n.clone().eq(lit(0i64)), lit(ScalarValue::Float64(None)))
                    .otherwise(total / cast(n, DataType::Float64))?
            }
        };
        outputs.push(out);
    }
    // Each partial aggregate is named by its position: two of them can share a name derived
    // from their expressions (the query's `SUM(v)` and `AVG(v)`'s partial sum of a float
    // column are both `sum(v)`), and a plan's columns must be unique.
    let partial_aggs = partial_aggs
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("p{i}")))
        .collect();
    let partial = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::new(input.clone()),
        partial_groups,
        partial_aggs,
    )?);
    Ok(Some((
        partial,
        Decomposed {
            groups,
            finals,
            outputs,
        },
    )))
}

/// `e` without the casts of a number to another number around it: `CAST(x AS DOUBLE)` of an
/// integer `x` is `x`.
fn uncast_number(e: &Expr, schema: &datafusion::common::DFSchema) -> DfResult<Expr> {
    let mut e = e.clone();
    while let Expr::Cast(c) = &e {
        let inner = c.expr.get_type(schema)?;
        if !(inner.is_numeric() && c.field.data_type().is_numeric()) {
            break;
        }
        e = c.expr.as_ref().clone();
    }
    Ok(e)
}

/// The position of `agg` among `partials`, added if no equal one is there: the query's
/// `SUM(v)` and `COUNT(v)` serve `AVG(v)` too, so each is computed once.
fn partial_index(partials: &mut Vec<Expr>, agg: Expr) -> usize {
    match partials.iter().position(|p| p == &agg) {
        Some(i) => i,
        None => {
            partials.push(agg);
            partials.len() - 1
        }
    }
}

enum Pending {
    Merge {
        func: Arc<datafusion::logical_expr::AggregateUDF>,
        partial: usize,
    },
    Distinct {
        func: Arc<datafusion::logical_expr::AggregateUDF>,
        key: usize,
    },
    Avg {
        sum: usize,
        count: usize,
    },
}
