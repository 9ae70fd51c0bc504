//! The coordinator: assigns a fragment's cells to workers, waits for their results,
//! reassigns what a dead, leaving or slow worker holds, and merges the answers.

mod cleanup;
mod exec;
mod interval;
pub use cleanup::sweep_orphans;
mod output;
mod placement;
mod rounds;
#[cfg(test)]
mod tests;

use interval::result_interval;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::spill::SpillManager;
use tokio_util::task::AbortOnDropHandle;

use super::Cluster;
use super::plan::Fragment;
use crate::error::QueryError;
use crate::session::QueryEngine;

use cleanup::Cleanup;
pub use exec::{DistributedExec, DistributedTable};
use output::Ready;
use rounds::{Attempts, Done, Stage};

/// One task as it ran, for `EXPLAIN ANALYZE`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRun {
    /// Task id.
    pub task_id: u32,
    /// Attempt whose result was used.
    pub attempt: u32,
    /// Node that produced it.
    pub node_id: String,
    /// Cells read (a part of a cell counts as one).
    pub cells: usize,
    /// Of those, cells another task was given and this one took (it finished first).
    pub stolen: usize,
    /// Bytes of those cells (of a part, its share of its cell's bytes).
    pub bytes: u64,
    /// Rows returned.
    pub rows: u64,
    /// Worker's time, in milliseconds.
    pub elapsed_ms: u64,
    /// Of the worker's time, parsing and planning the fragment.
    pub planning_ms: u64,
    /// Whether the worker reused the fragment's optimized plan from an earlier run.
    pub plan_reused: bool,
    /// From handing the task's latest attempt out to holding this result, on the
    /// coordinator's clock: the worker's time plus what the transport added (publishing,
    /// discovery, the result's way back). A late result of an earlier attempt is measured
    /// from the latest hand-out too.
    pub round_trip_ms: u64,
    /// How the result came back: `local` (the coordinator ran it), `storage`, `flight`, or
    /// what another transport calls itself.
    pub via: String,
    /// Cell reads the worker served from its cache, and those that went to storage.
    pub cache: (u64, u64),
    /// Bytes the worker read from storage.
    pub bytes_from_storage: u64,
    /// Why earlier attempts were abandoned.
    pub retried: Vec<String>,
}

/// One execution of a distributed fragment: the rounds, which send each result they
/// accept to the stream of rows.
struct Run {
    fragment: Arc<Fragment>,
    cluster: Cluster,
    engine: QueryEngine,
    runs: Arc<Mutex<Vec<TaskRun>>>,
    phases: Phases,
    query_id: String,
    /// The query's cleanup, owned by the stream of rows: gone once the stream is.
    cleanup: Weak<Cleanup>,
    /// Where accepted results go, then [`Ready::Complete`] (or an error).
    ready: tokio::sync::mpsc::UnboundedSender<Result<Ready, QueryError>>,
    /// Where the rows of tasks this process runs are kept.
    local_rows: LocalRowsPool,
    /// Tasks run (for `EXPLAIN ANALYZE`).
    tasks: datafusion::physical_plan::metrics::Count,
    /// Times the coordinator looked for results (for `EXPLAIN ANALYZE`).
    looks: datafusion::physical_plan::metrics::Count,
}

/// The query's memory pool and spill files, for the rows of tasks the coordinator runs.
#[derive(Clone)]
pub(super) struct LocalRowsPool {
    pool: Arc<dyn MemoryPool>,
    spill: SpillManager,
}

impl LocalRowsPool {
    /// Room for the rows of task `task_id`.
    pub(super) fn rows(&self, task_id: u32) -> output::LocalRows {
        let reservation = MemoryConsumer::new(format!("DistributedExec task {task_id} rows"))
            .with_can_spill(true)
            .register(&self.pool);
        output::LocalRows::new(reservation, self.spill.clone())
    }
}

/// Where the coordinator's time goes, for `EXPLAIN ANALYZE`.
struct Phases {
    /// Assigning the first round's tasks and handing them out (publishing them).
    dispatch: Time,
    /// From then until every unit's rows were in hand (later rounds included).
    wait: Time,
}

