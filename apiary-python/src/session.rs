//! `apiary.Session`: one SQL session of an `Apiary`, whose `USE` and `SET` last as long as
//! it does.

use std::sync::Arc;

use apiary::{QueryResult, SqlSession};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::arrow::{ArrowStream, to_pyarrow_table};
use crate::handle::{ipc_bytes, stream_of};
use crate::runtime::wait;

/// A SQL session of an `Apiary`: `USE` and `SET` last for its lifetime. Safe to share
/// between threads (statements run one at a time).
#[pyclass(frozen, module = "apiary", name = "Session")]
pub struct PySession {
    inner: Arc<tokio::sync::Mutex<SqlSession>>,
}

impl PySession {
    pub(crate) fn new(session: SqlSession) -> Self {
        Self {
            inner: Arc::new(tokio::sync::Mutex::new(session)),
        }
    }

    fn run(&self, py: Python<'_>, query: &str) -> PyResult<QueryResult> {
        let (session, query) = (Arc::clone(&self.inner), query.to_string());
        wait(
            py,
            async move { Ok(session.lock().await.sql(&query).await?) },
        )
    }
}

#[pymethods]
impl PySession {
    /// Runs SQL in this session; the rows as Arrow IPC stream bytes.
    fn sql<'py>(&self, py: Python<'py>, query: &str) -> PyResult<Bound<'py, PyBytes>> {
        let result = self.run(py, query)?;
        ipc_bytes(py, &result)
    }

    /// Runs SQL in this session; the rows as a `pyarrow.Table`.
    fn query<'py>(&self, py: Python<'py>, query: &str) -> PyResult<Bound<'py, PyAny>> {
        let result = self.run(py, query)?;
        to_pyarrow_table(py, stream_of(result))
    }

    /// Runs SQL in this session; the rows as an `ArrowStream`.
    fn sql_arrow(&self, py: Python<'_>, query: &str) -> PyResult<ArrowStream> {
        Ok(stream_of(self.run(py, query)?))
    }
}
