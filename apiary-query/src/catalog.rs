//! The DataFusion catalog over Apiary's registry: hive → catalog, box → schema,
//! frame → table.
//!
//! Hive and box lookups are synchronous in DataFusion, so they only name things; the one
//! storage request of a warm lookup happens when a frame is resolved: the frame's open
//! ledger probes the version after its head (one GET when nothing changed). The scan index
//! of a ledger version is built once and shared by every query that reads that version.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use apiary_ledger::{FrameRef, LedgerError, LiveFrame, Registry, validate_name};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;

use crate::error::QueryError;
use crate::scans::ScanStores;
use crate::table::{FrameIndex, FrameTable};

/// The default catalog and schema of a session that has not run `USE`. Names starting with
/// `_` are never valid hive or box names, so these can never name real objects.
pub(crate) const NO_HIVE: &str = "_no_hive";
pub(crate) const NO_BOX: &str = "_no_box";

/// A frame at a version: how a distributed task's pins are keyed (one query may read a
/// frame at several versions).
pub type PinKey = (FrameRef, u64);

/// Past versions whose scan indexes a catalog keeps (each costs a replay to rebuild).
const PAST_INDEXES: usize = 64;

/// Frames whose newest scan index a catalog keeps, least recently read dropped first (as
/// many as the registry keeps open ledgers by default).
const NEWEST_INDEXES: usize = 1024;

/// Shared state of the catalog: the registry and the scan indexes of recently read versions.
#[derive(Debug)]
pub struct ApiaryCatalog {
    registry: Arc<Registry>,
    scans: Arc<ScanStores>,
    /// The newest version's index of recently read frames; a frame found dropped leaves.
    indexes: Mutex<lru::LruCache<FrameRef, Arc<FrameIndex>>>,
    /// Indexes of past versions read with `VERSION AS OF` and friends.
    past: Mutex<lru::LruCache<PinKey, Arc<FrameIndex>>>,
    pins: Option<HashMap<PinKey, Pinned>>,
    /// The node's `apiary.system.*` tables, once it installs them.
    system: std::sync::RwLock<Option<Arc<dyn crate::system::SystemTables>>>,
}

/// The separator of a version-qualified table name, `frame@12`: how a frame read at a past
/// version is named in plans and fragments (frame names never hold it).
pub const VERSION_MARK: char = '@';

/// `frame@12` as `("frame", Some(12))`; any other name as `(name, None)`.
pub fn split_versioned(name: &str) -> (&str, Option<u64>) {
    match name.rsplit_once(VERSION_MARK) {
        Some((frame, digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            match digits.parse() {
                Ok(version) => (frame, Some(version)),
                Err(_) => (name, None),
            }
        }
        _ => (name, None),
    }
}

/// A frame as a distributed task reads it: one version, optionally only some cells.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// The ledger version.
    pub version: u64,
    /// The cells to read (relative paths, or keys of parts of cells: the whole cell is then
    /// in the table, and the task reads only the part); `None` for all of them.
    pub cells: Option<BTreeSet<String>>,
    /// The frame's state at `version` as the coordinator shipped it (then no ledger is
    /// read); `None` to read it from the ledger.
    pub shipped: Option<Arc<LiveFrame>>,
}

