//! Star joins in a better order: the most selective dimension first.
//!
//! DataFusion joins the tables of `FROM a, b, c WHERE …` in the order they are written; it
//! picks each join's build side by size, but never which join runs first. For a star schema
//! (one fact frame, each dimension joined to it by its key) that order decides how many fact
//! rows travel through every later join: SSB's Q2.1 written `FROM lineorder, dwdate, part,
//! supplier` joins all 6 million rows with `dwdate` (which keeps every one of them) before
//! `part` keeps 1 in 25.
//!
//! [`StarJoinOrder`] finds a chain of inner equi-joins whose every condition ties one frame
//! (the centre) to one other, and joins the centre to the dimensions in the order of how
//! many rows their filters are guessed to keep, fewest first; dimensions it cannot tell
//! apart keep the order they were written in. It only reorders inner joins, which give the
//! same rows in any order, and puts the columns back in their first order on top. The
//! guess reads the shape of each dimension's filters (see [`selectivity`]); no statistics.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Join, JoinConstraint, JoinType, LogicalPlan, LogicalPlanBuilder, Operator,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The logical optimizer rule that puts the dimensions of a star join in order of their
/// filters' selectivity (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct StarJoinOrder;

impl OptimizerRule for StarJoinOrder {
    fn name(&self) -> &str {
        "apiary_star_join_order"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down(|node| match reorder(&node)? {
            Some(better) => Ok(Transformed::yes(better)),
            None => Ok(Transformed::no(node)),
        })
    }
}

/// A chain of inner equi-joins, flattened (borrowed: most chains are left as they are).
struct Chain<'a> {
    /// The inputs that are not part of the chain, in the order they were written.
    leaves: Vec<&'a LogicalPlan>,
    /// Every equality of the chain.
    on: Vec<&'a (Expr, Expr)>,
}

/// Whether `plan` continues a chain: an inner join on equalities alone.
fn is_chain_join(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Join(Join {
            join_type: JoinType::Inner,
            join_constraint: JoinConstraint::On,
            filter: None,
            null_aware: false,
            on,
            ..
        }) if !on.is_empty()
    )
}

/// The chain's parts under `plan`, seeing through projections that only pick columns
/// between its joins (the rewrite puts the columns in order again on top).
fn flatten<'a>(plan: &'a LogicalPlan, chain: &mut Chain<'a>) {
    match plan {
        LogicalPlan::Join(join) if is_chain_join(plan) => {
            flatten(&join.left, chain);
            flatten(&join.right, chain);
            chain.on.extend(join.on.iter());
        }
        LogicalPlan::Projection(p)
            if is_chain_join(&p.input) && p.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
        {
            flatten(&p.input, chain)
        }
        leaf => chain.leaves.push(leaf),
    }
}

/// The one leaf every column of `expr` comes from, if there is one (columns without a
/// qualifier could name a field of several leaves: then none).
fn leaf_of(expr: &Expr, leaves: &[&LogicalPlan]) -> Option<usize> {
    let columns = expr.column_refs();
    if columns.iter().any(|c| c.relation.is_none()) {
        return None;
    }
    let first = columns.iter().next()?;
    let leaf = leaves.iter().position(|l| l.schema().has_column(first))?;
    columns
        .iter()
        .all(|c| leaves[leaf].schema().has_column(c))
        .then_some(leaf)
}

/// `plan` with its star join's dimensions in order, or `None` when it is not the top of a
/// star join or its order is already the one this rule picks.
fn reorder(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    if !is_chain_join(plan) {
        return Ok(None);
    }
    let mut chain = Chain {
        leaves: Vec::new(),
        on: Vec::new(),
    };
    flatten(plan, &mut chain);
    if chain.leaves.len() < 3 {
        return Ok(None);
    }
    // Each equality ties two different leaves.
    let mut ties = Vec::with_capacity(chain.on.len());
    for &(l, r) in &chain.on {
        match (leaf_of(l, &chain.leaves), leaf_of(r, &chain.leaves)) {
            (Some(a), Some(b)) if a != b => ties.push((a, b)),
            _ => return Ok(None),
        }
    }
    // The centre is in every tie; with two or more dimensions there is at most one.
    let Some(centre) =
        (0..chain.leaves.len()).find(|&c| ties.iter().all(|&(a, b)| a == c || b == c))
    else {
        return Ok(None);
    };
    let mut dims: Vec<(usize, f64)> = (0..chain.leaves.len())
        .filter(|&i| i != centre)
        .map(|i| (i, leaf_selectivity(chain.leaves[i])))
        .collect();
    if dims
        .iter()
        .any(|&(d, _)| !ties.iter().any(|&(a, b)| a == d || b == d))
    {
        return Ok(None);
    }
    dims.sort_by(|x, y| x.1.total_cmp(&y.1));
    let order: Vec<usize> = std::iter::once(centre)
        .chain(dims.iter().map(|&(d, _)| d))
        .collect();
    if order.iter().copied().eq(0..chain.leaves.len()) {
        return Ok(None);
    }

    // A chain DataFusion will not build again as planned stays as it was written.
    Ok(rebuild(plan, &chain, &ties, centre, &dims).ok())
}

