//! Placement: which node reads which cells (cached ones stay with their holder, shares
//! even out by bees and memory), and where cells are cut into parts.

use std::collections::HashSet;

use crate::distributed::{SplitCell, WorkerInfo};

/// Most parts one cell is cut into.
pub(super) const MAX_PARTS: u64 = 64;

/// How many cells at the end of a task that shares are cut into parts, and into how many.
pub(super) const CUT_LAST: (usize, u64) = (2, 4);

/// Cells cut so that every bee has about two units to read, where there are fewer cells
/// than that (a large cell is read by several nodes at once); parts have at least
/// `min_rows` rows.
pub(super) fn cut_for_bees(cells: Vec<SplitCell>, bees: u32, min_rows: u64) -> Vec<SplitCell> {
    let want = u64::from(bees) * 2;
    let whole = cells.iter().filter(|c| c.part.is_none()).count() as u64;
    if whole == 0 || cells.len() as u64 >= want {
        return cells;
    }
    let each = want.div_ceil(whole).min(MAX_PARTS);
    cells
        .into_iter()
        .flat_map(|c| {
            let parts = each.min(c.rows / min_rows.max(1));
            c.cut(parts)
        })
        .collect()
}

/// The last [`CUT_LAST`] whole cells of a task's list cut into parts (with at least
/// `min_rows` rows each), in place: the shared end of the list is where its owner and the
/// thieves meet, so the task that ends last ends at most a part behind.
pub(super) fn cut_last(cells: &mut Vec<SplitCell>, min_rows: u64) {
    let (last, parts) = CUT_LAST;
    let from = cells.len().saturating_sub(last);
    let tail: Vec<SplitCell> = cells.drain(from..).collect();
    for c in tail {
        let parts = parts.min(c.rows / min_rows.max(1));
        cells.extend(c.cut(parts));
    }
}

/// How much more reading a cell costs a node that must fetch it than one that has it cached.
/// Large enough that a holder keeps its cells while the loads are close; small enough that a
/// warm node never takes more than 5/9 of a two-node split, and that the split evens out as
/// the other nodes' caches fill (a cell cached everywhere costs the same everywhere).
pub(super) const MISS_COST: f64 = 1.25;