impl ApiaryCatalog {
    /// A catalog over `registry`, whose cells DataFusion reads through `scans`.
    pub fn new(registry: Arc<Registry>, scans: Arc<ScanStores>) -> Self {
        Self {
            registry,
            scans,
            indexes: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(NEWEST_INDEXES).unwrap_or(NonZeroUsize::MIN),
            )),
            past: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(PAST_INDEXES).unwrap_or(NonZeroUsize::MIN),
            )),
            pins: None,
            system: std::sync::RwLock::default(),
        }
    }

    /// Installs (or, with `None`, removes) the node's `apiary.system.*` tables.
    pub fn set_system_tables(&self, tables: Option<Arc<dyn crate::system::SystemTables>>) {
        *self.system.write().unwrap_or_else(PoisonError::into_inner) = tables;
    }

    fn system_tables(&self) -> Option<Arc<dyn crate::system::SystemTables>> {
        self.system
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A catalog that resolves only the frames in `pins`, each at its pinned version and
    /// with only its pinned cells: what a distributed task reads. Any other frame is an
    /// error.
    pub fn pinned(&self, pins: HashMap<PinKey, Pinned>) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            scans: Arc::clone(&self.scans),
            indexes: Mutex::new(lru::LruCache::new(NonZeroUsize::MIN)),
            past: Mutex::new(lru::LruCache::new(NonZeroUsize::MIN)),
            pins: Some(pins),
            system: std::sync::RwLock::default(),
        }
    }

    async fn pinned_table(&self, frame: &FrameRef, pin: &Pinned) -> Result<FrameTable, QueryError> {
        let state;
        let live = match &pin.shipped {
            Some(live) => live.as_ref(),
            None => {
                let ledger = self.registry.ledger(frame).await?;
                state = ledger.state_at(pin.version).await?;
                state.live.as_ref().ok_or_else(|| {
                    QueryError::Invalid(format!(
                        "frame `{frame}` does not exist at version {}",
                        pin.version
                    ))
                })?
            }
        };
        let index = match &pin.cells {
            None => FrameIndex::build(frame, pin.version, live)?,
            Some(cells) => {
                // A name is a cell, or a part of one (an exact name wins).
                let mut wanted = BTreeSet::new();
                for name in cells {
                    let Some(cell) = crate::parts::named_cell(live, name) else {
                        return Err(QueryError::Invalid(format!(
                            "cell `{name}` is not in frame `{frame}` at version {}",
                            pin.version
                        )));
                    };
                    wanted.insert(cell.path.as_str());
                }
                let mut subset = live.clone();
                subset
                    .cells
                    .retain(|path, _| wanted.contains(path.as_str()));
                FrameIndex::build(frame, pin.version, &subset)?.inexact()
            }
        };
        Ok(FrameTable::new(Arc::new(index), Arc::clone(&self.scans)))
    }

    /// The node's stores that frame scans read through (and its memory tier).
    pub fn scans(&self) -> &Arc<ScanStores> {
        &self.scans
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The frame at its newest version, as a table. Errors name what is missing. In a
    /// task's catalog, the newest version the task pins (any version read by name alone
    /// was the coordinator's newest, so at least every version it pinned explicitly).
    pub async fn frame_table(&self, frame: &FrameRef) -> Result<FrameTable, QueryError> {
        if let Some(pins) = &self.pins {
            let newest = pins
                .iter()
                .filter(|((f, _), _)| f == frame)
                .max_by_key(|((_, version), _)| *version);
            return match newest {
                Some((_, pin)) => self.pinned_table(frame, pin).await,
                None => Err(not_pinned(frame)),
            };
        }
        let ledger = match self.registry.ledger(frame).await {
            Ok(ledger) => ledger,
            Err(e) => {
                if matches!(e, LedgerError::NotFound { .. }) {
                    self.forget(frame);
                }
                return Err(e.into());
            }
        };
        let state = ledger.refresh().await?;
        let Some((state, incarnation)) = state.and_then(|s| {
            let incarnation = s.live.as_ref()?.incarnation;
            Some((s, incarnation))
        }) else {
            self.forget(frame);
            return Err(self.explain_missing(frame).await);
        };
        let cached = self
            .indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(frame)
            .filter(|i| i.version() == state.version && i.incarnation() == incarnation)
            .cloned();
        let index = match cached {
            Some(index) => index,
            None => {
                let index = Arc::new(FrameIndex::build_shared(frame, &state)?);
                self.indexes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(frame.clone(), Arc::clone(&index));
                index
            }
        };
        Ok(FrameTable::new(index, Arc::clone(&self.scans)))
    }

    /// Drops what the catalog keeps of a frame found missing (dropped).
    fn forget(&self, frame: &FrameRef) {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop(frame);
    }

    /// How many frames' newest scan indexes the catalog keeps (at most 1 024; a frame
    /// found dropped is forgotten).
    pub fn kept_indexes(&self) -> usize {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The frame at `version`, as a table. A version past vacuum's retention is refused
    /// (see [`apiary_ledger::travel`]), as is one the frame has not reached, or at which it
    /// did not exist.
    pub async fn frame_table_at(
        &self,
        frame: &FrameRef,
        version: u64,
    ) -> Result<FrameTable, QueryError> {
        if let Some(pins) = &self.pins {
            return match pins.get(&(frame.clone(), version)) {
                Some(pin) => self.pinned_table(frame, pin).await,
                None => Err(not_pinned(frame)),
            };
        }
        let ledger = self.registry.ledger(frame).await?;
        let mut head = ledger.cached();
        if head.as_ref().is_none_or(|h| h.version < version) {
            head = ledger.refresh().await?;
        }
        let Some(head) = head else {
            return Err(self.explain_missing(frame).await);
        };
        if version > head.version {
            return Err(QueryError::Invalid(format!(
                "frame `{frame}` has no version {version} yet: its newest is {}",
                head.version
            )));
        }
        let key = (frame.clone(), version);
        let cached = self
            .past
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let index = match cached {
            Some(index) => index,
            None => {
                // The head read above, not a newer one a refresh might find now.
                let state = if version == head.version {
                    Arc::clone(&head)
                } else {
                    ledger.state_at(version).await?
                };
                if state.live.is_none() {
                    return Err(QueryError::Invalid(format!(
                        "frame `{frame}` did not exist at version {version} (it was dropped \
                         then); `apiary history {frame}` lists its versions"
                    )));
                }
                let index = Arc::new(FrameIndex::build_shared(frame, &state)?);
                self.past
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(key, Arc::clone(&index));
                index
            }
        };
        ledger
            .check_retained(version, index.source(), &head)
            .await?;
        Ok(FrameTable::new(index, Arc::clone(&self.scans)))
    }

    /// Why `frame` cannot be found: a missing hive or box is named as such.
    async fn explain_missing(&self, frame: &FrameRef) -> QueryError {
        let hint = match self.registry.get_box(&frame.hive, &frame.r#box).await {
            Ok(_) => format!(
                "frame `{frame}` does not exist (SHOW FRAMES IN {}.{} lists its frames)",
                frame.hive, frame.r#box
            ),
            Err(LedgerError::NotFound { what }) => {
                format!(
                    "frame `{frame}` does not exist: {what} does not exist (SHOW HIVES and SHOW BOXES list what does)"
                )
            }
            Err(e) => return QueryError::Ledger(e),
        };
        QueryError::Invalid(hint)
    }
}

fn not_pinned(frame: &FrameRef) -> QueryError {
    QueryError::Invalid(format!(
        "frame `{frame}` is not part of this task at that version; a fragment reads only \
         the frames its manifest pins"
    ))
}

/// The catalog list DataFusion sees: every hive name resolves to a [`HiveCatalog`]; whether
/// the hive exists is checked when a frame in it is resolved.
#[derive(Debug, Clone)]
pub struct HiveList(pub Arc<ApiaryCatalog>);

impl CatalogProviderList for HiveList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Nothing but the registry defines hives; DataFusion's own default catalog is not
        // created (see the session builder), so this is never called with one to keep.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        // Listing hives needs storage; DataFusion asks only for information_schema, which is
        // off. `SHOW HIVES` lists them.
        Vec::new()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let hive = Arc::new(HiveCatalog {
            catalog: Arc::clone(&self.0),
            hive: name.to_string(),
        });
        if name == crate::system::SYSTEM_HIVE {
            let tables = self.0.system_tables();
            return Some(Arc::new(crate::system::SystemCatalog { tables, hive }));
        }
        Some(hive)
    }
}

