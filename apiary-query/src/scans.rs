//! Per-scan views of the node's object store, so `EXPLAIN ANALYZE` can say what each frame
//! scan read from the cell cache and what from storage.
//!
//! DataFusion finds a scan's store by its object store URL. Every frame scan registers a
//! URL of its own, `apiary://scan-{n}`, bound to counters that [`FrameScanExec`] reports;
//! the registry resolves it to a counted view of the same caching store. The base URL,
//! `apiary://storage`, is the store itself. Nothing but Apiary's storage is reachable.
//!
//! The node's memory tier of decoded columns ([`ColumnTier`]) sits above these stores and is
//! held here too, so every frame scan of the node shares it.
//!
//! [`FrameScanExec`]: crate::FrameScanExec

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use apiary_cache::{CachingStore, ColumnTier, ScanCounters};
use apiary_storage::object_store::ObjectStore;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use url::Url;

const SCHEME: &str = "apiary";
const BASE_HOST: &str = "storage";
const SCAN_HOST: &str = "scan-";

/// The node's store, its memory tier and the counters of the scans running on it.
#[derive(Debug)]
pub struct ScanStores {
    cells: Arc<CachingStore>,
    tier: Arc<ColumnTier>,
    next: AtomicU64,
    live: Mutex<HashMap<u64, Weak<ScanCounters>>>,
    /// Cells frame scans selected (after pruning) since the node started, and their bytes.
    scanned: (AtomicU64, AtomicU64),
}

impl ScanStores {
    /// Scans over `cells`, keeping hot columns in `tier`.
    pub fn new(cells: Arc<CachingStore>, tier: Arc<ColumnTier>) -> Self {
        Self {
            cells,
            tier,
            next: AtomicU64::new(0),
            live: Mutex::default(),
            scanned: Default::default(),
        }
    }

    /// Counts a scan of `cells` cells holding `bytes` bytes in storage (whether they are
    /// then read from memory, the cache or storage).
    pub(crate) fn count_scan(&self, cells: u64, bytes: u64) {
        self.scanned.0.fetch_add(cells, Ordering::Relaxed);
        self.scanned.1.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Cells frame scans selected since the node started, and their bytes in storage.
    pub fn scanned(&self) -> (u64, u64) {
        (
            self.scanned.0.load(Ordering::Relaxed),
            self.scanned.1.load(Ordering::Relaxed),
        )
    }

    /// The caching store under every scan.
    pub fn cells(&self) -> &Arc<CachingStore> {
        &self.cells
    }

    /// The memory tier of decoded columns.
    pub fn tier(&self) -> &Arc<ColumnTier> {
        &self.tier
    }

    /// A URL for a new scan and the counters its reads will be counted in (the scan keeps
    /// the counters alive; the URL stops resolving to them once it drops them).
    pub fn register(&self) -> DfResult<(ObjectStoreUrl, Arc<ScanCounters>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(ScanCounters::default());
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, weak| weak.strong_count() > 0);
        live.insert(id, Arc::downgrade(&counters));
        drop(live);
        let url = ObjectStoreUrl::parse(format!("{SCHEME}://{SCAN_HOST}{id}"))?;
        Ok((url, counters))
    }

    fn counters(&self, id: u64) -> Option<Arc<ScanCounters>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&id).and_then(Weak::upgrade)
    }
}

/// The base URL of the node's storage.
pub fn base_url() -> DfResult<ObjectStoreUrl> {
    ObjectStoreUrl::parse(format!("{SCHEME}://{BASE_HOST}"))
}

/// DataFusion's object store registry: Apiary's storage, and nothing else.
#[derive(Debug)]
pub(crate) struct OnlyApiaryStorage(pub(crate) Arc<ScanStores>);

impl ObjectStoreRegistry for OnlyApiaryStorage {
    fn register_store(
        &self,
        _url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let host = url.host_str().unwrap_or_default();
        if url.scheme() == SCHEME {
            if host == BASE_HOST {
                return Ok(Arc::clone(self.0.cells()) as Arc<dyn ObjectStore>);
            }
            if let Some(id) = host.strip_prefix(SCAN_HOST).and_then(|n| n.parse().ok()) {
                return Ok(match self.0.counters(id) {
                    Some(counters) => self.0.cells().counted(counters),
                    None => Arc::clone(self.0.cells()) as Arc<dyn ObjectStore>,
                });
            }
        }
        Err(DataFusionError::Plan(format!(
            "`{url}` is outside Apiary's storage; SQL reads frames only"
        )))
    }
}
