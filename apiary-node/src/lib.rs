//! Apiary, embedded: the [`Apiary`] handle over one storage root.
//!
//! ```no_run
//! # async fn demo() -> Result<(), apiary::ApiaryError> {
//! use apiary::Apiary;
//! let ap = Apiary::open("./apiary-data").await?;
//! ap.create_hive("analytics").await?;
//! ap.create_box("analytics", "events").await?;
//! ap.create_frame(
//!     "analytics", "events", "clicks",
//!     &[("event_id", "int64"), ("user_id", "utf8"), ("country", "utf8")],
//!     &["country"],
//! ).await?;
//! for frame in ap.list_frames("analytics", "events").await? {
//!     println!("{} v{}", frame.name, frame.version);
//! }
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex, OnceLock};

use apiary_cache::{CacheConfig, CellCache};
use apiary_ledger::{
    BoxInfo, Column, Created, FrameDefinition, FrameInfo, FrameRef, FrameSchema, HiveInfo,
    LedgerConfig, LedgerError, Registry,
};
use apiary_query::distributed::{
    Cluster, DistributeMode, DistributeSettings, ShuffleTransport, StorageShuffle,
};
use apiary_storage::{StorageBackend, StorageUri};
use apiary_swarm::{
    Bees, Membership, NodeId, NodeIdentity, StorageHeartbeats, SwarmAgent, SwarmConfig,
};
use tokio::sync::watch;

mod admission;
pub mod allocator;
mod builder;
pub mod cli;
mod cluster;
mod flight;
pub use apiary_flight::FlightTls;
pub use flight::FlightOptions;
mod options;
pub use options::ApiaryOptions;

/// The README's Rust example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The Rust blocks of `docs/embedding.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/embedding.md")]
struct EmbeddingDoctests;
pub use builder::{ApiaryBuilder, MembershipFactory, MembershipRole};
use worker::TaskCounts;

pub mod input;
pub use apiary_ledger::ipc;
mod console;
mod error;
mod lifecycle;
mod node;
pub mod settings;
mod sql;
mod system;
mod worker;
mod writes;

pub use apiary_cache::TierCounts;
pub use apiary_console;
pub use apiary_ledger;
pub use apiary_query;
use apiary_query::QueryEngine;
pub use apiary_query::datafusion::execution::SendableRecordBatchStream;
pub use apiary_query::{QueryResult, SqlSession};
pub use apiary_shuffle;
pub use apiary_storage;
pub use apiary_swarm;
pub use node::{ColonyStatus, NodeOptions, NodeStatus, SwarmNode, SwarmStatus};

/// The default storage when neither an argument nor `APIARY_STORAGE` names one.
pub const DEFAULT_STORAGE: &str = "./apiary-data";

pub use apiary_storage::ErrorKind;
pub use error::ApiaryError;

/// Sweeps query folders left by coordinators that died: at once, then every `retention` of
/// `clock`'s time until `stop`.
fn spawn_sweeper(
    transport: Arc<dyn ShuffleTransport>,
    retention: std::time::Duration,
    clock: Arc<dyn apiary_storage::Clock>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            apiary_query::distributed::sweep_orphans(transport.as_ref(), retention).await;
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                () = clock.sleep(retention) => {}
            }
        }
    });
}

/// Creates the node's scratch directory, emptied of what a killed run spilled.
async fn prepare_scratch(dir: &std::path::Path) -> Result<()> {
    let dir = dir.to_path_buf();
    apiary_storage::blocking::run(move || {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| ApiaryError::LocalDisk {
            what: format!("cannot create the scratch directory {}", dir.display()),
            source,
        })
    })
    .await
    .map_err(|_| ApiaryError::Lifecycle("preparing the scratch directory failed"))??;
    Ok(())
}

