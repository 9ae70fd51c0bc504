//! The node's part in distributed queries: who can take tasks, from membership (the worker
//! loop that takes this node's tasks is in `worker`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_query::distributed::{ShuffleTransport, WorkerDirectory, WorkerInfo};
use apiary_storage::Clock;
use apiary_swarm::{Membership, NodeState, SwarmAgent, WorldView};

use crate::RunningNode;
use async_trait::async_trait;

/// Workers from the swarm: alive nodes of the running node's world view, or (for a process
/// that is not a node, such as `apiary sql`) a snapshot of the heartbeats aged on the
/// store's clock (see [`Snapshots`]).
pub(crate) struct SwarmDirectory {
    node: Arc<Mutex<Option<RunningNode>>>,
    snapshots: Snapshots,
    /// The transport tasks go through, told of peers as they join (see
    /// [`SwarmDirectory::keep_links`]).
    transport: Arc<dyn ShuffleTransport>,
    /// Whether a task keeps the transport's links to the running node's peers.
    keeping: Arc<AtomicBool>,
}

impl std::fmt::Debug for SwarmDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmDirectory").finish_non_exhaustive()
    }
}

impl SwarmDirectory {
    pub(crate) fn new(
        node: Arc<Mutex<Option<RunningNode>>>,
        observer: Arc<dyn Membership>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn ShuffleTransport>,
    ) -> Self {
        let read: ReadView = Arc::new(move || {
            let observer = Arc::clone(&observer);
            Box::pin(async move { observer.snapshot().await })
        });
        Self {
            node,
            snapshots: Snapshots::new(read, clock),
            transport,
            keeping: Arc::default(),
        }
    }

    /// Once a running node coordinates, the transport is told of its peers whenever its
    /// world view changes ([`ShuffleTransport::warm`]), so that links to a node that joins
    /// open before the next query needs them (the first query to it then does not wait for
    /// a connection and a handshake). Nothing is read from storage for it: the view is the
    /// one the node keeps anyway. A node that never coordinates opens no links; the task
    /// ends when the node stops.
    fn keep_links(&self, agent: &SwarmAgent) {
        if self.keeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.keeping.store(false, Ordering::SeqCst);
            return;
        };
        let mut views = agent.views();
        let me = agent.node_id().to_string();
        let (transport, keeping) = (Arc::clone(&self.transport), Arc::clone(&self.keeping));
        runtime.spawn(async move {
            loop {
                let peers: Vec<String> = workers_of(&views.borrow_and_update(), None)
                    .into_iter()
                    .map(|w| w.node_id)
                    .filter(|id| *id != me)
                    .collect();
                transport.warm(&peers);
                if views.changed().await.is_err() {
                    break;
                }
            }
            keeping.store(false, Ordering::SeqCst);
        });
    }

    fn running(&self) -> Option<Arc<SwarmAgent>> {
        self.node
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|n| Arc::clone(&n.agent))
    }
}

impl SwarmDirectory {
    /// Node `node_id`'s heartbeat attribute `key`, from the view held now (the running
    /// node's, or the latest snapshot read): no storage request.
    pub(crate) fn attribute(&self, node_id: &str, key: &str) -> Option<String> {
        let find = |view: &WorldView| {
            view.nodes
                .iter()
                .find(|n| n.node_id.as_str() == node_id)
                .and_then(|n| n.heartbeat.attributes.get(key).cloned())
        };
        if let Some(agent) = self.running() {
            return find(&agent.view());
        }
        let (_, view) = self.snapshots.younger_than(Duration::MAX)?;
        find(&view)
    }
}

/// Reads the swarm once.
type ReadView = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, apiary_swarm::Result<WorldView>> + Send + Sync,
>;

/// A snapshot and when it was read (on the clock's monotonic time).
type Held = Option<(Duration, Arc<WorldView>)>;

/// A query uses no snapshot older than this (a node that left is given no task on a
/// view older than this).
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(2);

/// A query that finds the snapshot older than this starts reading a newer one in the
/// background, so that queries in a steady stream seldom wait for a read.
const SNAPSHOT_REFRESH: Duration = Duration::from_secs(1);

