//! The documents of the console's JSON API (`/api/v1/…`). Field names are stable: a field
//! may be added, never renamed or given another meaning.

use std::collections::BTreeMap;

use apiary_swarm::{NodeState, NodeView, Regulation, WorldView};
use serde::Serialize;

/// `GET /api/v1/swarm`: the swarm as the serving node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Swarm {
    /// The node that answered.
    pub served_by: String,
    /// Nodes by state (`joining`, `alive`, `suspect`, `dead`, `leaving`; every state is
    /// present).
    pub nodes_by_state: BTreeMap<&'static str, usize>,
    /// Bees of the alive nodes.
    pub bees: u64,
    /// Busy bees of the alive nodes, as last published.
    pub bees_busy: u64,
    /// Statements running on the alive nodes, as their histories last told.
    pub queries_running: u64,
    /// Polls of the storage the serving node made so far.
    pub polls: u64,
    /// Heartbeat objects skipped, and why.
    pub problems: Vec<String>,
}

/// One node, in `GET /api/v1/nodes` and `GET /api/v1/nodes/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Its host name.
    pub host: String,
    /// `joining`, `alive`, `suspect`, `dead` or `leaving`.
    pub state: &'static str,
    /// Its Apiary version.
    pub version: String,
    /// When it started (ms since the epoch, its own clock).
    pub started_ms: i64,
    /// Seconds since its heartbeat was last seen to change.
    pub last_heartbeat_age_s: f64,
    /// Whether it says it is active (working, or within its idle delay).
    pub active: bool,
    /// CPU cores.
    pub cores: u32,
    /// Bees (one per core it works with).
    pub bees: u32,
    /// Busy bees, as last published.
    pub bees_busy: u32,
    /// Idle bees, as last published.
    pub bees_idle: u32,
    /// Its memory budget, in bytes.
    pub memory_bytes: u64,
    /// Resident memory over the bees' budget.
    pub memory_pressure: f64,
    /// Colony temperature: 0 idle, 1 every bee busy, 2 as much waiting as running.
    pub temperature: f64,
    /// The temperature it regulates toward.
    pub setpoint: f64,
    /// `cold`, `ideal`, `warm`, `hot` or `critical`.
    pub regulation: Regulation,
    /// Work waiting for a bee.
    pub queue_depth: u32,
    /// Cells in its cache.
    pub cache_cells: u64,
    /// Bytes in its cache.
    pub cache_bytes: u64,
    /// Its storage requests a minute over the last minutes, as it last published.
    pub requests_per_minute: Option<f64>,
    /// What a month of them costs at S3 Standard prices, in dollars.
    pub requests_monthly_usd: Option<f64>,
    /// What it publishes of itself (`--attribute key=value`; its Flight address).
    pub attributes: BTreeMap<String, String>,
    /// Statements it ran when its history was last sampled.
    pub queries_running: u64,
    /// Its last ten minutes, oldest first, as its heartbeat carries them (a sample every
    /// ten seconds or so while it works): `at_ms`, `queries_per_s`, `bytes_scanned_per_s`,
    /// `cache_hit_ratio` (absent without cache reads), `temperature`, `queries_running`.
    pub history: Vec<apiary_swarm::history::Sample>,
}

/// `GET /api/v1/nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct Nodes {
    /// The node that answered.
    pub served_by: String,
    /// Every node with a heartbeat, by id.
    pub nodes: Vec<Node>,
}

/// `GET /api/v1/colony`: every node's colony, as its heartbeat last told it.
#[derive(Debug, Clone, Serialize)]
pub struct Colony {
    /// The node that answered.
    pub served_by: String,
    /// One entry per node with a heartbeat, by id.
    pub nodes: Vec<ColonyNode>,
}

/// One node's colony.
#[derive(Debug, Clone, Serialize)]
pub struct ColonyNode {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: &'static str,
    /// Colony temperature.
    pub temperature: f64,
    /// The temperature it regulates toward.
    pub setpoint: f64,
    /// `cold`, `ideal`, `warm`, `hot` or `critical`.
    pub regulation: Regulation,
    /// Busy bees.
    pub bees_busy: u32,
    /// Idle bees.
    pub bees_idle: u32,
    /// Work waiting for a bee.
    pub queue_depth: u32,
    /// Resident memory over the bees' budget.
    pub memory_pressure: f64,
    /// Tasks of distributed queries it gave up, coordinating, since it started.
    pub abandoned_tasks: u64,
}

impl Colony {
    /// The document of `view`, served by `served_by`.
    pub fn of(view: &WorldView, served_by: &str) -> Self {
        let nodes = view
            .nodes
            .iter()
            .map(|n| {
                let node = Node::of(n);
                ColonyNode {
                    id: node.id,
                    state: node.state,
                    temperature: node.temperature,
                    setpoint: node.setpoint,
                    regulation: node.regulation,
                    bees_busy: node.bees_busy,
                    bees_idle: node.bees_idle,
                    queue_depth: node.queue_depth,
                    memory_pressure: node.memory_pressure,
                    abandoned_tasks: n.heartbeat.load.abandoned_tasks,
                }
            })
            .collect();
        Self {
            served_by: served_by.to_string(),
            nodes,
        }
    }
}

