//! The worker's side of Flight exchanges: tasks pushed to this process wait in an inbox per
//! node until its worker polls them; each keeps its exchange (a [`Session`]) to send its
//! result, its claims and its end on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_shuffle::{Result, ShuffleError, TaskKey, TaskReport, TaskSpec};
use apiary_storage::ErrorKind;
use arrow_flight::FlightData;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::wire::{Ending, ToCoordinator, message};

/// What the exchange's response stream carries.
pub(crate) type Outgoing = std::result::Result<FlightData, tonic::Status>;

/// How long a worker waits for the coordinator to answer a claim or confirm an end.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Ended tasks remembered, so that a late outcome of one is dropped rather than sent
/// through storage (a coordinator that got it over Flight never looks there).
const REMEMBERED: usize = 4096;

/// One task's exchange, as its worker holds it.
pub(crate) struct Session {
    pub(crate) key: TaskKey,
    tx: mpsc::Sender<Outgoing>,
    /// Whether claims go to the coordinator on this exchange.
    pub(crate) claims_here: bool,
    pub(crate) lz4: bool,
    claims: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
    ends: Mutex<HashMap<u32, oneshot::Sender<()>>>,
    next_claim: AtomicU64,
    next_writer: AtomicU32,
    closed: AtomicBool,
    closing: Notify,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        key: TaskKey,
        tx: mpsc::Sender<Outgoing>,
        claims_here: bool,
        lz4: bool,
    ) -> Self {
        Self {
            key,
            tx,
            claims_here,
            lz4,
            claims: Mutex::default(),
            ends: Mutex::default(),
            next_claim: AtomicU64::new(0),
            next_writer: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        }
    }

    /// Whether the coordinator still holds the exchange.
    pub(crate) fn open(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    /// The exchange is over (its coordinator let go, or a newer exchange of the same task
    /// replaced it): whatever waits on it stops waiting, and a coordinator still reading it
    /// hears that this worker let go.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.try_send(Err(tonic::Status::aborted(format!(
            "the worker let go of task {}'s exchange",
            self.key
        ))));
        self.closing.notify_waiters();
        lock(&self.claims).clear();
        lock(&self.ends).clear();
    }

    fn gone(&self) -> ShuffleError {
        ShuffleError::failed(
            format!(
                "the coordinator's Flight exchange for task {} is gone (the query ended, or \
                 the link broke)",
                self.key
            ),
            ErrorKind::Unavailable,
            "flight exchange closed",
        )
    }

    /// Sends `data`, waiting while the stream is full (back pressure).
    pub(crate) async fn send(&self, data: FlightData) -> Result<()> {
        if !self.open() {
            return Err(self.gone());
        }
        self.tx.send(Ok(data)).await.map_err(|_| self.gone())
    }

    /// Sends `data` if there is room now (a note that may be lost, such as "taken").
    pub(crate) fn offer(&self, data: FlightData) {
        let _ = self.tx.try_send(Ok(data));
    }

    /// A number for a new result of this task.
    pub(crate) fn new_writer(&self) -> u32 {
        self.next_writer.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits for an answer on `rx`, the exchange's end or the timeout.
    async fn answer<T>(&self, rx: oneshot::Receiver<T>, what: &str) -> Result<T> {
        let closing = self.closing.notified();
        tokio::select! {
            biased;
            answer = rx => answer.map_err(|_| self.gone()),
            () = closing => Err(self.gone()),
            () = apiary_storage::time::sleep(ANSWER_TIMEOUT) => Err(ShuffleError::failed(
                format!("the coordinator did not answer {what} for task {} within {ANSWER_TIMEOUT:?}", self.key),
                ErrorKind::Unavailable,
                "flight answer timed out",
            )),
        }
    }

    /// Asks the coordinator whether this task may read `cell`.
    pub(crate) async fn claim(&self, cell: &str) -> Result<bool> {
        let id = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.claims).insert(id, tx);
        self.send(message(
            &ToCoordinator::Claim {
                id,
                cell: cell.to_string(),
            },
            Bytes::new(),
        ))
        .await?;
        self.answer(rx, "a claim").await
    }

    pub(crate) fn claimed(&self, id: u64, held: bool) {
        if let Some(tx) = lock(&self.claims).remove(&id) {
            let _ = tx.send(held);
        }
    }

    /// Sends how `writer`'s run ended and waits until the coordinator has recorded it (so
    /// that, once this returns, collecting the task finds it).
    pub(crate) async fn end(&self, writer: u32, ending: Ending, report: &TaskReport) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.ends).insert(writer, tx);
        self.send(message(
            &ToCoordinator::End {
                writer,
                ending,
                report: Box::new(report.clone()),
            },
            Bytes::new(),
        ))
        .await?;
        self.answer(rx, "the end of a result").await
    }

    pub(crate) fn received(&self, writer: u32) {
        if let Some(tx) = lock(&self.ends).remove(&writer) {
            let _ = tx.send(());
        }
    }
}

