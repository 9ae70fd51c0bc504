//! Running as a swarm node: options, and the statuses the `Apiary` API reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiary_swarm::{
    Clock, NodeId, NodeState, SwarmConfig, SystemClock, ViewHook, WorldView, default_state_dir,
};
use serde::Serialize;

/// How a node runs: identity, timing, memory.
#[derive(Clone)]
pub struct NodeOptions {
    /// Node id (`APIARY_NODE_ID`); generated once and kept in the state folder when unset.
    pub node_id: Option<String>,
    /// Local state folder (`APIARY_STATE_DIR`).
    pub state_dir: PathBuf,
    /// Heartbeat and poll intervals, thresholds, request budget.
    pub swarm: SwarmConfig,
    /// How long a leaving node waits for running work.
    pub drain_timeout: Duration,
    /// Memory the node may use, in bytes (detected when unset).
    pub memory_bytes: Option<u64>,
    /// The node's clocks.
    pub clock: Arc<dyn Clock>,
    /// Called with every new world view.
    pub on_view: Option<ViewHook>,
    /// How often the node looks for tasks of distributed queries (one HEAD of its doorbell
    /// object each time; default 1 s).
    pub task_poll_interval: Duration,
    /// How often the node looks for tasks while the whole swarm is idle
    /// (`APIARY_TASK_IDLE_POLL_INTERVAL`; default 30 s): a query on an idle swarm starts on
    /// its coordinator, and other nodes join as its waking reaches them through the roster.
    pub task_idle_poll_interval: Duration,
    /// The cell cache's directory (`APIARY_CACHE_DIR`); default `cache/{node_id}` in the
    /// state folder, so two nodes on one machine never share one.
    pub cache_dir: Option<PathBuf>,
    /// The cell cache's byte budget (`APIARY_CACHE_SIZE`); default a fifth of the disk free
    /// where the cache lives. Zero turns the cache off.
    pub cache_bytes: Option<u64>,
    /// How the colony regulates itself (setpoint, backpressure).
    pub colony: apiary_swarm::ColonyConfig,
    /// How often a cold node compacts the frames it wrote small cells to
    /// (`APIARY_COMPACT_INTERVAL`; default 1 min).
    pub compact_interval: Duration,
    /// The most the memory tier of decoded columns holds (`APIARY_MEMORY_TIER`); default a
    /// quarter of the bees' memory, which it shares with the queries' pools. Zero turns it
    /// off.
    pub memory_tier_bytes: Option<u64>,
    /// Published in the node's heartbeats for other parts to find through membership
    /// (`--attribute key=value`, `APIARY_ATTRIBUTES`): a transport's endpoint, a rack or
    /// zone label.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The HTTP console (`--http ADDR`, `APIARY_HTTP`): probes, `/metrics` and the JSON
    /// API; off when `None`.
    pub http: Option<apiary_console::ConsoleConfig>,
    /// Reads the memory the node holds, for the memory pressure in its heartbeats; default
    /// (`None`) the process's resident memory. A process running several nodes (a
    /// simulation) gives each a figure of its own.
    pub resident_memory: Option<apiary_swarm::MemoryProbe>,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("node_id", &self.node_id)
            .field("state_dir", &self.state_dir)
            .field("swarm", &self.swarm)
            .finish()
    }
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            node_id: None,
            state_dir: default_state_dir(),
            swarm: SwarmConfig::default(),
            drain_timeout: Duration::from_secs(30),
            memory_bytes: None,
            clock: Arc::new(SystemClock::new()),
            on_view: None,
            task_poll_interval: apiary_swarm::Discovery::default().poll,
            task_idle_poll_interval: apiary_swarm::Discovery::default().idle_poll,
            cache_dir: None,
            cache_bytes: None,
            colony: apiary_swarm::ColonyConfig::default(),
            compact_interval: Duration::from_secs(60),
            memory_tier_bytes: None,
            attributes: Default::default(),
            http: None,
            resident_memory: None,
        }
    }
}