/// Opens node `id`'s cell cache (recovering what a previous run left), unless its budget is
/// zero.
async fn open_cache(id: &NodeId, options: &NodeOptions) -> Result<Option<Arc<CellCache>>> {
    if options.cache_bytes == Some(0) {
        return Ok(None);
    }
    let dir = options.cache_dir_for(id);
    let budget = options.cache_bytes;
    let cache = apiary_storage::blocking::run(move || {
        std::fs::create_dir_all(&dir).map_err(|source| apiary_cache::CacheError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        let Some(capacity_bytes) = budget.or_else(|| CacheConfig::default_capacity(&dir)) else {
            tracing::warn!(
                dir = %dir.display(),
                "the cell cache is off: a fifth of the disk space free there is under 64 MiB \
                 (set APIARY_CACHE_SIZE to have one anyway)"
            );
            return Ok(None);
        };
        CellCache::open(CacheConfig {
            dir,
            capacity_bytes,
        })
        .map(Some)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "opening the cell cache failed");
        ApiaryError::Lifecycle("opening the cell cache panicked or was cancelled")
    })??;
    Ok(cache.map(Arc::new))
}

/// The memory tier's share and the memory it shares with the queries' pools (the bees'),
/// for a tier of `configured` bytes (default a quarter of the bees' memory).
fn tier_limits(configured: Option<u64>, capacity: &apiary_swarm::Capacity) -> (u64, u64) {
    let budget = capacity.memory_per_bee_bytes * u64::from(capacity.bees);
    (configured.unwrap_or(budget / 4).min(budget), budget)
}

/// Result alias for the [`Apiary`] API.
pub type Result<T, E = ApiaryError> = std::result::Result<T, E>;

/// A handle on an Apiary storage root: its registry of hives, boxes and frames.
///
/// Opening runs the storage preflight: a store that does not enforce conditional writes is
/// refused before anything is written.
#[derive(Clone)]
pub struct Apiary {
    name: String,
    storage: StorageUri,
    registry: Arc<Registry>,
    node: Arc<Mutex<Option<RunningNode>>>,
    /// Held through a whole `start`, so that two concurrent starts cannot both join.
    starting: Arc<tokio::sync::Mutex<()>>,
    /// The query engine and the cluster it distributes through, made on first use.
    query: Arc<OnceLock<(QueryEngine, Cluster)>>,
    transport: Arc<dyn ShuffleTransport>,
    /// The Flight transport, when it is the one in use (the node serves its port at start).
    flight: Option<flight::FlightParts>,
    membership: Option<MembershipFactory>,
    tasks: Arc<TaskCounts>,
    swarm: SwarmConfig,
    distribute: DistributeSettings,
    distribute_mode: DistributeMode,
    query_memory: Option<usize>,
    memory_tier: Option<u64>,
    /// Frames this handle wrote to since they were last compacted.
    written: Arc<Mutex<std::collections::HashSet<FrameRef>>>,
}

impl std::fmt::Debug for Apiary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apiary")
            .field("name", &self.name)
            .field("storage", &self.storage.to_string())
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RunningNode {
    pub(crate) agent: Arc<SwarmAgent>,
    bees: Arc<Bees>,
    colony: Arc<apiary_swarm::Colony>,
    cache: Option<Arc<CellCache>>,
    _identity: Arc<NodeIdentity>,
    stop_worker: Arc<watch::Sender<bool>>,
    /// The node's Flight port, served while it runs.
    _flight: Option<Arc<apiary_flight::FlightServer>>,
    /// The node's HTTP console, served while it runs.
    console: Option<Arc<apiary_console::Console>>,
}

impl Apiary {
    /// Opens the storage at `uri` (a folder, `memory://`, `s3://…`, `gs://…`, `az://…`).
    pub async fn open(uri: &str) -> Result<Self> {
        Self::open_with(ApiaryOptions::new(StorageUri::parse(uri)?)).await
    }

