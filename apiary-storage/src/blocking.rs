//! CPU and file work kept off the async threads, or run in place for a deterministic
//! simulation.
//!
//! Encoding a cell, writing a cache file or reading ranges of one blocks its thread, so
//! Apiary runs that work on tokio's blocking pool. A simulation that replays a whole swarm
//! from a seed on one current-thread runtime cannot: when a pool thread finishes is up to
//! the operating system, so which task runs next would vary from run to run. On a thread
//! that holds [`inline_on_this_thread`]'s guard, [`run`] and [`detach`] run the work in
//! place instead, at the point the task reached, and the run repeats exactly.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Work given to [`run`] panicked or was cancelled (its runtime shut down).
#[derive(Debug, thiserror::Error)]
#[error("blocking work did not finish: {0}")]
pub struct Unfinished(String);

/// Starts `f` on tokio's blocking pool at once (not when first polled, like
/// `spawn_blocking`) and returns a future of its result; on a thread that holds
/// [`inline_on_this_thread`]'s guard, runs it to the end in place before returning. A panic
/// in `f` is an [`Unfinished`] error, not a panic of the caller. Must be called within a
/// runtime unless inline.
pub fn run<T, F>(f: F) -> impl Future<Output = Result<T, Unfinished>> + Send + 'static
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let started = if is_inline() {
        Err(catch_unwind(AssertUnwindSafe(f)).map_err(|panic| Unfinished(describe(&panic))))
    } else {
        #[allow(clippy::disallowed_methods)] // the one place that uses the pool
        Ok(tokio::task::spawn_blocking(f))
    };
    async move {
        match started {
            Ok(handle) => handle.await.map_err(|e| Unfinished(e.to_string())),
            Err(finished) => finished,
        }
    }
}

/// Starts `f` on tokio's blocking pool without waiting for it, or runs it in place on a
/// thread that holds [`inline_on_this_thread`]'s guard. Must be called within a runtime
/// unless inline.
pub fn detach<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    if is_inline() {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
            tracing::warn!(error = describe(&panic), "detached blocking work panicked");
        }
        return;
    }
    #[allow(clippy::disallowed_methods)] // the one place that uses the pool
    drop(tokio::task::spawn_blocking(f));
}

/// Whether blocking work runs in place on this thread.
pub fn is_inline() -> bool {
    INLINE.with(Cell::get)
}

/// Makes [`run`] and [`detach`] run their work in place on this thread until the guard is
/// dropped. For a simulation on a current-thread runtime; a node would stall its tasks.
pub fn inline_on_this_thread() -> Inline {
    Inline {
        previous: INLINE.with(|i| i.replace(true)),
    }
}

/// Guard of [`inline_on_this_thread`]: dropping it restores what was set before.
#[derive(Debug)]
#[must_use = "blocking work runs in place only while the guard lives"]
pub struct Inline {
    previous: bool,
}

impl Drop for Inline {
    fn drop(&mut self) {
        INLINE.with(|i| i.set(self.previous));
    }
}

fn describe(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it panicked".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_work_runs_on_the_calling_thread_and_pooled_work_does_not() {
        let here = std::thread::current().id();
        let pooled = run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(pooled, here);
        {
            let _inline = inline_on_this_thread();
            let inline = run(|| std::thread::current().id()).await.unwrap();
            assert_eq!(inline, here);
            let (tx, rx) = std::sync::mpsc::channel();
            detach(move || tx.send(std::thread::current().id()).unwrap());
            assert_eq!(
                rx.try_recv().unwrap(),
                here,
                "detached work ran before detach returned"
            );
        }
        assert!(!is_inline(), "the guard restores the pool");
    }

    #[tokio::test]
    async fn work_starts_before_its_result_is_awaited() {
        for inline in [false, true] {
            let _inline = inline.then(inline_on_this_thread);
            let (tx, rx) = std::sync::mpsc::channel();
            let pending = run(move || tx.send(()).unwrap());
            // Not polled yet: the work runs anyway (a producer feeding a channel that the
            // caller drains before awaiting it relies on this).
            rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
            pending.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_error_of_the_work_not_of_the_caller() {
        let pooled = run(|| -> () { panic!("boom") }).await.unwrap_err();
        assert!(pooled.to_string().contains("did not finish"), "{pooled}");
        let _inline = inline_on_this_thread();
        let inline = run(|| -> () { panic!("boom inline") }).await.unwrap_err();
        assert!(inline.to_string().contains("boom inline"), "{inline}");
    }
}
