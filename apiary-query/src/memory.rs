//! Memory budgets of queries: every query runs under a DataFusion memory pool of its own,
//! sized from what it was admitted with, and spills to the node's scratch directory when the
//! pool is full (sorts, aggregations and joins that support spilling do; a query that cannot
//! fit fails with an error that says so and what to set).
//!
//! On a node, [`Admission`] is the bees: a query waits for a free bee and runs with the
//! memory of the bees it holds. Elsewhere (a one-shot `apiary sql --memory 1GiB`) a fixed
//! budget applies; without either, memory is not limited.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use apiary_cache::ColumnTier;
use async_trait::async_trait;
use datafusion::error::Result as DfResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, UnboundedMemoryPool,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::error::Result;

/// Reads how much memory a query's pool holds now.
pub type PoolReading = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What a query was admitted with: its memory, and whatever it holds while it runs (bees),
/// released when the grant drops.
pub struct Grant {
    /// Bytes the query's memory pool holds.
    pub memory_bytes: usize,
    /// Bees (or other capacity) held until the query's stream ends.
    pub hold: Box<dyn Any + Send + Sync>,
    /// Told how to read the query's pool once it exists (so the bees can report the memory
    /// their work holds).
    pub on_pool: Option<Box<dyn FnOnce(PoolReading) + Send + Sync>>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("memory_bytes", &self.memory_bytes)
            .finish_non_exhaustive()
    }
}

/// Admits queries on a node: waits until it may run, and says with how much memory.
///
/// A node's default admits a query when a bee is free and gives it that bee's memory;
/// `QueryEngine::set_admission` plugs in another policy.
///
/// ```
/// use std::path::PathBuf;
/// use std::sync::Arc;
/// use apiary_query::{Admission, Grant};
///
/// /// At most `permits` queries at once, each with 256 MiB.
/// #[derive(Debug)]
/// struct Permits(Arc<tokio::sync::Semaphore>);
///
/// #[async_trait::async_trait]
/// impl Admission for Permits {
///     async fn admit(&self) -> apiary_query::Result<Grant> {
///         let permit = Arc::clone(&self.0)
///             .acquire_owned()
///             .await
///             .map_err(|_| apiary_query::QueryError::Execution("closed".into()))?;
///         Ok(Grant { memory_bytes: 256 << 20, hold: Box::new(permit), on_pool: None })
///     }
///     fn task_memory(&self) -> usize {
///         256 << 20
///     }
///     fn scratch_dir(&self) -> Option<PathBuf> {
///         Some(std::env::temp_dir())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let admission = Permits(Arc::new(tokio::sync::Semaphore::new(1)));
/// let grant = admission.admit().await.unwrap();
/// assert_eq!(admission.0.available_permits(), 0, "held while the query runs");
/// drop(grant);
/// assert_eq!(admission.0.available_permits(), 1);
/// # });
/// ```
#[async_trait]
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// Waits for capacity (a free bee) and grants it.
    async fn admit(&self) -> Result<Grant>;

    /// The memory one distributed task runs with (the bee that runs it).
    fn task_memory(&self) -> usize;

    /// Where queries spill.
    fn scratch_dir(&self) -> Option<PathBuf>;
}

/// How an engine budgets memory, shared by its clones.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    admission: Arc<Mutex<Option<Arc<dyn Admission>>>>,
    fixed: Option<usize>,
    scratch: Option<PathBuf>,
    /// The node's memory tier, which gives way to what queries' pools reserve.
    tier: Arc<ColumnTier>,
    /// The scratch directory's disk manager, made once per admission: making one creates a
    /// directory.
    disk: Arc<Mutex<Option<Arc<DiskManager>>>>,
}

impl Budget {
    pub(crate) fn fixed(
        bytes: Option<usize>,
        scratch: Option<PathBuf>,
        tier: Arc<ColumnTier>,
    ) -> Self {
        Self {
            admission: Arc::default(),
            fixed: bytes,
            scratch,
            tier,
            disk: Arc::default(),
        }
    }