    /// Opens the storage named by `APIARY_STORAGE`, or [`DEFAULT_STORAGE`].
    pub async fn open_default() -> Result<Self> {
        Self::open_with(ApiaryOptions::new(StorageUri::from_env_or(
            DEFAULT_STORAGE,
        )?))
        .await
    }

    /// Opens with explicit options (default parts: object_store storage, storage
    /// heartbeats, the storage shuffle).
    pub async fn open_with(options: ApiaryOptions) -> Result<Self> {
        ApiaryBuilder::new(options).build().await
    }

    /// A builder that composes a node from parts: any storage backend, membership and
    /// shuffle transport.
    pub fn builder(options: ApiaryOptions) -> ApiaryBuilder {
        ApiaryBuilder::new(options)
    }

    /// Wraps an already opened backend (for custom or instrumented stores), with the
    /// default membership and transport.
    pub fn with_backend(
        storage: StorageUri,
        backend: Arc<dyn StorageBackend>,
        ledger: LedgerConfig,
    ) -> Self {
        let mut options = ApiaryOptions::new(storage);
        options.ledger = ledger;
        Self::from_parts(options, backend, None, None)
    }

    fn from_parts(
        options: ApiaryOptions,
        backend: Arc<dyn StorageBackend>,
        membership: Option<MembershipFactory>,
        transport: Option<Arc<dyn ShuffleTransport>>,
    ) -> Self {
        let flight = match (&transport, &options.flight) {
            (None, Some(f)) => Some(flight::FlightParts::new(Arc::clone(&backend), f.clone())),
            _ => None,
        };
        let transport = match (&flight, transport) {
            (Some(f), _) => Arc::clone(&f.shuffle) as Arc<dyn ShuffleTransport>,
            (None, Some(t)) => t,
            (None, None) => Arc::new(StorageShuffle::new(Arc::clone(&backend))),
        };
        Self {
            name: options.name,
            storage: options.storage,
            registry: Arc::new(Registry::new(backend, options.ledger)),
            node: Arc::default(),
            starting: Arc::default(),
            query: Arc::default(),
            transport,
            flight,
            membership,
            tasks: Arc::default(),
            swarm: options.swarm,
            distribute: options.distribute,
            distribute_mode: options.distribute_mode,
            query_memory: options.query_memory,
            memory_tier: options.memory_tier,
            written: Arc::default(),
        }
    }

    /// The shuffle transport distributed queries use.
    pub fn transport(&self) -> &Arc<dyn ShuffleTransport> {
        &self.transport
    }

    /// The storage URI.
    pub fn storage(&self) -> &StorageUri {
        &self.storage
    }

    /// The registry, for lower-level access to frame ledgers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates a hive (database). Creating an existing hive is a no-op.
    pub async fn create_hive(&self, hive: &str) -> Result<Created> {
        Ok(self.registry.create_hive(hive).await?)
    }

