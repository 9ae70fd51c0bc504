//! The claim queue's unit tests.

use super::*;
use crate::distributed::StorageShuffle;
use apiary_storage::Path;

/// Cells of 1000 rows each.
fn planned(cells: &[&str]) -> HashMap<String, PlannedCell> {
    cells
        .iter()
        .map(|c| {
            let cell = PlannedCell {
                location: Path::parse(format!("root/{c}")).unwrap(),
                rows: 1000,
            };
            (c.to_string(), cell)
        })
        .collect()
}

/// The units a queue hands out: a cell's path, or `path#start-end` for a part.
async fn drain(q: &CellQueue) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(u) = q.next().await.unwrap() {
        let path = u.location.as_ref().trim_start_matches("root/").to_string();
        out.push(match u.rows {
            None => path,
            Some(r) => {
                let [range] = r.ranges() else { panic!("{r:?}") };
                crate::parts::part_key(&path, range)
            }
        });
    }
    out
}

fn task(id: u32, cells: &[&str], shared: u32, steal: Vec<Vec<&str>>) -> TaskSpec {
    let mut t = crate::distributed::conformance::task("q-1", id, 1, "node-a");
    t.cells = cells.iter().map(|c| c.to_string()).collect();
    t.shared = shared;
    t.steal = steal
        .into_iter()
        .map(|l| l.into_iter().map(String::from).collect())
        .collect();
    t
}

use proptest::prelude::*;

/// How the tasks of [`race`] take their units.
#[derive(Debug, Clone, Copy)]
enum Taking {
    /// All their own units at once, up front.
    Kept,
    /// One at a time.
    One,
    /// In runs, as a scan of this many partitions does.
    Runs(usize),
}

/// Tasks draining their queues in the order `turns` picks (each turn one `next` or
/// `next_units`), stopping early where `stops` says: the cells read and not needed, per
/// task.
async fn race(
    sizes: &[usize],
    turns: &[usize],
    stops: &[Option<usize>],
    taking: Taking,
    ahead: bool,
    cut: bool,
) -> (Vec<String>, Vec<Vec<String>>, Vec<Vec<String>>) {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    // With `cut`, each task's last cell is in three parts.
    let cells: Vec<Vec<String>> = sizes
        .iter()
        .enumerate()
        .map(|(t, &n)| (0..n).map(|i| format!("t{t}/c{i}.parquet")).collect())
        .collect();
    let names: Vec<&str> = cells.iter().flatten().map(String::as_str).collect();
    let plan = planned(&names);
    let cells: Vec<Vec<String>> = cells
        .into_iter()
        .map(|mut c| {
            if cut {
                let last = c.pop().unwrap();
                c.extend(["0-300", "300-700", "700-1000"].map(|r| format!("{last}#{r}")));
            }
            c
        })
        .collect();
    let all: Vec<String> = cells.iter().flatten().cloned().collect();
    let borrowed: Vec<Vec<&str>> = cells
        .iter()
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let unshared: Vec<usize> = cells.iter().map(|c| unshared(c.len())).collect();
    let queues: Vec<CellQueue> = share_out(&cells, &unshared)
        .into_iter()
        .enumerate()
        .map(|(i, (shared, steal))| {
            let mut t = task(i as u32, &borrowed[i], shared, vec![]);
            t.steal = steal;
            let q = CellQueue::new(Arc::clone(&transport), &t, &plan).unwrap();
            if ahead { q.claiming_ahead() } else { q }
        })
        .collect();
    let mut taken = vec![0usize; queues.len()];
    let mut done = vec![false; queues.len()];
    if let Taking::Kept = taking {
        for q in &queues {
            q.claim_own().await.unwrap();
        }
    } else {
        for turn in turns
            .iter()
            .copied()
            .chain((0..queues.len()).cycle().take(10_000))
        {
            let i = turn % queues.len();
            if done[i] || stops[i].is_some_and(|s| taken[i] >= s) {
                done[i] = true;
                continue;
            }
            let got = match taking {
                Taking::Runs(partitions) => queues[i].next_units(partitions).await.unwrap().len(),
                _ => usize::from(queues[i].next().await.unwrap().is_some()),
            };
            match got {
                0 => done[i] = true,
                n => taken[i] += n,
            }
            if done.iter().all(|d| *d) {
                break;
            }
        }
    }
    let mut read = Vec::new();
    let mut pruned = Vec::new();
    for q in &queues {
        let (r, p) = q.finish().await;
        read.push(r);
        pruned.push(p);
    }
    (all, read, pruned)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the tasks interleave, every cell is read by exactly one task; tasks that
    /// stop early (a limit) still never read a cell twice, and every cell is read or
    /// reported as not needed.
    #[test]
    fn every_cell_is_read_once_whatever_the_interleaving(
        sizes in proptest::collection::vec(1usize..7, 1..5),
        turns in proptest::collection::vec(0usize..4, 0..60),
        stops in proptest::collection::vec(proptest::option::weighted(0.2, 0usize..4), 4),
        taking in prop_oneof![
            Just(Taking::Kept),
            Just(Taking::One),
            (1usize..4).prop_map(Taking::Runs),
        ],
        ahead in any::<bool>(),
        cut in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let none = vec![None; 4];
        for stops in [&none, &stops] {
            let (all, read, pruned) =
                runtime.block_on(race(&sizes, &turns, stops, taking, ahead, cut));
            let mut seen: Vec<&String> = read.iter().flatten().collect();
            let n = seen.len();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), n, "a cell read twice: {:?}", read);
            let covered: std::collections::HashSet<&String> =
                read.iter().flatten().chain(pruned.iter().flatten()).collect();
            if stops.iter().all(Option::is_none) {
                prop_assert_eq!(n, all.len(), "{:?}", read);
                prop_assert!(pruned.iter().all(Vec::is_empty), "{:?}", pruned);
            } else {
                prop_assert!(all.iter().all(|c| covered.contains(c)), "{:?} {:?}", read, pruned);
            }
        }
    }
}

