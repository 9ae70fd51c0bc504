//! The one Tokio runtime behind every `Apiary` in the process, and how Python waits on it:
//! with the GIL released (other Python threads run), waking every few milliseconds to let
//! Ctrl-C through. An interrupted call cancels its work: the task is aborted, which drops the
//! query or write future. A write dropped before its commit commits nothing; one dropped
//! while its conditional put is in flight may have landed (the caller sees the interrupt,
//! as it would a lost response, and reads the frame's version to know).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::to_py_err;

/// How often a waiting call looks for a pending signal (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The process's runtime: one worker thread per core, started on first use. Node
/// background work (heartbeats, swarm reads, task polling) runs on it while Python is busy
/// elsewhere.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("apiary")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start Apiary's runtime threads: {e}"))
        })
        .as_ref()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.clone()))
}

/// Runs `work` on the runtime and waits for it with the GIL released. A pending
/// KeyboardInterrupt (or any signal handler's exception) cancels the work and is raised.
pub(crate) fn wait<F, T>(py: Python<'_>, work: F) -> PyResult<T>
where
    F: Future<Output = Result<T, apiary::ApiaryError>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = sync_channel(1);
    let task = runtime()?.spawn(async move {
        // The receiver is gone only when the caller was interrupted and stopped waiting.
        let _ = tx.send(work.await);
    });
    let mut rx = rx;
    loop {
        // The receiver goes into the GIL-free closure and comes back (it is Send, not Sync).
        let (received, back) = py.detach(move || (rx.recv_timeout(SIGNAL_CHECK), rx));
        rx = back;
        match received {
            Ok(result) => return result.map_err(|e| to_py_err(py, &e)),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    task.abort();
                    return Err(interrupt);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(crate::errors::internal(
                    py,
                    "the call's task ended without an answer (it panicked); this is a bug in \
                     Apiary: please report it with the call that caused it",
                ));
            }
        }
    }
}

/// Runs `work` to completion on the runtime from a thread that may hold the GIL and has no
/// way to raise (a destructor, interpreter exit): the GIL is released while it runs.
pub(crate) fn finish<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let Ok(rt) = runtime() else { return };
    Python::attach(|py| py.detach(|| rt.block_on(work)));
}
