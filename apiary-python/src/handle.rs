//! `apiary.Apiary`: the Rust [`apiary::Apiary`] API with the seeds'
//! names, arguments and result keys. Every call waits on the shared runtime with the GIL
//! released; results are plain Python values (dicts, lists, bytes) or Arrow objects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apiary::apiary_ledger::{FrameDefinition, FrameRef, WriteMode};
use apiary::apiary_storage::StorageUri;
use apiary::{ApiaryOptions, DEFAULT_STORAGE, NodeOptions, QueryResult};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Serialize;

use crate::args::{frame_ref, frame_schema, partition_columns, retention, storage_text};
use crate::arrow::{ArrowStream, Input, StopOnDrop, to_pyarrow_table};
use crate::runtime::{finish, wait};
use crate::session::PySession;

/// Handles whose node is running, so that interpreter exit can leave the swarm cleanly
/// (`atexit` calls [`shutdown_all`]).
static RUNNING: Mutex<Option<HashMap<u64, apiary::Apiary>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn running() -> std::sync::MutexGuard<'static, Option<HashMap<u64, apiary::Apiary>>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Leaves the swarm with every node still running in this process (registered with
/// `atexit` by the package).
#[pyfunction]
pub(crate) fn shutdown_all() {
    let nodes: Vec<apiary::Apiary> = running()
        .as_mut()
        .map(|m| m.drain().map(|(_, ap)| ap).collect())
        .unwrap_or_default();
    if nodes.is_empty() {
        return;
    }
    finish(async move {
        for ap in nodes {
            if let Err(e) = ap.shutdown().await {
                warn_on_stderr(&e.to_string());
            }
        }
    });
}

/// A shutdown that fails where nothing can raise (exit, garbage collection) is reported on
/// stderr, as Python reports exceptions in destructors.
fn warn_on_stderr(message: &str) {
    eprintln!("apiary: leaving the swarm failed: {message}");
}

/// `value` as plain Python objects (dicts, lists, str, int, float, bool, None).
fn to_python<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(|e| crate::errors::internal(py, e.to_string()))
}

pub(crate) fn ipc_bytes<'py>(
    py: Python<'py>,
    result: &QueryResult,
) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = result
        .to_ipc_stream()
        .map_err(|e| crate::errors::to_py_err(py, &e.into()))?;
    Ok(PyBytes::new(py, &bytes))
}

pub(crate) fn stream_of(result: QueryResult) -> ArrowStream {
    ArrowStream::new(result.schema(), result.batches().to_vec())
}

/// A handle on an Apiary storage root, and (after `start()`) a node of its swarm.
///
/// `storage` is a folder, `file://...`, `memory://`, `s3://bucket/prefix`, `gs://...` or
/// `az://...` (default: `APIARY_STORAGE`, else `./apiary-data`); S3 credentials and
/// endpoint come from the `AWS_*` variables when the handle is made. Opening waits at most
/// `APIARY_STORAGE_TIMEOUT` (60 s) for the storage to answer, and Ctrl-C interrupts it.
/// `state_dir` is the folder of this node's local state (its kept id, cell cache, scratch;
/// default `APIARY_STATE_DIR`, else `~/.local/state/apiary`): two nodes on one machine need
/// one each. `node_id` names the node (default `APIARY_NODE_ID`, else an id generated once
/// and kept in the state folder).
///
///     ap = Apiary("production", storage="s3://apiary-data/prod")
///     ap.start()
///     print(ap.swarm_status()["alive"])
#[pyclass(frozen, module = "apiary", name = "Apiary")]
pub struct PyApiary {
    inner: apiary::Apiary,
    id: u64,
    /// The options the node was started with (for `status()`).
    node: Mutex<Option<NodeOptions>>,
    /// The constructor's `state_dir` and `node_id`, over the environment's.
    state_dir: Option<std::path::PathBuf>,
    node_id: Option<String>,
}