#[tokio::test]
async fn owners_read_from_the_front_thieves_from_the_back_and_each_cell_once() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let all = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"];
    let plan = planned(&all);
    let a = task(0, &all[..4], 2, vec![vec!["b4", "b3"]]);
    let b = task(1, &all[4..], 2, vec![vec!["a4", "a3"]]);
    let qa = CellQueue::new(Arc::clone(&transport), &a, &plan).unwrap();
    let qb = CellQueue::new(Arc::clone(&transport), &b, &plan).unwrap();
    // `a` runs alone first: its own four, then what `b` shares, from the back.
    assert_eq!(drain(&qa).await, ["a1", "a2", "a3", "a4", "b4", "b3"]);
    // `b` then finds its shared cells taken and stops at the first it loses; it never
    // takes `a`'s (the claim of `a4` is lost, which ends that list).
    assert_eq!(drain(&qb).await, ["b1", "b2"]);
    assert_eq!(qb.finish().await, (vec!["b1".into(), "b2".into()], vec![]));
    // Asking again is answered the same (a lost response is not a lost claim).
    assert!(transport.claim(&a.key(), "b4").await.unwrap());
    assert!(!transport.claim(&b.key(), "b4").await.unwrap());
}

#[tokio::test]
async fn cells_the_plan_ruled_out_are_reported_and_never_claimed() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let t = task(0, &["a1", "a2"], 1, vec![vec!["b2"], vec!["c2"]]);
    let q = CellQueue::new(Arc::clone(&transport), &t, &planned(&["a1", "c2"])).unwrap();
    assert_eq!(drain(&q).await, ["a1", "c2"]);
    assert_eq!(q.finish().await.1, ["a2", "b2"]);
    let other = task(1, &["b1", "b2"], 1, vec![]);
    assert!(transport.claim(&other.key(), "b2").await.unwrap());
}

#[tokio::test]
async fn cells_left_when_the_plan_stopped_early_were_not_needed() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let all = ["a1", "a2", "a3", "b1", "b2"];
    let t = task(0, &all[..3], 2, vec![vec!["b2"]]);
    let q = CellQueue::new(Arc::clone(&transport), &t, &planned(&all))
        .unwrap()
        .claiming_ahead();
    // A limit was reached after the first cell (the second's claim was asked ahead).
    assert!(q.next().await.unwrap().is_some());
    assert_eq!(
        q.finish().await,
        (
            vec!["a1".into()],
            vec!["a2".into(), "a3".into(), "b2".into()]
        )
    );
}