impl NodeOptions {
    /// The cache directory of node `id`.
    pub fn cache_dir_for(&self, id: &NodeId) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("cache").join(id.as_str()))
    }

    /// The node id this node would use, without claiming or generating one.
    pub fn peek_node_id(&self) -> Option<String> {
        if let Some(id) = &self.node_id {
            return Some(id.clone());
        }
        let kept = std::fs::read_to_string(self.state_dir.join("node_id")).ok()?;
        NodeId::new(kept.trim()).ok().map(|id| id.to_string())
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// A running node's colony (`Apiary::colony_status`): how loaded it is and what it does
/// about it.
#[derive(Debug, Clone, Serialize)]
pub struct ColonyStatus {
    /// The node.
    pub node_id: String,
    /// Colony temperature: 0 idle, 1 every bee busy, 2 as much work waiting as running.
    pub temperature: f64,
    /// `cold`, `ideal`, `warm`, `hot` or `critical`.
    pub regulation: apiary_swarm::Regulation,
    /// The temperature the node aims at.
    pub setpoint: f64,
    /// The signals behind the temperature.
    pub signals: apiary_swarm::Signals,
    /// Tasks this node, coordinating, gave up after their last attempt.
    pub abandoned_tasks: u64,
    /// The most recent of them: task, cells, causes.
    pub recent_abandoned: Vec<apiary_query::distributed::Abandoned>,
    /// New queries and writes slowed down because the colony was hot.
    pub throttled: u64,
    /// New queries refused because the colony was critical.
    pub refused: u64,
    /// Every bee.
    pub bees: Vec<apiary_swarm::BeeState>,
}

/// One node in [`SwarmStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwarmNode {
    /// Node id.
    pub node_id: String,
    /// `joining`, `alive`, `suspect`, `dead` or `leaving`.
    pub state: NodeState,
    /// CPU cores.
    pub cores: u32,
    /// Memory, in GiB.
    pub memory_gb: f64,
    /// Bees.
    pub bees: u32,
    /// Idle bees, as last published.
    pub idle_bees: u32,
    /// Colony temperature, as last published.
    pub temperature: f64,
    /// Its regulation band (around its setpoint).
    pub regulation: apiary_swarm::Regulation,
    /// The temperature it regulates toward (the default for nodes that do not publish it).
    pub setpoint: f64,
    /// Tasks of distributed queries it gave up, coordinating, since it started.
    pub abandoned_tasks: u64,
    /// Work waiting for a bee, as last published.
    pub queue_depth: u32,
    /// Resident memory over the bees' budget, as last published.
    pub memory_pressure: f64,
    /// Cells in its cache, as last published.
    pub cached_cells: u64,
    /// Seconds since its heartbeat was last seen to change.
    pub last_seen_secs: f64,
    /// Host name.
    pub hostname: String,
    /// Apiary version.
    pub version: String,
    /// What the node publishes of itself (`--attribute key=value`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Whether it says it is active (working, or within the idle delay).
    pub active: bool,
    /// Its storage requests over the last minutes and their monthly cost, as last
    /// published.
    pub requests: Option<apiary_swarm::RequestRate>,
}

/// The swarm as this node sees it (`Apiary::swarm_status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwarmStatus {
    /// Nodes alive.
    pub alive: usize,
    /// Bees of alive nodes.
    pub total_bees: u64,
    /// Every node with a heartbeat.
    pub nodes: Vec<SwarmNode>,
    /// Heartbeat files skipped, and why.
    pub problems: Vec<String>,
}

impl From<&WorldView> for SwarmStatus {
    fn from(view: &WorldView) -> Self {
        Self {
            alive: view.alive(),
            total_bees: view.total_bees(),
            nodes: view
                .nodes
                .iter()
                .map(|n| SwarmNode {
                    node_id: n.node_id.to_string(),
                    state: n.state,
                    cores: n.heartbeat.capacity.cores,
                    memory_gb: n.heartbeat.capacity.memory_bytes as f64 / GIB,
                    bees: n.heartbeat.capacity.bees,
                    idle_bees: n.heartbeat.load.idle_bees,
                    temperature: n.heartbeat.load.temperature,
                    regulation: apiary_swarm::Regulation::of(
                        n.heartbeat.load.temperature,
                        setpoint(n),
                    ),
                    setpoint: setpoint(n),
                    abandoned_tasks: n.heartbeat.load.abandoned_tasks,
                    queue_depth: n.heartbeat.load.queue_depth,
                    memory_pressure: n.heartbeat.load.memory_pressure,
                    cached_cells: n.heartbeat.cache.cells,
                    last_seen_secs: n.last_seen.as_secs_f64(),
                    hostname: n.heartbeat.hostname.clone(),
                    version: n.heartbeat.software_version.clone(),
                    attributes: n.heartbeat.attributes.clone(),
                    active: n.heartbeat.is_active(),
                    requests: n.heartbeat.requests,
                })
                .collect(),
            problems: view.problems.clone(),
        }
    }
}

/// A node's setpoint as its heartbeat states it, or the default.
fn setpoint(node: &apiary_swarm::NodeView) -> f64 {
    node.heartbeat
        .load
        .setpoint
        .unwrap_or(apiary_swarm::ColonyConfig::default().setpoint)
}

/// This node (`Apiary::status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// The name the `Apiary` was opened with.
    pub name: String,
    /// Node id (none when not started and none is configured or kept).
    pub node_id: Option<String>,
    /// Whether the node is running in the swarm.
    pub running: bool,
    /// CPU cores.
    pub cores: u32,
    /// Memory, in GiB.
    pub memory_gb: f64,
    /// Bees.
    pub bees: u32,
    /// Storage kind: `local`, `memory`, `s3`, `gcs` or `azure`.
    pub storage: String,
    /// Storage URI.
    pub storage_uri: String,
    /// Tasks of distributed queries this node ran.
    pub tasks_run: u64,
    /// Of those, the ones that failed.
    pub tasks_failed: u64,
    /// The cell cache: hits, misses, bytes from storage and from disk, cells and bytes
    /// cached, budget (absent when not running or turned off).
    pub cache: Option<apiary_cache::CacheCounts>,
    /// Its storage requests over the last minutes and their monthly cost at S3 Standard
    /// prices, as its newest heartbeat says (absent until it has beaten twice).
    pub requests: Option<apiary_swarm::RequestRate>,
}

pub(crate) fn memory_gb(bytes: u64) -> f64 {
    bytes as f64 / GIB
}
