//! Node ids, the heartbeat object (format 1) and drain requests.
//!
//! A node's heartbeat is `_heartbeats/node_{node_id}.json`, rewritten atomically every
//! heartbeat interval:
//!
//! ```json
//! {
//!   "format": 1, "node_id": "pi-kitchen", "seq": 42, "state": "alive",
//!   "software_version": "0.1.0", "hostname": "pi-kitchen",
//!   "started_at_ms": 1763780000000, "written_at_ms": 1763780210000,
//!   "capacity": {"cores": 4, "bees": 4, "memory_bytes": 8000000000,
//!                "memory_per_bee_bytes": 1200000000, "target_cell_bytes": 134217728},
//!   "load": {"busy_bees": 1, "idle_bees": 3, "memory_pressure": 0.12, "queue_depth": 0,
//!            "temperature": 0.25},
//!   "cache": {"cells": 10, "bytes": 1048576, "hot_cells": ["analytics/events/clicks/…"]}
//! }
//! ```
//!
//! `seq` grows with every write, so every write changes the object; observers judge liveness
//! by seeing that change on their own monotonic clock. `written_at_ms` is for people only.
//! An operator asks a node to leave with `_heartbeats/drain_{node_id}.json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SwarmError};

/// The heartbeat format this version writes and reads.
pub const HEARTBEAT_FORMAT: u32 = 1;
/// Folder of heartbeats and drain requests.
pub const HEARTBEAT_DIR: &str = "_heartbeats";
/// Largest heartbeat accepted, in bytes.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;
/// Most hot cells a heartbeat lists.
pub const MAX_HOT_CELLS: usize = 256;
/// Most attributes a heartbeat may carry.
pub const MAX_ATTRIBUTES: usize = 32;

