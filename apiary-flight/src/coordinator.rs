//! The coordinator's side of Flight exchanges: one reader per task attempt takes the
//! worker's messages (taken, result bytes, claims, ends) into the query's state, where
//! `collect` finds them without a request anywhere.
//!
//! A result's chunks stay in memory while the process holds less than its budget of them,
//! and go to temporary files beyond it, so a large result needs neither memory nor storage.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apiary_shuffle::{Delivered, Result, Rows, ShuffleError, TaskKey, TaskOutcome, TaskReport};
use apiary_storage::ErrorKind;
use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::wire::{Ending, ToCoordinator, ToWorker, message, parse};
use crate::worker::lock;

/// One chunk of a result, as received.
enum Chunk {
    Memory(Vec<Bytes>),
    File(tempfile::NamedTempFile),
}

/// A task attempt whose exchange this process holds.
struct Remote {
    node: String,
    taken: bool,
    /// Results being received, by writer: their chunks in order.
    writers: HashMap<u32, Vec<(Chunk, usize)>>,
    /// The result kept (the first writer to end), its chunks, and its outcome.
    ended: Option<(Delivered, Vec<(Chunk, usize)>)>,
    /// Why the exchange broke before an end.
    broken: Option<String>,
    to_worker: mpsc::Sender<FlightData>,
}

/// One query's exchanges and in-memory claims.
#[derive(Default)]
pub(crate) struct QueryState {
    tasks: HashMap<TaskKey, Remote>,
    /// Whether anything of the query went through storage (its tasks, results or claims).
    pub(crate) used_storage: bool,
    /// Rounds (attempt numbers) whose claims this process arbitrates.
    pub(crate) memory_rounds: HashSet<u32>,
    /// Who holds each cell, per round.
    claims: HashMap<(u32, String), u32>,
    readers: Vec<tokio::task::AbortHandle>,
}

/// A query this process coordinates.
#[derive(Default)]
pub(crate) struct Query {
    pub(crate) state: Mutex<QueryState>,
    pub(crate) arrived: Notify,
}

impl Drop for Query {
    fn drop(&mut self) {
        for r in &lock(&self.state).readers {
            r.abort();
        }
    }
}

/// Every query this process coordinates over Flight.
pub(crate) struct Coordinator {
    queries: Mutex<HashMap<String, Arc<Query>>>,
    /// Chunk bytes held in memory, over every query.
    in_memory: AtomicUsize,
    memory_budget: usize,
}

/// Chunk names of Flight results start with this (storage chunk names never do).
const CHUNK_PREFIX: &str = "flight:";

/// Whether `name` names a chunk of a Flight result (not one of the storage shuffle's).
pub(crate) fn names_chunk(name: &str) -> bool {
    name.starts_with(CHUNK_PREFIX)
}

impl Coordinator {
    pub(crate) fn new(memory_budget: usize) -> Self {
        Self {
            queries: Mutex::default(),
            in_memory: AtomicUsize::new(0),
            memory_budget,
        }
    }

    pub(crate) fn query(&self, query_id: &str) -> Option<Arc<Query>> {
        lock(&self.queries).get(query_id).cloned()
    }

    pub(crate) fn query_or_new(&self, query_id: &str) -> Arc<Query> {
        Arc::clone(lock(&self.queries).entry(query_id.to_string()).or_default())
    }