/// The heartbeat snapshots of a process that is not a node. Reading one is a LIST and a GET
/// per node: on a remote store, tens of milliseconds. A query uses the snapshot held if it
/// is younger than [`SNAPSHOT_MAX_AGE`], and waits for a read otherwise; once the snapshot
/// is older than [`SNAPSHOT_REFRESH`], a newer one is read in the background for the
/// queries after it. One read at a time.
struct Snapshots {
    read: ReadView,
    clock: Arc<dyn Clock>,
    /// The newest snapshot and when it was read (on `clock`'s monotonic time); shared, so
    /// that a query takes it without copying every node's heartbeat.
    held: Arc<Mutex<Held>>,
    /// Held while reading.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl Snapshots {
    fn new(read: ReadView, clock: Arc<dyn Clock>) -> Self {
        Self {
            read,
            clock,
            held: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// The held snapshot and its age, if it is younger than `limit`.
    fn younger_than(&self, limit: Duration) -> Option<(Duration, Arc<WorldView>)> {
        let now = self.clock.monotonic();
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (at, view) = held.as_ref()?;
        let age = now.saturating_sub(*at);
        (age < limit).then(|| (age, Arc::clone(view)))
    }

    /// A snapshot for a query (see the type's docs).
    async fn get(&self) -> apiary_swarm::Result<Arc<WorldView>> {
        if let Some((age, view)) = self.younger_than(SNAPSHOT_MAX_AGE) {
            if age >= SNAPSHOT_REFRESH {
                self.refresh_in_background();
            }
            return Ok(view);
        }
        let _reading = self.reading.lock().await;
        // Read by another query (or in the background) while this one waited.
        if let Some((_, view)) = self.younger_than(SNAPSHOT_MAX_AGE) {
            return Ok(view);
        }
        Self::read_into(&self.read, &self.clock, &self.held).await
    }

    async fn read_into(
        read: &ReadView,
        clock: &Arc<dyn Clock>,
        held: &Mutex<Held>,
    ) -> apiary_swarm::Result<Arc<WorldView>> {
        let at = clock.monotonic();
        let view = Arc::new(read().await?);
        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, Arc::clone(&view)));
        Ok(view)
    }

    /// Starts reading a newer snapshot unless a read is under way.
    fn refresh_in_background(&self) {
        let Ok(reading) = Arc::clone(&self.reading).try_lock_owned() else {
            return;
        };
        let (read, clock, held) = (
            Arc::clone(&self.read),
            Arc::clone(&self.clock),
            Arc::clone(&self.held),
        );
        tokio::spawn(async move {
            let _reading = reading;
            if let Err(e) = Self::read_into(&read, &clock, &held).await {
                // The held snapshot serves until it is too old; then a query reads and reports.
                tracing::warn!(error = %e, "reading the swarm's heartbeats failed");
            }
        });
    }
}

fn workers_of(view: &WorldView, me: Option<&str>) -> Vec<WorkerInfo> {
    view.nodes
        .iter()
        .filter(|n| n.state == NodeState::Alive || Some(n.node_id.as_str()) == me)
        .filter(|n| n.state != NodeState::Leaving && n.state != NodeState::Dead)
        .map(|n| WorkerInfo {
            node_id: n.node_id.to_string(),
            bees: n.heartbeat.capacity.bees.max(1),
            idle_bees: n.heartbeat.load.idle_bees,
            memory_per_bee: n.heartbeat.capacity.memory_per_bee_bytes,
            cached_cells: n.heartbeat.cache.hot_cells.clone(),
            attributes: n.heartbeat.attributes.clone(),
        })
        .collect()
}

#[async_trait]
impl WorkerDirectory for SwarmDirectory {
    async fn workers(&self) -> apiary_query::Result<Vec<WorkerInfo>> {
        if let Some(agent) = self.running() {
            self.keep_links(&agent);
            return Ok(workers_of(&agent.view(), Some(agent.node_id().as_str())));
        }
        let view = self.snapshots.get().await.map_err(|e| {
            apiary_query::QueryError::failed(format!("reading the swarm: {e}"), e.kind(), e)
        })?;
        Ok(workers_of(&view, None))
    }