impl Run {
    async fn run(&self) -> Result<(), QueryError> {
        self.cluster.maybe_sweep();
        self.cluster.counts.fragment();
        let workers = self.cluster.directory.workers().await?;
        let local = self.cluster.directory.local_node();
        let coordinator = local
            .clone()
            .unwrap_or_else(|| format!("client-{}", std::process::id()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut q = Attempts {
            run: self,
            cleanup: Weak::clone(&self.cleanup),
            published: false,
            renewal: None,
            query_id: self.query_id.clone(),
            coordinator,
            local,
            tasks: Vec::new(),
            round: 0,
            units: self
                .fragment
                .cells
                .iter()
                .map(|c| (c.key(), c.clone()))
                .collect(),
            read: HashSet::new(),
            pruned: HashSet::new(),
            causes: Vec::new(),
            avoid: HashSet::new(),
            local_tasks: tokio::task::JoinSet::new(),
            tx,
        };
        let clock = Arc::clone(&self.cluster.clock);
        let since = |at: Duration| clock.monotonic().saturating_sub(at);
        let dispatching = clock.monotonic();
        q.next_round(self.fragment.cells.clone(), &workers).await?;
        let dispatched = since(dispatching);
        self.phases.dispatch.add_duration(dispatched);

        // Results are looked for at intervals that grow with the wait (see
        // `result_interval`): waiting adds a small share to a query, and a long one costs few
        // requests.
        let started = clock.monotonic();
        let mut poll = result_interval(Duration::ZERO, None, self.cluster.settings.result_poll);
        let mut first_answer = None;
        let mut last_check = clock.monotonic();
        // While it runs, the query is renewed from its first publication on a task of its
        // own (`Attempts::renewal`): a slow listing or a long round here must not delay it.
        while !q.complete() {
            let mut gave_up = false;
            let published = q.published;
            // Where every result is pushed, a look only follows a wake-up, and the timer
            // waits for the next check of the round (dead nodes, deadlines).
            let wait = if published && self.cluster.transport.pushes_results(&self.query_id) {
                self.cluster
                    .settings
                    .result_poll
                    .saturating_sub(since(last_check))
            } else {
                poll
            };
            tokio::select! {
                biased;
                Some((d, rows)) = rx.recv() => gave_up |= q.accept(d, rows)?,
                _ = self.cluster.clock.sleep(wait) => {}
                // A transport that pushes results wakes the wait at once.
                _ = self.cluster.transport.results_arrived(&self.query_id), if published => {}
            }
            while let Ok((d, rows)) = rx.try_recv() {
                gave_up |= q.accept(d, rows)?;
            }
            self.looks.add(1);
            gave_up |= q.collect_remote().await?;
            if first_answer.is_none() && q.tasks.iter().any(|t| matches!(t.stage, Stage::Done(_))) {
                first_answer = Some(since(started));
            }
            poll = result_interval(
                since(started),
                first_answer,
                self.cluster.settings.result_poll,
            );
            let due = since(last_check) >= self.cluster.settings.result_poll;
            if due || gave_up || q.round_over() {
                last_check = clock.monotonic();
                q.advance().await?;
            }
        }
        self.phases.wait.add_duration(since(started));
        let Attempts {
            tasks,
            causes,
            units,
            renewal,
            ..
        } = q;
        let sizes: std::collections::HashMap<String, u64> =
            units.into_iter().map(|(key, c)| (key, c.bytes)).collect();
        let mut runs = Vec::new();
        for t in tasks {
            let retried = causes
                .iter()
                .filter(|(round, _)| *round < t.spec.attempt)
                .map(|(_, cause)| cause.clone())
                .collect();
            let Stage::Done(Done {
                report,
                read,
                round_trip,
            }) = t.stage
            else {
                continue;
            };
            let own: HashSet<&String> = t.spec.cells.iter().collect();
            runs.push(TaskRun {
                task_id: t.spec.task_id,
                attempt: t.spec.attempt,
                node_id: report.node_id,
                cells: read.len(),
                stolen: read.iter().filter(|c| !own.contains(c)).count(),
                bytes: read
                    .iter()
                    .map(|c| sizes.get(c).copied().unwrap_or(0))
                    .sum(),
                rows: report.rows,
                elapsed_ms: report.elapsed_ms,
                planning_ms: report.planning_ms,
                plan_reused: report.plan_reused,
                round_trip_ms: round_trip.as_millis() as u64,
                via: if report.via.is_empty() {
                    "transport".into()
                } else {
                    report.via.clone()
                },
                cache: (report.cache_hits, report.cache_misses),
                bytes_from_storage: report.bytes_from_storage,
                retried,
            });
        }
        self.tasks.add(runs.len());
        *self.runs.lock().unwrap_or_else(|p| p.into_inner()) = runs;
        tracing::debug!(
            query = %self.query_id,
            dispatch_ms = dispatched.as_millis() as u64,
            wait_ms = since(started).as_millis() as u64,
            "distributed fragment ran"
        );
        // Every row is accepted: the query is answered (its removal is a finish, not a
        // cancellation), though its chunks are still being read.
        if let Some(cleanup) = self.cleanup.upgrade() {
            cleanup.answered.store(true, Ordering::Relaxed);
        }
        let _ = self.ready.send(Ok(Ready::Complete));
        // The query's renewal (from its first publication) lives on while the stream reads
        // its chunks, so no sweep takes them. The stream holds this driver and drops it with
        // the query's cleanup when it ends or is dropped; that ends the renewal too.
        let Some(_renewal) = renewal else {
            return Ok(());
        };
        std::future::pending().await
    }
}

impl Run {
    /// Renews query `query_id` every third of the orphan retention until the handle is
    /// dropped (the query ends, or is dropped itself).
    pub(super) fn renew_while_running(
        &self,
        query_id: &str,
        coordinator: &str,
    ) -> AbortOnDropHandle<()> {
        let (transport, clock) = (
            Arc::clone(&self.cluster.transport),
            Arc::clone(&self.cluster.clock),
        );
        let every = self.cluster.settings.orphan_retention / 3;
        let (query_id, coordinator) = (query_id.to_string(), coordinator.to_string());
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                clock.sleep(every).await;
                if let Err(e) = transport.renew(&query_id, &coordinator).await {
                    tracing::warn!(query = %query_id, error = %e, "renewing the query failed");
                }
            }
        }))
    }
}
