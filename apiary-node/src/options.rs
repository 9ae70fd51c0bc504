//! [`ApiaryOptions`]: what an [`Apiary`](crate::Apiary) handle is opened with.

use apiary_ledger::LedgerConfig;
use apiary_query::distributed::{DistributeMode, DistributeSettings};
use apiary_storage::StorageUri;
use apiary_swarm::SwarmConfig;

use crate::FlightOptions;

/// Options for [`Apiary::open_with`](crate::Apiary::open_with).
#[derive(Debug, Clone)]
pub struct ApiaryOptions {
    /// A name for this handle, reported by `status` (the seeds' `Apiary("production", …)`).
    pub name: String,
    /// Where the swarm's state lives.
    pub storage: StorageUri,
    /// Ledger tuning.
    pub ledger: LedgerConfig,
    /// Thresholds a process that is not a node uses to judge the swarm's heartbeats.
    pub swarm: SwarmConfig,
    /// Distribution of queries over the swarm.
    pub distribute: DistributeSettings,
    /// Every new SQL session's `apiary.distribute`.
    pub distribute_mode: DistributeMode,
    /// Memory each query may use when this handle is not a running node (whose bees decide
    /// it); past it, queries spill to disk. `None`: unlimited.
    pub query_memory: Option<usize>,
    /// The most the memory tier of decoded columns holds while this handle is not a
    /// running node (`APIARY_MEMORY_TIER`); default a quarter of the memory bees would
    /// have here. Zero turns it off.
    pub memory_tier: Option<u64>,
    /// Arrow Flight between nodes that can reach each other (`None`: every task and result
    /// goes through storage). Ignored when the builder is given a transport.
    pub flight: Option<FlightOptions>,
}

impl ApiaryOptions {
    /// Options for `storage` with default tuning.
    pub fn new(storage: StorageUri) -> Self {
        Self {
            name: "apiary".into(),
            storage,
            ledger: LedgerConfig::default(),
            swarm: SwarmConfig::default(),
            distribute: DistributeSettings::default(),
            distribute_mode: DistributeMode::default(),
            query_memory: None,
            memory_tier: None,
            flight: None,
        }
    }
}
