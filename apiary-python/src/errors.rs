//! Rust errors as Python exceptions: one class per [`apiary::ErrorKind`], all under
//! `apiary.ApiaryError` (defined in `apiary/errors.py`, so that kinds can also be the
//! built-in exceptions Python code already catches: `ValueError`, `LookupError`, …). The
//! message is the Rust one: what was wrong and what to do.

use apiary::{ApiaryError, ErrorKind};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The exception class for `kind`.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "InvalidInputError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::Conflict => "ConflictError",
        ErrorKind::Unavailable => "UnavailableError",
        ErrorKind::OutcomeUnknown => "OutcomeUnknownError",
        ErrorKind::Corrupt => "CorruptError",
        ErrorKind::Closed => "ClosedError",
        _ => "InternalError",
    }
}

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || Ok(py.import("apiary.errors")?.unbind()))
        .map(|m| m.bind(py))
}

/// An exception of class `name` with `message`; its `kind` attribute names the kind.
fn raise(py: Python<'_>, name: &str, kind: &str, retryable: bool, message: String) -> PyErr {
    let made = || -> PyResult<PyErr> {
        let class = errors_module(py)?.getattr(name)?.cast_into::<PyType>()?;
        let value = class.call1((message.clone(),))?;
        value.setattr("kind", kind)?;
        value.setattr("retryable", retryable)?;
        Ok(PyErr::from_value(value))
    };
    made().unwrap_or_else(|e| e)
}

/// The Python exception for an Apiary error, with the whole chain of causes in its message.
pub(crate) fn to_py_err(py: Python<'_>, error: &ApiaryError) -> PyErr {
    let kind = error.kind();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    raise(
        py,
        class_name(kind),
        &format!("{kind:?}"),
        kind.is_retryable(),
        message,
    )
}

/// An `InvalidInputError` for input this binding itself refuses (wrong Python types).
pub(crate) fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    raise(
        py,
        "InvalidInputError",
        "InvalidInput",
        false,
        message.into(),
    )
}

/// An `InternalError`: a bug, not the caller's input.
pub(crate) fn internal(py: Python<'_>, message: impl Into<String>) -> PyErr {
    raise(py, "InternalError", "Internal", false, message.into())
}