#[tokio::test]
async fn a_scan_that_keeps_its_partitions_claims_only_its_own_cells_up_front() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let all = ["a1", "a2", "a3", "a4", "b1", "b2"];
    let plan = planned(&all);
    let a = task(0, &all[..4], 2, vec![vec!["b2"]]);
    let b = task(1, &all[4..], 1, vec![vec!["a4", "a3"]]);
    // `b` took `a4` first (it reads one cell at a time).
    let qb = CellQueue::new(Arc::clone(&transport), &b, &plan).unwrap();
    assert_eq!(drain(&qb).await, ["b1", "b2", "a4", "a3"]);
    let qa = CellQueue::new(Arc::clone(&transport), &a, &plan).unwrap();
    let kept = qa.claim_own().await.unwrap();
    let again = qa.claim_own().await.unwrap();
    assert_eq!(kept, again, "claimed once for every partition");
    let mut kept: Vec<(&str, &Option<RowRanges>)> =
        kept.iter().map(|(l, r)| (l.as_str(), r)).collect();
    kept.sort_by_key(|k| k.0);
    assert_eq!(kept, [("root/a1", &None), ("root/a2", &None)]);
    assert_eq!(qa.finish().await, (vec!["a1".into(), "a2".into()], vec![]));
}

#[tokio::test]
#[allow(clippy::single_range_in_vec_init)] // one range of rows
async fn parts_are_claimed_one_by_one_and_kept_parts_merge_per_cell() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let plan = planned(&["a1", "a2", "b1"]);
    let a = task(
        0,
        &["a1", "a2#0-500", "a2#500-1000"],
        2,
        vec![vec!["b1#500-1000"]],
    );
    let b = task(
        1,
        &["b1#0-500", "b1#500-1000"],
        1,
        vec![vec!["a2#500-1000"]],
    );
    let qb = CellQueue::new(Arc::clone(&transport), &b, &plan).unwrap();
    // `b` reads its own parts and steals the last part of `a2`.
    assert_eq!(drain(&qb).await, ["b1#0-500", "b1#500-1000", "a2#500-1000"]);
    let qa = CellQueue::new(Arc::clone(&transport), &a, &plan).unwrap();
    let kept = qa.claim_own().await.unwrap();
    assert_eq!(kept.get("root/a1"), Some(&None));
    let a2 = kept.get("root/a2").unwrap().as_ref().unwrap();
    assert_eq!(a2.ranges(), &[0..500]);
    assert_eq!(a2.total(), 1000);
    assert_eq!(
        qa.finish().await,
        (vec!["a1".into(), "a2#0-500".into()], vec![])
    );
}

#[tokio::test]
async fn a_part_the_cell_does_not_have_fails_the_task_and_a_pruned_cell_prunes_its_parts() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let t = task(0, &["a1#900-1200"], 0, vec![]);
    let err = CellQueue::new(Arc::clone(&transport), &t, &planned(&["a1"])).unwrap_err();
    assert!(err.to_string().contains("which has 1000"), "{err}");
    // The plan ruled `a1` out: its parts have no rows either.
    let t = task(0, &["a1#0-500", "a1#500-1000", "b1"], 0, vec![]);
    let plan = planned(&["b1"]);
    assert!(needs_queue(&t, &plan));
    let q = CellQueue::new(Arc::clone(&transport), &t, &plan).unwrap();
    assert_eq!(drain(&q).await, ["b1"]);
    assert_eq!(q.finish().await.1, ["a1#0-500", "a1#500-1000"]);
    // A cell whose path reads like a part is that cell.
    let plan = planned(&["a#0-5"]);
    let t = task(0, &["a#0-5"], 0, vec![]);
    assert!(!needs_queue(&t, &plan));
    let q = CellQueue::new(Arc::clone(&transport), &t, &plan).unwrap();
    assert_eq!(drain(&q).await, ["a#0-5"]);
}

#[tokio::test]
async fn a_scan_reads_its_unshared_units_in_runs_and_the_shared_ones_one_at_a_time() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let cells = ["a", "b", "c", "d", "e", "f", "g"];
    // Five unshared (one of them ruled out by the plan), two shared, one stolen.
    let plan = planned(&["a", "b", "d", "e", "f", "g", "x"]);
    let q = CellQueue::new(transport, &task(0, &cells, 2, vec![vec!["x"]]), &plan).unwrap();
    let names = |units: Vec<Unit>| -> Vec<String> {
        units
            .iter()
            .map(|u| u.location.as_ref().trim_start_matches("root/").to_string())
            .collect()
    };
    // Four unshared units over three partitions: runs of two.
    assert_eq!(names(q.next_units(3).await.unwrap()), ["a", "b"]);
    assert_eq!(names(q.next_units(3).await.unwrap()), ["d", "e"]);
    for one in ["f", "g", "x"] {
        assert_eq!(names(q.next_units(3).await.unwrap()), [one]);
    }
    assert!(q.next_units(3).await.unwrap().is_empty());
    let (read, pruned) = q.finish().await;
    assert_eq!(read, ["a", "b", "d", "e", "f", "g", "x"]);
    assert_eq!(pruned, ["c"]);
}

