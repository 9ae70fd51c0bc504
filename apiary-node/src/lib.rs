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
    LedgerConfig, LedgerError, Registry, WriteMode, WriteOptions, WriteResult,
};
use apiary_query::distributed::{
    Cluster, DistributeMode, DistributeSettings, ShuffleTransport, StorageShuffle,
};
use apiary_storage::{StorageBackend, StorageError, StorageUri};
use apiary_swarm::{
    AgentConfig, Bees, Membership, NodeId, NodeIdentity, StorageHeartbeats, SwarmAgent,
    SwarmConfig, SwarmError,
};
use arrow_array::RecordBatch;
use tokio::sync::watch;

mod admission;
mod builder;
mod cluster;

/// The README's Rust example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
pub use builder::{ApiaryBuilder, MembershipFactory, MembershipRole};
use cluster::SwarmDirectory;
use worker::TaskCounts;

pub mod input;
pub use apiary_ledger::ipc;
mod node;
pub mod settings;
mod worker;

pub use apiary_cache::TierCounts;
pub use apiary_ledger;
pub use apiary_query;
pub use apiary_query::datafusion::execution::SendableRecordBatchStream;
use apiary_query::{QueryEngine, QueryOptions};
pub use apiary_query::{QueryResult, SqlSession};
pub use apiary_shuffle;
pub use apiary_storage;
pub use apiary_swarm;
pub use node::{ColonyStatus, NodeOptions, NodeStatus, SwarmNode, SwarmStatus};

/// The default storage when neither an argument nor `APIARY_STORAGE` names one.
pub const DEFAULT_STORAGE: &str = "./apiary-data";

/// Errors from the [`Apiary`] API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiaryError {
    /// Registry or ledger failure (names, definitions, conflicts, corruption).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Storage failure (URI, preflight, requests).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Swarm membership failure (node id, identity, heartbeats).
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// A SQL statement failed (syntax, unknown names, refused statements, execution).
    #[error(transparent)]
    Query(#[from] apiary_query::QueryError),
    /// The node's cell cache could not be opened or used.
    #[error(transparent)]
    Cache(#[from] apiary_cache::CacheError),
    /// A node's local directory (state, scratch) could not be prepared.
    #[error("{what}: {source}")]
    LocalDisk {
        /// What could not be done, and where.
        what: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// One is running already, or the call cannot be made in this state.
    #[error("{0}")]
    Lifecycle(&'static str),
    /// The call needs a running node: call `Apiary::start` first.
    #[error("{0} needs a running node: call start() first (or run `apiary node`)")]
    NotStarted(&'static str),
    /// A setting (an `APIARY_*` variable) has a value that cannot be used.
    #[error("{name}=`{value}`: {message}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it, and what a good value looks like.
        message: String,
    },
}

pub use apiary_storage::ErrorKind;

impl ApiaryError {
    /// What a caller can do about it: the same few kinds whatever part failed. Sources are
    /// kept: [`std::error::Error::source`] walks down to the storage's or DataFusion's own
    /// error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiaryError::Ledger(e) => e.kind(),
            ApiaryError::Storage(e) => e.kind(),
            ApiaryError::Swarm(e) => e.kind(),
            ApiaryError::Query(e) => e.kind(),
            ApiaryError::Cache(e) => e.kind(),
            ApiaryError::LocalDisk { .. } => ErrorKind::Unavailable,
            ApiaryError::Lifecycle(_) => ErrorKind::Conflict,
            ApiaryError::NotStarted(_) => ErrorKind::Closed,
            ApiaryError::Setting { .. } => ErrorKind::InvalidInput,
        }
    }
}

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
                _ = stop.changed() => break,
                () = clock.sleep(retention) => {}
            }
        }
    });
}

/// Creates the node's scratch directory, emptied of what a killed run spilled.
async fn prepare_scratch(dir: &std::path::Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
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
    let cache = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| apiary_cache::CacheError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        let capacity_bytes = budget.unwrap_or_else(|| CacheConfig::default_capacity(&dir));
        CellCache::open(CacheConfig {
            dir,
            capacity_bytes,
        })
    })
    .await
    .map_err(|e| {
        ApiaryError::Lifecycle(if e.is_panic() {
            "opening the cell cache panicked"
        } else {
            "opening the cell cache was cancelled"
        })
    })??;
    Ok(Some(Arc::new(cache)))
}

