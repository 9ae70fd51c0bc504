//! `apiary._native`: the Python binding's extension module. The package `apiary` (in
//! `python/`) re-exports it with the exception classes and type stubs.

mod args;
mod arrow;
mod errors;
mod handle;
mod runtime;
mod session;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<handle::PyApiary>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<arrow::ArrowStream>()?;
    m.add_function(wrap_pyfunction!(handle::shutdown_all, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_STORAGE", apiary::DEFAULT_STORAGE)?;
    Ok(())
}
