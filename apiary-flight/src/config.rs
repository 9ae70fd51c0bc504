//! Where peers are, and how a [`FlightShuffle`](crate::FlightShuffle) behaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_storage::{Clock, SystemClock};

use crate::worker::lock;

/// The heartbeat attribute a node advertises its Flight address in.
pub const FLIGHT_ATTRIBUTE: &str = "flight";

/// Where other nodes' Flight ports are: a node's address as it advertises it (the
/// [`FLIGHT_ATTRIBUTE`] of its heartbeat), from the membership view this process holds
/// (no storage request).
pub trait Peers: Send + Sync + std::fmt::Debug + 'static {
    /// `node_id`'s Flight address (`host:port`), if it serves Flight.
    fn flight_address(&self, node_id: &str) -> Option<String>;
}

/// Peers from a fixed table (tests, benchmarks, static deployments).
#[derive(Debug, Default, Clone)]
pub struct StaticPeers(Arc<Mutex<HashMap<String, String>>>);

impl StaticPeers {
    /// Sets `node_id`'s address (or removes it, with `None`).
    pub fn set(&self, node_id: &str, address: Option<&str>) {
        let mut table = lock(&self.0);
        match address {
            Some(a) => table.insert(node_id.to_string(), a.to_string()),
            None => table.remove(node_id),
        };
    }
}

impl Peers for StaticPeers {
    fn flight_address(&self, node_id: &str) -> Option<String> {
        lock(&self.0).get(node_id).cloned()
    }
}

/// How a [`FlightShuffle`](crate::FlightShuffle) behaves.
#[derive(Debug, Clone)]
pub struct FlightConfig {
    /// Longest wait for a connection and handshake; a node that takes longer gets its
    /// tasks through storage.
    pub connect_timeout: Duration,
    /// How long a node whose link failed gets its tasks through storage before Flight is
    /// tried again.
    pub retry_after: Duration,
    /// Whether result chunks are LZ4-compressed (worth it on slow links; on a LAN or
    /// loopback, raw IPC is faster).
    pub lz4: bool,
    /// About how many bytes of IPC one result chunk holds.
    pub chunk_bytes: usize,
    /// Result bytes this process keeps in memory, over every query it coordinates; chunks
    /// beyond it go to temporary files.
    pub memory_bytes: usize,
    /// TLS on this process's links and port; `None`: plain HTTP/2 (the swarm key's proof
    /// still guards every call).
    pub tls: Option<FlightTls>,
    /// The clock that times failed links.
    pub clock: Arc<dyn Clock>,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(30),
            lz4: false,
            chunk_bytes: apiary_shuffle::CHUNK_BYTES,
            memory_bytes: 256 << 20,
            tls: None,
            clock: Arc::new(SystemClock::new()),
        }
    }
}

/// TLS for Flight: rows on the wire are private and a node proves it is the one its address
/// names. Optional, because every call already proves the swarm's key; turn it on when the
/// network between nodes is not trusted.
///
/// A process with TLS configured pushes tasks only to nodes that serve TLS (advertised as
/// `https://host:port`); a node serving plain Flight gets its tasks through storage, so
/// turning TLS on never sends rows in the clear.
#[derive(Clone, Default)]
pub struct FlightTls {
    /// This node's certificate chain, PEM (to serve TLS on its port; with `private_key`).
    pub certificate: Option<Vec<u8>>,
    /// The private key of `certificate`, PEM.
    pub private_key: Option<Vec<u8>>,
    /// Certificate authorities, PEM, that peers' certificates must chain to; `None`: the
    /// system's trusted roots.
    pub ca: Option<Vec<u8>>,
    /// The name peers' certificates must carry, when it is not the host of their address
    /// (one certificate for the whole swarm, say).
    pub domain: Option<String>,
}

impl std::fmt::Debug for FlightTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightTls")
            .field("certificate", &self.certificate.as_ref().map(Vec::len))
            .field("private_key", &self.private_key.as_ref().map(|_| "…"))
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("domain", &self.domain)
            .finish()
    }
}
