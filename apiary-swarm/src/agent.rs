//! [`SwarmAgent`]: a node's membership at run time: heartbeats on one timer, world view
//! refreshes on another, and a graceful leave.
//!
//! The two timers run as separate tasks: a slow listing of the swarm (a large swarm, a
//! throttled store) must never delay this node's own heartbeat past the others' dead
//! threshold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, Ticker};
use crate::colony::Colony;
use crate::error::Result;
use crate::heartbeat::{CacheSummary, Capacity, HEARTBEAT_FORMAT, Heartbeat, Lifecycle, NodeId};
use crate::load::Bees;
use crate::membership::Membership;
use crate::view::{SwarmConfig, WorldView};

/// Called with every new world view (the node binary writes its status file from it).
pub type ViewHook = Arc<dyn Fn(&WorldView) + Send + Sync>;

/// Says what the node has cached, for each heartbeat (bounded: see [`CacheSummary`]).
pub type CacheReport = Arc<dyn Fn() -> CacheSummary + Send + Sync>;

/// How an agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// Intervals and thresholds.
    pub swarm: SwarmConfig,
    /// How long a leaving node waits for running work.
    pub drain_timeout: Duration,
    /// Version published in heartbeats.
    pub software_version: String,
    /// Host name published in heartbeats.
    pub hostname: String,
    /// Called after every refresh.
    pub on_view: Option<ViewHook>,
    /// What the node has cached, published in every heartbeat.
    pub cache: Option<CacheReport>,
    /// The node's colony: its temperature is published, and it learns the storage latency
    /// of heartbeat writes.
    pub colony: Option<Arc<Colony>>,
    /// Published in every heartbeat for other parts to find (see [`Heartbeat::attributes`]).
    pub attributes: std::collections::BTreeMap<String, String>,
    /// How many tasks the node, coordinating, abandoned (published in every heartbeat).
    pub abandoned: Option<AbandonedReport>,
}

/// Says how many tasks a node abandoned, for each heartbeat.
pub type AbandonedReport = Arc<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("swarm", &self.swarm)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            swarm: SwarmConfig::default(),
            drain_timeout: Duration::from_secs(30),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            on_view: None,
            cache: None,
            colony: None,
            attributes: Default::default(),
            abandoned: None,
        }
    }
}

struct Publisher {
    node_id: NodeId,
    capacity: Capacity,
    bees: Arc<Bees>,
    clock: Arc<dyn Clock>,
    started_at_ms: i64,
    software_version: String,
    hostname: String,
    seq: AtomicU64,
    lifecycle: Mutex<Lifecycle>,
    cache: Option<CacheReport>,
    colony: Option<Arc<Colony>>,
    attributes: std::collections::BTreeMap<String, String>,
    abandoned: Option<AbandonedReport>,
}

impl Publisher {
    fn next(&self) -> Heartbeat {
        let state = *self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        Heartbeat {
            format: HEARTBEAT_FORMAT,
            node_id: self.node_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            state,
            software_version: self.software_version.clone(),
            hostname: self.hostname.clone(),
            started_at_ms: self.started_at_ms,
            written_at_ms: self.clock.wall_ms(),
            capacity: self.capacity.clone(),
            load: {
                let mut load = self.bees.load();
                if let Some(colony) = &self.colony {
                    load.temperature = colony.temperature();
                    load.setpoint = Some(colony.setpoint());
                }
                if let Some(abandoned) = &self.abandoned {
                    load.abandoned_tasks = abandoned();
                }
                load
            },
            cache: self
                .cache
                .as_ref()
                .map(|report| report())
                .unwrap_or_default(),
            attributes: self.attributes.clone(),
        }
        .sanitize()
    }

