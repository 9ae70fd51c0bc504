//! The splits of queries this coordinator distributed lately.
//!
//! Splitting a query optimizes its whole plan, writes the fragment back as SQL and plans that
//! text again as a check: 2 to 4 ms of a coordinator's CPU on the Star Schema Benchmark's
//! queries, spent before any task starts, so on every distributed query's critical path.
//! A dashboard's refresh or a script's loop asks the same query again and again, and its
//! split is a function of inputs that can be named exactly: the planned (unoptimized)
//! query, each frame it reads at its ledger version (a version never changes, and versions
//! are never reused across a frame's incarnations), the session's `USE` and the settings it
//! changed. So a split is kept under those inputs and reused as is; the coordinator's plan
//! around it, and everything of one execution (its query id, tasks, placement), is made
//! anew every time.
//!
//! A query is not kept when its answer may depend on more than those inputs: a function
//! that is not immutable (`now()` is folded to the time of planning, `random()` differs per
//! call), a placeholder, or a table that is not a frame (`apiary.system.*` answers from
//! the node's state).

use std::collections::BTreeMap;

use apiary_ledger::FrameRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

use super::plan::Split;
use crate::recent::Recent;

/// How many splits a coordinator keeps.
const CAPACITY: usize = 16;

/// The most cells (over every frame a query reads) whose query's split is kept: a split
/// holds its plan, which holds the scan indexes of the frames it reads (with every cell's
/// statistics), and a stale version's index is held for as long as its split is.
const MOST_CELLS: usize = 4096;

/// Everything a query's split depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SplitKey {
    /// The query as planned, before optimization. Its table scans compare by name,
    /// projection and filters, not by what they read: `frames` says that.
    plan: LogicalPlan,
    /// Every frame scan's frame, incarnation, version and number of cells, in plan order.
    frames: Vec<(FrameRef, u64, u64, usize)>,
    scope: Vec<String>,
    settings: BTreeMap<String, String>,
}

impl SplitKey {
    /// The key of `plan` run in `scope` with `settings`; `None` when its split must not be
    /// reused (see the module's documentation) or is too large to keep.
    pub(crate) fn of(
        plan: &LogicalPlan,
        scope: &[String],
        settings: &BTreeMap<String, String>,
    ) -> Option<Self> {
        let mut frames = Vec::new();
        let mut reusable = true;
        let mut cells = 0;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                match super::plan::frame_table(scan) {
                    Some(table) => {
                        let index = table.index();
                        cells += index.cells();
                        frames.push((
                            index.frame().clone(),
                            index.incarnation(),
                            index.version(),
                            index.cells(),
                        ));
                    }
                    None => reusable = false,
                }
            }
            let _ = node.apply_expressions(|e| {
                e.apply(|e| {
                    if !fixed(e) {
                        reusable = false;
                    }
                    Ok(continue_while(reusable))
                })
            });
            Ok(continue_while(reusable))
        });
        (reusable && cells <= MOST_CELLS).then(|| Self {
            plan: plan.clone(),
            frames,
            scope: scope.to_vec(),
            settings: settings.clone(),
        })
    }
}

/// Whether `e` (not its children) yields the same on every run over the same frames.
fn fixed(e: &Expr) -> bool {
    let immutable = |v: Volatility| v == Volatility::Immutable;
    match e {
        Expr::ScalarFunction(f) => immutable(f.func.signature().volatility),
        Expr::AggregateFunction(f) => immutable(f.func.signature().volatility),
        Expr::WindowFunction(w) => immutable(w.fun.signature().volatility),
        Expr::Placeholder(_) => false,
        _ => true,
    }
}

fn continue_while(go: bool) -> TreeNodeRecursion {
    if go {
        TreeNodeRecursion::Continue
    } else {
        TreeNodeRecursion::Stop
    }
}

/// The splits of recent queries, least recently used dropped first.
pub(crate) type SplitCache = Recent<SplitKey, Split>;

/// An empty [`SplitCache`] of [`CAPACITY`].
pub(crate) fn split_cache() -> SplitCache {
    Recent::with_capacity(CAPACITY)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use apiary_ledger::Registry;
    use apiary_storage::StorageUri;

    use super::*;
    use crate::{QueryEngine, QueryOptions};

    /// An engine over a frame `h.b.f` (`x int64`) of one cell; the registry, to write more.
    async fn engine() -> (QueryEngine, Arc<Registry>) {
        let (backend, _) =
            apiary_storage::counted_backend(&StorageUri::parse("memory://").unwrap()).unwrap();
        let registry = Arc::new(Registry::new(backend, Default::default()));
        crate::test_frame::create(&registry).await;
        write(&registry, &[1, 2, 3]).await;
        let engine = QueryEngine::new(Arc::clone(&registry), QueryOptions::default()).unwrap();
        (engine, registry)
    }

    async fn write(registry: &Registry, values: &[i64]) {
        crate::test_frame::append(registry, values).await;
    }

    async fn planned(engine: &QueryEngine, sql: &str) -> LogicalPlan {
        engine.base_state().create_logical_plan(sql).await.unwrap()
    }

    fn key(plan: &LogicalPlan) -> Option<SplitKey> {
        SplitKey::of(plan, &[], &BTreeMap::new())
    }

    const SUM: &str = "SELECT sum(x) FROM h.b.f WHERE x > 1";

    #[tokio::test]
    async fn a_query_planned_again_over_the_same_versions_has_the_same_key() {
        let (engine, _) = engine().await;
        let first = key(&planned(&engine, SUM).await).expect("a frame query is kept");
        assert_eq!(Some(&first), key(&planned(&engine, SUM).await).as_ref());
        // Any input changed: another key.
        let plan = planned(&engine, SUM).await;
        let others = [
            key(&planned(&engine, "SELECT sum(x) FROM h.b.f WHERE x > 2").await),
            SplitKey::of(&plan, &["h".into()], &BTreeMap::new()),
            SplitKey::of(
                &plan,
                &[],
                &BTreeMap::from([(
                    "datafusion.execution.time_zone".to_string(),
                    "+05:00".to_string(),
                )]),
            ),
        ];
        for other in others {
            assert_ne!(Some(&first), other.as_ref());
        }
    }

    #[tokio::test]
    async fn a_write_makes_a_new_key() {
        let (engine, registry) = engine().await;
        let before = key(&planned(&engine, SUM).await).unwrap();
        write(&registry, &[4, 5]).await;
        let after = key(&planned(&engine, SUM).await).unwrap();
        assert_ne!(before, after, "the plans are equal, the versions are not");
        assert_eq!(before.plan, after.plan);
    }

    #[tokio::test]
    async fn a_query_whose_answer_may_change_is_not_kept() {
        let (engine, _) = engine().await;
        for sql in [
            "SELECT sum(x) FROM h.b.f WHERE now() > TIMESTAMP '2000-01-01T00:00:00'",
            "SELECT sum(x * random()) FROM h.b.f",
            "SELECT x FROM h.b.f WHERE x IN (SELECT x FROM h.b.f WHERE current_date() > DATE '2000-01-01')",
        ] {
            assert!(key(&planned(&engine, sql).await).is_none(), "{sql}");
        }
    }
}
