//! [`SwarmAgent`]: a node's membership at run time: heartbeats on one timer, world view
//! refreshes on another, and a graceful leave.
//!
//! The two timers run as separate tasks: a slow listing of the swarm (a large swarm, a
//! throttled store) must never delay this node's own heartbeat past the others' dead
//! threshold.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use crate::view::{NodeState, SwarmConfig, WorldView};

/// Pauses before the attempts to join after the first failed.
const JOIN_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// What a leaving node gives its peers' reads beyond a poll and a half before it removes
/// its heartbeat: a probe, a listing and a heartbeat read on a slow store or a busy machine.
const LEAVING_READ_ALLOWANCE: Duration = Duration::from_secs(1);

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
    /// The node's storage request counters: their rate and cost are published in every
    /// heartbeat.
    pub requests: Option<RequestsReport>,
    /// What the node counts of its work: sampled into the history every heartbeat carries.
    pub activity: Option<crate::history::ActivityReport>,
}

/// Reads the node's storage request counters, for each heartbeat (`None`: not counted).
pub type RequestsReport = Arc<dyn Fn() -> Option<apiary_storage::RequestCounts> + Send + Sync>;

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
            requests: None,
            activity: None,
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
    swarm: SwarmConfig,
    /// Whether the node is active (see [`SwarmConfig`]): its heartbeats say so.
    active: AtomicBool,
    requests: Option<RequestsReport>,
    meter: Mutex<crate::requests::RequestMeter>,
    activity: Option<crate::history::ActivityReport>,
    history: Mutex<crate::history::HistoryRecorder>,
}

