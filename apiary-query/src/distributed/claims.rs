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
    /// How many of the task's units no other task may take (those it plans to read).
    unshared: usize,
    /// How many tasks may read the task's shared units: itself and every task it may
    /// steal from (they share with it in turn).
    sharers: usize,
    kept: tokio::sync::OnceCell<Kept>,
    /// Whether a claim took [`SLOW_CLAIM`] or more (then the next one is asked ahead).
    slow: std::sync::atomic::AtomicBool,
    /// Times claims.
    clock: Arc<dyn apiary_storage::Clock>,
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
        let unshared = next.iter().filter(|e| e.part == Origin::Unshared).count();
        Ok(Self {
            transport,
            task: task.key(),
            state: Mutex::new(State {
                next,
                ..State::default()
            }),
            pruned,
            unshared,
            sharers: task.steal.len() + 1,
            kept: tokio::sync::OnceCell::new(),
            slow: std::sync::atomic::AtomicBool::new(false),
            clock: apiary_storage::SystemClock::shared(),
        })
    }

    /// Times claims on `clock` (the system's by default).
    pub(crate) fn with_clock(mut self, clock: Arc<dyn apiary_storage::Clock>) -> Self {
        self.clock = clock;
        self
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
                    let asked = self.clock.monotonic();
                    let mine = self.transport.claim(&self.task, &entry.cell).await?;
                    if self.clock.monotonic().saturating_sub(asked) >= SLOW_CLAIM {
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

    /// The next units one of a scan's `partitions` reads: while the task's unshared units
    /// last, a run of up to a `partitions`th of them (rounded up; they need no claim, and
    /// a run is read as one scan); then runs of its shared units claimed at once (see
    /// [`Self::shared_run`]); then one unit at a time as [`Self::next`] hands them out;
    /// empty when none is left.
    pub(crate) async fn next_units(&self, partitions: usize) -> Result<Vec<Unit>> {
        {
            let run = self.unshared.div_ceil(partitions.max(1));
            let mut state = self.state();
            let mut units = Vec::new();
            while units.len() < run
                && let Some(entry) = state.next.pop_front()
            {
                if entry.part != Origin::Unshared {
                    state.next.push_front(entry);
                    break;
                }
                state.read.push(entry.cell);
                units.push(entry.unit);
            }
            if !units.is_empty() {
                return Ok(units);
            }
        }
        if let Some(units) = self.shared_run(partitions).await? {
            return Ok(units);
        }
        Ok(self.next().await?.into_iter().collect())
    }

    /// The next run of the task's own shared units, their claims asked all at once and the
    /// units won read as one scan (parts of one cell as one piece): a share of those left
    /// that shrinks as they run out, so a thief that comes for them finds the rest (each
    /// run is a `sharers × partitions`th of what is left, rounded up: guided
    /// self-scheduling). Runs save a scan and a claim's round trip per unit; the last units
    /// go one at a time through [`Self::next`]. `None` when the next unit is not the
    /// task's own shared one, fewer than two are left, or every claim of the run was lost.
    async fn shared_run(&self, partitions: usize) -> Result<Option<Vec<Unit>>> {
        let run: Vec<Entry> = {
            let mut state = self.state();
            if state.ahead.is_some() || state.ended.contains(&Origin::Shared) {
                return Ok(None);
            }
            let left = state
                .next
                .iter()
                .take_while(|e| e.part == Origin::Shared)
                .count();
            let size = left.div_ceil(self.sharers * partitions.max(1));
            if size < 2 {
                return Ok(None);
            }
            state.next.drain(..size).collect()
        };
        let asked = self.clock.monotonic();
        let claims = run.iter().map(|entry| async move {
            self.transport
                .claim(&self.task, &entry.cell)
                .await
                .map_err(|e| QueryError::Execution(format!("claiming cell `{}`: {e}", entry.cell)))
        });
        let won = futures::future::try_join_all(claims).await?;
        if self.clock.monotonic().saturating_sub(asked) >= SLOW_CLAIM {
            self.slow.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut state = self.state();
        let mut units: Vec<Unit> = Vec::with_capacity(run.len());
        for (entry, mine) in run.into_iter().zip(won) {
            if !mine {
                // A thief got this far.
                state.ended.insert(Origin::Shared);
                continue;
            }
            state.read.push(entry.cell);
            match (units.last_mut(), entry.unit) {
                (Some(last), unit) if last.location == unit.location => {
                    *last = joined(last, unit)?;
                }
                (_, unit) => units.push(unit),
            }
        }
        Ok((!units.is_empty()).then_some(units))
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

/// Two units of one cell (parts of it, one after the other in a run) as one.
fn joined(a: &Unit, b: Unit) -> Result<Unit> {
    let rows = match (&a.rows, b.rows) {
        (Some(x), Some(y)) => {
            let ranges = x.ranges().iter().chain(y.ranges()).cloned().collect();
            Some(RowRanges::new(ranges, x.total()).ok_or_else(|| {
                QueryError::Execution(format!("parts of cell `{}` overlap", a.location))
            })?)
        }
        // A whole cell and a part of it cannot both be in one task's list.
        _ => {
            return Err(QueryError::Execution(format!(
                "cell `{}` is both whole and in parts",
                a.location
            )));
        }
    };
    Ok(Unit {
        location: a.location.clone(),
        rows,
    })
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
    async fn next_units(&self, partitions: usize) -> Result<Vec<Unit>> {
        CellQueue::next_units(self, partitions).await
    }

    async fn claim_own(&self) -> Kept {
        CellQueue::claim_own(self).await
    }
}

#[cfg(test)]
mod tests;