    /// Forgets the query: its readers stop (dropping their exchanges, which tells the
    /// workers), its chunks go. Returns it, if it was known.
    pub(crate) fn remove(&self, query_id: &str) -> Option<Arc<Query>> {
        let q = lock(&self.queries).remove(query_id)?;
        let mut st = lock(&q.state);
        for r in st.readers.drain(..) {
            r.abort();
        }
        let mut freed = 0;
        for remote in std::mem::take(&mut st.tasks).into_values() {
            freed += held(remote.writers.values().flatten());
            if let Some((_, chunks)) = &remote.ended {
                freed += held(chunks.iter());
            }
        }
        drop(st);
        self.in_memory.fetch_sub(
            freed.min(self.in_memory.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Some(q)
    }

    /// Records a task attempt whose exchange is open, and starts reading it.
    pub(crate) fn track(
        self: &Arc<Self>,
        query: &Arc<Query>,
        key: TaskKey,
        node: String,
        to_worker: mpsc::Sender<FlightData>,
        stream: tonic::Streaming<FlightData>,
        on_break: impl FnOnce(&str) + Send + 'static,
    ) {
        let mut st = lock(&query.state);
        st.tasks.insert(
            key.clone(),
            Remote {
                node,
                taken: false,
                writers: HashMap::new(),
                ended: None,
                broken: None,
                to_worker,
            },
        );
        let reader = tokio::spawn(read(
            Arc::clone(self),
            Arc::downgrade(query),
            key,
            stream,
            on_break,
        ));
        st.readers.push(reader.abort_handle());
    }

    /// Records a task attempt that could not be handed out over Flight, as failed (another
    /// attempt goes through storage).
    pub(crate) fn failed_to_open(&self, query: &Query, key: TaskKey, node: String, why: String) {
        let (tx, _) = mpsc::channel(1);
        lock(&query.state).tasks.insert(
            key,
            Remote {
                node,
                taken: false,
                writers: HashMap::new(),
                ended: None,
                broken: Some(why),
                to_worker: tx,
            },
        );
        query.arrived.notify_one();
    }

    /// The outcomes known now among `wanted`; the keys this process does not hold over
    /// Flight are returned for the storage to answer.
    pub(crate) fn collect(
        &self,
        query: &Query,
        wanted: &[TaskKey],
    ) -> (Vec<Delivered>, Vec<TaskKey>) {
        let st = lock(&query.state);
        let mut found = Vec::new();
        let mut elsewhere = Vec::new();
        for key in wanted {
            let Some(remote) = st.tasks.get(key) else {
                elsewhere.push(key.clone());
                continue;
            };
            let delivered = if let Some((d, _)) = &remote.ended {
                d.clone()
            } else if let Some(why) = &remote.broken {
                Delivered {
                    key: key.clone(),
                    outcome: TaskOutcome::Failed(apiary_shuffle::TaskFailure {
                        kind: ErrorKind::Unavailable,
                        retryable: true,
                        message: why.clone(),
                    }),
                    report: TaskReport {
                        node_id: remote.node.clone(),
                        via: "flight".into(),
                        ..TaskReport::default()
                    },
                }
            } else if remote.taken {
                Delivered {
                    key: key.clone(),
                    outcome: TaskOutcome::Running,
                    report: TaskReport::default(),
                }
            } else {
                continue;
            };
            found.push(delivered);
        }
        (found, elsewhere)
    }

    /// Decodes chunk `name` of a result of `query`.
    pub(crate) async fn read_chunk(&self, query: &Query, name: &str) -> Result<Vec<RecordBatch>> {
        let bad = || {
            ShuffleError::Invalid(format!(
                "`{name}` is not a chunk of a Flight result of this query"
            ))
        };
        let parts: Vec<&str> = name
            .strip_prefix(CHUNK_PREFIX)
            .ok_or_else(bad)?
            .split(':')
            .collect();
        let [task, attempt, n] = parts[..] else {
            return Err(bad());
        };
        let (task_id, attempt, n): (u32, u32, usize) = (
            task.parse().map_err(|_| bad())?,
            attempt.parse().map_err(|_| bad())?,
            n.parse().map_err(|_| bad())?,
        );
        let source = {
            let st = lock(&query.state);
            let remote = st
                .tasks
                .iter()
                .find(|(k, _)| k.task_id == task_id && k.attempt == attempt)
                .map(|(_, r)| r)
                .ok_or_else(bad)?;
            let (_, chunks) = remote.ended.as_ref().ok_or_else(bad)?;
            match &chunks.get(n).ok_or_else(bad)?.0 {
                Chunk::Memory(parts) => Err(parts.concat()),
                Chunk::File(f) => Ok(f.path().to_path_buf()),
            }
        };
        let bytes = match source {
            Err(bytes) => bytes,
            Ok(path) => tokio::fs::read(&path).await.map_err(|e| {
                ShuffleError::failed(
                    format!(
                        "reading the spilled Flight chunk {} failed: {e}",
                        path.display()
                    ),
                    ErrorKind::Unavailable,
                    e,
                )
            })?,
        };
        let (_, batches) = apiary_shuffle::result::decode(name, &bytes)?;
        Ok(batches)
    }

    /// Adds `bytes` to chunk `chunk` of a writer's result; a chunk left behind (a later one
    /// started) spills to a file when the process holds more than its budget.
    async fn receive(
        &self,
        query: &Query,
        key: &TaskKey,
        writer: u32,
        chunk: u32,
        bytes: Bytes,
    ) -> Result<()> {
        let len = bytes.len();
        let spill = {
            let mut st = lock(&query.state);
            let Some(remote) = st.tasks.get_mut(key) else {
                return Ok(());
            };
            if remote.ended.is_some() {
                return Ok(()); // another writer's result was kept
            }
            let chunks = remote.writers.entry(writer).or_default();
            let chunk = chunk as usize;
            if chunk > chunks.len() {
                return Err(ShuffleError::Invalid(format!(
                    "task {key}'s result skipped from chunk {} to {chunk}",
                    chunks.len()
                )));
            }
            if chunk == chunks.len() {
                chunks.push((Chunk::Memory(Vec::new()), 0));
            }
            match &mut chunks[chunk] {
                (Chunk::Memory(parts), size) => {
                    parts.push(bytes);
                    *size += len;
                }
                (Chunk::File(_), _) => {
                    return Err(ShuffleError::Invalid(format!(
                        "task {key}'s result went back to chunk {chunk}"
                    )));
                }
            }
            self.in_memory.fetch_add(len, Ordering::Relaxed);
            // The chunks before the one under way are complete: over budget, the oldest
            // in memory goes to a file.
            let over = self.in_memory.load(Ordering::Relaxed) > self.memory_budget;
            let last = chunks.len() - 1;
            if !over {
                None
            } else {
                chunks[..last]
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, (c, size))| match c {
                        Chunk::Memory(parts) => Some((i, std::mem::take(parts).concat(), *size)),
                        Chunk::File(_) => None,
                    })
            }
        };
        if let Some((i, bytes, size)) = spill {
            let file = spill_to_file(bytes).await?;
            let mut st = lock(&query.state);
            if let Some(c) = st
                .tasks
                .get_mut(key)
                .and_then(|r| r.writers.get_mut(&writer))
                .and_then(|w| w.get_mut(i))
            {
                c.0 = Chunk::File(file);
                self.in_memory.fetch_sub(
                    size.min(self.in_memory.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
        Ok(())
    }

    /// Records how `writer`'s run ended; the first end of the task is kept (its own
    /// result's chunks), later ones are dropped.
    fn end(
        &self,
        query: &Query,
        key: &TaskKey,
        writer: u32,
        ending: Ending,
        mut report: TaskReport,
    ) {
        let mut st = lock(&query.state);
        let Some(remote) = st.tasks.get_mut(key) else {
            return;
        };
        let chunks = remote.writers.remove(&writer).unwrap_or_default();
        if remote.ended.is_some() {
            let freed = held(chunks.iter());
            self.in_memory.fetch_sub(
                freed.min(self.in_memory.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            return;
        }
        report.via = "flight".into();
        let outcome = match ending {
            Ending::Rows => TaskOutcome::Rows(Rows {
                batches: Vec::new(),
                chunks: (0..chunks.len())
                    .map(|n| format!("{CHUNK_PREFIX}{}:{}:{n}", key.task_id, key.attempt))
                    .collect(),
            }),
            Ending::Empty => TaskOutcome::Empty,
            Ending::Failed {
                error,
                retryable,
                message,
            } => TaskOutcome::Failed(Ending::failure(&error, retryable, &message)),
        };
        // The other writers' partial results will not be used.
        let others: usize = held(remote.writers.values().flatten());
        remote.writers.clear();
        self.in_memory.fetch_sub(
            others.min(self.in_memory.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        remote.ended = Some((
            Delivered {
                key: key.clone(),
                outcome,
                report,
            },
            chunks,
        ));
    }

    /// Arbitrates `cell` for the task `key` in its round: the first to ask holds it.
    pub(crate) fn claim(&self, query: &Query, key: &TaskKey, cell: &str) -> bool {
        let mut st = lock(&query.state);
        let holder = *st
            .claims
            .entry((key.attempt, cell.to_string()))
            .or_insert(key.task_id);
        holder == key.task_id
    }
}

/// Bytes of `chunks` held in memory.
fn held<'a>(chunks: impl Iterator<Item = &'a (Chunk, usize)>) -> usize {
    chunks
        .filter(|(c, _)| matches!(c, Chunk::Memory(_)))
        .map(|(_, size)| size)
        .sum()
}

async fn spill_to_file(bytes: Vec<u8>) -> Result<tempfile::NamedTempFile> {
    apiary_storage::blocking::run(move || {
        use std::io::Write;
        let mut file = tempfile::Builder::new()
            .prefix("apiary-flight-")
            .tempfile()?;
        file.write_all(&bytes)?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| {
        ShuffleError::failed(
            format!("spilling a Flight chunk failed: {e}"),
            ErrorKind::Internal,
            e,
        )
    })?
    .map_err(|e| {
        ShuffleError::failed(
            format!("spilling a Flight chunk to the temporary folder failed: {e}"),
            ErrorKind::Unavailable,
            e,
        )
    })
}

/// Reads one task's exchange until its end, or until it breaks.
async fn read(
    coordinator: Arc<Coordinator>,
    query: std::sync::Weak<Query>,
    key: TaskKey,
    mut stream: tonic::Streaming<FlightData>,
    on_break: impl FnOnce(&str),
) {
    let why = loop {
        let next = stream.message().await;
        let Some(q) = query.upgrade() else { return };
        let data = match next {
            Ok(Some(data)) => data,
            Ok(None) => break "the worker closed the exchange before the task ended".to_string(),
            Err(status) => break format!("the Flight link broke: {}", status.message()),
        };
        let m = match parse::<ToCoordinator>(&data) {
            Ok(m) => m,
            Err(e) => break e.to_string(),
        };
        if !matches!(m, ToCoordinator::Data { .. }) {
            tracing::debug!(task = %key, message = ?m, "from the worker");
        }
        let reply = match m {
            ToCoordinator::Accepted => None,
            ToCoordinator::Taken => {
                if let Some(r) = lock(&q.state).tasks.get_mut(&key) {
                    r.taken = true;
                }
                q.arrived.notify_one();
                None
            }
            ToCoordinator::Data { writer, chunk } => {
                if let Err(e) = coordinator
                    .receive(&q, &key, writer, chunk, data.data_body)
                    .await
                {
                    break e.to_string();
                }
                None
            }
            ToCoordinator::End {
                writer,
                ending,
                report,
            } => {
                // The collector is woken once the acknowledgement is on its way (below):
                // woken first, it could finish the query and drop this exchange before the
                // worker heard that its result landed.
                coordinator.end(&q, &key, writer, ending, *report);
                Some(ToWorker::Received { writer })
            }
            ToCoordinator::Claim { id, cell } => {
                let held = coordinator.claim(&q, &key, &cell);
                Some(ToWorker::Claimed { id, held })
            }
        };
        if let Some(reply) = reply {
            let ended = matches!(reply, ToWorker::Received { .. });
            let tx = lock(&q.state).tasks.get(&key).map(|r| r.to_worker.clone());
            // Queued without yielding when there is room, so that an abort of this reader
            // (the query finished) cannot fall between the end and its answer; a full
            // channel (a stalled link) does not hold the collector back.
            let mut full = None;
            if let Some(tx) = tx
                && let Err(mpsc::error::TrySendError::Full(m)) =
                    tx.try_send(message(&reply, Bytes::new()))
            {
                full = Some((tx, m));
            }
            if ended {
                q.arrived.notify_one();
            }
            if let Some((tx, m)) = full {
                let _ = tx.send(m).await;
            }
        }
    };
    let Some(q) = query.upgrade() else { return };
    let broke = {
        let mut st = lock(&q.state);
        match st.tasks.get_mut(&key) {
            Some(r) if r.ended.is_none() => {
                let node = r.node.clone();
                r.broken = Some(format!(
                    "{why} (node {node}); the next attempt goes through storage"
                ));
                Some(node)
            }
            _ => None,
        }
    };
    if let Some(node) = broke {
        tracing::warn!(task = %key, node = %node, reason = %why, "a Flight exchange broke");
        on_break(&node);
        q.arrived.notify_one();
    }
}