impl Publisher {
    fn next(&self) -> Heartbeat {
        let state = *self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let history = self.activity.as_ref().map_or_else(Vec::new, |report| {
            let temperature = self.colony.as_ref().map_or(0.0, |c| c.temperature());
            self.history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(
                    self.clock.monotonic(),
                    self.clock.wall_ms(),
                    report(),
                    temperature,
                )
        });
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
            beat: Some(self.swarm.beat(self.active.load(Ordering::Acquire))),
            requests: self.requests.as_ref().and_then(|report| {
                let counts = report()?;
                self.meter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sample(self.clock.monotonic(), counts)
            }),
            history,
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
    active: watch::Receiver<bool>,
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
            swarm: config.swarm.clone(),
            // A node starts active: it was just started to work, and peers see its
            // joining at the active cadence.
            active: AtomicBool::new(true),
            requests: config.requests.clone(),
            meter: Mutex::default(),
            activity: config.activity.clone(),
            history: Mutex::default(),
        });
        // The first heartbeat is a plain overwrite, so a failed attempt (a storage hiccup,
        // a lost response) is simply tried again before the start fails.
        let mut attempt = 0;
        loop {
            match membership.join(&publisher.next()).await {
                Ok(()) => break,
                Err(e) if attempt < JOIN_RETRIES.len() => {
                    tracing::warn!(error = %e, "joining the swarm failed; trying again");
                    publisher.clock.sleep(JOIN_RETRIES[attempt]).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
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
        let (active_tx, active) = watch::channel(true);
        let (view_tx, view) = watch::channel(first);
        let (drain_tx, drain) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let woke = Arc::new(tokio::sync::Notify::new());
        let tasks = vec![
            tokio::spawn(beat(
                Arc::clone(&membership),
                Arc::clone(&publisher),
                Arc::clone(&woke),
                stop_rx.clone(),
            )),
            tokio::spawn(poll(
                Arc::clone(&membership),
                Arc::clone(&publisher),
                config.clone(),
                Channels {
                    view: view_tx,
                    drain: drain_tx,
                    active: active_tx,
                    woke,
                },
                stop_rx,
            )),
        ];
        Ok(Self {
            membership,
            publisher,
            config,
            view,
            drain,
            active,
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

    /// Whether the swarm is active (this node or a peer works), as a channel that changes
    /// when it does: an idle swarm's nodes look for work less often.
    pub fn activity(&self) -> watch::Receiver<bool> {
        self.active.clone()
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
        let clock = Arc::clone(&self.publisher.clock);
        let announced = clock.monotonic();
        let seen = match self.membership.publish(&self.publisher.next()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not announce leaving; leaving anyway");
                false
            }
        };
        if !bees
            .wait_idle(clock.as_ref(), self.config.drain_timeout)
            .await
        {
            tracing::warn!(timeout = ?self.config.drain_timeout, "work still running at the drain timeout; leaving anyway");
        }
        // Stay in `leaving` while peers watch, so that each of them reads the announcement
        // (they stop sending this node work, and show it leaving) before the heartbeat is
        // gone: a peer reads the roster within a poll, and its read (a probe, a listing, a
        // heartbeat) can take a while on a slow store or a busy machine. Any peer not
        // judged dead may be watching.
        let me = &self.publisher.node_id;
        let watched = self
            .view()
            .nodes
            .iter()
            .any(|n| &n.node_id != me && n.state != NodeState::Dead);
        if seen && watched {
            let linger = self.config.swarm.poll_interval.mul_f64(1.5) + LEAVING_READ_ALLOWANCE;
            let waited = clock.monotonic().saturating_sub(announced);
            clock.sleep(linger.saturating_sub(waited)).await;
        }
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        self.membership.leave().await
    }
}

impl SwarmAgent {
    /// Stops at once without leaving, as a killed process would: no more heartbeats, no
    /// leave, the heartbeat left behind for peers to judge dead. Running work is not
    /// waited for.
    pub async fn halt(&self) {
        self.publisher.bees.close();
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SwarmAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Writes a heartbeat every heartbeat interval while the node is active, every idle
/// heartbeat interval once it has had no work for the idle delay, and at once when it
/// wakes (a bee taken while none was busy), until stopped. Beats go on at the active
/// cadence while leaving, so that a draining node is not taken for dead.
async fn beat(
    membership: Arc<dyn Membership>,
    publisher: Arc<Publisher>,
    woke: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let clock = Arc::clone(&publisher.clock);
    let swarm = publisher.swarm.clone();
    let mut ticker = Ticker::new(Arc::clone(&clock), swarm.heartbeat_interval);
    let mut last_beat = clock.monotonic();
    let mut last_work = last_beat;
    let mut seen = publisher.bees.work().0;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
            _ = publisher.bees.woken() => {}
        }
        let now = clock.monotonic();
        let (taken, busy) = publisher.bees.work();
        if taken != seen || busy {
            seen = taken;
            last_work = now;
        }
        let active = now.saturating_sub(last_work) < swarm.idle_after
            || publisher.get() == Lifecycle::Leaving;
        let was = publisher.active.swap(active, Ordering::AcqRel);
        // Half a tick early rather than a tick late.
        let due = now.saturating_sub(last_beat) + swarm.heartbeat_interval / 2
            >= swarm.idle_heartbeat_interval;
        if !(active || was || due) {
            continue;
        }
        if active && !was {
            tracing::debug!("this node has work again: beating at the active cadence");
            woke.notify_one();
        } else if was && !active {
            tracing::debug!(after = ?swarm.idle_after, "no work: beating at the idle cadence");
        }
        last_beat = now;
        if let Err(e) = membership.publish(&publisher.next()).await {
            tracing::warn!(error = %e, "heartbeat write failed");
        }
        if let Some(colony) = &publisher.colony {
            colony.record_storage_latency(clock.monotonic().saturating_sub(now));
        }
    }
}

/// Where the poll loop tells what it learned.
struct Channels {
    view: watch::Sender<WorldView>,
    drain: watch::Sender<bool>,
    active: watch::Sender<bool>,
    /// Notified by the heartbeat loop when this node wakes.
    woke: Arc<tokio::sync::Notify>,
}

/// Reads the swarm until stopped: a listing every poll interval while the swarm is active;
/// while it is idle a probe of the roster every poll interval and a listing when it says
/// something changed or every idle listing interval; a listing at once when this node wakes.
async fn poll(
    membership: Arc<dyn Membership>,
    publisher: Arc<Publisher>,
    config: AgentConfig,
    channels: Channels,
    mut stop: watch::Receiver<bool>,
) {
    let clock = Arc::clone(&publisher.clock);
    let swarm = &config.swarm;
    let mut ticker = Ticker::new(Arc::clone(&clock), swarm.poll_interval);
    // The first listing was made by `start`.
    let mut last_list = clock.monotonic();
    loop {
        let woke = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticker.tick() => false,
            _ = channels.woke.notified() => true,
        };
        let own = publisher.active.load(Ordering::Acquire);
        let active = own || membership.world_view().is_active();
        let now = clock.monotonic();
        let list = woke
            || active
            || now.saturating_sub(last_list) + swarm.poll_interval / 2
                >= swarm.listing_interval(false)
            || match membership.probe().await {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::debug!(error = %e, "probing the roster failed; listing instead");
                    true
                }
            };
        if !list {
            channels
                .active
                .send_if_modified(|a| std::mem::replace(a, false));
            continue;
        }
        last_list = now;
        match membership.refresh().await {
            Ok(view) => {
                if view.drain_requested && !*channels.drain.borrow() {
                    tracing::info!("an operator asked this node to drain and leave");
                    let _ = channels.drain.send(true);
                }
                if let Some(hook) = &config.on_view {
                    hook(&view);
                }
                let active = publisher.active.load(Ordering::Acquire) || view.is_active();
                channels
                    .active
                    .send_if_modified(|a| std::mem::replace(a, active) != active);
                let _ = channels.view.send(view);
            }
            Err(e) => tracing::warn!(error = %e, "reading the swarm failed"),
        }
    }
}