/// A hive as a DataFusion catalog.
#[derive(Debug)]
pub struct HiveCatalog {
    catalog: Arc<ApiaryCatalog>,
    hive: String,
}

impl CatalogProvider for HiveCatalog {
    fn schema_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(Arc::new(BoxSchema {
            catalog: Arc::clone(&self.catalog),
            hive: self.hive.clone(),
            r#box: name.to_string(),
        }))
    }
}

/// A box as a DataFusion schema.
#[derive(Debug)]
pub struct BoxSchema {
    catalog: Arc<ApiaryCatalog>,
    hive: String,
    r#box: String,
}

impl BoxSchema {
    fn frame_ref(&self, name: &str) -> Result<FrameRef, QueryError> {
        if self.hive == NO_HIVE || self.r#box == NO_BOX {
            let written = if self.hive == NO_HIVE && self.r#box != NO_BOX {
                format!("{}.{name}", self.r#box)
            } else {
                name.to_string()
            };
            return Err(QueryError::Invalid(format!(
                "`{written}` does not say which hive and box it is in: write hive.box.frame, \
                 or run `USE hive.box` (or `USE hive` for box.frame) first in this session"
            )));
        }
        validate_name("hive", &self.hive)?;
        validate_name("box", &self.r#box)?;
        validate_name("frame", name)?;
        Ok(FrameRef::new(&self.hive, &self.r#box, name)?)
    }
}

#[async_trait]
impl SchemaProvider for BoxSchema {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let (name, version) = split_versioned(name);
        let frame = self.frame_ref(name)?;
        let table = match version {
            None => self.catalog.frame_table(&frame).await?,
            Some(version) => self.catalog.frame_table_at(&frame, version).await?,
        };
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, _name: &str) -> bool {
        // Only DDL asks, and DDL is not run through SQL.
        false
    }
}

#[cfg(test)]
mod tests {
    use apiary_ledger::{FrameDefinition, FrameSchema, LedgerConfig};

    use super::*;
    use crate::{QueryEngine, QueryOptions};

    #[tokio::test]
    async fn a_dropped_frame_leaves_the_kept_indexes() {
        let registry = Arc::new(Registry::new(
            apiary_storage::memory(),
            LedgerConfig::default(),
        ));
        registry.create_hive("h").await.expect("hive");
        registry.create_box("h", "b").await.expect("box");
        let definition = FrameDefinition::new(
            FrameSchema::parse_compact("x:int64").expect("schema"),
            vec![],
        )
        .expect("definition");
        for name in ["f", "g"] {
            let frame = FrameRef::new("h", "b", name).expect("name");
            registry
                .create_frame(&frame, definition.clone())
                .await
                .expect("frame");
        }
        let engine =
            QueryEngine::new(Arc::clone(&registry), QueryOptions::default()).expect("engine");
        for name in ["f", "g"] {
            engine
                .sql(&format!("SELECT COUNT(*) FROM h.b.{name}"))
                .await
                .expect("query");
        }
        assert_eq!(engine.catalog().kept_indexes(), 2);
        registry
            .drop_frame(&FrameRef::new("h", "b", "f").expect("name"))
            .await
            .expect("drop");
        let err = engine
            .sql("SELECT COUNT(*) FROM h.b.f")
            .await
            .expect_err("dropped");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!(engine.catalog().kept_indexes(), 1);
    }
}
