//! Shared cells on the worker: the order in which a task reads its split frame's units
//! (cells and parts of cells), and the claims that make every shared unit read by exactly
//! one task of its round (see the manifest's "Shared cells" and "Parts").

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::manifest::{TaskKey, TaskSpec};
use super::transport::ShuffleTransport;
use crate::error::{QueryError, Result};
use crate::exec::{KeptCells, PlannedCell, SharedCells, Unit};
use crate::parts::{RowRanges, parse_part};
use futures::{StreamExt, TryStreamExt};

/// Which part of a task's order a cell comes from. A lost claim ends its part: the owner
/// reads its cells from the front and thieves from the back, so a lost claim means the
/// others got that far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Origin {
    /// The task's own cells no one else may read: never claimed.
    Unshared,
    /// The task's own cells others may take.
    Shared,
    /// Another task's shared cells (the index of its list in `steal`).
    Stolen(usize),
}

#[derive(Debug)]
struct Entry {
    /// The unit's key (a cell's path, or a part's key).
    cell: String,
    unit: Unit,
    part: Origin,
}

#[derive(Debug, Default)]
struct State {
    next: VecDeque<Entry>,
    /// Origins where a claim was lost.
    ended: HashSet<Origin>,
    read: Vec<String>,
    /// The next shared cell, with its claim under way.
    ahead: Option<(Entry, tokio::task::JoinHandle<Result<bool>>)>,
}

/// The cells a task keeps when its scan cannot take cells one at a time, by location (see
/// [`CellQueue::claim_own`]), or why claiming them failed.
type Kept = std::result::Result<Arc<KeptCells>, String>;

/// The cells one task reads, in order, claimed where they are shared. Every partition of
/// the task's split scan takes its next cell from here.
#[derive(Debug)]
pub(crate) struct CellQueue {
    transport: Arc<dyn ShuffleTransport>,
    task: TaskKey,
    state: Mutex<State>,
    pruned: Vec<String>,
    kept: tokio::sync::OnceCell<Kept>,
    /// Whether a claim took [`SLOW_CLAIM`] or more (then the next one is asked ahead).
    slow: std::sync::atomic::AtomicBool,
}