/// The memory tier's share and the memory it shares with the queries' pools (the bees'),
/// for a tier of `configured` bytes (default a quarter of the bees' memory).
fn tier_limits(configured: Option<u64>, capacity: &apiary_swarm::Capacity) -> (u64, u64) {
    let budget = capacity.memory_per_bee_bytes * u64::from(capacity.bees);
    (configured.unwrap_or(budget / 4).min(budget), budget)
}

/// Result alias for the [`Apiary`] API.
pub type Result<T, E = ApiaryError> = std::result::Result<T, E>;

/// Options for [`Apiary::open_with`].
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
        }
    }
}

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
    /// The query engine and the cluster it distributes through, made on first use.
    query: Arc<OnceLock<(QueryEngine, Cluster)>>,
    transport: Arc<dyn ShuffleTransport>,
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
        let transport =
            transport.unwrap_or_else(|| Arc::new(StorageShuffle::new(Arc::clone(&backend))));
        Self {
            name: options.name,
            storage: options.storage,
            registry: Arc::new(Registry::new(backend, options.ledger)),
            node: Arc::default(),
            query: Arc::default(),
            transport,
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

    /// Joins the swarm with options from the environment (see [`NodeOptions::from_env`]).
    pub async fn start(&self) -> Result<()> {
        self.start_with(NodeOptions::from_env()?).await
    }

    /// Joins the swarm: claims the node id, writes the first heartbeat (durable when this
    /// returns), reads the swarm once, and keeps beating and reading in the background.
    pub async fn start_with(&self, options: NodeOptions) -> Result<()> {
        if self.running().is_some() {
            return Err(ApiaryError::Lifecycle("this Apiary is already started"));
        }
        apiary_swarm::check_attributes(&options.attributes).map_err(|message| {
            ApiaryError::Setting {
                name: "APIARY_ATTRIBUTES",
                value: format!("{:?}", options.attributes),
                message,
            }
        })?;
        let identity = NodeIdentity::resolve(options.node_id.as_deref(), &options.state_dir)?;
        let capacity = apiary_swarm::detect_capacity(options.memory_bytes);
        let tier = tier_limits(options.memory_tier_bytes.or(self.memory_tier), &capacity);
        let bees = Bees::new(
            capacity.bees,
            capacity.memory_per_bee_bytes * u64::from(capacity.bees),
        );
        let membership = self.membership_for(MembershipRole::Node {
            id: identity.node_id(),
            options: &options,
        });
        let cache = open_cache(identity.node_id(), &options).await?;
        let colony = Arc::new(apiary_swarm::Colony::new(
            Arc::clone(&bees),
            options.colony.clone(),
            Arc::clone(&options.clock),
        ));
        let config = AgentConfig {
            swarm: options.swarm.clone(),
            drain_timeout: options.drain_timeout,
            on_view: options.on_view.clone(),
            cache: cache.as_ref().map(|cache| {
                let cache = Arc::clone(cache);
                Arc::new(move || {
                    let counts = cache.counts();
                    apiary_swarm::CacheSummary {
                        cells: counts.cells,
                        bytes: counts.bytes,
                        hot_cells: cache.keys(apiary_swarm::MAX_HOT_CELLS),
                    }
                }) as apiary_swarm::CacheReport
            }),
            colony: Some(Arc::clone(&colony)),
            attributes: options.attributes.clone(),
            ..AgentConfig::default()
        };
        let clock = Arc::clone(&options.clock);
        let agent = SwarmAgent::start(
            membership,
            identity.node_id().clone(),
            capacity,
            Arc::clone(&bees),
            options.clock,
            config,
        )
        .await?;
        let agent = Arc::new(agent);
        let (stop_worker, stop) = watch::channel(false);
        // Query folders left by coordinators that died are swept at start, then once per
        // retention (and by coordinators as they run queries): on an idle swarm one listing
        // of `_queries/` per node every fifteen minutes, so nothing stays for good.
        spawn_sweeper(
            Arc::clone(&self.transport),
            self.distribute.orphan_retention,
            Arc::clone(&clock),
            stop.clone(),
        );
        worker::spawn_worker(
            Arc::clone(&self.transport),
            self.query_engine()?
                .clone()
                .with_distribute(DistributeMode::Never),
            agent.node_id().to_string(),
            Arc::clone(&colony),
            worker::Polling {
                interval: options.task_poll_interval,
                clock,
            },
            Arc::clone(&self.tasks),
            stop.clone(),
        );
        self.spawn_compactor(
            Arc::clone(&colony),
            agent.node_id().to_string(),
            options.compact_interval,
            stop,
        );
        let engine = self.query_engine()?;
        engine.set_cell_cache(cache.clone());
        let scratch = options
            .state_dir
            .join("scratch")
            .join(identity.node_id().as_str());
        prepare_scratch(&scratch).await?;
        engine.memory_tier().set_limits(tier.0, tier.1);
        engine.set_admission(Some(Arc::new(admission::BeeAdmission {
            colony: Arc::clone(&colony),
            scratch,
        })));
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(RunningNode {
            agent,
            bees,
            colony,
            cache,
            _identity: Arc::new(identity),
            stop_worker: Arc::new(stop_worker),
        });
        Ok(())
    }

    /// Tasks of distributed queries this node ran, and how many of them failed.
    pub fn tasks_run(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.tasks.ran.load(Ordering::Relaxed),
            self.tasks.failed.load(Ordering::Relaxed),
        )
    }

    /// Leaves the swarm gracefully: no new work, running work finishes (up to the drain
    /// timeout), the heartbeat is removed. A no-op when not started.
    pub async fn shutdown(&self) -> Result<()> {
        let running = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node) = running {
            // The agent closes the bees first: no new task is taken, running ones finish.
            let left = node.agent.leave().await;
            let _ = node.stop_worker.send(true);
            if let Some((engine, _)) = self.query.get() {
                engine.set_cell_cache(None);
                engine.set_admission(None);
            }
            left?;
        }
        self.settle().await;
        Ok(())
    }

    /// Waits for the background work of queries that already returned (removing the
    /// objects a distributed query left in the shuffle transport). Call it before a short
    /// process exits, as `apiary sql` does; a long-lived one need not.
    pub async fn settle(&self) {
        if let Some((_, cluster)) = self.query.get() {
            cluster.settle().await;
        }
    }

    /// Resolves when an operator asks this node to leave (`apiary drain`). Pending forever
    /// when not started.
    pub async fn drain_requested(&self) {
        match self.running() {
            Some(node) => node.agent.drain_requested().await,
            None => std::future::pending().await,
        }
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

    // ----- data -----

    /// Sizing of writes from this node's capacity: cells near its target cell size (an
    /// eighth of a bee's memory, 16 MiB to 256 MiB), at most one bee's memory buffered.
    fn write_options(&self) -> WriteOptions {
        let capacity = match self.running() {
            Some(node) => node.agent.capacity().clone(),
            None => apiary_swarm::detect_capacity(None),
        };
        // Cells this node writes enter its cache as they are uploaded.
        let on_upload = self.cell_cache().map(|cache| {
            let clock = Arc::clone(&self.registry.config().clock);
            Arc::new(
                move |key: &apiary_storage::Path, bytes: &bytes::Bytes, e_tag: Option<String>| {
                    let (cache, key, bytes, now) = (
                        Arc::clone(&cache),
                        key.to_string(),
                        bytes.clone(),
                        clock.wall_ms(),
                    );
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = cache.insert(&key, &bytes, now, e_tag) {
                            tracing::debug!(key, error = %e, "a written cell was not cached");
                        }
                    });
                },
            ) as apiary_ledger::UploadHook
        });
        WriteOptions {
            on_upload,
            target_cell_bytes: capacity.target_cell_bytes as usize,
            encode_threads: capacity.bees.max(1) as usize,
            memory_budget: (capacity.memory_per_bee_bytes as usize)
                .max(capacity.target_cell_bytes as usize * 2),
            ..WriteOptions::default()
        }
    }

    /// Appends `batches` to a frame in one commit. Columns are matched to the frame by name
    /// (any order; safe widenings cast; missing nullable columns null); anything else is
    /// refused and nothing is committed.
    pub async fn write_to_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        batches: impl IntoIterator<Item = RecordBatch, IntoIter: Send + 'static>,
    ) -> Result<WriteResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.write_batches_to_frame(&frame, batches.into_iter().map(Ok), WriteMode::Append)
            .await
    }

    /// Appends an Arrow IPC stream (the seeds' `write_to_frame(…, ipc_bytes)`), read batch by
    /// batch on a blocking thread (a slow reader never stalls the runtime). Malformed IPC is
    /// an error and commits nothing.
    pub async fn write_ipc_to_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        ipc: impl std::io::Read + Send + 'static,
    ) -> Result<WriteResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.write_batches_to_frame(&frame, ipc::deferred(ipc), WriteMode::Append)
            .await
    }

    /// Replaces a frame's contents with `batches`, atomically: a concurrent append committed
    /// before the overwrite is removed with the old data; one committed after it survives.
    pub async fn overwrite_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        batches: impl IntoIterator<Item = RecordBatch, IntoIter: Send + 'static>,
    ) -> Result<WriteResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.write_batches_to_frame(&frame, batches.into_iter().map(Ok), WriteMode::Overwrite)
            .await
    }

    /// Writes batches from any source (files, streams) to `frame`, in one commit that
    /// appends or replaces its contents.
    pub async fn write_batches_to_frame(
        &self,
        frame: &FrameRef,
        batches: impl IntoIterator<Item = Result<RecordBatch, LedgerError>, IntoIter: Send + 'static>,
        mode: WriteMode,
    ) -> Result<WriteResult> {
        if let Some(node) = self.running() {
            // A hot colony slows writes down before they start.
            node.colony.admit_write().await;
        }
        // A write takes a bee like a query, so the node's idle bees count it.
        let _bee = self.work_bee().await;
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(frame.clone());
        let ledger = self.registry.ledger(frame).await?;
        let backend = Arc::clone(self.registry.backend());
        Ok(apiary_ledger::write_batches(
            &ledger,
            backend.as_ref(),
            batches.into_iter(),
            mode,
            &self.write_options(),
        )
        .await?)
    }

    /// A bee of the running node for a write or a compaction, held until dropped (waiting
    /// for one while every bee is busy). `None` off a node, or on one that is leaving: the
    /// work then runs without one, since its data has nowhere else to go.
    async fn work_bee(&self) -> Option<apiary_swarm::Bee> {
        let node = self.running()?;
        node.colony.bees().acquire().await.ok()
    }

    /// Compacts the frame's small cells, partition by partition, into cells near this
    /// node's target size, each group in one commit (readers never see a row twice or
    /// missing). Skipped while another node holds the frame's compaction lease. The old files
    /// stay for readers of older versions until [`vacuum`](Self::vacuum).
    pub async fn compact(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
    ) -> Result<apiary_ledger::CompactResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.compact_frame(&frame).await
    }

    async fn compact_frame(&self, frame: &FrameRef) -> Result<apiary_ledger::CompactResult> {
        let owner = match self.running() {
            Some(node) => node.agent.node_id().to_string(),
            None => format!("client-{}", std::process::id()),
        };
        let ledger = self.registry.ledger(frame).await?;
        let options = apiary_ledger::CompactOptions::new(self.write_options(), owner);
        // Compaction reads and writes cells: it takes a bee like a query.
        let _bee = self.work_bee().await;
        Ok(apiary_ledger::compact(&ledger, self.registry.backend().as_ref(), &options).await?)
    }

    /// While the node runs: every `interval`, when its colony is cold, compacts the frames
    /// it wrote to since their last compaction.
    fn spawn_compactor(
        &self,
        colony: Arc<apiary_swarm::Colony>,
        node_id: String,
        interval: std::time::Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let ap = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = apiary_storage::time::sleep(interval) => {}
                }
                if colony.regulation() != apiary_swarm::Regulation::Cold {
                    continue;
                }
                let mut frames: Vec<FrameRef> = ap
                    .written
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect();
                while let Some(frame) = frames.pop() {
                    if colony.regulation() != apiary_swarm::Regulation::Cold {
                        // Busy again: the rest waits for the next cold spell.
                        frames.push(frame);
                        ap.written
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(frames);
                        break;
                    }
                    match ap.compact_frame(&frame).await {
                        Ok(done) if done.conflicts > 0 || done.lease_held_elsewhere => {
                            ap.written
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(frame);
                        }
                        Ok(done) if done.commits > 0 => {
                            tracing::info!(node = %node_id, %frame, cells_removed = done.cells_removed, cells_added = done.cells_added, "compacted");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(%frame, error = %e, "compaction failed"),
                    }
                }
            }
        });
    }

    /// Deletes the frame's cell files that nothing can need: unreferenced by the newest
    /// version, not removed within `retention` (default 1 hour), and older than it, on the
    /// store's clock. A retention shorter than a write may take
    /// ([`apiary_ledger::DEFAULT_MAX_WRITE_AGE`]) is refused: it could delete the cells of a
    /// write still uploading.
    pub async fn vacuum(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        retention: Option<std::time::Duration>,
    ) -> Result<apiary_ledger::VacuumResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        let ledger = self.registry.ledger(&frame).await?;
        let retention = retention.unwrap_or(std::time::Duration::from_secs(3600));
        let min = self.write_options().max_write_age;
        if retention < min {
            return Err(LedgerError::Invalid(format!(
                "a vacuum retention of {} is shorter than the {} a write may take to commit, \
                 so it could delete the cells of a write still in flight; use a retention of \
                 at least {}",
                humantime::format_duration(retention),
                humantime::format_duration(min),
                humantime::format_duration(min)
            ))
            .into());
        }
        Ok(apiary_ledger::vacuum(&ledger, self.registry.backend().as_ref(), retention).await?)
    }

    /// The node's SQL engine, prepared on first use: one scan partition per bee.
    fn query_engine(&self) -> Result<&QueryEngine> {
        if let Some((engine, _)) = self.query.get() {
            return Ok(engine);
        }
        let capacity = apiary_swarm::detect_capacity(None);
        let (memory_tier, memory_budget) = tier_limits(self.memory_tier, &capacity);
        let directory = Arc::new(SwarmDirectory::new(
            Arc::clone(&self.node),
            self.membership_for(MembershipRole::Observer { swarm: &self.swarm }),
            Arc::clone(&self.registry.config().clock),
        ));
        let engine = QueryEngine::new(
            Arc::clone(&self.registry),
            QueryOptions {
                target_partitions: capacity.bees as usize,
                memory_limit: self.query_memory,
                memory_tier,
                memory_budget,
                ..QueryOptions::default()
            },
        )?
        .with_distribute(self.distribute_mode);
        let cluster = Cluster::new(
            Arc::clone(&self.transport),
            directory,
            self.distribute.clone(),
        )
        .with_time(
            Arc::clone(&self.registry.config().clock),
            self.registry.config().random.clone(),
        );
        let engine = engine.with_distributor(Arc::new(cluster.clone()));
        // A racing first call may have set it; either engine is equivalent.
        Ok(&self.query.get_or_init(|| (engine, cluster)).0)
    }

    /// Runs SQL (one or more `;`-separated statements; the last one's rows are returned)
    /// over `hive.box.frame` names in a session of its own, so a `USE` lasts for the rest
    /// of this text only. Read-only: DDL, DML and file access are refused with the API call
    /// to use instead.
    pub async fn sql(&self, query: &str) -> Result<QueryResult> {
        Ok(self.query_engine()?.sql(query).await?)
    }

    /// [`sql`](Self::sql), with the last statement's rows streamed as they are produced
    /// instead of collected: memory stays bounded by what the consumer holds, and the
    /// first rows arrive before the query ends. Dropping the stream cancels the query.
    pub async fn sql_stream(&self, query: &str) -> Result<SendableRecordBatchStream> {
        Ok(self.sql_session()?.sql_stream(query).await?)
    }

    /// [`sql`](Self::sql), with the rows as one Arrow IPC stream (what
    /// `pyarrow.ipc.open_stream` reads).
    pub async fn sql_ipc(&self, query: &str) -> Result<Vec<u8>> {
        Ok(self.sql(query).await?.to_ipc_stream()?)
    }

    /// A SQL session: `USE` and `SET` in it last until it is dropped.
    pub fn sql_session(&self) -> Result<SqlSession> {
        Ok(self.query_engine()?.session())
    }

    /// Reads a frame at its newest version; with `partition_filter`, only the cells whose
    /// partition columns have exactly these values (`("country", "us")`).
    pub async fn read_from_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        partition_filter: &[(&str, &str)],
    ) -> Result<Vec<RecordBatch>> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        let ledger = self.registry.ledger(&frame).await?;
        let filter: Vec<(String, String)> = partition_filter
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect();
        Ok(apiary_ledger::read_batches(&ledger, self.registry.backend().as_ref(), &filter).await?)
    }
}
