//! The rounds of one distributed query: handing its units out as tasks, taking their
//! outcomes, giving up tasks whose node went away, did not take them or ran past the
//! deadline, and starting the next round over what is left.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::distributed::manifest::{TASK_FORMAT, TaskKey, TaskSpec, columns_of};
use crate::distributed::task::coerce;
use crate::distributed::transport::{Delivered, Rows, TaskOutcome, TaskReport};
use crate::distributed::{MAX_ATTEMPTS, SplitCell, WorkerInfo};
use crate::error::QueryError;

use super::Run;
use super::cleanup::Cleanup;
use super::output::{LocalRows, Ready, run_local};
use super::placement::{assign, cut_for_bees, cut_last};

/// Where a task stands.
pub(super) enum Stage {
    /// Handed out; no outcome yet.
    Running,
    /// Its result is in hand.
    Done(Done),
    /// Given up (it failed, its node went away, or it ran past the deadline): a later
    /// outcome of it is ignored, and a later round reads the cells it held.
    GivenUp,
}

/// A task of the query, in any round.
pub(super) struct Pending {
    pub(super) spec: TaskSpec,
    /// When it was handed out (coordinator's clock).
    pub(super) since: Duration,
    pub(super) stage: Stage,
    /// Whether its worker took it (see [`ShuffleTransport::reports_pickup`]).
    pub(super) taken: bool,
}

/// The result a task delivered (its rows went to the stream of rows).
pub(super) struct Done {
    pub(super) report: TaskReport,
    /// The units (cells and parts) whose rows these are.
    pub(super) read: Vec<String>,
    /// From handing the task out to taking this result.
    pub(super) round_trip: Duration,
}

/// The state of one query while it runs.
///
/// The query runs in rounds. A round hands every unit not yet read to the alive nodes, as
/// tasks that share units where the transport can arbitrate (see the manifest's "Shared
/// cells"): a task that finishes early reads units of one that lags. A unit is a cell or a
/// part of one (see the manifest's "Parts"): a round cuts cells into parts where there are
/// fewer cells than bees, and cuts the last cells of every task that shares, so tasks end
/// together. A round is over when each of its tasks has answered or been given up; the
/// units then neither read nor ruled out by a plan (those a given-up task held) go to the
/// next round, at most [`MAX_ATTEMPTS`] rounds. A result is taken only if none of its units
/// was read already, and a cell once cut is only ever handed out in those parts, so no
/// row is ever counted twice.
pub(super) struct Attempts<'a> {
    pub(super) run: &'a Run,
    pub(super) query_id: String,
    /// Who coordinates (this node's id, or the process's).
    pub(super) coordinator: String,
    /// This process's node id, when it is a node (its tasks run here).
    pub(super) local: Option<String>,
    pub(super) tasks: Vec<Pending>,
    /// The current round (the attempt number of its tasks).
    pub(super) round: u32,
    /// The units that cover the split frame's cells, with their keys: every cell whole, or
    /// in parts once cut.
    pub(super) units: Vec<(String, SplitCell)>,
    /// Units whose rows are in hand (by key).
    pub(super) read: HashSet<String>,
    /// Units a task's plan ruled out (no rows to read).
    pub(super) pruned: HashSet<String>,
    /// Why tasks were given up, in order, with their round.
    pub(super) causes: Vec<(u32, String)>,
    /// The tasks this process runs itself (aborted when the query is dropped).
    pub(super) local_tasks: tokio::task::JoinSet<()>,
    /// Nodes that did not take a task they were given: later rounds leave them out.
    pub(super) avoid: HashSet<String>,
    /// Local tasks report here, with their rows; remote ones through the transport.
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<(Delivered, Option<LocalRows>)>,
    /// The query's cleanup (held by the stream of rows), told when something is published.
    pub(super) cleanup: Weak<Cleanup>,
    /// Whether anything of the query went to the transport.
    pub(super) published: bool,
    /// Renews the query in the transport from its first publication until dropped.
    pub(super) renewal: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