/// A node's identity: 1 to 64 of `a-z 0-9 - _`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Validates an id.
    pub fn new(id: &str) -> Result<Self> {
        let bad = |reason: &str| SwarmError::InvalidNodeId {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        if id.is_empty() || id.len() > 64 {
            return Err(bad("it must be 1 to 64 characters"));
        }
        if !id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(bad("it must start with a lowercase letter or a digit"));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(bad(&format!("it contains {c:?}")));
        }
        Ok(Self(id.to_string()))
    }

    /// A fresh random id, `node-` and 12 hex digits.
    pub fn generate(random: &apiary_storage::Random) -> Self {
        let hex = random.id();
        Self(format!("node-{}", &hex[..12]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of this node's heartbeat.
    pub fn heartbeat_key(&self) -> String {
        format!("{HEARTBEAT_DIR}/node_{}.json", self.0)
    }

    /// The key of a request that this node drain and leave.
    pub fn drain_key(&self) -> String {
        format!("{HEARTBEAT_DIR}/drain_{}.json", self.0)
    }
}

impl TryFrom<String> for NodeId {
    type Error = SwarmError;
    fn try_from(value: String) -> Result<Self> {
        NodeId::new(&value)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key under `_heartbeats/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatKey {
    /// A node's heartbeat.
    Node(NodeId),
    /// A drain request for a node.
    Drain(NodeId),
    /// A generation of the roster: a join, a leave or a wake (see
    /// [`storage`](crate::storage)).
    Roster(u64),
}

impl HeartbeatKey {
    /// Classifies a file name under `_heartbeats/`.
    pub fn parse(file_name: &str) -> Option<Self> {
        let stem = file_name.strip_suffix(".json")?;
        if let Some(id) = stem.strip_prefix("node_") {
            return NodeId::new(id).ok().map(HeartbeatKey::Node);
        }
        if let Some(id) = stem.strip_prefix("drain_") {
            return NodeId::new(id).ok().map(HeartbeatKey::Drain);
        }
        if let Some(generation) = stem.strip_prefix("roster_")
            && generation.len() == 20
            && generation.bytes().all(|b| b.is_ascii_digit())
        {
            return generation.parse().ok().map(HeartbeatKey::Roster);
        }
        None
    }
}

/// A node's lifecycle, as it declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// First heartbeat(s).
    Joining,
    /// Working.
    Alive,
    /// Draining after a stop or drain request; takes no new work.
    Leaving,
}

/// What a node can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU cores.
    pub cores: u32,
    /// Bees: workers, one per core.
    pub bees: u32,
    /// Memory the node may use, in bytes.
    pub memory_bytes: u64,
    /// Memory budget of one bee.
    pub memory_per_bee_bytes: u64,
    /// Cell size this node targets when writing.
    pub target_cell_bytes: u64,
}

/// How busy a node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Load {
    /// Bees running work.
    pub busy_bees: u32,
    /// Bees free.
    pub idle_bees: u32,
    /// Memory in use over the node's budget, 0 to 1 (and above when over).
    pub memory_pressure: f64,
    /// Work waiting for a bee.
    pub queue_depth: u32,
    /// Colony temperature: 0 idle, 1 every bee busy, above 1 when work queues.
    pub temperature: f64,
    /// The temperature the node regulates toward (absent from heartbeats of nodes that
    /// publish no colony, and of versions before it was published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setpoint: Option<f64>,
    /// Tasks of distributed queries this node, coordinating, gave up since it started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub abandoned_tasks: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A bounded summary of a node's local cell cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CacheSummary {
    /// Cells cached.
    pub cells: u64,
    /// Bytes cached.
    pub bytes: u64,
    /// The most used cached cells (at most [`MAX_HOT_CELLS`]).
    #[serde(default)]
    pub hot_cells: Vec<String>,
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Format version.
    pub format: u32,
    /// The node.
    pub node_id: NodeId,
    /// Write sequence number, one more on every write.
    pub seq: u64,
    /// Declared lifecycle.
    pub state: Lifecycle,
    /// Apiary version of the node.
    pub software_version: String,
    /// Host name, for people.
    #[serde(default)]
    pub hostname: String,
    /// When the node started, by its own wall clock (for people).
    pub started_at_ms: i64,
    /// When this heartbeat was written, by the node's wall clock (for people).
    pub written_at_ms: i64,
    /// Capacity.
    pub capacity: Capacity,
    /// Load.
    pub load: Load,
    /// Cache summary.
    #[serde(default)]
    pub cache: CacheSummary,
    /// What the node says of itself for other parts to find through membership (a
    /// transport's endpoint, say: `"flight" → "grpc://10.0.0.7:50051"`). At most
    /// [`MAX_ATTRIBUTES`] entries, keys of at most 64 bytes, values of at most 1 KiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// How often the node beats now and when to judge it dead (absent from heartbeats of
    /// versions before beats adapted to activity: peers then judge by their own dead
    /// threshold and count the node as active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat: Option<Beat>,
    /// The node's recent storage requests and their cost (absent from nodes that do not
    /// count them, and from versions before they were published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::requests::RequestRate>,
    /// The node's last ten minutes, a sample every ten seconds or so (see
    /// [`history`](crate::history)); absent from nodes that do not sample, and from
    /// versions before they were published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::history::Sample>,
}

/// A node's promise about its next heartbeats: an active node beats often, an idle one
/// rarely, and each says which so that peers judge its liveness by its own cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// Whether the node is working (or was within the idle delay).
    pub active: bool,
    /// The interval to its next heartbeat, in milliseconds.
    pub interval_ms: u64,
    /// Judge the node dead when its heartbeat has not changed for this long (suspect once
    /// the next heartbeat is late by half the time this leaves after the interval), in
    /// milliseconds.
    pub dead_after_ms: u64,
}

/// The longest a heartbeat may ask peers to wait before judging its node dead; a longer
/// promise is cut to it, so a damaged or hostile heartbeat cannot keep a dead node alive.
pub const MAX_DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

impl Heartbeat {
    /// Whether the node says it is active (a heartbeat without a [`Beat`] is).
    pub fn is_active(&self) -> bool {
        self.beat.is_none_or(|b| b.active)
    }

    /// When peers should judge this node dead: its own promise (at most
    /// [`MAX_DEAD_AFTER`]), or `default` without one.
    pub fn dead_after(&self, default: std::time::Duration) -> std::time::Duration {
        match self.beat {
            Some(b) => {
                std::time::Duration::from_millis(b.dead_after_ms).min(MAX_DEAD_AFTER.max(default))
            }
            None => default,
        }
    }

    /// When peers should judge this node suspect: once its next heartbeat is late by half
    /// the grace its promise leaves after the interval it stated (half its deadline when it
    /// stated none). An idle node beating once a minute is not suspect between its beats.
    pub fn suspect_after(&self, default: std::time::Duration) -> std::time::Duration {
        let dead_after = self.dead_after(default);
        match self
            .beat
            .map(|b| std::time::Duration::from_millis(b.interval_ms))
        {
            Some(interval) if interval < dead_after => interval + (dead_after - interval) / 2,
            _ => dead_after / 2,
        }
    }

    /// Serializes it.
    pub fn encode(&self) -> Vec<u8> {
        // A heartbeat has no maps with non-string keys and no non-finite floats after
        // `sanitize`, so this cannot fail; fall back to an empty object rather than panic.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Replaces non-finite load figures (JSON has no NaN) and bounds the hot-cell list.
    pub fn sanitize(mut self) -> Self {
        let finite = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        self.load.memory_pressure = finite(self.load.memory_pressure);
        self.load.temperature = finite(self.load.temperature);
        if let Some(r) = &mut self.requests {
            r.per_minute = finite(r.per_minute);
            r.writes_and_lists_per_minute = finite(r.writes_and_lists_per_minute);
            r.monthly_usd = finite(r.monthly_usd);
        }
        self.cache.hot_cells.truncate(MAX_HOT_CELLS);
        let extra = self
            .history
            .len()
            .saturating_sub(crate::history::MAX_SAMPLES);
        self.history.drain(..extra);
        self.history = self.history.into_iter().map(|s| s.sanitized()).collect();
        self
    }

    /// Parses and checks a heartbeat stored for `expected` at `key`.
    pub fn decode(key: &str, bytes: &[u8], expected: &NodeId) -> Result<Self> {
        let bad = |reason: String| SwarmError::BadHeartbeat {
            key: key.to_string(),
            reason,
        };
        if bytes.len() > MAX_HEARTBEAT_BYTES {
            return Err(bad(format!(
                "{} bytes is too large for a heartbeat",
                bytes.len()
            )));
        }
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a heartbeat: {e}")))?;
        if probe.format != HEARTBEAT_FORMAT {
            return Err(bad(format!(
                "heartbeat format {} is not supported (this node reads {HEARTBEAT_FORMAT}); \
                 is that node running a newer Apiary?",
                probe.format
            )));
        }
        let hb: Heartbeat =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed heartbeat: {e}")))?;
        if &hb.node_id != expected {
            return Err(bad(format!(
                "it is the heartbeat of `{}`, stored under `{expected}`",
                hb.node_id
            )));
        }
        let c = &hb.capacity;
        if c.cores == 0 || c.cores > 65_536 || c.bees == 0 || c.bees > 65_536 {
            return Err(bad(format!(
                "implausible capacity: {} cores, {} bees",
                c.cores, c.bees
            )));
        }
        if hb.cache.hot_cells.len() > MAX_HOT_CELLS {
            return Err(bad(format!(
                "{} hot cells listed, at most {MAX_HOT_CELLS} allowed",
                hb.cache.hot_cells.len()
            )));
        }
        check_attributes(&hb.attributes).map_err(bad)?;
        Ok(hb)
    }
}

/// Whether `attributes` fit in a heartbeat: at most [`MAX_ATTRIBUTES`], non-empty keys of at
/// most 64 bytes, values of at most 1 KiB.
pub fn check_attributes(attributes: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes, at most {MAX_ATTRIBUTES} allowed",
            attributes.len()
        ));
    }
    for (key, value) in attributes {
        if key.is_empty() || key.len() > 64 || value.len() > 1024 {
            return Err(format!(
                "attribute `{key}` is too long or unnamed (keys 1 to 64 bytes, values at most \
                 1 KiB)"
            ));
        }
    }
    Ok(())
}

/// An operator's request that a node drain and leave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// Format version.
    pub format: u32,
    /// The node asked to leave.
    pub node_id: NodeId,
    /// When it was asked, by the requester's wall clock (for people).
    pub requested_at_ms: i64,
    /// Who asked (free text, for people).
    #[serde(default)]
    pub requested_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        for ok in ["n1", "node-0123456789ab", "pi_kitchen", "7"] {
            NodeId::new(ok).unwrap();
        }
        for bad in ["", "-x", "_x", "A", "a/b", "a.b", "..", &"a".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
        let g = NodeId::generate(&apiary_storage::Random::process());
        assert!(NodeId::new(g.as_str()).is_ok());
        assert_eq!(g.heartbeat_key(), format!("_heartbeats/node_{g}.json"));
    }

    #[test]
    fn keys_classify() {
        assert_eq!(
            HeartbeatKey::parse("node_n1.json"),
            Some(HeartbeatKey::Node(NodeId::new("n1").unwrap()))
        );
        assert_eq!(
            HeartbeatKey::parse("drain_n1.json"),
            Some(HeartbeatKey::Drain(NodeId::new("n1").unwrap()))
        );
        assert_eq!(
            HeartbeatKey::parse("roster_00000000000000000042.json"),
            Some(HeartbeatKey::Roster(42))
        );
        assert_eq!(HeartbeatKey::parse("roster_42.json"), None);
        assert_eq!(HeartbeatKey::parse("node_N1.json"), None);
        assert_eq!(HeartbeatKey::parse("readme.txt"), None);
    }
}