    /// The disk manager spilling to `dir` (the base runtime's, spilling to the system's
    /// temporary directory, for `None`), shared by every query and task that spills there.
    /// `dir` is the admission's or the fixed scratch directory, so it only changes with the
    /// admission, which forgets the manager.
    fn disk_manager(&self, base: &RuntimeEnv, dir: Option<PathBuf>) -> DfResult<Arc<DiskManager>> {
        let Some(dir) = dir else {
            return Ok(Arc::clone(&base.disk_manager));
        };
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(manager) = disk.as_ref() {
            return Ok(Arc::clone(manager));
        }
        let manager = Arc::new(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir]))
                .build()?,
        );
        *disk = Some(Arc::clone(&manager));
        Ok(manager)
    }

    pub(crate) fn set_admission(&self, admission: Option<Arc<dyn Admission>>) {
        *self.admission.lock().unwrap_or_else(|p| p.into_inner()) = admission;
        // Another scratch directory, or the same one emptied by a new node: a new manager.
        *self.disk.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn admission(&self) -> Option<Arc<dyn Admission>> {
        self.admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Capacity for a distributed query's task that its coordinator runs itself: a bee of
    /// this node, as a worker's task holds one, so that a node's published idle bees count
    /// every task it runs. `None` where there is no admission (a client, not a node).
    pub(crate) async fn admit_task(&self) -> Result<Option<Grant>> {
        match self.admission() {
            Some(admission) => Ok(Some(admission.admit().await?)),
            None => Ok(None),
        }
    }

    /// Admits a query: its grant (when there is an admission) and the runtime it runs in.
    pub(crate) async fn admit_query(
        &self,
        base: &RuntimeEnv,
    ) -> Result<(Option<Grant>, Arc<RuntimeEnv>)> {
        match self.admission() {
            Some(admission) => {
                let mut grant = admission.admit().await?;
                let runtime = runtime(
                    base,
                    Some(grant.memory_bytes),
                    self.disk_manager(base, admission.scratch_dir())?,
                    &self.tier,
                );
                if let Some(tell) = grant.on_pool.take() {
                    let pool = Arc::clone(&runtime.memory_pool);
                    tell(Arc::new(move || pool.reserved() as u64));
                }
                Ok((Some(grant), runtime))
            }
            None => Ok((
                None,
                runtime(
                    base,
                    self.fixed,
                    self.disk_manager(base, self.scratch.clone())?,
                    &self.tier,
                ),
            )),
        }
    }

    /// The runtime a distributed task runs in (its bee's memory).
    pub(crate) fn task_runtime(&self, base: &RuntimeEnv) -> Result<Arc<RuntimeEnv>> {
        match self.admission() {
            Some(admission) => Ok(runtime(
                base,
                Some(admission.task_memory()),
                self.disk_manager(base, admission.scratch_dir())?,
                &self.tier,
            )),
            None => Ok(runtime(
                base,
                self.fixed,
                self.disk_manager(base, self.scratch.clone())?,
                &self.tier,
            )),
        }
    }
}

/// `base` with a memory pool of `bytes` (unbounded for `None`) spilling through `disk`,
/// whose reservations make `tier` give way. Caches and the object store are shared.
fn runtime(
    base: &RuntimeEnv,
    bytes: Option<usize>,
    disk_manager: Arc<DiskManager>,
    tier: &Arc<ColumnTier>,
) -> Arc<RuntimeEnv> {
    let pool: Arc<dyn MemoryPool> = match bytes {
        Some(bytes) => Arc::new(FairSpillPool::new(bytes)),
        None => Arc::new(UnboundedMemoryPool::default()),
    };
    let memory_pool = Arc::new(YieldingPool {
        inner: pool,
        tier: Arc::clone(tier),
    });
    Arc::new(RuntimeEnv {
        memory_pool,
        disk_manager,
        cache_manager: Arc::clone(&base.cache_manager),
        object_store_registry: Arc::clone(&base.object_store_registry),
    })
}

/// A query's pool that tells the node's memory tier what it reserves: every byte a query
/// holds lowers the tier's capacity by one, so under memory pressure the tier's columns
/// are evicted before any query has to spill or fail.
#[derive(Debug)]
struct YieldingPool {
    inner: Arc<dyn MemoryPool>,
    tier: Arc<ColumnTier>,
}

impl std::fmt::Display for YieldingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl MemoryPool for YieldingPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.tier.pools_grew(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.tier.pools_shrank(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        self.inner.try_grow(reservation, additional)?;
        self.tier.pools_grew(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// `stream`, holding `grant` until it ends or is dropped.
pub(crate) fn holding(
    stream: SendableRecordBatchStream,
    grant: Option<Grant>,
) -> SendableRecordBatchStream {
    let Some(grant) = grant else { return stream };
    let schema = stream.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.map(move |batch| {
            let _held = &grant;
            batch
        }),
    ))
}