/// An error: what was wrong and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    /// The HTTP status.
    pub status: u16,
    /// What was wrong, and what to do.
    pub error: String,
}

const STATES: [NodeState; 5] = [
    NodeState::Joining,
    NodeState::Alive,
    NodeState::Suspect,
    NodeState::Dead,
    NodeState::Leaving,
];

impl Swarm {
    /// The document of `view`, served by `served_by`.
    pub fn of(view: &WorldView, served_by: &str) -> Self {
        let mut nodes_by_state: BTreeMap<&'static str, usize> =
            STATES.iter().map(|s| (s.as_str(), 0)).collect();
        for n in &view.nodes {
            *nodes_by_state.entry(n.state.as_str()).or_default() += 1;
        }
        let alive = || view.nodes.iter().filter(|n| n.state == NodeState::Alive);
        Self {
            served_by: served_by.to_string(),
            nodes_by_state,
            bees: alive().map(|n| u64::from(n.heartbeat.capacity.bees)).sum(),
            bees_busy: alive().map(|n| u64::from(n.heartbeat.load.busy_bees)).sum(),
            queries_running: alive()
                .filter_map(|n| n.heartbeat.history.last())
                .map(|s| s.queries_running)
                .sum(),
            polls: view.polls,
            problems: view.problems.clone(),
        }
    }
}

impl Node {
    /// The document of one node of a view.
    pub fn of(n: &NodeView) -> Self {
        let hb = &n.heartbeat;
        let setpoint = hb
            .load
            .setpoint
            .unwrap_or(apiary_swarm::ColonyConfig::default().setpoint);
        Self {
            id: n.node_id.to_string(),
            host: hb.hostname.clone(),
            state: n.state.as_str(),
            version: hb.software_version.clone(),
            started_ms: hb.started_at_ms,
            last_heartbeat_age_s: n.last_seen.as_secs_f64(),
            active: hb.is_active(),
            cores: hb.capacity.cores,
            bees: hb.capacity.bees,
            bees_busy: hb.load.busy_bees,
            bees_idle: hb.load.idle_bees,
            memory_bytes: hb.capacity.memory_bytes,
            memory_pressure: hb.load.memory_pressure,
            temperature: hb.load.temperature,
            setpoint,
            regulation: Regulation::of(hb.load.temperature, setpoint),
            queue_depth: hb.load.queue_depth,
            cache_cells: hb.cache.cells,
            cache_bytes: hb.cache.bytes,
            requests_per_minute: hb.requests.map(|r| r.per_minute),
            requests_monthly_usd: hb.requests.map(|r| r.monthly_usd),
            attributes: hb.attributes.clone().into_iter().collect(),
            queries_running: hb.history.last().map_or(0, |s| s.queries_running),
            history: hb.history.clone(),
        }
    }
}

/// One frame, in `GET /api/v1/frames`.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// `hive.box.frame`.
    pub name: String,
    /// Its newest version this node knows.
    pub version: u64,
    /// When that version was committed (ms since the epoch, the store's clock).
    pub committed_at_ms: i64,
    /// Live cells.
    pub cells: u64,
    /// Rows over its live cells.
    pub rows: u64,
    /// Bytes over its live cells.
    pub bytes: u64,
    /// Its columns and their types, in order.
    pub columns: Vec<Column>,
    /// The columns it is partitioned by.
    pub partition_by: Vec<String>,
}

/// A column of a frame.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type, as `apiary create frame --schema` writes it (`int64`, `utf8`, …).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// `GET /api/v1/frames`: the frames the serving node has open, as its ledger cache holds
/// them (frames it read or wrote lately; a frame no query touched yet is not listed).
#[derive(Debug, Clone, Serialize)]
pub struct Frames {
    /// The node that answered.
    pub served_by: String,
    /// The frames, by name.
    pub frames: Vec<Frame>,
}

/// One running statement, in `GET /api/v1/queries`.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    /// Its id (`DELETE /api/v1/queries/{id}` cancels it).
    pub id: String,
    /// Its SQL text (cut to 4 KiB).
    pub sql: String,
    /// Who runs it: `api` (`POST /api/v1/sql`), `python`, `shell`, `sql`.
    pub client: String,
    /// When it started (ms since the epoch, the serving node's clock).
    pub started_ms: i64,
    /// Seconds it has run.
    pub elapsed_s: f64,
    /// Whether it was asked to stop and has not yet.
    pub cancelling: bool,
}

/// `GET /api/v1/queries`: the statements the serving node runs now, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Queries {
    /// The node that answered.
    pub served_by: String,
    /// The statements.
    pub queries: Vec<Query>,
}