/// Cells to nodes: cached ones first, largest first, each onto the node that would finish
/// its share soonest, counting a share as its cost per bee (a cell costs its bytes on a node
/// that has it cached or when no node has it, [`MISS_COST`] times its bytes elsewhere); a tie
/// goes to a holder.
/// A node's share is cut into tasks of at most its memory (bees × memory per bee), so no
/// task asks more than the node holds. With no workers, everything becomes one task for the
/// coordinator itself (node `""`).
pub(super) fn assign(
    cells: &[SplitCell],
    split: &crate::distributed::FramePin,
    workers: &[WorkerInfo],
) -> Vec<(String, Vec<SplitCell>)> {
    if workers.is_empty() {
        return vec![(String::new(), cells.to_vec())];
    }
    let mut load: Vec<f64> = vec![0.0; workers.len()];
    let mut share: Vec<Vec<crate::distributed::SplitCell>> = vec![Vec::new(); workers.len()];
    let frame = format!("{}/{}/{}/", split.hive, split.r#box, split.frame);
    let cached: Vec<HashSet<&str>> = workers
        .iter()
        .map(|w| {
            w.cached_cells
                .iter()
                .filter_map(|c| c.strip_prefix(frame.as_str()))
                .collect()
        })
        .collect();
    // Cells some node has cached go first, while every node still has room to take them at
    // their cost; cells no node has cost the same anywhere and even out the loads after.
    let is_cached =
        |c: &crate::distributed::SplitCell| cached.iter().any(|set| set.contains(c.path.as_str()));
    let mut cells = cells.to_vec();
    cells.sort_by(|a, b| {
        is_cached(b)
            .cmp(&is_cached(a))
            .then_with(|| b.bytes.cmp(&a.bytes))
            .then_with(|| a.path.cmp(&b.path))
    });
    for cell in cells {
        let held: Vec<bool> = cached
            .iter()
            .map(|set| set.contains(cell.path.as_str()))
            .collect();
        let anywhere = held.contains(&true);
        let cost = |i: usize| {
            let miss = if anywhere && !held[i] { MISS_COST } else { 1.0 };
            cell.bytes.max(1) as f64 * miss
        };
        let finish = |i: usize| (load[i] + cost(i)) / f64::from(workers[i].bees.max(1));
        let i = (0..workers.len())
            .min_by(|&a, &b| {
                finish(a)
                    .total_cmp(&finish(b))
                    .then_with(|| held[b].cmp(&held[a]))
            })
            .unwrap_or(0);
        load[i] += cost(i);
        share[i].push(cell);
    }
    let mut out = Vec::new();
    for (w, cells) in workers.iter().zip(share) {
        if cells.is_empty() {
            continue;
        }
        let cap = (u64::from(w.bees.max(1)) * w.memory_per_bee).max(1);
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for c in cells {
            if !chunk.is_empty() && bytes + c.bytes > cap {
                out.push((w.node_id.clone(), std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += c.bytes;
            chunk.push(c);
        }
        out.push((w.node_id.clone(), chunk));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::plan::Fragment;
    use crate::distributed::{FramePin, Shape};
    use std::sync::Arc;

    fn worker(id: &str, bees: u32) -> WorkerInfo {
        WorkerInfo {
            node_id: id.into(),
            bees,
            idle_bees: bees,
            memory_per_bee: 1 << 30,
            cached_cells: vec![],
            attributes: Default::default(),
        }
    }

    fn fragment(sizes: &[u64]) -> Fragment {
        Fragment {
            sql: "SELECT 1".into(),
            schema: Arc::new(arrow_schema::Schema::empty()),
            split: FramePin {
                hive: "h".into(),
                r#box: "b".into(),
                frame: "f".into(),
                version: 1,
            },
            cells: sizes
                .iter()
                .enumerate()
                .map(|(i, &bytes)| SplitCell {
                    path: format!("c{i}"),
                    bytes,
                    rows: bytes * 10_000,
                    part: None,
                })
                .collect(),
            pins: vec![],
            shape: Shape::Rows,
            scope: vec![],
            settings: Default::default(),
            shipping: crate::distributed::Shipping::nothing(),
        }
    }

    #[test]
    fn every_cell_once_balanced_by_bees() {
        let f = fragment(&[10; 12]);
        let plan = assign(&f.cells, &f.split, &[worker("a", 1), worker("b", 2)]);
        let mut all: Vec<String> = plan
            .iter()
            .flat_map(|(_, c)| c.iter().map(|c| c.path.clone()))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 12);
        let bytes = |n: &str| -> u64 {
            plan.iter()
                .filter(|(w, _)| w == n)
                .flat_map(|(_, c)| c)
                .map(|c| c.bytes)
                .sum()
        };
        assert_eq!(bytes("a"), 40);
        assert_eq!(bytes("b"), 80);
    }

    /// Every cell's rows, from the units that cover them: each cell whole once, or its
    /// parts covering its rows once, in order.
    fn assert_covers(units: &[SplitCell], cells: &[SplitCell]) {
        for cell in cells {
            let mut mine: Vec<&SplitCell> = units.iter().filter(|u| u.path == cell.path).collect();
            mine.sort_by_key(|u| u.part.as_ref().map(|r| r.start));
            match mine[..] {
                [whole] if whole.part.is_none() => continue,
                _ => {}
            }
            let mut next = 0;
            for u in mine {
                let rows = u.part.clone().expect("a whole cell beside its parts");
                assert_eq!(rows.start, next, "{units:?}");
                next = rows.end;
            }
            assert_eq!(next, cell.rows, "{units:?}");
        }
    }

    #[test]
    fn few_large_cells_are_cut_so_every_bee_has_work() {
        // Two cells of 1.2M rows for six bees: each in six parts (twelve, two per bee).
        let f = fragment(&[120, 120]);
        const MIN: u64 = 64 * 1024;
        let cut = cut_for_bees(f.cells.clone(), 6, MIN);
        assert_eq!(cut.len(), 12);
        assert_covers(&cut, &f.cells);
        assert_eq!(cut.iter().map(|c| c.bytes).sum::<u64>(), 240);
        // Enough cells already, or cells too small to cut: unchanged.
        let many = fragment(&[10; 12]);
        assert_eq!(cut_for_bees(many.cells.clone(), 6, MIN), many.cells);
        let small = fragment(&[1, 1]);
        assert_eq!(cut_for_bees(small.cells.clone(), 6, MIN), small.cells);
        // The plan over parts still gives every unit once, balanced.
        let plan = assign(&cut, &f.split, &[worker("a", 3), worker("b", 3)]);
        let units: Vec<SplitCell> = plan.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(units.len(), 12);
        assert_covers(&units, &f.cells);
        assert_eq!(bytes_of(&plan, "a"), 120);
    }

    #[test]
    fn a_tasks_last_cells_are_cut_into_parts() {
        let f = fragment(&[10, 20, 30, 40]);
        let keys = |cells: &[SplitCell]| cells.iter().map(SplitCell::key).collect::<Vec<_>>();
        let mut cells = f.cells.clone();
        cut_last(&mut cells, 64 * 1024);
        assert_eq!(
            keys(&cells),
            [
                "c0",
                "c1",
                "c2#0-75000",
                "c2#75000-150000",
                "c2#150000-225000",
                "c2#225000-300000",
                "c3#0-100000",
                "c3#100000-200000",
                "c3#200000-300000",
                "c3#300000-400000",
            ]
        );
        assert_covers(&cells, &f.cells);
        // Parts have at least `min_rows` rows: a smaller cell is cut into fewer parts, or
        // stays whole.
        let mut small = fragment(&[10, 20, 1]).cells;
        cut_last(&mut small, 64 * 1024);
        assert_eq!(
            keys(&small),
            [
                "c0",
                "c1#0-66666",
                "c1#66666-133333",
                "c1#133333-200000",
                "c2"
            ]
        );
    }

    fn bytes_of(plan: &[(String, Vec<SplitCell>)], node: &str) -> u64 {
        plan.iter()
            .filter(|(w, _)| w == node)
            .flat_map(|(_, c)| c)
            .map(|c| c.bytes)
            .sum()
    }

    #[test]
    fn a_warm_node_takes_at_most_five_ninths_and_the_split_evens_out() {
        // `a` has every cell cached, `b` none: `a` keeps more, but not all.
        let f = fragment(&[10; 18]);
        let mut a = worker("a", 1);
        a.cached_cells = (0..18).map(|i| format!("h/b/f/c{i}")).collect();
        let plan = assign(&f.cells, &f.split, &[a.clone(), worker("b", 1)]);
        let first = bytes_of(&plan, "a");
        assert!((90..=100).contains(&first), "{first}: {plan:?}");
        // `b` caches what it is given (and keeps it): within a few queries the split is even.
        let mut b = worker("b", 1);
        let mut plan = plan;
        for _ in 0..4 {
            b.cached_cells.extend(
                plan.iter()
                    .filter(|(w, _)| w == "b")
                    .flat_map(|(_, c)| c.iter().map(|c| format!("h/b/f/{}", c.path))),
            );
            b.cached_cells.sort();
            b.cached_cells.dedup();
            plan = assign(&f.cells, &f.split, &[a.clone(), b.clone()]);
        }
        assert_eq!(bytes_of(&plan, "a"), 90, "{plan:?}");
        assert_eq!(bytes_of(&plan, "b"), 90, "{plan:?}");
    }

    #[test]
    fn cached_cells_stay_with_their_node_and_tasks_fit_memory() {
        let f = fragment(&[10, 10, 10, 10]);
        let mut a = worker("a", 1);
        a.cached_cells = vec!["h/b/f/c3".into()];
        let plan = assign(&f.cells, &f.split, &[a, worker("b", 1)]);
        let a_cells: Vec<&str> = plan
            .iter()
            .filter(|(w, _)| w == "a")
            .flat_map(|(_, c)| c.iter().map(|c| c.path.as_str()))
            .collect();
        assert!(a_cells.contains(&"c3"), "{plan:?}");

        let mut small = worker("s", 1);
        small.memory_per_bee = 15;
        let plan = assign(&f.cells, &f.split, &[small]);
        assert_eq!(
            plan.len(),
            4,
            "a 15-byte node gets one 10-byte cell per task: {plan:?}"
        );
        assert!(
            assign(&f.cells, &f.split, &[])
                .iter()
                .all(|(w, _)| w.is_empty())
        );
    }
}
