//! Running one task on a worker.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::transport::ResultWriter;
use arrow_array::RecordBatch;
use futures::TryStreamExt;

use super::claims::CellQueue;
use super::manifest::FramePin;
use super::manifest::TaskSpec;
use super::transport::{ShuffleTransport, TaskFailure, TaskOutcome, TaskReport};
use crate::catalog::Pinned;
use crate::error::{QueryError, Result};
use crate::session::{QueryEngine, RunningFragment};
use apiary_ledger::LiveFrame;
use datafusion::physical_plan::ExecutionPlan;

/// How a task ended, for whoever publishes its outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Its rows went through the result writer, which was finished: nothing is left to
    /// publish.
    Written,
    /// No rows, or a failure: this outcome is to be published.
    Outcome(TaskOutcome),
}

/// Runs `task` as a worker does: its rows go out through `transport`'s result writer as
/// they are produced (see [`run_task_into`]).
pub async fn run_task(
    engine: &QueryEngine,
    node_id: &str,
    task: &TaskSpec,
    transport: &Arc<dyn ShuffleTransport>,
) -> (Ended, TaskReport) {
    let schema = match task.expected_schema() {
        Ok(schema) => schema,
        Err(e) => {
            let failure = TaskFailure::new(e.kind(), e.to_string());
            return (
                Ended::Outcome(TaskOutcome::Failed(failure)),
                TaskReport {
                    node_id: node_id.to_string(),
                    ..TaskReport::default()
                },
            );
        }
    };
    let writer = transport.open_result(task, schema);
    run_task_into(engine, node_id, task, transport, writer).await
}

/// Runs `task` with `engine`, writing its rows to `writer` batch by batch as the plan
/// produces them (never all in memory), and returns how it ended: never an error, since a
/// failure is an outcome the coordinator must hear about. The fragment must be one
/// read-only query (the same checks as `sql`), it sees only the frames the task pins (the
/// split frame with only the task's cells), and it is cancelled at the task's timeout. A
/// task that shares cells claims them through `transport` as it reaches them.
pub async fn run_task_into(
    engine: &QueryEngine,
    node_id: &str,
    task: &TaskSpec,
    transport: &Arc<dyn ShuffleTransport>,
    mut writer: Box<dyn ResultWriter + '_>,
) -> (Ended, TaskReport) {
    let clock = Arc::clone(engine.clock());
    let started = clock.monotonic();
    let timeout = Duration::from_millis(task.timeout_ms.max(1));
    let running = execute(engine, task, transport, &mut writer);
    let ran = match apiary_storage::time::timeout(clock.as_ref(), timeout, running).await {
        Ok(ran) => ran,
        Err(_) => Err(QueryError::Execution(format!(
            "the task ran past its timeout of {timeout:?} and was stopped"
        ))),
    };
    let mut report = TaskReport {
        node_id: node_id.to_string(),
        elapsed_ms: clock.monotonic().saturating_sub(started).as_millis() as u64,
        ..TaskReport::default()
    };
    let ended = match ran {
        Ok(ran) => {
            report.rows = ran.rows;
            report.planning_ms = ran.planning.as_millis() as u64;
            report.plan_reused = ran.plan_reused;
            (report.read, report.pruned) = ran.cells;
            (
                report.cache_hits,
                report.cache_misses,
                report.bytes_from_storage,
            ) = ran.reads;
            if report.rows == 0 {
                Ok(Ended::Outcome(TaskOutcome::Empty))
            } else {
                writer
                    .finish(&report)
                    .await
                    .map(|()| Ended::Written)
                    .map_err(QueryError::from)
            }
        }
        Err(e) => Err(e),
    };
    match ended {
        Ok(ended) => (ended, report),
        Err(e) => (
            Ended::Outcome(TaskOutcome::Failed(TaskFailure::new(e.kind(), e.detail()))),
            report,
        ),
    }
}

