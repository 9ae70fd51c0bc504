//! Optimized plans of the fragments a worker ran lately.
//!
//! A dashboard's refresh or a script's loop sends a worker the same fragment over the same
//! cells again and again, and parsing and optimizing it costs a few milliseconds of every
//! task (as much as planning the whole query on one node). A fragment's inputs are
//! immutable: its SQL, the scope it resolves names in, and each frame at a pinned ledger
//! version with a fixed set of cells (a version never changes, and versions are never reused
//! across a frame's incarnations). So its optimized logical plan is reusable as is; only the
//! physical plan, which holds the state of one execution, is made anew for every task.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use apiary_ledger::FrameRef;
use datafusion::logical_expr::LogicalPlan;

use crate::catalog::{PinKey, Pinned};
use crate::recent::Recent;

/// How many fragment plans a node keeps. A plan holds the scan indexes of the frames it
/// reads (a few hundred bytes per cell), so a few dozen stay small.
const CAPACITY: usize = 32;

/// Everything a fragment's plan depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FragmentKey {
    sql: String,
    scope: Vec<String>,
    settings: BTreeMap<String, String>,
    /// Each frame's version and cells (`None`: all), in frame order.
    pins: Vec<(FrameRef, u64, Option<BTreeSet<String>>)>,
}

impl FragmentKey {
    /// The key of `sql` run in `scope` with `settings` over `pins`.
    pub(crate) fn new(
        sql: &str,
        scope: &[String],
        settings: &BTreeMap<String, String>,
        pins: &HashMap<PinKey, Pinned>,
    ) -> Self {
        let mut pins: Vec<_> = pins
            .iter()
            .map(|((frame, version), pin)| (frame.clone(), *version, pin.cells.clone()))
            .collect();
        pins.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Self {
            sql: sql.to_string(),
            scope: scope.to_vec(),
            settings: settings.clone(),
            pins,
        }
    }
}

/// The optimized plans of recent fragments, least recently used dropped first.
pub(crate) type FragmentPlans = Recent<FragmentKey, LogicalPlan>;

/// An empty [`FragmentPlans`] of [`CAPACITY`].
pub(crate) fn fragment_plans() -> FragmentPlans {
    Recent::with_capacity(CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::LogicalPlanBuilder;

    fn frame(name: &str) -> FrameRef {
        FrameRef::new("h", "b", name).expect("frame")
    }

    fn pins(entries: &[(&str, u64, Option<&[&str]>)]) -> HashMap<PinKey, Pinned> {
        entries
            .iter()
            .map(|(name, version, cells)| {
                (
                    (frame(name), *version),
                    Pinned {
                        version: *version,
                        cells: cells.map(|c| c.iter().map(|s| s.to_string()).collect()),
                        shipped: None,
                    },
                )
            })
            .collect()
    }

    fn plan() -> LogicalPlan {
        LogicalPlanBuilder::empty(false).build().expect("plan")
    }

    #[test]
    fn a_key_names_every_input_of_the_plan() {
        let scope = vec!["h".to_string(), "b".to_string()];
        let none = BTreeMap::new();
        let time_zone = BTreeMap::from([(
            "datafusion.execution.time_zone".to_string(),
            "+05:00".to_string(),
        )]);
        let base = pins(&[("f", 3, Some(&["a", "b"])), ("d", 1, None)]);
        let key = FragmentKey::new("SELECT 1", &scope, &none, &base);
        // The same inputs in another order: the same key.
        let reordered = pins(&[("d", 1, None), ("f", 3, Some(&["b", "a"]))]);
        assert_eq!(key, FragmentKey::new("SELECT 1", &scope, &none, &reordered));
        // Any input changed: another key.
        let others = [
            FragmentKey::new("SELECT 2", &scope, &none, &base),
            FragmentKey::new("SELECT 1", &scope[..1], &none, &base),
            FragmentKey::new(
                "SELECT 1",
                &scope,
                &none,
                &pins(&[("f", 4, Some(&["a", "b"])), ("d", 1, None)]),
            ),
            FragmentKey::new(
                "SELECT 1",
                &scope,
                &none,
                &pins(&[("f", 3, Some(&["a"])), ("d", 1, None)]),
            ),
            FragmentKey::new(
                "SELECT 1",
                &scope,
                &none,
                &pins(&[("f", 3, None), ("d", 1, None)]),
            ),
            FragmentKey::new(
                "SELECT 1",
                &scope,
                &none,
                &pins(&[("f", 3, Some(&["a", "b"]))]),
            ),
            FragmentKey::new("SELECT 1", &scope, &time_zone, &base),
        ];
        for other in others {
            assert_ne!(key, other);
        }
    }

    #[test]
    fn the_least_recently_used_plan_goes_first() {
        let plans = FragmentPlans::with_capacity(2);
        let key = |sql: &str| FragmentKey::new(sql, &[], &BTreeMap::new(), &HashMap::new());
        plans.put(key("a"), plan());
        plans.put(key("b"), plan());
        assert!(plans.get(&key("a")).is_some());
        plans.put(key("c"), plan());
        assert!(plans.get(&key("a")).is_some());
        assert!(plans.get(&key("b")).is_none(), "b was used least recently");
        assert!(plans.get(&key("c")).is_some());
    }
}
