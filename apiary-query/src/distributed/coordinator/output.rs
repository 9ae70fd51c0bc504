//! The coordinator's side of results: tasks' rows are yielded as each task's result is
//! accepted, read a chunk at a time; a local task's rows are kept in the query's memory
//! pool and spill to disk past it. Nothing holds a whole result in memory.

use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::execution::SpillFile;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::Count;
use datafusion::physical_plan::spill::{SpillManager, get_record_batch_memory_size};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio_util::task::AbortOnDropHandle;

use super::cleanup::Cleanup;
use crate::distributed::Ended;
use crate::distributed::ShuffleError;
use crate::distributed::task::coerce;
use crate::distributed::transport::{
    Delivered, ResultWriter, Rows, ShuffleTransport, TaskFailure, TaskOutcome, TaskReport,
};
use crate::error::QueryError;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;

/// Chunks of a remote result read ahead of the one being yielded.
const READ_AHEAD: usize = 2;

/// A task's rows, accepted by the coordinator and ready to be yielded.
pub(super) enum Ready {
    /// A remote task's: some in hand, the rest in chunks the transport reads.
    Remote(Rows),
    /// A task this process ran: kept here, in memory and spill files.
    Local(LocalRows),
    /// Every result was sent: the rows end after those sent before.
    Complete,
}

/// Rows of a task the coordinator ran itself, held in the query's memory pool; past what
/// the pool grants they are spilled to the query's scratch directory, run by run.
pub(crate) struct LocalRows {
    held: Vec<RecordBatch>,
    reservation: MemoryReservation,
    spills: Vec<Arc<dyn SpillFile>>,
    manager: SpillManager,
}

impl LocalRows {
    pub(super) fn new(reservation: MemoryReservation, manager: SpillManager) -> Self {
        Self {
            held: Vec::new(),
            reservation,
            spills: Vec::new(),
            manager,
        }
    }

    fn push(&mut self, batch: RecordBatch) -> DfResult<()> {
        let size = get_record_batch_memory_size(&batch);
        if self.reservation.try_grow(size).is_ok() {
            self.held.push(batch);
            return Ok(());
        }
        // The pool is full: what is held goes to disk, with this batch, as one run.
        self.held.push(batch);
        let held = std::mem::take(&mut self.held);
        if let Some(file) = self
            .manager
            .spill_record_batch_and_finish(&held, "a distributed query's local task rows")?
        {
            self.spills.push(file);
        }
        self.reservation.free();
        Ok(())
    }

    /// The rows: first the spilled runs (each file opened when its turn comes), then those
    /// in memory (whose reservation goes when the stream does).
    fn into_stream(self) -> BoxStream<'static, DfResult<RecordBatch>> {
        let manager = self.manager;
        let runs = futures::stream::iter(self.spills)
            .map(move |file| manager.read_spill_as_stream(file, None))
            .try_flatten();
        let reservation = self.reservation;
        let held = futures::stream::iter(self.held).map(move |batch| {
            let _accounted = &reservation;
            Ok(batch)
        });
        runs.chain(held).boxed()
    }
}

/// A result writer for a task the coordinator runs itself: rows go into [`LocalRows`],
/// which the finished writer leaves in `slot`.
pub(super) struct LocalWriter {
    pub(super) rows: Option<LocalRows>,
    pub(super) slot: Arc<Mutex<Option<LocalRows>>>,
}

#[async_trait]
impl ResultWriter for LocalWriter {
    async fn write(&mut self, batch: RecordBatch) -> apiary_shuffle::Result<()> {
        let rows = self.rows.as_mut().ok_or_else(|| {
            ShuffleError::Invalid("a finished result was written to again".into())
        })?;
        rows.push(batch).map_err(|e| {
            let e = QueryError::from(e);
            ShuffleError::failed(
                format!("keeping a local task's rows failed: {e}"),
                e.kind(),
                e,
            )
        })
    }

    async fn finish(mut self: Box<Self>, _report: &TaskReport) -> apiary_shuffle::Result<()> {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = self.rows.take();
        Ok(())
    }
}

/// Turns accepted results into the coordinator's stream of rows.
pub(super) struct Output {
    pub(super) schema: SchemaRef,
    /// The fragment's schema (rows are checked against it) and the projection applied.
    pub(super) fragment_schema: SchemaRef,
    pub(super) projection: Option<Vec<usize>>,
    pub(super) transport: Arc<dyn ShuffleTransport>,
    pub(super) query_id: String,
    /// Rows yielded (for `EXPLAIN ANALYZE`).
    pub(super) rows: Count,
    /// The query's pool, where chunks read and not yet yielded are accounted.
    pub(super) chunks: MemoryReservation,
}

/// What the stream of rows holds while it runs.
struct State {
    ready: tokio::sync::mpsc::UnboundedReceiver<Result<Ready, QueryError>>,
    current: Option<BoxStream<'static, DfResult<RecordBatch>>>,
    output: Arc<Output>,
    ended: bool,
    /// Removes the query's objects when the stream is dropped (its chunks are read until
    /// then).
    _cleanup: Arc<Cleanup>,
    /// The rounds, stopped when the stream is dropped.
    _driver: AbortOnDropHandle<()>,
}

