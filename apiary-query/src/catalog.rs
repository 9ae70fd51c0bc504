//! The DataFusion catalog over Apiary's registry: hive → catalog, box → schema,
//! frame → table.
//!
//! Hive and box lookups are synchronous in DataFusion, so they only name things; the one
//! storage request of a warm lookup happens when a frame is resolved: the frame's open
//! ledger probes the version after its head (one GET when nothing changed). The scan index
//! of a ledger version is built once and shared by every query that reads that version.

use std::collections::{BTreeSet, HashMap};
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

/// Shared state of the catalog: the registry and the scan indexes of recently read versions.
#[derive(Debug)]
pub struct ApiaryCatalog {
    registry: Arc<Registry>,
    scans: Arc<ScanStores>,
    indexes: Mutex<HashMap<FrameRef, Arc<FrameIndex>>>,
    pins: Option<HashMap<FrameRef, Pinned>>,
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
            indexes: Mutex::default(),
            pins: None,
        }
    }

    /// A catalog that resolves only the frames in `pins`, each at its pinned version and
    /// with only its pinned cells: what a distributed task reads. Any other frame is an
    /// error.
    pub fn pinned(&self, pins: HashMap<FrameRef, Pinned>) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            scans: Arc::clone(&self.scans),
            indexes: Mutex::default(),
            pins: Some(pins),
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

    /// The frame at its newest version, as a table. Errors name what is missing.
    pub async fn frame_table(&self, frame: &FrameRef) -> Result<FrameTable, QueryError> {
        if let Some(pins) = &self.pins {
            return match pins.get(frame) {
                Some(pin) => self.pinned_table(frame, pin).await,
                None => Err(QueryError::Invalid(format!(
                    "frame `{frame}` is not part of this task; a fragment reads only the \
                     frames its manifest pins"
                ))),
            };
        }
        let ledger = self.registry.ledger(frame).await?;
        let state = ledger.refresh().await?;
        let Some((state, incarnation)) = state.and_then(|s| {
            let incarnation = s.live.as_ref()?.incarnation;
            Some((s, incarnation))
        }) else {
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
                    .insert(frame.clone(), Arc::clone(&index));
                index
            }
        };
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
        Some(Arc::new(HiveCatalog {
            catalog: Arc::clone(&self.0),
            hive: name.to_string(),
        }))
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
        let frame = self.frame_ref(name)?;
        let table = self.catalog.frame_table(&frame).await?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, _name: &str) -> bool {
        // Only DDL asks, and DDL is not run through SQL.
        false
    }
}