/// The star join of `chain` with `centre` first, then `dims` in that order, its columns in
/// the order of `plan`'s.
fn rebuild(
    plan: &LogicalPlan,
    chain: &Chain,
    ties: &[(usize, usize)],
    centre: usize,
    dims: &[(usize, f64)],
) -> Result<LogicalPlan> {
    let mut builder = LogicalPlanBuilder::from(chain.leaves[centre].clone());
    for &(dim, _) in dims {
        let (mut fact_keys, mut dim_keys) = (Vec::new(), Vec::new());
        for (&(l, r), &(a, b)) in chain.on.iter().zip(ties) {
            if a == dim {
                fact_keys.push(r.clone());
                dim_keys.push(l.clone());
            } else if b == dim {
                fact_keys.push(l.clone());
                dim_keys.push(r.clone());
            }
        }
        builder = builder.join_with_expr_keys(
            chain.leaves[dim].clone(),
            JoinType::Inner,
            (fact_keys, dim_keys),
            None,
        )?;
    }
    let columns: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    builder.project(columns)?.build()
}

/// The share of a dimension's rows its filters are guessed to keep: 1 without filters.
/// Only a dimension that is a frame with filters, projections and aliases over it is read;
/// anything else counts as unfiltered.
fn leaf_selectivity(leaf: &LogicalPlan) -> f64 {
    let mut conjuncts: Vec<Expr> = Vec::new();
    let mut node = leaf;
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                conjuncts.extend(split_conjunction(&f.predicate).into_iter().cloned());
                node = &f.input;
            }
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::TableScan(scan) => {
                for f in &scan.filters {
                    conjuncts.extend(split_conjunction(f).into_iter().cloned());
                }
                break;
            }
            _ => return 1.0,
        }
    }
    // A filter pushed into the scan may also stay above it: count it once.
    let mut seen = HashSet::new();
    conjuncts.retain(|c| seen.insert(c.clone()));
    selectivity(&conjuncts)
}

/// The share of rows the conjunction of `conjuncts` is guessed to keep: an equality 0.1, a
/// range with both ends 0.25 (and one end 0.33), a list of `n` values `n` × 0.1 (at most
/// 0.5), `OR` the sum of its sides, anything else 0.5. Bounds on one column are one range.
pub(crate) fn selectivity(conjuncts: &[Expr]) -> f64 {
    let mut ranges: Vec<(Column, bool, bool)> = Vec::new();
    let mut share = 1.0;
    for c in conjuncts {
        if let Some((column, lower)) = bound(c) {
            match ranges.iter_mut().find(|(col, _, _)| *col == column) {
                Some(range) if lower => range.1 = true,
                Some(range) => range.2 = true,
                None => ranges.push((column, lower, !lower)),
            }
        } else {
            share *= guess(c);
        }
    }
    for (_, lower, upper) in ranges {
        share *= if lower && upper { 0.25 } else { 0.33 };
    }
    share
}

/// `column > value`-like conjuncts: the column and whether it is a lower bound.
fn bound(expr: &Expr) -> Option<(Column, bool)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let lower = match op {
        Operator::Gt | Operator::GtEq => true,
        Operator::Lt | Operator::LtEq => false,
        _ => return None,
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(..)) => Some((c.clone(), lower)),
        (Expr::Literal(..), Expr::Column(c)) => Some((c.clone(), !lower)),
        _ => None,
    }
}

/// The guessed share of one predicate (see [`selectivity`]).
fn guess(expr: &Expr) -> f64 {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => selectivity(&[left.as_ref().clone(), right.as_ref().clone()]),
            Operator::Or => (guess(left) + guess(right)).min(1.0),
            Operator::Eq | Operator::IsNotDistinctFrom => 0.1,
            Operator::NotEq | Operator::IsDistinctFrom => 0.9,
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => 0.33,
            _ => 0.5,
        },
        Expr::Between(b) if !b.negated => 0.25,
        Expr::InList(l) if !l.negated => (0.1 * l.list.len() as f64).min(0.5),
        Expr::Like(l) if !l.negated => 0.25,
        Expr::IsNull(_) => 0.1,
        Expr::Not(inner) => (1.0 - guess(inner)).max(0.05),
        Expr::Between(_) | Expr::InList(_) | Expr::Like(_) | Expr::IsNotNull(_) => 0.9,
        _ => 0.5,
    }
}

/// This rule as DataFusion takes it.
pub(crate) fn rule() -> Arc<dyn OptimizerRule + Send + Sync> {
    Arc::new(StarJoinOrder)
}

#[cfg(test)]
mod tests;
