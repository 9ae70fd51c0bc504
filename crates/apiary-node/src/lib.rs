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

use std::sync::Arc;

use apiary_ledger::{
    BoxInfo, Column, Created, FrameDefinition, FrameInfo, FrameRef, FrameSchema, HiveInfo,
    LedgerConfig, LedgerError, Registry,
};
use apiary_storage::{StorageBackend, StorageError, StorageUri};

pub use apiary_ledger;
pub use apiary_storage;

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
}

/// Result alias for the [`Apiary`] API.
pub type Result<T, E = ApiaryError> = std::result::Result<T, E>;

/// Options for [`Apiary::open_with`].
#[derive(Debug, Clone)]
pub struct ApiaryOptions {
    /// Where the swarm's state lives.
    pub storage: StorageUri,
    /// Ledger tuning.
    pub ledger: LedgerConfig,
}

impl ApiaryOptions {
    /// Options for `storage` with default tuning.
    pub fn new(storage: StorageUri) -> Self {
        Self {
            storage,
            ledger: LedgerConfig::default(),
        }
    }
}

/// A handle on an Apiary storage root: its registry of hives, boxes and frames.
///
/// Opening runs the storage preflight: a store that does not enforce conditional writes is
/// refused before anything is written.
#[derive(Debug, Clone)]
pub struct Apiary {
    storage: StorageUri,
    registry: Arc<Registry>,
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

    /// Opens with explicit options.
    pub async fn open_with(options: ApiaryOptions) -> Result<Self> {
        let backend = apiary_storage::open(&options.storage).await?;
        Ok(Self::with_backend(options.storage, backend, options.ledger))
    }

    /// Wraps an already opened backend (for custom or instrumented stores).
    pub fn with_backend(
        storage: StorageUri,
        backend: Arc<dyn StorageBackend>,
        ledger: LedgerConfig,
    ) -> Self {
        Self {
            storage,
            registry: Arc::new(Registry::new(backend, ledger)),
        }
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
}