impl Output {
    /// The stream of rows: each result `ready` gives, as it comes, until the driver that
    /// sends them ends (or sends an error).
    pub(super) fn stream(
        self,
        ready: tokio::sync::mpsc::UnboundedReceiver<Result<Ready, QueryError>>,
        cleanup: Arc<Cleanup>,
        driver: AbortOnDropHandle<()>,
    ) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let state = State {
            ready,
            current: None,
            output: Arc::new(self),
            ended: false,
            _cleanup: cleanup,
            _driver: driver,
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            loop {
                if st.ended {
                    return None;
                }
                if let Some(current) = st.current.as_mut() {
                    match current.next().await {
                        Some(Ok(batch)) => match st.output.shape(batch) {
                            Ok(batch) => return Some((Ok(batch), st)),
                            Err(e) => {
                                st.ended = true;
                                return Some((Err(e), st));
                            }
                        },
                        Some(Err(e)) => {
                            st.ended = true;
                            return Some((Err(e), st));
                        }
                        None => st.current = None,
                    }
                }
                match st.ready.recv().await {
                    Some(Ok(Ready::Complete)) => return None,
                    Some(Ok(ready)) => match st.output.rows_of(ready) {
                        Ok(rows) => st.current = Some(rows),
                        Err(e) => {
                            st.ended = true;
                            return Some((Err(e), st));
                        }
                    },
                    Some(Err(e)) => {
                        st.ended = true;
                        return Some((Err(e.into()), st));
                    }
                    // The rounds stopped without saying they were complete (a panic):
                    // the rows so far are not the answer.
                    None => {
                        st.ended = true;
                        let e = DataFusionError::Execution(
                            "the distributed query's coordinator stopped before every result \
                             was in"
                                .into(),
                        );
                        return Some((Err(e), st));
                    }
                }
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    /// The rows of one accepted result, as a stream.
    fn rows_of(&self, ready: Ready) -> DfResult<BoxStream<'static, DfResult<RecordBatch>>> {
        match ready {
            Ready::Complete => Ok(futures::stream::empty().boxed()),
            Ready::Local(rows) => Ok(rows.into_stream()),
            Ready::Remote(Rows { batches, chunks }) => {
                let transport = Arc::clone(&self.transport);
                let query_id = self.query_id.clone();
                let pool = self.chunks.new_empty();
                let chunks = futures::stream::iter(chunks)
                    .map(move |chunk| {
                        let transport = Arc::clone(&transport);
                        let query_id = query_id.clone();
                        let held = pool.new_empty();
                        async move {
                            let batches = transport
                                .read_chunk(&query_id, &chunk)
                                .await
                                .map_err(|e| DataFusionError::from(QueryError::from(e)))?;
                            // In the query's pool until its last row is yielded.
                            held.grow(batches.iter().map(get_record_batch_memory_size).sum());
                            Ok::<_, DataFusionError>((batches, held))
                        }
                    })
                    .buffered(READ_AHEAD)
                    .map_ok(|(batches, held)| {
                        futures::stream::iter(batches).map(move |batch| {
                            let _accounted = &held;
                            Ok(batch)
                        })
                    })
                    .try_flatten();
                Ok(chunks
                    .chain(futures::stream::iter(batches.into_iter().map(Ok)))
                    .boxed())
            }
        }
    }

    /// A row batch as the coordinator's plan reads it: the fragment's schema, projected.
    fn shape(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let batch = coerce(batch, &self.fragment_schema).map_err(DataFusionError::from)?;
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        self.rows.add(batch.num_rows());
        Ok(batch)
    }
}

/// Runs `spec`, a task of this process's own share, as a worker would (holding a bee of
/// this node, its rows into `rows`); returns its outcome and, when it has rows, them.
pub(super) async fn run_local(
    engine: &crate::session::QueryEngine,
    me: &str,
    spec: &crate::distributed::TaskSpec,
    transport: &Arc<dyn ShuffleTransport>,
    rows: LocalRows,
) -> (Delivered, Option<LocalRows>) {
    let key = spec.key();
    let delivered = |outcome, report: TaskReport| Delivered {
        key: key.clone(),
        outcome,
        report: TaskReport {
            via: "local".into(),
            ..report
        },
    };
    // A bee of this node, held while the task runs, as a worker's task holds one.
    let _bee = match engine.budget.admit_task().await {
        Ok(bee) => bee,
        Err(e) => {
            let failed = TaskOutcome::Failed(TaskFailure::new(e.kind(), e.detail()));
            return (delivered(failed, TaskReport::default()), None);
        }
    };
    let slot = Arc::new(Mutex::new(None));
    let writer = Box::new(LocalWriter {
        rows: Some(rows),
        slot: Arc::clone(&slot),
    });
    // A panic in the engine is this task's failure, not a hang.
    let ran = AssertUnwindSafe(crate::distributed::run_task_into(
        engine, me, spec, transport, writer,
    ))
    .catch_unwind()
    .await;
    match ran {
        Ok((Ended::Written, report)) => {
            let rows = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            (delivered(TaskOutcome::Rows(Rows::default()), report), rows)
        }
        Ok((Ended::Outcome(outcome), report)) => (delivered(outcome, report), None),
        Err(panic) => {
            let failed = TaskOutcome::Failed(TaskFailure::new(
                apiary_storage::ErrorKind::Internal,
                format!("the task panicked: {}", panic_message(&panic)),
            ));
            (delivered(failed, TaskReport::default()), None)
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
