//! Shared cells on the worker: the order in which a task reads its split frame's cells, and
//! the claims that make every shared cell read by exactly one task of its round (see the
//! manifest's "Shared cells").

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use apiary_storage::Path;

use super::manifest::{TaskKey, TaskSpec};
use super::transport::ShuffleTransport;
use crate::error::Result;

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
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next cell this task reads (its location), claimed if it is shared; `None` when
    /// there is none left.
    pub(crate) async fn next(&self) -> Result<Option<Path>> {
        loop {
            let entry = {
                let mut state = self.state();
                loop {
                    match state.next.pop_front() {
                        None => return Ok(None),
                        Some(e) if state.ended.contains(&e.part) => continue,
                        Some(e) => break e,
                    }
                }
            };
            let mine = entry.part == Part::Unshared
                || self.transport.claim(&self.task, &entry.cell).await?;
            let mut state = self.state();
            if mine {
                state.read.push(entry.cell);
                return Ok(Some(entry.location));
            }
            state.ended.insert(entry.part);
        }
    }

    /// For a scan whose partitions must each keep their own cells (their output is sorted,
    /// or partitioned by value): the locations of the task's own cells it holds, claimed
    /// now, once for every partition. Such a task takes nothing from others; the others' owners read theirs.
    pub(crate) async fn claim_own(&self) -> Kept {
        self.kept
            .get_or_init(|| async {
                let mut kept = HashSet::new();
                loop {
                    let entry = {
                        let mut state = self.state();
                        match state.next.pop_front() {
                            None => break,
                            Some(e) if matches!(e.part, Part::Stolen(_)) => continue,
                            Some(e) if state.ended.contains(&e.part) => continue,
                            Some(e) => e,
                        }
                    };
                    let mine = entry.part == Part::Unshared
                        || self
                            .transport
                            .claim(&self.task, &entry.cell)
                            .await
                            .map_err(|e| e.to_string())?;
                    let mut state = self.state();
                    if mine {
                        state.read.push(entry.cell);
                        kept.insert(entry.location.to_string());
                    } else {
                        state.ended.insert(entry.part);
                    }
                }
                Ok(Arc::new(kept))
            })
            .await
            .clone()
    }

    /// Once the task's plan has run: the cells it read, and those it did not need (ruled out
    /// by its plan, or left when the plan stopped reading early: a limit was reached, or a
    /// join found nothing to join with).
    pub(crate) fn finish(&self) -> (Vec<String>, Vec<String>) {
        let mut state = self.state();
        let mut pruned = self.pruned.clone();
        let left = std::mem::take(&mut state.next);
        pruned.extend(
            left.into_iter()
                .filter(|e| !state.ended.contains(&e.part))
                .map(|e| e.cell),
        );
        (state.read.clone(), pruned)
    }
}

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
        assert_eq!(qb.finish(), (vec!["b1".into(), "b2".into()], vec![]));
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
        assert_eq!(q.finish().1, ["a2", "b2"]);
        let other = task(1, &["b1", "b2"], 1, vec![]);
        assert!(transport.claim(&other.key(), "b2").await.unwrap());
    }

    #[tokio::test]
    async fn cells_left_when_the_plan_stopped_early_were_not_needed() {
        let transport: Arc<dyn ShuffleTransport> =
            Arc::new(StorageShuffle::new(apiary_storage::memory()));
        let all = ["a1", "a2", "a3", "b1", "b2"];
        let t = task(0, &all[..3], 2, vec![vec!["b2"]]);
        let q = CellQueue::new(Arc::clone(&transport), &t, &planned(&all));
        // A limit was reached after the first cell.
        assert!(q.next().await.unwrap().is_some());
        assert_eq!(
            q.finish(),
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
        assert_eq!(qa.finish(), (vec!["a1".into(), "a2".into()], vec![]));
    }
}