    /// Creates a box (schema) in a hive. Creating an existing box is a no-op.
    pub async fn create_box(&self, hive: &str, r#box: &str) -> Result<Created> {
        Ok(self.registry.create_box(hive, r#box).await?)
    }

    /// Creates a frame (table) from `(name, type)` pairs; all columns nullable except the
    /// partition columns. Creating an identical frame again is a no-op; a different
    /// definition is an error.
    pub async fn create_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        columns: &[(&str, &str)],
        partition_by: &[&str],
    ) -> Result<Created> {
        let columns = columns
            .iter()
            .map(|(name, ty)| Column::new(name, &apiary_ledger::parse_type(ty)?, true))
            .collect::<Result<Vec<_>, LedgerError>>()?;
        let definition = FrameDefinition::new(
            FrameSchema::new(columns)?,
            partition_by.iter().map(|s| s.to_string()).collect(),
        )?;
        self.create_frame_with(&FrameRef::new(hive, r#box, frame)?, definition)
            .await
    }

    /// Creates a frame from a full definition.
    pub async fn create_frame_with(
        &self,
        frame: &FrameRef,
        definition: FrameDefinition,
    ) -> Result<Created> {
        Ok(self.registry.create_frame(frame, definition).await?)
    }

    /// All hives.
    pub async fn list_hives(&self) -> Result<Vec<HiveInfo>> {
        Ok(self.registry.list_hives().await?)
    }

    /// The boxes of a hive.
    pub async fn list_boxes(&self, hive: &str) -> Result<Vec<BoxInfo>> {
        Ok(self.registry.list_boxes(hive).await?)
    }

    /// The frames of a box.
    pub async fn list_frames(&self, hive: &str, r#box: &str) -> Result<Vec<FrameInfo>> {
        Ok(self.registry.list_frames(hive, r#box).await?)
    }

    /// One frame at its newest version.
    pub async fn describe_frame(&self, hive: &str, r#box: &str, frame: &str) -> Result<FrameInfo> {
        Ok(self
            .registry
            .get_frame(&FrameRef::new(hive, r#box, frame)?)
            .await?)
    }

    /// Drops a hive; without `cascade` it must be empty.
    pub async fn drop_hive(&self, hive: &str, cascade: bool) -> Result<()> {
        Ok(self.registry.drop_hive(hive, cascade).await?)
    }

    /// Drops a box; without `cascade` it must be empty.
    pub async fn drop_box(&self, hive: &str, r#box: &str, cascade: bool) -> Result<()> {
        Ok(self.registry.drop_box(hive, r#box, cascade).await?)
    }

    /// Drops a frame.
    pub async fn drop_frame(&self, hive: &str, r#box: &str, frame: &str) -> Result<()> {
        Ok(self
            .registry
            .drop_frame(&FrameRef::new(hive, r#box, frame)?)
            .await?)
    }

    // ----- the swarm -----

    /// This process's membership for `role`: the builder's, or storage heartbeats.
    fn membership_for(&self, role: MembershipRole<'_>) -> Arc<dyn Membership> {
        if let Some(factory) = &self.membership {
            return factory(role);
        }
        let backend = Arc::clone(self.registry.backend());
        match role {
            MembershipRole::Node { id, options } => Arc::new(StorageHeartbeats::new(
                backend,
                id.clone(),
                Arc::clone(&options.clock),
                options.swarm.clone(),
            )),
            MembershipRole::Observer { swarm } => Arc::new(StorageHeartbeats::observer(
                backend,
                Arc::clone(&self.registry.config().clock),
                swarm.clone(),
            )),
        }
    }

    fn running(&self) -> Option<RunningNode> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The swarm as this node sees it. When not started, a one-shot reading by the
    /// membership (storage heartbeats: aged on the storage's clock against this handle's
    /// thresholds, a 30 s dead threshold by default).
    pub async fn swarm_status(&self) -> Result<SwarmStatus> {
        match self.running() {
            Some(node) => Ok(SwarmStatus::from(&node.agent.view())),
            None => self.swarm_snapshot(&self.swarm.clone()).await,
        }
    }

    /// A one-shot reading of the swarm by an observer membership judging by `config`'s
    /// thresholds.
    pub async fn swarm_snapshot(&self, config: &apiary_swarm::SwarmConfig) -> Result<SwarmStatus> {
        let observer = self.membership_for(MembershipRole::Observer { swarm: config });
        Ok(SwarmStatus::from(&observer.snapshot().await?))
    }

    /// This node: name, id, capacity and storage.
    pub fn status(&self, options: &NodeOptions) -> NodeStatus {
        let running = self.running();
        let capacity = match &running {
            Some(node) => node.agent.capacity().clone(),
            None => apiary_swarm::detect_capacity(options.memory_bytes),
        };
        let (tasks_run, tasks_failed) = self.tasks_run();
        NodeStatus {
            name: self.name.clone(),
            node_id: match &running {
                Some(node) => Some(node.agent.node_id().to_string()),
                None => options.peek_node_id(),
            },
            running: running.is_some(),
            cores: capacity.cores,
            memory_gb: node::memory_gb(capacity.memory_bytes),
            bees: capacity.bees,
            storage: self.storage.kind().to_string(),
            storage_uri: self.storage.to_string(),
            tasks_run,
            tasks_failed,
            cache: running
                .as_ref()
                .and_then(|n| n.cache.as_ref())
                .map(|c| c.counts()),
            requests: running.as_ref().and_then(|n| {
                let view = n.agent.view();
                view.node(n.agent.node_id())
                    .and_then(|me| me.heartbeat.requests)
            }),
        }
    }

    /// What the memory tier of decoded columns holds and has done (see
    /// [`apiary_cache::ColumnTier`]).
    pub fn memory_tier(&self) -> Result<TierCounts> {
        Ok(self.query_engine()?.memory_tier().counts())
    }

    /// The running node's cell cache (none when not started or turned off).
    pub fn cell_cache(&self) -> Option<Arc<CellCache>> {
        self.running().and_then(|n| n.cache)
    }

    /// Where the running node's HTTP console listens (`None` without `--http`, or when
    /// the node is not running).
    pub fn console_addr(&self) -> Option<std::net::SocketAddr> {
        self.running()
            .and_then(|n| n.console.as_ref().map(|c| c.local_addr()))
    }

    /// The console's access tokens, kept hashed in this Apiary's storage (see
    /// [`apiary_console::tokens`]): every node on the storage honours them.
    pub fn tokens(&self) -> apiary_console::TokenStore {
        apiary_console::TokenStore::new(Arc::clone(self.registry.backend()))
    }

    /// What this process counted of the distributed queries it coordinated: fragments,
    /// task attempts given up, and results refused for holding a cell already read (which
    /// stays 0 while claims work). Zeros before the first query.
    pub fn coordinator_counts(&self) -> apiary_query::distributed::CoordinatorTally {
        self.query
            .get()
            .map(|(_, cluster)| cluster.counts.tally())
            .unwrap_or_default()
    }

    /// The running node's colony: temperature, regulation band, setpoint, the signals, the
    /// tasks it abandoned, and every bee.
    pub fn colony_status(&self) -> Result<ColonyStatus> {
        let node = self
            .running()
            .ok_or(ApiaryError::NotStarted("colony_status"))?;
        let colony = &node.colony;
        let signals = colony.signals();
        let temperature = signals.temperature();
        let abandoned = self
            .query
            .get()
            .map(|(_, cluster)| cluster.abandoned.clone())
            .unwrap_or_default();
        Ok(ColonyStatus {
            node_id: node.agent.node_id().to_string(),
            temperature,
            regulation: apiary_swarm::Regulation::of(temperature, colony.setpoint()),
            setpoint: colony.setpoint(),
            signals,
            abandoned_tasks: abandoned.count(),
            recent_abandoned: abandoned.recent(),
            throttled: colony.throttled(),
            refused: colony.refused(),
            bees: node.bees.states(),
        })
    }

    /// The running node's bees: id, busy or idle, memory used, memory budget.
    pub fn bee_status(&self) -> Result<Vec<apiary_swarm::BeeState>> {
        let node = self
            .running()
            .ok_or(ApiaryError::NotStarted("bee_status"))?;
        Ok(node.bees.states())
    }

    /// The bees of the running node (work takes one while it runs).
    pub fn bees(&self) -> Option<Arc<Bees>> {
        self.running().map(|n| n.bees)
    }

    /// Asks node `node_id` to drain and leave; it does so on its next poll.
    pub async fn drain_node(&self, node_id: &str, requested_by: &str) -> Result<()> {
        let id = NodeId::new(node_id)?;
        let membership = match self.running() {
            Some(node) => Arc::clone(node.agent.membership()),
            None => self.membership_for(MembershipRole::Observer { swarm: &self.swarm }),
        };
        membership.request_drain(&id, requested_by).await?;
        Ok(())
    }
}