    fn set(&self, state: Lifecycle) {
        *self.lifecycle.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn get(&self) -> Lifecycle {
        *self.lifecycle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running node's membership.
pub struct SwarmAgent {
    membership: Arc<dyn Membership>,
    publisher: Arc<Publisher>,
    config: AgentConfig,
    view: watch::Receiver<WorldView>,
    drain: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for SwarmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmAgent")
            .field("node", &self.publisher.node_id)
            .finish()
    }
}

impl SwarmAgent {
    /// Joins the swarm: the first heartbeat is durable and the first world view read before
    /// this returns; then heartbeats and refreshes run in the background.
    pub async fn start(
        membership: Arc<dyn Membership>,
        node_id: NodeId,
        capacity: Capacity,
        bees: Arc<Bees>,
        clock: Arc<dyn Clock>,
        config: AgentConfig,
    ) -> Result<Self> {
        let publisher = Arc::new(Publisher {
            node_id,
            capacity,
            bees,
            started_at_ms: clock.wall_ms(),
            clock,
            software_version: config.software_version.clone(),
            hostname: config.hostname.clone(),
            seq: AtomicU64::new(0),
            lifecycle: Mutex::new(Lifecycle::Joining),
            cache: config.cache.clone(),
            colony: config.colony.clone(),
            attributes: config.attributes.clone(),
            abandoned: config.abandoned.clone(),
        });
        membership.join(&publisher.next()).await?;
        publisher.set(Lifecycle::Alive);
        let first = match membership.refresh().await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(error = %e, "first read of the swarm failed; retrying on the next poll");
                WorldView::default()
            }
        };
        if let Some(hook) = &config.on_view {
            hook(&first);
        }
        let (view_tx, view) = watch::channel(first);
        let (drain_tx, drain) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(beat(
                Arc::clone(&membership),
                Arc::clone(&publisher),
                config.swarm.heartbeat_interval,
                stop_rx.clone(),
            )),
            tokio::spawn(poll(
                Arc::clone(&membership),
                Arc::clone(&publisher.clock),
                config.clone(),
                view_tx,
                drain_tx,
                stop_rx,
            )),
        ];
        Ok(Self {
            membership,
            publisher,
            config,
            view,
            drain,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// The membership this agent runs on.
    pub fn membership(&self) -> &Arc<dyn Membership> {
        &self.membership
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.publisher.node_id
    }

    /// This node's capacity.
    pub fn capacity(&self) -> &Capacity {
        &self.publisher.capacity
    }

    /// The newest world view.
    pub fn view(&self) -> WorldView {
        self.view.borrow().clone()
    }

    /// The world view as a channel that changes with every poll, for parts that act on a
    /// change (links opened to a node that joins, say). It closes when the agent stops.
    pub fn views(&self) -> watch::Receiver<WorldView> {
        self.view.clone()
    }

    /// Resolves when an operator asks this node to leave (a drain request in storage).
    pub async fn drain_requested(&self) {
        let mut drain = self.drain.clone();
        let _ = drain.wait_for(|asked| *asked).await;
    }

    /// Leaves gracefully: takes no new work, says it is leaving, waits for running work (at
    /// most the drain timeout), stops the timers and removes its heartbeat.
    pub async fn leave(&self) -> Result<()> {
        if self.publisher.get() == Lifecycle::Leaving {
            return Ok(());
        }
        let bees = Arc::clone(&self.publisher.bees);
        bees.close();
        self.publisher.set(Lifecycle::Leaving);
        if let Err(e) = self.membership.publish(&self.publisher.next()).await {
            tracing::warn!(error = %e, "could not announce leaving; leaving anyway");
        }
        if !bees
            .wait_idle(self.publisher.clock.as_ref(), self.config.drain_timeout)
            .await
        {
            tracing::warn!(timeout = ?self.config.drain_timeout, "work still running at the drain timeout; leaving anyway");
        }
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        self.membership.leave().await
    }
}

impl Drop for SwarmAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Writes a heartbeat every `interval` until stopped. Beats go on while leaving, so that a
/// draining node is not taken for dead.
async fn beat(
    membership: Arc<dyn Membership>,
    publisher: Arc<Publisher>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = Ticker::new(Arc::clone(&publisher.clock), interval);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                let started = publisher.clock.monotonic();
                if let Err(e) = membership.publish(&publisher.next()).await {
                    tracing::warn!(error = %e, "heartbeat write failed");
                }
                if let Some(colony) = &publisher.colony {
                    colony.record_storage_latency(publisher.clock.monotonic().saturating_sub(started));
                }
            }
        }
    }
}

/// Reads the swarm every poll interval until stopped.
async fn poll(
    membership: Arc<dyn Membership>,
    clock: Arc<dyn Clock>,
    config: AgentConfig,
    view_tx: watch::Sender<WorldView>,
    drain_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = Ticker::new(clock, config.swarm.poll_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => match membership.refresh().await {
                Ok(view) => {
                    if view.drain_requested && !*drain_tx.borrow() {
                        tracing::info!("an operator asked this node to drain and leave");
                        let _ = drain_tx.send(true);
                    }
                    if let Some(hook) = &config.on_view {
                        hook(&view);
                    }
                    let _ = view_tx.send(view);
                }
                Err(e) => tracing::warn!(error = %e, "reading the swarm failed"),
            },
        }
    }
}