/// Tasks pushed to this process, per node, and their exchanges.
#[derive(Default)]
pub(crate) struct Inbox {
    waiting: Mutex<HashMap<String, Vec<TaskSpec>>>,
    sessions: Mutex<HashMap<TaskKey, Arc<Session>>>,
    ended: Mutex<(HashSet<TaskKey>, VecDeque<TaskKey>)>,
    bells: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Inbox {
    /// Queues `task` for its node, wakes the node's worker, and keeps its exchange. The
    /// same attempt pushed again (its coordinator did not hear the first push land) replaces
    /// the older exchange, which is closed, and is queued once.
    pub(crate) fn deliver(&self, task: TaskSpec, session: Arc<Session>) {
        let node = task.node_id.clone();
        let key = task.key();
        if let Some(older) = lock(&self.sessions).insert(key.clone(), session) {
            older.close();
        }
        let mut waiting = lock(&self.waiting);
        let queue = waiting.entry(node.clone()).or_default();
        if !queue.iter().any(|t| t.key() == key) {
            queue.push(task);
        }
        drop(waiting);
        self.bell(&node).notify_one();
    }

    /// Wakes `node`'s worker if it runs in this process (tasks for it went through
    /// storage: a worker here finds them at once instead of at its next poll).
    pub(crate) fn ring(&self, node: &str) {
        if let Some(bell) = lock(&self.bells).get(node) {
            bell.notify_one();
        }
    }

    fn bell(&self, node: &str) -> Arc<Notify> {
        Arc::clone(lock(&self.bells).entry(node.to_string()).or_default())
    }

    /// Returns once tasks were delivered for `node` (at once if some were since the last
    /// wait).
    pub(crate) async fn arrived(&self, node: &str) {
        self.bell(node).notified().await;
    }

    /// The tasks waiting for `node`, each told to its coordinator as taken.
    pub(crate) fn take(&self, node: &str) -> Vec<TaskSpec> {
        let tasks = lock(&self.waiting).remove(node).unwrap_or_default();
        let sessions = lock(&self.sessions);
        for t in &tasks {
            if let Some(s) = sessions.get(&t.key()) {
                s.offer(message(&ToCoordinator::Taken, Bytes::new()));
            }
        }
        tasks
    }

    pub(crate) fn session(&self, key: &TaskKey) -> Option<Arc<Session>> {
        lock(&self.sessions).get(key).cloned()
    }

    /// Whether `key` came over Flight and its exchange is over.
    pub(crate) fn ended(&self, key: &TaskKey) -> bool {
        lock(&self.ended).0.contains(key)
    }

    /// The exchange `session` is over. If it is still its task's exchange (none replaced it),
    /// the task is no longer waiting and late outcomes of it are dropped.
    pub(crate) fn close(&self, session: &Arc<Session>) {
        session.close();
        let key = &session.key;
        {
            let mut sessions = lock(&self.sessions);
            match sessions.get(key) {
                Some(current) if Arc::ptr_eq(current, session) => {
                    sessions.remove(key);
                }
                // Replaced by a newer exchange of the same task: that one goes on.
                _ => return,
            }
        }
        let mut waiting = lock(&self.waiting);
        for tasks in waiting.values_mut() {
            tasks.retain(|t| &t.key() != key);
        }
        waiting.retain(|_, t| !t.is_empty());
        drop(waiting);
        let mut ended = lock(&self.ended);
        if ended.0.insert(key.clone()) {
            ended.1.push_back(key.clone());
            if ended.1.len() > REMEMBERED
                && let Some(old) = ended.1.pop_front()
            {
                ended.0.remove(&old);
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
