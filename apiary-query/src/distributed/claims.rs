//! Shared cells on the worker: the order in which a task reads its split frame's cells, and
//! the claims that make every shared cell read by exactly one task of its round (see the
//! manifest's "Shared cells").

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use apiary_storage::Path;

use super::manifest::{TaskKey, TaskSpec};
use super::transport::ShuffleTransport;
use crate::error::{QueryError, Result};
use futures::{StreamExt, TryStreamExt};

/// Which part of a task's order a cell comes from. A lost claim ends its part: the owner
/// reads its cells from the front and thieves from the back, so a lost claim means the
/// others got that far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    /// The task's own cells no one else may read: never claimed.
    Unshared,
    /// The task's own cells others may take.
    Shared,
    /// Another task's shared cells (the index of its list in `steal`).
    Stolen(usize),
}

#[derive(Debug)]
struct Entry {
    cell: String,
    location: Path,
    part: Part,
}

#[derive(Debug, Default)]
struct State {
    next: VecDeque<Entry>,
    /// Parts where a claim was lost.
    ended: HashSet<Part>,
    read: Vec<String>,
    /// The next shared cell, with its claim under way.
    ahead: Option<(Entry, tokio::task::JoinHandle<Result<bool>>)>,
}

/// The cells a task keeps when its scan cannot take cells one at a time (see
/// [`CellQueue::claim_own`]), or why claiming them failed.
type Kept = std::result::Result<Arc<HashSet<String>>, String>;

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
    /// The queue of `task` over the cells its scan plans to read (`planned`: cell path to
    /// object location); the task's other cells were ruled out by its plan.
    pub(crate) fn new(
        transport: Arc<dyn ShuffleTransport>,
        task: &TaskSpec,
        planned: &HashMap<String, Path>,
    ) -> Self {
        let unshared = task.cells.len() - task.shared as usize;
        let own = task.cells.iter().enumerate().map(|(i, c)| {
            let part = if i < unshared {
                Part::Unshared
            } else {
                Part::Shared
            };
            (c, part)
        });
        // Other tasks' lists in turn: one cell of each, then the next of each.
        let longest = task.steal.iter().map(Vec::len).max().unwrap_or(0);
        let stolen = (0..longest).flat_map(|i| {
            task.steal
                .iter()
                .enumerate()
                .filter_map(move |(v, list)| list.get(i).map(|c| (c, Part::Stolen(v))))
        });
        let mut next = VecDeque::new();
        let mut pruned = Vec::new();
        for (cell, part) in own.chain(stolen) {
            match planned.get(cell) {
                Some(location) => next.push_back(Entry {
                    cell: cell.clone(),
                    location: location.clone(),
                    part,
                }),
                None => pruned.push(cell.clone()),
            }
        }
        Self {
            transport,
            task: task.key(),
            state: Mutex::new(State {
                next,
                ..State::default()
            }),
            pruned,
            kept: tokio::sync::OnceCell::new(),
            slow: std::sync::atomic::AtomicBool::new(false),
        }
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

    /// The next cell this task reads (its location), claimed if it is shared; `None` when
    /// there is none left. Where claims are slow (a remote store's round trip), the claim of
    /// the cell after it is asked for at once, so that it is answered while this one is read.
    pub(crate) async fn next(&self) -> Result<Option<Path>> {
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
                (Part::Unshared, _) => true,
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
                return Ok(Some(entry.location));
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
        if entry.part == Part::Unshared {
            state.next.push_front(entry);
            return;
        }
        let transport = Arc::clone(&self.transport);
        let task = self.task.clone();
        let cell = entry.cell.clone();
        let claim = tokio::spawn(async move { transport.claim(&task, &cell).await });
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
                        .filter(|e| !matches!(e.part, Part::Stolen(_)))
                        .collect()
                };
                let claims = futures::stream::iter(own)
                    .map(|entry| async move {
                        let mine = entry.part == Part::Unshared
                            || self.transport.claim(&self.task, &entry.cell).await?;
                        Ok::<_, QueryError>(mine.then_some(entry))
                    })
                    .buffered(CLAIMS_AT_ONCE)
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut state = self.state();
                let mut kept = HashSet::new();
                for entry in claims.into_iter().flatten() {
                    kept.insert(entry.location.to_string());
                    state.read.push(entry.cell);
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

/// How a round's tasks, given `cells` each, share them: for each task, how many of its
/// cells (the back half) others may take, and the others' shared cells it may take once its
/// own are done (one list per other task, each from the back, starting with the next task).
pub(crate) fn share_out(cells: &[Vec<&str>]) -> Vec<(u32, Vec<Vec<String>>)> {
    let tails: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            c[c.len() - c.len().div_ceil(2)..]
                .iter()
                .rev()
                .map(|c| c.to_string())
                .collect()
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::StorageShuffle;
    use crate::distributed::manifest::tests::sample;

    fn planned(cells: &[&str]) -> HashMap<String, Path> {
        cells
            .iter()
            .map(|c| (c.to_string(), Path::from(format!("root/{c}"))))
            .collect()
    }

    async fn drain(q: &CellQueue) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(p) = q.next().await.unwrap() {
            out.push(p.as_ref().trim_start_matches("root/").to_string());
        }
        out
    }

    fn task(id: u32, cells: &[&str], shared: u32, steal: Vec<Vec<&str>>) -> TaskSpec {
        let mut t = sample();
        t.task_id = id;
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
    ) -> (Vec<String>, Vec<Vec<String>>, Vec<Vec<String>>) {
        let transport: Arc<dyn ShuffleTransport> =
            Arc::new(StorageShuffle::new(apiary_storage::memory()));
        let cells: Vec<Vec<String>> = sizes
            .iter()
            .enumerate()
            .map(|(t, &n)| (0..n).map(|i| format!("t{t}/c{i}.parquet")).collect())
            .collect();
        let all: Vec<String> = cells.iter().flatten().cloned().collect();
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        let plan = planned(&names);
        let borrowed: Vec<Vec<&str>> = cells
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let queues: Vec<CellQueue> = share_out(&borrowed)
            .into_iter()
            .enumerate()
            .map(|(i, (shared, steal))| {
                let mut t = task(i as u32, &borrowed[i], shared, vec![]);
                t.steal = steal;
                let q = CellQueue::new(Arc::clone(&transport), &t, &plan);
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
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let none = vec![None; 4];
            for stops in [&none, &stops] {
                let (all, read, pruned) = runtime.block_on(race(&sizes, &turns, stops, kept, ahead));
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
        let qa = CellQueue::new(Arc::clone(&transport), &a, &plan);
        let qb = CellQueue::new(Arc::clone(&transport), &b, &plan);
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
        let q = CellQueue::new(Arc::clone(&transport), &t, &planned(&["a1", "c2"]));
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
        let q = CellQueue::new(Arc::clone(&transport), &t, &planned(&all)).claiming_ahead();
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
        let qb = CellQueue::new(Arc::clone(&transport), &b, &plan);
        assert_eq!(drain(&qb).await, ["b1", "b2", "a4", "a3"]);
        let qa = CellQueue::new(Arc::clone(&transport), &a, &plan);
        let kept = qa.claim_own().await.unwrap();
        let again = qa.claim_own().await.unwrap();
        assert_eq!(kept, again, "claimed once for every partition");
        let mut kept: Vec<&str> = kept.iter().map(String::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["root/a1", "root/a2"]);
        assert_eq!(qa.finish().await, (vec!["a1".into(), "a2".into()], vec![]));
    }
}
