//! The node's Arrow Flight transport (`apiary node --flight ADDR`): the node serves Flight
//! on ADDR and advertises where in its heartbeat; coordinators in this process push tasks
//! over Flight to every node that advertises an address it can reach, and use the storage
//! shuffle for the rest (see [`apiary_flight`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use apiary_flight::{
    FLIGHT_ATTRIBUTE, FlightConfig, FlightServer, FlightShuffle, FlightTls, Peers,
};

use crate::cluster::SwarmDirectory;
use crate::{ApiaryError, Result};

/// Whether and how this process uses Arrow Flight ([`crate::ApiaryOptions::flight`]).
#[derive(Debug, Clone, Default)]
pub struct FlightOptions {
    /// Where a node serves Flight (`--flight ADDR`, `APIARY_FLIGHT`; port 0 picks one). A
    /// process that is not a node never serves: it only pushes tasks to nodes over Flight.
    pub listen: Option<SocketAddr>,
    /// The address other processes reach this node's port at (`--flight-advertise`,
    /// `APIARY_FLIGHT_ADVERTISE`): behind NAT, a proxy or a Kubernetes service. Default: the
    /// bound address, or this machine's host name when bound to every interface.
    pub advertise: Option<String>,
    /// LZ4-compress result chunks (`--flight-lz4`): for slow links; raw IPC is faster on a
    /// LAN.
    pub lz4: bool,
    /// TLS on the port and the links (`--flight-tls-cert`, `--flight-tls-key`,
    /// `--flight-tls-ca`, `--flight-tls-domain`); `None`: plain HTTP/2, every call still
    /// proving the swarm's key. A node serving TLS advertises `https://`, and a process
    /// with TLS pushes tasks only to nodes that serve it.
    pub tls: Option<FlightTls>,
}

impl FlightOptions {
    /// A process that pushes tasks over Flight without serving (a coordinator that is not a
    /// node, such as `apiary sql`).
    pub fn client() -> Self {
        Self::default()
    }

    /// A node serving Flight on `listen`.
    pub fn serve(listen: SocketAddr) -> Self {
        Self {
            listen: Some(listen),
            ..Self::default()
        }
    }
}

/// The Flight part of an [`Apiary`](crate::Apiary): the transport and what it needs at start.
#[derive(Debug, Clone)]
pub(crate) struct FlightParts {
    pub(crate) shuffle: Arc<FlightShuffle>,
    pub(crate) options: FlightOptions,
    pub(crate) peers: Arc<LatePeers>,
}

impl FlightParts {
    pub(crate) fn new(
        backend: Arc<dyn apiary_storage::StorageBackend>,
        options: FlightOptions,
    ) -> Self {
        let peers = Arc::new(LatePeers::default());
        let config = FlightConfig {
            lz4: options.lz4,
            tls: options.tls.clone(),
            ..FlightConfig::default()
        };
        let shuffle = Arc::new(FlightShuffle::with_config(
            backend,
            Arc::clone(&peers) as Arc<dyn Peers>,
            config,
        ));
        Self {
            shuffle,
            options,
            peers,
        }
    }

    /// Serves the node's port, when it has one; returns it and the address to advertise.
    pub(crate) async fn serve(&self) -> Result<Option<(Arc<FlightServer>, String)>> {
        let Some(listen) = self.options.listen else {
            return Ok(None);
        };
        let server = self
            .shuffle
            .serve(listen)
            .await
            .map_err(|e| ApiaryError::Setting {
                name: "APIARY_FLIGHT",
                value: listen.to_string(),
                message: e.to_string(),
            })?;
        let bound = server.local_addr();
        let advertised = server.advertised(&match &self.options.advertise {
            Some(a) => a.clone(),
            None if bound.ip().is_unspecified() => format!("{}:{}", host_name(), bound.port()),
            None => bound.to_string(),
        });
        tracing::info!(listen = %bound, advertised = %advertised, tls = server.tls(), "serving Arrow Flight");
        Ok(Some((Arc::new(server), advertised)))
    }
}

/// The attribute a node advertises its Flight address under.
pub(crate) const ATTRIBUTE: &str = FLIGHT_ATTRIBUTE;

/// This machine's host name (what peers on the LAN resolve), or `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The swarm's addresses, from the membership view the query engine reads (set once the
/// engine exists; until then no node is reachable over Flight).
#[derive(Debug, Default)]
pub(crate) struct LatePeers(OnceLock<Arc<SwarmDirectory>>);

impl LatePeers {
    pub(crate) fn set(&self, directory: Arc<SwarmDirectory>) {
        let _ = self.0.set(directory);
    }
}

impl Peers for LatePeers {
    fn flight_address(&self, node_id: &str) -> Option<String> {
        self.0.get()?.attribute(node_id, ATTRIBUTE)
    }
}