impl PyApiary {
    fn write(
        &self,
        py: Python<'_>,
        frame: FrameRef,
        data: &Bound<'_, PyAny>,
        mode: WriteMode,
    ) -> PyResult<Py<PyAny>> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let batches = Input::extract(data)?.into_batches(Arc::clone(&stop));
        let ap = self.inner.clone();
        let result = wait(py, async move {
            let _stop = StopOnDrop(stop);
            ap.write_batches_to_frame(&frame, batches, mode).await
        })?;
        Ok(to_python(py, &result)?.unbind())
    }

    fn read(
        &self,
        py: Python<'_>,
        frame: FrameRef,
        partition_filter: Option<HashMap<String, String>>,
        version: Option<u64>,
    ) -> PyResult<QueryResult> {
        let ap = self.inner.clone();
        let filter: Vec<(String, String)> =
            partition_filter.unwrap_or_default().into_iter().collect();
        wait(py, async move {
            let pairs: Vec<(&str, &str)> = filter
                .iter()
                .map(|(c, v)| (c.as_str(), v.as_str()))
                .collect();
            let batches = ap
                .read_from_frame_at(&frame.hive, &frame.r#box, &frame.frame, version, &pairs)
                .await?;
            let schema = match batches.first() {
                Some(b) => b.schema(),
                None => {
                    let info = ap
                        .describe_frame(&frame.hive, &frame.r#box, &frame.frame)
                        .await?;
                    Arc::new(info.definition.schema.to_arrow()?)
                }
            };
            Ok(QueryResult::new(schema, batches))
        })
    }

    fn query_result(&self, py: Python<'_>, query: &str) -> PyResult<QueryResult> {
        let (ap, query) = (self.inner.clone(), query.to_string());
        wait(py, async move { ap.sql(&query).await })
    }

    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        running().as_mut().map(|m| m.remove(&self.id));
        let ap = self.inner.clone();
        wait(py, async move { ap.shutdown().await })?;
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

impl Drop for PyApiary {
    /// A handle collected while its node runs leaves the swarm (its heartbeat is removed).
    fn drop(&mut self) {
        let still_running = running().as_mut().and_then(|m| m.remove(&self.id));
        if let Some(ap) = still_running {
            finish(async move {
                if let Err(e) = ap.shutdown().await {
                    warn_on_stderr(&e.to_string());
                }
            });
        }
    }
}

#[pymethods]
impl PyApiary {
    /// Opens the storage (see the class documentation for every argument).
    #[new]
    #[pyo3(
        signature = (name = "apiary".to_string(), storage = None, *, state_dir = None, node_id = None),
        text_signature = "(name='apiary', storage=None, *, state_dir=None, node_id=None)"
    )]
    fn new(
        py: Python<'_>,
        name: String,
        storage: Option<Bound<'_, PyAny>>,
        state_dir: Option<std::path::PathBuf>,
        node_id: Option<String>,
    ) -> PyResult<Self> {
        let storage = storage.as_ref().map(storage_text).transpose()?;
        // Interruptible: Ctrl-C stops the wait for a storage that does not answer.
        let inner = wait(py, async move {
            let uri = match storage {
                Some(text) => StorageUri::parse(&text)?,
                None => StorageUri::from_env_or(DEFAULT_STORAGE)?,
            };
            let mut options = ApiaryOptions::from_env(uri)?;
            options.name = name;
            apiary::Apiary::open_with(options).await
        })?;
        Ok(Self {
            inner,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            node: Mutex::new(None),
            state_dir,
            node_id,
        })
    }

    /// Joins the swarm as a node (options from the `APIARY_*` variables, and the
    /// constructor's `state_dir` and `node_id`): the first
    /// heartbeat is durable when this returns. The node leaves on `shutdown()`, when the
    /// handle is garbage-collected, or at interpreter exit.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let mut options = NodeOptions::from_env().map_err(|e| crate::errors::to_py_err(py, &e))?;
        if let Some(dir) = &self.state_dir {
            options.state_dir = dir.clone();
        }
        if let Some(id) = &self.node_id {
            options.node_id = Some(id.clone());
        }
        let (ap, started) = (self.inner.clone(), options.clone());
        wait(py, async move { ap.start_with(started).await })?;
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(options);
        running()
            .get_or_insert_with(HashMap::new)
            .insert(self.id, self.inner.clone());
        Ok(())
    }

    /// Leaves the swarm gracefully (running work finishes, the heartbeat is removed). A
    /// no-op when not started.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.stop(py)
    }

    /// This node: `name`, `node_id`, `running`, `cores`, `memory_gb`, `bees`, `storage`,
    /// `storage_uri`, `tasks_run`, `tasks_failed`, `cache`.
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let started = self.node.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let options = match started {
            Some(options) => options,
            None => NodeOptions::from_env().map_err(|e| crate::errors::to_py_err(py, &e))?,
        };
        Ok(to_python(py, &self.inner.status(&options))?.unbind())
    }

    /// The swarm: `alive`, `total_bees`, `nodes` (each with `node_id`, `state`, `cores`,
    /// `memory_gb`, `bees`, `idle_bees`, `temperature`, …) and `problems`.
    fn swarm_status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let ap = self.inner.clone();
        let status = wait(py, async move { ap.swarm_status().await })?;
        Ok(to_python(py, &status)?.unbind())
    }

    /// The running node's colony: `temperature`, `regulation`, `setpoint`, `signals`,
    /// `abandoned_tasks`, `recent_abandoned`, `throttled`, `refused`, `bees`.
    fn colony_status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let status = self
            .inner
            .colony_status()
            .map_err(|e| crate::errors::to_py_err(py, &e))?;
        Ok(to_python(py, &status)?.unbind())
    }

    /// The running node's bees: `bee_id`, busy or idle, memory used and budget.
    fn bee_status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let bees = self
            .inner
            .bee_status()
            .map_err(|e| crate::errors::to_py_err(py, &e))?;
        Ok(to_python(py, &bees)?.unbind())
    }

    /// Asks node `node_id` to drain and leave; it does so on its next poll.
    fn drain_node(&self, py: Python<'_>, node_id: String) -> PyResult<()> {
        let ap = self.inner.clone();
        let by = format!("python-{}", std::process::id());
        wait(py, async move { ap.drain_node(&node_id, &by).await })
    }

    /// Creates a hive (database). True when created, False when it already existed.
    fn create_hive(&self, py: Python<'_>, hive: String) -> PyResult<bool> {
        let ap = self.inner.clone();
        let created = wait(py, async move { ap.create_hive(&hive).await })?;
        Ok(created == apiary::apiary_ledger::Created::New)
    }

    /// Creates a box (schema) in a hive. True when created, False when it already existed.
    #[pyo3(signature = (hive, r#box))]
    fn create_box(&self, py: Python<'_>, hive: String, r#box: String) -> PyResult<bool> {
        let ap = self.inner.clone();
        let created = wait(py, async move { ap.create_box(&hive, &r#box).await })?;
        Ok(created == apiary::apiary_ledger::Created::New)
    }

    /// Creates a frame (table). `schema` maps column names to types (`"int64"`, `"utf8"`,
    /// `"timestamp(us, UTC)"`, `"decimal128(10, 2)"`, …) or is an Arrow schema; columns are
    /// nullable except the partition columns. Creating an identical frame again returns
    /// False; a different definition raises `ConflictError`.
    #[pyo3(signature = (hive, r#box, frame, schema, partition_by = None))]
    fn create_frame(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
        schema: &Bound<'_, PyAny>,
        partition_by: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let frame = frame_ref(py, &hive, &r#box, &frame)?;
        let schema = frame_schema(schema)?;
        let partition_by = partition_columns(py, partition_by)?;
        let ap = self.inner.clone();
        let created = wait(py, async move {
            let definition = FrameDefinition::new(schema?, partition_by)?;
            ap.create_frame_with(&frame, definition).await
        })?;
        Ok(created == apiary::apiary_ledger::Created::New)
    }

    /// Hive names.
    fn list_hives(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let ap = self.inner.clone();
        let hives = wait(py, async move { ap.list_hives().await })?;
        Ok(hives.into_iter().map(|h| h.name).collect())
    }

    /// The box names of a hive.
    fn list_boxes(&self, py: Python<'_>, hive: String) -> PyResult<Vec<String>> {
        let ap = self.inner.clone();
        let boxes = wait(py, async move { ap.list_boxes(&hive).await })?;
        Ok(boxes.into_iter().map(|b| b.name).collect())
    }

    /// The frame names of a box.
    #[pyo3(signature = (hive, r#box))]
    fn list_frames(&self, py: Python<'_>, hive: String, r#box: String) -> PyResult<Vec<String>> {
        let ap = self.inner.clone();
        let frames = wait(py, async move { ap.list_frames(&hive, &r#box).await })?;
        Ok(frames
            .into_iter()
            .map(|f| f.name.rsplit('.').next().unwrap_or(&f.name).to_string())
            .collect())
    }

    /// A frame at its newest version: `name`, `version`, `definition` (schema and
    /// partitioning), `cells`, `rows`, `bytes`.
    #[pyo3(signature = (hive, r#box, frame))]
    fn describe_frame(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
    ) -> PyResult<Py<PyAny>> {
        let ap = self.inner.clone();
        let info = wait(
            py,
            async move { ap.describe_frame(&hive, &r#box, &frame).await },
        )?;
        Ok(to_python(py, &info)?.unbind())
    }

    /// Drops a hive; without `cascade` it must be empty.
    #[pyo3(signature = (hive, cascade = false))]
    fn drop_hive(&self, py: Python<'_>, hive: String, cascade: bool) -> PyResult<()> {
        let ap = self.inner.clone();
        wait(py, async move { ap.drop_hive(&hive, cascade).await })
    }

    /// Drops a box; without `cascade` it must be empty.
    #[pyo3(signature = (hive, r#box, cascade = false))]
    fn drop_box(&self, py: Python<'_>, hive: String, r#box: String, cascade: bool) -> PyResult<()> {
        let ap = self.inner.clone();
        wait(py, async move { ap.drop_box(&hive, &r#box, cascade).await })
    }

    /// Drops a frame.
    #[pyo3(signature = (hive, r#box, frame))]
    fn drop_frame(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
    ) -> PyResult<()> {
        let ap = self.inner.clone();
        wait(
            py,
            async move { ap.drop_frame(&hive, &r#box, &frame).await },
        )
    }

    /// Appends rows in one commit: Arrow IPC stream bytes, or any Arrow PyCapsule producer
    /// (pyarrow Table, RecordBatch or RecordBatchReader, polars or pandas DataFrame), read
    /// without copies. Columns are matched by name; anything that does not fit the frame is
    /// refused and nothing is committed. Returns `version`, `cells_written`, `rows_written`,
    /// `bytes_written`, `duration_ms`.
    #[pyo3(signature = (hive, r#box, frame, data))]
    fn write_to_frame(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let frame = frame_ref(py, &hive, &r#box, &frame)?;
        self.write(py, frame, data, WriteMode::Append)
    }

    /// Replaces a frame's rows with `data`, atomically (same inputs as `write_to_frame`).
    #[pyo3(signature = (hive, r#box, frame, data))]
    fn overwrite_frame(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let frame = frame_ref(py, &hive, &r#box, &frame)?;
        self.write(py, frame, data, WriteMode::Overwrite)
    }

    /// A frame's rows at its newest version (or `version`) as Arrow IPC stream bytes;
    /// with `partition_filter` (`{"country": "us"}`), only the matching partitions.
    #[pyo3(signature = (hive, r#box, frame, partition_filter = None, *, version = None))]
    fn read_from_frame<'py>(
        &self,
        py: Python<'py>,
        hive: String,
        r#box: String,
        frame: String,
        partition_filter: Option<HashMap<String, String>>,
        version: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let frame = frame_ref(py, &hive, &r#box, &frame)?;
        let result = self.read(py, frame, partition_filter, version)?;
        ipc_bytes(py, &result)
    }

    /// `read_from_frame` as a `pyarrow.Table`, without copies.
    #[pyo3(signature = (hive, r#box, frame, partition_filter = None, *, version = None))]
    fn read_table<'py>(
        &self,
        py: Python<'py>,
        hive: String,
        r#box: String,
        frame: String,
        partition_filter: Option<HashMap<String, String>>,
        version: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let frame = frame_ref(py, &hive, &r#box, &frame)?;
        let result = self.read(py, frame, partition_filter, version)?;
        to_pyarrow_table(py, stream_of(result))
    }

    /// A frame by its `"hive.box.frame"` name as a `pyarrow.Table`, at its newest version
    /// or at `version` (what `SELECT * FROM name VERSION AS OF version` reads). A version
    /// past vacuum's retention raises `NotFoundError` naming the oldest retained one.
    #[pyo3(signature = (name, version = None, *, partition_filter = None))]
    fn read_frame<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        version: Option<u64>,
        partition_filter: Option<HashMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let frame = FrameRef::parse(name)
            .map_err(|e| crate::errors::to_py_err(py, &apiary::ApiaryError::from(e)))?;
        let result = self.read(py, frame, partition_filter, version)?;
        to_pyarrow_table(py, stream_of(result))
    }

    /// A frame's commits, oldest first, by its `"hive.box.frame"` name: dicts with
    /// `version`, `committed_at_ms`, `operation`, `writer`, `cells_added`,
    /// `cells_removed`, `rows_added`, `rows_removed`.
    fn history(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let frame = FrameRef::parse(name)
            .map_err(|e| crate::errors::to_py_err(py, &apiary::ApiaryError::from(e)))?;
        let ap = self.inner.clone();
        let commits = wait(py, async move {
            ap.frame_history(&frame.hive, &frame.r#box, &frame.frame)
                .await
        })?;
        Ok(to_python(py, &commits)?.unbind())
    }

    /// Runs SQL (`;`-separated statements; the last one's rows are returned) and returns
    /// the rows as Arrow IPC stream bytes, for `pyarrow.ipc.open_stream`. Read-only: DDL,
    /// DML and file access are refused, naming the call to use instead.
    fn sql<'py>(&self, py: Python<'py>, query: &str) -> PyResult<Bound<'py, PyBytes>> {
        let result = self.query_result(py, query)?;
        ipc_bytes(py, &result)
    }

    /// `sql`, with the rows as a `pyarrow.Table` (imported without copies).
    fn query<'py>(&self, py: Python<'py>, query: &str) -> PyResult<Bound<'py, PyAny>> {
        let result = self.query_result(py, query)?;
        to_pyarrow_table(py, stream_of(result))
    }

    /// `sql`, with the rows as an `ArrowStream` that pyarrow, polars or DuckDB import
    /// without copies (pyarrow not needed).
    fn sql_arrow(&self, py: Python<'_>, query: &str) -> PyResult<ArrowStream> {
        Ok(stream_of(self.query_result(py, query)?))
    }

    /// A SQL session: `USE hive[.box]` and `SET` in it last until it is dropped.
    fn session(&self, py: Python<'_>) -> PyResult<PySession> {
        let mut session = self
            .inner
            .sql_session()
            .map_err(|e| crate::errors::to_py_err(py, &e))?;
        // How the node's running queries (the console, `apiary.system.queries`) name it.
        session.set_client("python");
        Ok(PySession::new(session))
    }

    /// Deletes the frame's cell files no version within `retention` needs (seconds or a
    /// `timedelta`; default 1 hour). Returns `files_deleted`, `bytes_deleted`, `files_kept`.
    #[pyo3(signature = (hive, r#box, frame, retention = None))]
    fn vacuum(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
        retention: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let retention = self::retention(retention.as_ref())?;
        let ap = self.inner.clone();
        let result = wait(py, async move {
            ap.vacuum(&hive, &r#box, &frame, retention).await
        })?;
        Ok(to_python(py, &result)?.unbind())
    }

    /// Rewrites the frame's small cells into cells near the target size.
    #[pyo3(signature = (hive, r#box, frame))]
    fn compact(
        &self,
        py: Python<'_>,
        hive: String,
        r#box: String,
        frame: String,
    ) -> PyResult<Py<PyAny>> {
        let ap = self.inner.clone();
        let result = wait(py, async move { ap.compact(&hive, &r#box, &frame).await })?;
        Ok(to_python(py, &result)?.unbind())
    }

    /// The storage URI.
    #[getter]
    fn storage(&self) -> String {
        self.inner.storage().to_string()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let started = self
            .node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        format!(
            "Apiary(storage={:?}, started={})",
            self.inner.storage().to_string(),
            if started { "True" } else { "False" }
        )
    }
}