/// A unit as `path`, or `path#start-end` per range of its rows.
fn described(units: Vec<Unit>) -> Vec<String> {
    units
        .into_iter()
        .map(|u| {
            let path = u.location.as_ref().trim_start_matches("root/").to_string();
            match u.rows {
                None => path,
                Some(r) => r
                    .ranges()
                    .iter()
                    .map(|range| crate::parts::part_key(&path, range))
                    .collect::<Vec<_>>()
                    .join(","),
            }
        })
        .collect()
}

#[tokio::test]
async fn an_owner_claims_its_shared_units_in_shrinking_runs_and_a_cells_parts_as_one() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let plan = planned(&["u", "s1", "s2", "s3", "s4", "c", "x"]);
    let cells = [
        "u",
        "s1",
        "s2",
        "s3",
        "s4",
        "c#0-250",
        "c#250-500",
        "c#500-750",
        "c#750-1000",
    ];
    // Eight shared units and one other task that shares with it: runs of half of those
    // left, then the last one alone.
    let t = task(0, &cells, 8, vec![vec!["x"]]);
    let q = CellQueue::new(Arc::clone(&transport), &t, &plan).unwrap();
    assert_eq!(described(q.next_units(1).await.unwrap()), ["u"]);
    assert_eq!(
        described(q.next_units(1).await.unwrap()),
        ["s1", "s2", "s3", "s4"]
    );
    // Two parts of one cell in a run are read as one piece of it.
    assert_eq!(described(q.next_units(1).await.unwrap()), ["c#0-500"]);
    assert_eq!(described(q.next_units(1).await.unwrap()), ["c#500-750"]);
    assert_eq!(described(q.next_units(1).await.unwrap()), ["c#750-1000"]);
    assert_eq!(described(q.next_units(1).await.unwrap()), ["x"]);
    assert!(q.next_units(1).await.unwrap().is_empty());
    let (read, pruned) = q.finish().await;
    assert_eq!(read.len(), cells.len() + 1, "{read:?}");
    assert!(pruned.is_empty(), "{pruned:?}");
}

#[tokio::test]
async fn a_run_keeps_the_units_it_won_and_ends_where_a_thief_got_to() {
    let transport: Arc<dyn ShuffleTransport> =
        Arc::new(StorageShuffle::new(apiary_storage::memory()));
    let plan = planned(&["u", "s1", "s2", "s3", "s4", "s5", "s6"]);
    let owner = task(
        0,
        &["u", "s1", "s2", "s3", "s4", "s5", "s6"],
        6,
        vec![vec![]],
    );
    let thief = task(1, &[], 0, vec![vec!["s6", "s5", "s4", "s3", "s2", "s1"]]);
    let qo = CellQueue::new(Arc::clone(&transport), &owner, &plan).unwrap();
    let qt = CellQueue::new(Arc::clone(&transport), &thief, &plan).unwrap();
    // The thief came first and took the back four.
    for _ in 0..4 {
        assert!(qt.next().await.unwrap().is_some());
    }
    assert_eq!(described(qo.next_units(1).await.unwrap()), ["u"]);
    // A run of three: `s1` and `s2` won, `s3` lost, so the shared part ends there.
    assert_eq!(described(qo.next_units(1).await.unwrap()), ["s1", "s2"]);
    assert!(qo.next_units(1).await.unwrap().is_empty());
    assert!(qt.next().await.unwrap().is_none());
    let (owner_read, owner_pruned) = qo.finish().await;
    let (thief_read, _) = qt.finish().await;
    assert_eq!(owner_read, ["u", "s1", "s2"]);
    assert!(owner_pruned.is_empty(), "{owner_pruned:?}");
    assert_eq!(thief_read, ["s6", "s5", "s4", "s3"]);
}
