//! Arrow across the boundary. In: Arrow IPC stream bytes (the seeds' form), or any object
//! with the Arrow PyCapsule interface (`__arrow_c_stream__`: pyarrow Tables and readers,
//! polars and pandas DataFrames, DuckDB results; `__arrow_c_array__`: a pyarrow RecordBatch),
//! read batch by batch without copies. Out: [`ArrowStream`], which any of those libraries
//! imports through `__arrow_c_stream__`, also without copies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use apiary::apiary_ledger::LedgerError;
use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow_pyarrow::FromPyArrow;
use arrow_schema::{SchemaRef, ffi::FFI_ArrowSchema};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyCapsule;

use crate::errors::invalid;

/// Rows on their way into a frame.
pub(crate) enum Input {
    /// An Arrow IPC stream, checked and decoded by the Rust core.
    Ipc(PyBackedBytes),
    /// Batches read from an Arrow C stream as the write pulls them.
    Stream(ArrowArrayStreamReader),
    /// One batch.
    Batch(RecordBatch),
}

impl Input {
    /// Reads `data`: bytes-like IPC, or an Arrow PyCapsule producer.
    pub(crate) fn extract(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = data.py();
        if data.hasattr("__arrow_c_stream__")? {
            return ArrowArrayStreamReader::from_pyarrow_bound(data)
                .map(Input::Stream)
                .map_err(|e| invalid(py, format!("the Arrow stream could not be opened: {e}")));
        }
        if data.hasattr("__arrow_c_array__")? {
            return RecordBatch::from_pyarrow_bound(data)
                .map(Input::Batch)
                .map_err(|e| invalid(py, format!("the Arrow batch could not be read: {e}")));
        }
        if let Ok(bytes) = data.extract::<PyBackedBytes>() {
            return Ok(Input::Ipc(bytes));
        }
        if data.is_instance_of::<pyo3::types::PyMemoryView>() {
            return Ok(Input::Ipc(data.call_method0("tobytes")?.extract()?));
        }
        let type_name = data
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        Err(invalid(
            py,
            format!(
                "cannot write a `{type_name}`: pass Arrow IPC stream bytes, or an object with \
                 the Arrow PyCapsule interface (a pyarrow Table, RecordBatch or \
                 RecordBatchReader, a polars or pandas DataFrame)"
            ),
        ))
    }

    /// The batches, for the Rust write path (pulled on a blocking thread), until `stop` is
    /// set: a write that was cancelled (Ctrl-C) stops pulling from the caller's reader at the
    /// next batch instead of draining it behind the caller's back.
    pub(crate) fn into_batches(
        self,
        stop: Arc<AtomicBool>,
    ) -> Box<dyn Iterator<Item = Result<RecordBatch, LedgerError>> + Send> {
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, LedgerError>> + Send> = match self
        {
            Input::Ipc(bytes) => Box::new(apiary::ipc::deferred(std::io::Cursor::new(bytes))),
            Input::Stream(reader) => Box::new(reader.map(|batch| {
                batch.map_err(|e| {
                    LedgerError::Invalid(format!(
                        "the Arrow stream failed while it was read: {e}; nothing was written"
                    ))
                })
            })),
            Input::Batch(batch) => Box::new(std::iter::once(Ok(batch))),
        };
        Box::new(batches.take_while(move |_| !stop.load(Ordering::Acquire)))
    }
}

/// Query results that Arrow libraries import without copies: pass it to `pyarrow.table()`,
/// `polars.DataFrame()`, `duckdb.arrow()`, … It can be read any number of times.
#[pyclass(frozen, module = "apiary", name = "ArrowStream")]
pub struct ArrowStream {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
}

impl ArrowStream {
    pub(crate) fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            batches: Arc::new(batches),
        }
    }
}

#[pymethods]
impl ArrowStream {
    /// The Arrow PyCapsule stream interface. `requested_schema` is accepted and ignored
    /// (the interface lets a producer keep its own schema).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let batches: Vec<RecordBatch> = self.batches.as_ref().clone();
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
            batches.into_iter().map(Ok),
            Arc::clone(&self.schema),
        ));
        // The capsule owns the stream; a consumer that imports it moves it out, and the
        // stream left behind is released (a no-op) when the capsule is freed.
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), c"arrow_array_stream")
    }

    /// The Arrow PyCapsule schema interface.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = FFI_ArrowSchema::try_from(self.schema.as_ref())
            .map_err(|e| invalid(py, format!("the result's schema cannot be exported: {e}")))?;
        PyCapsule::new_with_value(py, schema, c"arrow_schema")
    }

    /// Rows in the result.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Columns in the result.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    fn __repr__(&self) -> String {
        format!(
            "ArrowStream({} rows, columns {:?})",
            self.num_rows(),
            self.column_names()
        )
    }
}

/// `stream` as a `pyarrow.Table` (pyarrow imports it through the stream interface).
pub(crate) fn to_pyarrow_table<'py>(
    py: Python<'py>,
    stream: ArrowStream,
) -> PyResult<Bound<'py, PyAny>> {
    let pyarrow = py.import("pyarrow").map_err(|e| {
        pyo3::exceptions::PyImportError::new_err(format!(
            "query() and read_table() return a pyarrow.Table and need pyarrow \
             (`pip install pyarrow`); sql() returns IPC bytes without it ({e})"
        ))
    })?;
    pyarrow.call_method1("table", (Bound::new(py, stream)?,))
}

/// Sets its flag when dropped: with the write future, whether it finished or was cancelled.
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
