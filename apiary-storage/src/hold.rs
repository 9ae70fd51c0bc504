//! [`Hold`]: a gate that pauses chosen kinds of request, for tests of a slow or stuck store
//! (see [`InstrumentedStore::with_hold`](crate::InstrumentedStore::with_hold)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
/// or stuck store would) until it is opened again. Clones share one gate.
#[derive(Debug, Clone)]
pub struct Hold {
    kinds: Arc<[RequestKind]>,
    /// Closed, and how many requests may still pass while it is closed.
    state: Arc<tokio::sync::watch::Sender<(bool, u64)>>,
    waiting: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
}

impl Hold {
    /// An open gate for requests of `kinds`.
    pub fn new(kinds: &[RequestKind]) -> Self {
        Self {
            kinds: kinds.into(),
            state: Arc::new(tokio::sync::watch::Sender::new((false, 0))),
            waiting: Arc::default(),
            passed: Arc::default(),
        }
    }

    /// Makes requests of its kinds wait from now on.
    pub fn close(&self) {
        self.state.send_modify(|(closed, allowance)| {
            *closed = true;
            *allowance = 0;
        });
    }

    /// Lets every waiting and future request through.
    pub fn open(&self) {
        self.state.send_modify(|(closed, _)| *closed = false);
    }

    /// Lets exactly `n` more requests through while the gate stays closed.
    pub fn let_through(&self, n: u64) {
        self.state.send_modify(|(_, allowance)| *allowance += n);
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
        let mut state = self.state.subscribe();
        let mut counted = false;
        loop {
            let mut through = false;
            self.state.send_if_modified(|(closed, allowance)| {
                if !*closed {
                    through = true;
                    false
                } else if *allowance > 0 {
                    *allowance -= 1;
                    through = true;
                    true
                } else {
                    false
                }
            });
            if through {
                break;
            }
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::SeqCst);
            }
            if state.changed().await.is_err() {
                break;
            }
        }
        if counted {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.passed.fetch_add(1, Ordering::SeqCst);
    }
}