/// Cache hits, cache misses and bytes from storage of every frame scan in `plan`.
fn reads_of(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> (u64, u64, u64) {
    let mut total = (0, 0, 0);
    if let Some(scan) = plan.downcast_ref::<crate::FrameScanExec>() {
        let (hits, misses, from_storage, _) = scan.reads();
        total = (hits, misses, from_storage);
    }
    for child in plan.children() {
        let (h, m, b) = reads_of(child.as_ref());
        total = (total.0 + h, total.1 + m, total.2 + b);
    }
    total
}

/// What running a task's fragment gave (its rows went to the writer).
struct Ran {
    rows: u64,
    /// Cache hits, cache misses and bytes from storage (see [`reads_of`]).
    reads: (u64, u64, u64),
    /// Time until the plan was ready.
    planning: Duration,
    /// Whether the optimized plan was kept from an earlier run.
    plan_reused: bool,
    /// For a task that shares cells, the cells it read and those its plan ruled out.
    cells: (Vec<String>, Vec<String>),
}

async fn execute(
    engine: &QueryEngine,
    task: &TaskSpec,
    transport: &Arc<dyn ShuffleTransport>,
    writer: &mut Box<dyn ResultWriter + '_>,
) -> Result<Ran> {
    let started = engine.clock().monotonic();
    if let Some(key) = task
        .settings
        .keys()
        .find(|k| !crate::statement::settable(k))
    {
        return Err(QueryError::Invalid(format!(
            "the task sets `{key}`, which is not an option a session may set"
        )));
    }
    let expected = task.expected_schema()?;
    let split = task.split.frame_ref()?;
    let mut shipped = shipped_frames(task);
    let mut pins = HashMap::new();
    pins.insert(
        (split.clone(), task.split.version),
        Pinned {
            version: task.split.version,
            cells: Some(
                task.cells
                    .iter()
                    .chain(task.steal.iter().flatten())
                    .cloned()
                    .collect::<BTreeSet<_>>(),
            ),
            shipped: shipped.remove(&task.split),
        },
    );
    for pin in &task.pins {
        let frame = pin.frame_ref()?;
        let key = (frame, pin.version);
        if pins.contains_key(&key) {
            return Err(QueryError::Invalid(format!(
                "the task pins frame `{}` at version {} twice",
                key.0, key.1
            )));
        }
        pins.insert(
            key,
            Pinned {
                version: pin.version,
                cells: None,
                shipped: shipped.remove(pin),
            },
        );
    }
    let queue: Mutex<Option<Arc<CellQueue>>> = Mutex::default();
    let share = |plan: &Arc<dyn ExecutionPlan>| -> Result<()> {
        let scan = split_scan(plan, &split.to_string(), task.split.version)?;
        let none = HashMap::new();
        let planned = scan.map(|s| s.cells()).unwrap_or(&none);
        if super::claims::needs_queue(task, planned) {
            let q = Arc::new(
                CellQueue::new(Arc::clone(transport), task, planned)?
                    .with_clock(Arc::clone(engine.clock())),
            );
            if let Some(scan) = scan {
                scan.share(Arc::clone(&q) as Arc<dyn crate::exec::SharedCells>)?;
            }
            *queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(q);
        }
        Ok(())
    };
    let RunningFragment {
        plan,
        stream,
        plan_reused,
    } = engine
        .run_fragment(&task.sql, &task.scope, &task.settings, pins, share)
        .await?;
    let planning = engine.clock().monotonic().saturating_sub(started);
    let mut stream = stream;
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await? {
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows() as u64;
        writer.write(coerce(batch, &expected)?).await?;
    }
    tracing::debug!(
        task = %task.key(),
        plan = %datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true),
        "task ran"
    );
    let cells = match queue.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(q) => q.finish().await,
        None => Default::default(),
    };
    Ok(Ran {
        rows,
        reads: reads_of(plan.as_ref()),
        planning,
        plan_reused,
        cells,
    })
}

/// The frames `task` ships, as ledger states by name and version (only a frame shipped at
/// the version the task pins it at is used).
fn shipped_frames(task: &TaskSpec) -> HashMap<&FramePin, Arc<LiveFrame>> {
    task.frames
        .iter()
        .map(|f| {
            let live = LiveFrame {
                incarnation: f.incarnation,
                definition: f.definition.clone(),
                cells: f
                    .cells
                    .iter()
                    .map(|c| (c.path.clone(), c.clone()))
                    .collect(),
            };
            (&f.pin, Arc::new(live))
        })
        .collect()
}

/// The scan of the split frame in a task's plan (`None` when the plan reads none of it).
/// The planner splits only a frame the query scans once, so there is at most one.
fn split_scan<'a>(
    plan: &'a Arc<dyn ExecutionPlan>,
    frame: &str,
    version: u64,
) -> Result<Option<&'a crate::FrameScanExec>> {
    fn find<'a>(
        plan: &'a Arc<dyn ExecutionPlan>,
        frame: &str,
        version: u64,
        out: &mut Vec<&'a crate::FrameScanExec>,
    ) {
        match plan.downcast_ref::<crate::FrameScanExec>() {
            Some(scan) if scan.summary().frame == frame && scan.summary().version == version => {
                out.push(scan)
            }
            _ => plan
                .children()
                .into_iter()
                .for_each(|c| find(c, frame, version, out)),
        }
    }
    let mut found = Vec::new();
    find(plan, frame, version, &mut found);
    match found[..] {
        [] => Ok(None),
        [scan] => Ok(Some(scan)),
        _ => Err(QueryError::Execution(format!(
            "the fragment scans frame `{frame}` {} times; a task can share the cells of one \
             scan only",
            found.len()
        ))),
    }
}

/// `batch` with the expected schema: columns by position, cast where only the
/// representation differs (a view type for a string, say).
pub(crate) fn coerce(
    batch: RecordBatch,
    expected: &arrow_schema::SchemaRef,
) -> Result<RecordBatch> {
    if batch.num_columns() != expected.fields().len() {
        return Err(QueryError::Execution(format!(
            "the fragment returned {} columns where {} were expected",
            batch.num_columns(),
            expected.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(expected.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(std::sync::Arc::clone(c))
            } else {
                arrow_cast::cast(c, f.data_type()).map_err(|e| {
                    QueryError::Execution(format!(
                        "column `{}` is {} where {} was expected: {e}",
                        f.name(),
                        c.data_type(),
                        f.data_type()
                    ))
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(std::sync::Arc::clone(expected), columns).map_err(|e| {
        QueryError::failed(
            format!("the fragment's result: {e}"),
            apiary_storage::ErrorKind::Internal,
            e,
        )
    })
}