    fn local_node(&self) -> Option<String> {
        self.running().map(|agent| agent.node_id().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MS: Duration = Duration::from_millis(1);

    /// Snapshots over a reader that counts its reads, fails while `failing`, and returns only
    /// when `gate` gives it a permit; each view is told apart by `polls` (the read's number).
    struct Reader {
        reads: Arc<AtomicU64>,
        gate: Arc<tokio::sync::Semaphore>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    fn snapshots() -> (Snapshots, Reader, apiary_storage::ManualClock) {
        let reader = Reader {
            reads: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            failing: Arc::default(),
        };
        let (reads, gate, failing) = (
            Arc::clone(&reader.reads),
            Arc::clone(&reader.gate),
            Arc::clone(&reader.failing),
        );
        let read: ReadView = Arc::new(move || {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            let (gate, failing) = (Arc::clone(&gate), Arc::clone(&failing));
            Box::pin(async move {
                gate.acquire().await.expect("gate").forget();
                if failing.load(Ordering::SeqCst) {
                    return Err(apiary_swarm::SwarmError::UnknownNode(
                        "the store is down".into(),
                    ));
                }
                Ok(WorldView {
                    polls: n,
                    ..WorldView::default()
                })
            })
        });
        let clock = apiary_storage::ManualClock::new();
        (Snapshots::new(read, Arc::new(clock.clone())), reader, clock)
    }

    /// Waits (on real time, briefly) until the held snapshot is read number `n`.
    async fn held_becomes(s: &Snapshots, n: u64) {
        for _ in 0..2000 {
            if s.younger_than(Duration::MAX)
                .is_some_and(|(_, v)| v.polls == n)
            {
                return;
            }
            apiary_storage::time::sleep(MS).await;
        }
        panic!("snapshot {n} was never held");
    }

    /// The snapshot a query gets without waiting for a read (a read held at the gate would
    /// keep it waiting: that fails).
    async fn at_once(s: &Snapshots) -> u64 {
        let clock = apiary_storage::SystemClock::new();
        apiary_storage::time::timeout(&clock, Duration::from_secs(5), s.get())
            .await
            .expect("the query waited for a read")
            .expect("snapshot")
            .polls
    }

    #[tokio::test]
    async fn queries_in_a_stream_use_the_snapshot_while_a_newer_one_is_read() {
        let (s, reader, clock) = snapshots();
        // No snapshot yet: the first query waits for one.
        reader.gate.add_permits(1);
        assert_eq!(s.get().await.unwrap().polls, 1);
        // Young: used as it is, nothing read.
        clock.advance(SNAPSHOT_REFRESH - MS);
        assert_eq!(s.get().await.unwrap().polls, 1);
        assert_eq!(reader.reads.load(Ordering::SeqCst), 1);
        // Older: still used at once (the read below is held at the gate), and a newer one
        // is read in the background, one read however many queries ask.
        clock.advance(MS);
        assert_eq!(at_once(&s).await, 1);
        assert_eq!(at_once(&s).await, 1);
        tokio::task::yield_now().await;
        assert_eq!(reader.reads.load(Ordering::SeqCst), 2);
        reader.gate.add_permits(1);
        held_becomes(&s, 2).await;
        assert_eq!(s.get().await.unwrap().polls, 2);
        // Too old: never used; the query waits for a new reading.
        clock.advance(SNAPSHOT_MAX_AGE);
        let waiting = s.get();
        tokio::pin!(waiting);
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "a snapshot past the maximum age was used"
        );
        reader.gate.add_permits(1);
        assert_eq!(waiting.await.unwrap().polls, 3);
        assert_eq!(reader.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_background_read_keeps_the_snapshot_until_its_maximum_age() {
        let (s, reader, clock) = snapshots();
        reader.gate.add_permits(1);
        assert_eq!(s.get().await.unwrap().polls, 1);
        reader.failing.store(true, Ordering::SeqCst);
        reader.gate.add_permits(100);
        clock.advance(SNAPSHOT_REFRESH);
        assert_eq!(at_once(&s).await, 1);
        // The failed read is over once another can start.
        for _ in 0..2000 {
            if reader.reads.load(Ordering::SeqCst) == 2 && s.reading.try_lock().is_ok() {
                break;
            }
            apiary_storage::time::sleep(MS).await;
        }
        assert_eq!(at_once(&s).await, 1, "kept after the failure");
        // Too old, and the store still down: the query reports it.
        clock.advance(SNAPSHOT_MAX_AGE);
        let err = s.get().await.unwrap_err();
        assert!(err.to_string().contains("the store is down"), "{err}");
    }
}