impl CellQueue {
    /// The queue of `task` over the cells its scan plans to read (`planned`, by path); the
    /// task's other cells were ruled out by its plan, and so were their parts. A part of a
    /// planned cell that does not have its rows is an error.
    pub(crate) fn new(
        transport: Arc<dyn ShuffleTransport>,
        task: &TaskSpec,
        planned: &HashMap<String, PlannedCell>,
    ) -> Result<Self> {
        let unshared = task.cells.len() - task.shared as usize;
        let own = task.cells.iter().enumerate().map(|(i, c)| {
            let part = if i < unshared {
                Origin::Unshared
            } else {
                Origin::Shared
            };
            (c, part)
        });
        // Other tasks' lists in turn: one cell of each, then the next of each.
        let longest = task.steal.iter().map(Vec::len).max().unwrap_or(0);
        let stolen = (0..longest).flat_map(|i| {
            task.steal
                .iter()
                .enumerate()
                .filter_map(move |(v, list)| list.get(i).map(|c| (c, Origin::Stolen(v))))
        });
        let mut next = VecDeque::new();
        let mut pruned = Vec::new();
        for (cell, part) in own.chain(stolen) {
            match resolve(cell, planned)? {
                Some(unit) => next.push_back(Entry {
                    cell: cell.clone(),
                    unit,
                    part,
                }),
                None => pruned.push(cell.clone()),
            }
        }
        Ok(Self {
            transport,
            task: task.key(),
            state: Mutex::new(State {
                next,
                ..State::default()
            }),
            pruned,
            kept: tokio::sync::OnceCell::new(),
            slow: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Asks every claim one cell ahead, as after a slow claim (tests of both ways).
    #[cfg(test)]
    fn claiming_ahead(self) -> Self {
        self.slow.store(true, std::sync::atomic::Ordering::Relaxed);
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next unit this task reads, claimed if it is shared; `None` when there is none
    /// left. Where claims are slow (a remote store's round trip), the claim of the unit after
    /// it is asked for at once, so that it is answered while this one is read.
    pub(crate) async fn next(&self) -> Result<Option<Unit>> {
        loop {
            let (entry, asked) = {
                let mut state = self.state();
                match state.ahead.take() {
                    Some((entry, claim)) => (entry, Some(claim)),
                    None => match Self::pop(&mut state) {
                        Some(entry) => (entry, None),
                        None => return Ok(None),
                    },
                }
            };
            let mine = match (entry.part, asked) {
                (Origin::Unshared, _) => true,
                (_, Some(claim)) => claim.await.map_err(|e| {
                    QueryError::Execution(format!("claiming cell `{}`: {e}", entry.cell))
                })??,
                (_, None) => {
                    let asked = std::time::Instant::now();
                    let mine = self.transport.claim(&self.task, &entry.cell).await?;
                    if asked.elapsed() >= SLOW_CLAIM {
                        self.slow.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    mine
                }
            };
            let mut state = self.state();
            if mine {
                state.read.push(entry.cell);
                self.claim_ahead(&mut state);
                return Ok(Some(entry.unit));
            }
            // The owner or another thief got this far.
            state.ended.insert(entry.part);
        }
    }

    /// The next entry whose part has not ended.
    fn pop(state: &mut State) -> Option<Entry> {
        loop {
            match state.next.pop_front() {
                None => return None,
                Some(e) if state.ended.contains(&e.part) => continue,
                Some(e) => return Some(e),
            }
        }
    }

    /// Asks for the claim of the next entry, if it needs one, none is asked yet, and claims
    /// are slow enough to be worth hiding. A claim asked ahead holds a cell a thief could
    /// otherwise have taken, so where claims are quick (a local folder) none is.
    fn claim_ahead(&self, state: &mut State) {
        if state.ahead.is_some() || !self.slow.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(entry) = Self::pop(state) else {
            return;
        };
        if entry.part == Origin::Unshared {
            state.next.push_front(entry);
            return;
        }
        let transport = Arc::clone(&self.transport);
        let task = self.task.clone();
        let cell = entry.cell.clone();
        let claim = tokio::spawn(async move { Ok(transport.claim(&task, &cell).await?) });
        state.ahead = Some((entry, claim));
    }

    /// For a scan whose partitions must each keep their own cells (their output is sorted,
    /// or partitioned by value): the locations of the task's own cells it holds, claimed
    /// now (all at once), once for every partition. Such a task takes nothing from others;
    /// their owners read them.
    pub(crate) async fn claim_own(&self) -> Kept {
        self.kept
            .get_or_init(|| async {
                let own: Vec<Entry> = {
                    let mut state = self.state();
                    std::mem::take(&mut state.next)
                        .into_iter()
                        .filter(|e| !matches!(e.part, Origin::Stolen(_)))
                        .collect()
                };
                let claims = futures::stream::iter(own)
                    .map(|entry| async move {
                        let mine = entry.part == Origin::Unshared
                            || self.transport.claim(&self.task, &entry.cell).await?;
                        Ok::<_, QueryError>(mine.then_some(entry))
                    })
                    .buffered(CLAIMS_AT_ONCE)
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut state = self.state();
                let mut whole = HashSet::new();
                let mut parts: HashMap<String, (u64, Vec<std::ops::Range<u64>>)> = HashMap::new();
                for entry in claims.into_iter().flatten() {
                    let location = entry.unit.location.to_string();
                    match entry.unit.rows {
                        None => {
                            whole.insert(location);
                        }
                        Some(rows) => parts
                            .entry(location)
                            .or_insert_with(|| (rows.total(), Vec::new()))
                            .1
                            .extend(rows.ranges().iter().cloned()),
                    }
                    state.read.push(entry.cell);
                }
                let mut kept: KeptCells = whole.into_iter().map(|l| (l, None)).collect();
                for (location, (total, ranges)) in parts {
                    if kept.contains_key(&location) {
                        return Err(format!("cell `{location}` is both whole and in parts"));
                    }
                    let rows = RowRanges::new(ranges, total)
                        .ok_or_else(|| format!("parts of cell `{location}` overlap"))?;
                    kept.insert(location, Some(rows));
                }
                Ok(Arc::new(kept))
            })
            .await
            .clone()
    }

    /// Once the task's plan has run: the cells it read, and those it did not need (ruled out
    /// by its plan, or left when the plan stopped reading early: a limit was reached, or a
    /// join found nothing to join with).
    pub(crate) async fn finish(&self) -> (Vec<String>, Vec<String>) {
        let (ahead, left, ended, read) = {
            let mut state = self.state();
            (
                state.ahead.take(),
                std::mem::take(&mut state.next),
                state.ended.clone(),
                state.read.clone(),
            )
        };
        let mut pruned = self.pruned.clone();
        // A cell claimed ahead but not read is this task's, and was not needed.
        if let Some((entry, claim)) = ahead
            && matches!(claim.await, Ok(Ok(true)))
        {
            pruned.push(entry.cell);
        }
        pruned.extend(
            left.into_iter()
                .filter(|e| !ended.contains(&e.part))
                .map(|e| e.cell),
        );
        (read, pruned)
    }
}

/// The unit a task names as `key`: a planned cell (an exact name wins), a part of one, or
/// `None` when the plan ruled the cell out.
fn resolve(key: &str, planned: &HashMap<String, PlannedCell>) -> Result<Option<Unit>> {
    if let Some(cell) = planned.get(key) {
        return Ok(Some(Unit {
            location: cell.location.clone(),
            rows: None,
        }));
    }
    let Some((path, rows)) = parse_part(key) else {
        return Ok(None);
    };
    let Some(cell) = planned.get(path) else {
        return Ok(None);
    };
    let ranges = RowRanges::new(vec![rows.clone()], cell.rows).ok_or_else(|| {
        QueryError::Invalid(format!(
            "part `{key}` asks for rows {}..{} of cell `{path}`, which has {}",
            rows.start, rows.end, cell.rows
        ))
    })?;
    Ok(Some(Unit {
        location: cell.location.clone(),
        rows: Some(ranges),
    }))
}

/// Whether a task must read through a [`CellQueue`]: it shares units, or names a part of a
/// cell (a scan of the whole cell would read rows that are not its own).
pub(crate) fn needs_queue(task: &TaskSpec, planned: &HashMap<String, PlannedCell>) -> bool {
    task.shares()
        || task
            .cells
            .iter()
            .any(|c| !planned.contains_key(c) && parse_part(c).is_some())
}

/// How many units at the front of a task's list of `n` its owner keeps to itself: the
/// front half (the back half is shared), and at least one, so that the coordinator always
/// waits for every task's answer (a task left with nothing to read would answer after the
/// query's objects were removed, leaving its result behind).
pub(crate) fn unshared(n: usize) -> usize {
    (n - n.div_ceil(2)).max(1).min(n)
}

/// How a round's tasks, given `cells` each (of which the first `unshared` are their own),
/// share them: for each task, how many of its cells (those after its unshared ones) others
/// may take, and the others' shared cells it may take once its own are done (one list per
/// other task, each from the back, starting with the next task).
pub(crate) fn share_out(cells: &[Vec<String>], unshared: &[usize]) -> Vec<(u32, Vec<Vec<String>>)> {
    let tails: Vec<Vec<String>> = cells
        .iter()
        .zip(unshared)
        .map(|(c, &u)| c[u.min(c.len())..].iter().rev().cloned().collect())
        .collect();
    (0..cells.len())
        .map(|i| {
            let steal = (1..tails.len())
                .map(|k| tails[(i + k) % tails.len()].clone())
                .filter(|t| !t.is_empty())
                .collect();
            (tails[i].len() as u32, steal)
        })
        .collect()
}

/// A claim this slow (a remote store's round trip) is asked for one cell ahead.
const SLOW_CLAIM: std::time::Duration = std::time::Duration::from_millis(3);

/// How many claims a task asks for at once when it claims its cells up front.
const CLAIMS_AT_ONCE: usize = 16;

#[async_trait::async_trait]
impl SharedCells for CellQueue {
    async fn next(&self) -> Result<Option<Unit>> {
        CellQueue::next(self).await
    }

    async fn claim_own(&self) -> Kept {
        CellQueue::claim_own(self).await
    }
}

#[cfg(test)]
mod tests {
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

    /// Tasks draining their queues in the order `turns` picks (each turn one `next`),
    /// stopping early where `stops` says: the cells read and not needed, per task.
    async fn race(
        sizes: &[usize],
        turns: &[usize],
        stops: &[Option<usize>],
        kept: bool,
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
        if kept {
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
                match queues[i].next().await.unwrap() {
                    Some(_) => taken[i] += 1,
                    None => done[i] = true,
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
            kept in any::<bool>(),
            ahead in any::<bool>(),
            cut in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let none = vec![None; 4];
            for stops in [&none, &stops] {
                let (all, read, pruned) =
                    runtime.block_on(race(&sizes, &turns, stops, kept, ahead, cut));
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
}