impl Attempts<'_> {
    /// Notes that the query has objects in the transport (to renew and remove).
    fn mark_published(&mut self) {
        self.published = true;
        if self.renewal.is_none() {
            self.renewal = Some(
                self.run
                    .renew_while_running(&self.query_id, &self.coordinator),
            );
        }
        if let Some(cleanup) = self.cleanup.upgrade() {
            cleanup.published.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn is_local(&self, node: &str) -> bool {
        node.is_empty() || self.local.as_deref() == Some(node)
    }

    /// Every unit read or ruled out.
    pub(super) fn complete(&self) -> bool {
        self.left().next().is_none()
    }

    /// The units neither read nor ruled out.
    pub(super) fn left(&self) -> impl Iterator<Item = &SplitCell> {
        self.units
            .iter()
            .filter(|(key, _)| !self.read.contains(key) && !self.pruned.contains(key))
            .map(|(_, c)| c)
    }

    /// Whether every task of the current round answered or was given up.
    pub(super) fn round_over(&self) -> bool {
        !self
            .tasks
            .iter()
            .any(|t| t.spec.attempt == self.round && matches!(t.stage, Stage::Running))
    }

    /// Starts the next round over `cells` on `workers` (this process when there are none).
    pub(super) async fn next_round(
        &mut self,
        cells: Vec<SplitCell>,
        workers: &[WorkerInfo],
    ) -> Result<(), QueryError> {
        self.round += 1;
        let can_cut = self
            .units
            .iter()
            .all(|(_, c)| crate::parts::splittable(&c.path));
        let bees: u32 = workers.iter().map(|w| w.bees.max(1)).sum();
        let min_rows = self.run.cluster.settings.min_part_rows;
        let cells = if can_cut {
            cut_for_bees(cells, bees, min_rows)
        } else {
            cells
        };
        let chosen: Vec<WorkerInfo>;
        let workers = if self.avoid.is_empty() {
            workers
        } else {
            chosen = workers
                .iter()
                .filter(|w| !self.avoid.contains(&w.node_id))
                .cloned()
                .collect();
            &chosen[..]
        };
        let mut shares = assign(&cells, &self.run.fragment.split, workers);
        let sharing = shares.len() > 1 && self.run.cluster.transport.can_claim();
        let sharing = if sharing {
            let unshared: Vec<usize> = shares
                .iter()
                .map(|(_, c)| crate::distributed::claims::unshared(c.len()))
                .collect();
            if can_cut {
                for (_, cells) in &mut shares {
                    cut_last(cells, min_rows);
                }
            }
            let cells: Vec<Vec<String>> = shares
                .iter()
                .map(|(_, c)| c.iter().map(SplitCell::key).collect())
                .collect();
            crate::distributed::claims::share_out(&cells, &unshared)
        } else {
            vec![(0, Vec::new()); shares.len()]
        };
        self.replace_cut(&shares);
        let fragment = &self.run.fragment;
        let mut specs = Vec::with_capacity(shares.len());
        for ((node, cells), (shared, steal)) in shares.into_iter().zip(sharing) {
            // The worker then replays no ledger for what the task reads.
            let frames = fragment.ships(
                cells
                    .iter()
                    .map(|c| c.path.as_str())
                    .chain(steal.iter().flatten().map(String::as_str)),
            );
            let spec = TaskSpec {
                format: TASK_FORMAT,
                query_id: self.query_id.clone(),
                task_id: self.tasks.len() as u32,
                attempt: self.round,
                node_id: node,
                coordinator: self.coordinator.clone(),
                split: fragment.split.clone(),
                bytes: cells.iter().map(|c| c.bytes).sum(),
                shared,
                steal,
                cells: cells.iter().map(SplitCell::key).collect(),
                pins: fragment.pins.clone(),
                sql: fragment.sql.clone(),
                scope: fragment.scope.clone(),
                settings: fragment.settings.clone(),
                schema: columns_of(&fragment.schema),
                timeout_ms: self.run.cluster.settings.task_timeout.as_millis() as u64,
                frames,
            };
            specs.push(spec.clone());
            self.tasks.push(Pending {
                spec,
                since: self.run.cluster.clock.monotonic(),
                stage: Stage::Running,
                taken: false,
            });
        }
        self.dispatch(specs).await
    }

    /// Records the parts this round cut cells into: from now on those cells are read in
    /// these parts only.
    pub(super) fn replace_cut(&mut self, shares: &[(String, Vec<SplitCell>)]) {
        let mut parts: std::collections::HashMap<&str, Vec<&SplitCell>> = Default::default();
        for c in shares.iter().flat_map(|(_, c)| c) {
            if c.part.is_some() {
                parts.entry(c.path.as_str()).or_default().push(c);
            }
        }
        if parts.is_empty() {
            return;
        }
        let units = std::mem::take(&mut self.units);
        for (key, unit) in units {
            match parts.get(unit.path.as_str()) {
                Some(cut) if unit.part.is_none() => {
                    let mut cut = cut.clone();
                    cut.sort_by_key(|c| c.part.as_ref().map(|r| r.start));
                    self.units
                        .extend(cut.into_iter().map(|c| (c.key(), c.clone())));
                }
                _ => self.units.push((key, unit)),
            }
        }
    }

    /// Hands `specs` out: local ones run in this process, the rest go through the transport.
    pub(super) async fn dispatch(&mut self, specs: Vec<TaskSpec>) -> Result<(), QueryError> {
        let (mine, remote): (Vec<TaskSpec>, Vec<TaskSpec>) =
            specs.into_iter().partition(|s| self.is_local(&s.node_id));
        if !remote.is_empty() {
            self.mark_published();
            self.run
                .cluster
                .transport
                .publish_tasks(&self.query_id, &self.coordinator, &remote)
                .await?;
        }
        if mine.iter().any(|s| s.shares()) {
            // Claims are objects of the query: they are removed with it.
            self.mark_published();
        }
        for spec in mine {
            let engine = self.run.engine.clone();
            let transport = Arc::clone(&self.run.cluster.transport);
            let tx = self.tx.clone();
            let me = self
                .local
                .clone()
                .unwrap_or_else(|| spec.coordinator.clone());
            let rows = self.run.local_rows.rows(spec.task_id);
            // Held by the query: a query dropped (an error, a dropped stream, Ctrl-C) aborts
            // its local tasks.
            self.local_tasks.spawn(async move {
                let _ = tx.send(run_local(&engine, &me, &spec, &transport, rows).await);
            });
        }
        Ok(())
    }

    /// Takes an outcome; returns whether it gave a task up (it failed). An outcome of a
    /// task already done or given up is ignored, and so is a result with a cell read
    /// already (the task is then given up: its cells are read again if still needed).
    pub(super) fn accept(
        &mut self,
        d: Delivered,
        local: Option<LocalRows>,
    ) -> Result<bool, QueryError> {
        let schema = &self.run.fragment.schema;
        let counts_all = counts_every_result();
        let Some(t) = self.tasks.iter_mut().find(|t| {
            t.spec.key() == d.key
                && (matches!(t.stage, Stage::Running)
                    || counts_all && matches!(t.stage, Stage::GivenUp))
        }) else {
            return Ok(false);
        };
        let (report, ready) = match d.outcome {
            TaskOutcome::Running => {
                t.taken = true;
                return Ok(false);
            }
            TaskOutcome::Rows(rows) => match local {
                Some(local) => (d.report, Some(Ready::Local(local))),
                None => {
                    // The rows in hand are checked (and shaped) now, once; chunks as they
                    // are read.
                    let Rows { batches, chunks } = rows;
                    let checked = batches
                        .into_iter()
                        .map(|b| coerce(b, schema))
                        .collect::<Result<Vec<_>, _>>();
                    let batches = match checked {
                        Ok(batches) => batches,
                        Err(e) => {
                            // That attempt failed; its cells go to the next round.
                            give_up(
                                t,
                                &mut self.causes,
                                &self.run.cluster.counts,
                                format!("its result cannot be read: {e}"),
                            );
                            return Ok(true);
                        }
                    };
                    let rows = Rows { batches, chunks };
                    (d.report, Some(Ready::Remote(rows)))
                }
            },
            TaskOutcome::Empty => (d.report, None),
            TaskOutcome::Failed(cause) => {
                let node = if d.report.node_id.is_empty() {
                    t.spec.node_id.clone()
                } else {
                    d.report.node_id.clone()
                };
                if !cause.retryable {
                    // Every attempt would fail the same way: the query fails now, as it
                    // would have locally.
                    let (task_id, cells) = (t.spec.task_id, t.spec.cells.clone());
                    let message = format!(
                        "{} (task {task_id} of query {}, on {node})",
                        cause.message, self.query_id
                    );
                    t.stage = Stage::GivenUp;
                    self.run.cluster.counts.given_up();
                    self.causes.push((t.spec.attempt, message.clone()));
                    self.record_abandoned(task_id, cells);
                    return Err(match cause.kind {
                        apiary_storage::ErrorKind::InvalidInput => QueryError::Invalid(message),
                        kind => QueryError::failed(message, kind, cause),
                    });
                }
                give_up(
                    t,
                    &mut self.causes,
                    &self.run.cluster.counts,
                    format!("failed on {node}: {cause}"),
                );
                return Ok(true);
            }
        };
        // A task that shares nothing reads all its cells (older workers report none).
        let (read, pruned) = if t.spec.shares() {
            (report.read.clone(), report.pruned.clone())
        } else {
            (t.spec.cells.clone(), Vec::new())
        };
        let named: HashSet<&String> = t
            .spec
            .cells
            .iter()
            .chain(t.spec.steal.iter().flatten())
            .collect();
        let foreign = read.iter().chain(&pruned).find(|c| !named.contains(c));
        let twice = read
            .iter()
            .find(|c| self.read.contains(*c))
            .filter(|_| !counts_all);
        if twice.is_some() {
            self.run.cluster.counts.duplicate_read();
        }
        if let Some(cell) = foreign.or(twice) {
            let cause = format!(
                "its result from {} holds cell `{cell}`, which it was not given or which was \
                 read already",
                report.node_id
            );
            give_up(t, &mut self.causes, &self.run.cluster.counts, cause);
            return Ok(true);
        }
        self.read.extend(read.iter().cloned());
        self.pruned.extend(pruned);
        if let Some(ready) = ready {
            // The stream of rows may be gone (the query was dropped): the rounds then stop.
            let _ = self.run.ready.send(Ok(ready));
        }
        t.stage = Stage::Done(Done {
            report,
            read,
            round_trip: self.run.cluster.clock.monotonic().saturating_sub(t.since),
        });
        Ok(false)
    }

    /// Outcomes of remote tasks published so far; returns whether a task was given up.
    pub(super) async fn collect_remote(&mut self) -> Result<bool, QueryError> {
        if !self.published {
            return Ok(false);
        }
        let wanted: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|t| {
                let wanted = matches!(t.stage, Stage::Running)
                    || counts_every_result() && matches!(t.stage, Stage::GivenUp);
                wanted && !self.is_local(&t.spec.node_id)
            })
            .map(|t| t.spec.key())
            .collect();
        if wanted.is_empty() {
            return Ok(false);
        }
        let delivered = match self
            .run
            .cluster
            .transport
            .collect(&self.query_id, &wanted)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(query = %self.query_id, error = %e, "collecting results failed; retrying");
                return Ok(false);
            }
        };
        let mut gave_up = false;
        for d in delivered {
            gave_up |= self.accept(d, None)?;
        }
        Ok(gave_up)
    }

    /// Gives up the current round's tasks whose node is gone or that ran past the
    /// deadline; once the round is over, starts the next one over the cells still to read,
    /// or fails the query after [`MAX_ATTEMPTS`] rounds.
    pub(super) async fn advance(&mut self) -> Result<(), QueryError> {
        let alive = match self.run.cluster.directory.workers().await {
            Ok(w) => w,
            Err(e) if !self.round_over() => {
                tracing::warn!(error = %e, "reading the swarm failed");
                return Ok(());
            }
            Err(_) => Vec::new(), // the next round runs here, in the coordinator
        };
        let idle: std::collections::HashMap<&str, u32> = alive
            .iter()
            .map(|w| (w.node_id.as_str(), w.idle_bees))
            .collect();
        let deadline = self.run.cluster.settings.task_timeout + Duration::from_secs(5);
        let pickup = self
            .run
            .cluster
            .transport
            .reports_pickup()
            .then_some(self.run.cluster.settings.pickup_timeout);
        let local = self.local.clone();
        let now = self.run.cluster.clock.monotonic();
        for t in self
            .tasks
            .iter_mut()
            .filter(|t| matches!(t.stage, Stage::Running))
        {
            let node = t.spec.node_id.as_str();
            let here = node.is_empty() || local.as_deref() == Some(node);
            let waiting = now.saturating_sub(t.since);
            let cause = if !here && !idle.contains_key(node) {
                format!("node {node} is no longer available (dead, suspect or leaving)")
            } else if waiting > deadline {
                format!("node {node} ran past the task deadline")
            } else if !here
                && !t.taken
                && pickup.is_some_and(|p| waiting > p)
                && idle.get(node).is_some_and(|&bees| bees > 0)
            {
                // A node busy with other work takes its tasks when a bee is free; one with
                // an idle bee that has not taken the task in this long is hung, or cannot
                // read it. Later rounds of this query leave it out.
                self.avoid.insert(node.to_string());
                format!(
                    "node {node} did not take the task within {waiting:.1?} although it had an \
                     idle bee (is it hung, or running another version of Apiary?)"
                )
            } else {
                continue;
            };
            give_up(t, &mut self.causes, &self.run.cluster.counts, cause);
        }
        if !self.round_over() || self.complete() {
            return Ok(());
        }
        let left: Vec<SplitCell> = self.left().cloned().collect();
        if self.round >= MAX_ATTEMPTS {
            return Err(self.abandon(&left));
        }
        self.next_round(left, &alive).await
    }

    /// Records the query's failure to read `left` and returns the error naming it.
    pub(super) fn abandon(&self, left: &[SplitCell]) -> QueryError {
        let split = &self.run.fragment.split;
        let cells: Vec<String> = left.iter().map(SplitCell::key).collect();
        // The last round's first given-up task names the failure.
        let task_id = self
            .tasks
            .iter()
            .rev()
            .find(|t| matches!(t.stage, Stage::GivenUp))
            .map_or(0, |t| t.spec.task_id);
        self.record_abandoned(task_id, cells.clone());
        let mut shown = cells;
        if shown.len() > 5 {
            let more = shown.len() - 5;
            shown.truncate(5);
            shown.push(format!("and {more} more"));
        }
        QueryError::Execution(format!(
            "task {task_id} of query {} (frame {}.{}.{} v{}, cells {}) failed {} times: {}",
            self.query_id,
            split.hive,
            split.r#box,
            split.frame,
            split.version,
            shown.join(", "),
            self.round,
            self.causes
                .iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

impl Attempts<'_> {
    /// Keeps task `task_id` (which held `cells`) among the coordinator's abandoned tasks,
    /// with every cause so far.
    pub(super) fn record_abandoned(&self, task_id: u32, cells: Vec<String>) {
        let split = &self.run.fragment.split;
        self.run
            .cluster
            .abandoned
            .record(crate::distributed::Abandoned {
                query_id: self.query_id.clone(),
                task_id,
                frame: format!("{}.{}.{}", split.hive, split.r#box, split.frame),
                version: split.version,
                cells,
                causes: self.causes.iter().map(|(_, c)| c.clone()).collect(),
            });
    }
}

/// Gives `t` up: a later outcome of it is ignored, and the cells it held go to the next
/// round. `cause` is kept, with the round, for the query's error and `EXPLAIN ANALYZE`.
fn give_up(
    t: &mut Pending,
    causes: &mut Vec<(u32, String)>,
    counts: &crate::distributed::CoordinatorCounts,
    cause: impl std::fmt::Display,
) {
    t.stage = Stage::GivenUp;
    counts.given_up();
    causes.push((
        t.spec.attempt,
        format!(
            "task {} (round {}): {cause}",
            t.spec.task_id, t.spec.attempt
        ),
    ));
}

/// Whether the bug planted as [`apiary_storage::planted::DOUBLE_COUNTED_RESULT`] is on: the
/// coordinator then takes outcomes of attempts it gave up and results holding cells read
/// already (always false outside tests).
fn counts_every_result() -> bool {
    apiary_storage::planted::is_planted(apiary_storage::planted::DOUBLE_COUNTED_RESULT)
}
