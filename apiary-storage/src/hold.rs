//! [`Hold`]: a gate that pauses chosen kinds of request, for tests of a slow or stuck store
//! (see [`InstrumentedStore::with_hold`](crate::InstrumentedStore::with_hold)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The kinds of request a [`Hold`] can pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// GET (whole object or range).
    Get,
    /// HEAD.
    Head,
    /// Unconditional PUT.
    Put,
    /// Conditional PUT.
    ConditionalPut,
    /// LIST.
    List,
}

/// A gate for tests: while closed, requests of the chosen kinds wait (as requests to a slow
/// or stuck store would) until it is opened again. Clones share one gate. Waiters are woken
/// in the order they came (not in the random order of a `watch` channel's shards), so a
/// seeded simulation replays what happens when the gate opens.
#[derive(Debug, Clone)]
pub struct Hold {
    kinds: Arc<[RequestKind]>,
    /// Closed, and how many requests may still pass while it is closed.
    state: Arc<Mutex<(bool, u64)>>,
    changed: Arc<tokio::sync::Notify>,
    waiting: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
}

impl Hold {
    /// An open gate for requests of `kinds`.
    pub fn new(kinds: &[RequestKind]) -> Self {
        Self {
            kinds: kinds.into(),
            state: Arc::default(),
            changed: Arc::default(),
            waiting: Arc::default(),
            passed: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (bool, u64)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes requests of its kinds wait from now on.
    pub fn close(&self) {
        *self.state() = (true, 0);
    }

    /// Lets every waiting and future request through.
    pub fn open(&self) {
        self.state().0 = false;
        self.changed.notify_waiters();
    }

    /// Lets exactly `n` more requests through while the gate stays closed.
    pub fn let_through(&self, n: u64) {
        self.state().1 += n;
        self.changed.notify_waiters();
    }

    /// Requests waiting at the gate now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Requests of its kinds that went through so far.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }

    pub(crate) async fn pass(&self, kind: RequestKind) {
        if !self.kinds.contains(&kind) {
            return;
        }
        let mut counted = false;
        loop {
            // Registered before the state is read, so an opening in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let through = {
                let mut state = self.state();
                let (closed, allowance) = &mut *state;
                if !*closed {
                    true
                } else if *allowance > 0 {
                    *allowance -= 1;
                    true
                } else {
                    false
                }
            };
            if through {
                break;
            }
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::SeqCst);
            }
            changed.await;
        }
        if counted {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.passed.fetch_add(1, Ordering::SeqCst);
    }
}
