//! The [`StorageBackend`] trait: the few operations Apiary needs from object storage.

use std::fmt::{Debug, Display};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::error::Result;

/// Identifies one version of an object, for compare-and-swap.
///
/// Stores use an ETag, a version id, or both; keep both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectVersion {
    /// The object's ETag, where the store reports one.
    pub e_tag: Option<String>,
    /// The store's version id, where it has one.
    pub version: Option<String>,
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the storage root.
    pub key: Path,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, as reported by the store (informational only: Apiary never
    /// compares it with a local clock for correctness).
    pub last_modified_ms: i64,
    /// Version identity for compare-and-swap.
    pub version: ObjectVersion,
}

/// An object's bytes with its metadata.
#[derive(Debug, Clone)]
pub struct Object {
    /// Metadata.
    pub meta: ObjectMeta,
    /// The whole content.
    pub bytes: Bytes,
}

/// The result of [`StorageBackend::put_if_absent`].
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// This call created the object (possibly on an earlier attempt whose response was lost).
    Created(ObjectVersion),
    /// Someone else's object is already there; it is returned so the caller need not read
    /// it again.
    AlreadyExists(Object),
}

/// The result of [`StorageBackend::put_if_match`].
#[derive(Debug, Clone)]
pub enum SwapOutcome {
    /// The object matched the expected version and now holds the new bytes.
    Swapped(ObjectVersion),
    /// The object changed (or vanished) since the expected version; nothing was written.
    /// Carries the current object when it exists.
    Mismatch(Option<Object>),
}

/// The result of a delimited listing: objects directly under the prefix and the "folders"
/// one level below it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Objects directly under the prefix.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes one level below, as full keys.
    pub prefixes: Vec<Path>,
}

/// What a backend can do beyond the basics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `put_if_match` is supported (S3, GCS, Azure, memory). Local folders do not support it:
    /// there is no atomic compare-and-swap on a POSIX file system without locks.
    pub compare_and_swap: bool,
}

/// The storage operations Apiary is built on.
///
/// Keys are `object_store` paths relative to the storage root. Every write is atomic: a
/// reader sees the whole old object or the whole new one, never a part. Conditional writes
/// ([`put_if_absent`](Self::put_if_absent), [`put_if_match`](Self::put_if_match)) are
/// linearizable, and resolve lost responses themselves: when the outcome of a request is
/// unknown (timeout, reset, 5xx, S3's `409 ConditionalRequestConflict`) they read the object
/// back and compare it with the bytes they sent. Callers must therefore make every payload
/// they write conditionally unique, for instance by embedding a random write id, so that
/// "the stored bytes equal mine" means "my write landed".
///
/// Every implementation runs [`conformance::run_all`](crate::conformance::run_all)
/// (feature `testing`), which reports the checks it had to skip and why.
///
/// # Plugging one in
///
/// Any [`object_store::ObjectStore`] (a store of your own, or one `object_store` ships)
/// becomes a backend through [`ObjectStoreBackend`](crate::ObjectStoreBackend), which adds
/// the lost-response handling above; say what it supports. The backend is then given to
/// `ApiaryBuilder::backend` in `apiary-node`.
///
/// ```
/// # async fn demo() -> apiary_storage::Result<()> {
/// use std::sync::Arc;
/// use apiary_storage::{Capabilities, CreateOutcome, ObjectStoreBackend, Path, StorageBackend};
/// use apiary_storage::object_store::memory::InMemory;
///
/// let store = Arc::new(InMemory::new());
/// let backend = ObjectStoreBackend::new(store, Capabilities { compare_and_swap: true }, "mine");
/// let key = Path::from("ledger/00000001.json");
/// let first = backend.put_if_absent(&key, "v1 by node a".into()).await?;
/// assert!(matches!(first, CreateOutcome::Created(_)));
/// match backend.put_if_absent(&key, "v1 by node b".into()).await? {
///     CreateOutcome::AlreadyExists(object) => assert_eq!(&object.bytes[..], b"v1 by node a"),
///     CreateOutcome::Created(_) => unreachable!("one creator wins"),
/// }
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[async_trait]
pub trait StorageBackend: Debug + Display + Send + Sync + 'static {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Reads a whole object.
    async fn get(&self, key: &Path) -> Result<Object>;

    /// Reads a byte range of an object.
    async fn get_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes>;

    /// Reads an object's metadata.
    async fn head(&self, key: &Path) -> Result<ObjectMeta>;

    /// Writes an object atomically, replacing any existing one.
    async fn put(&self, key: &Path, bytes: Bytes) -> Result<ObjectVersion>;

    /// Creates an object only if none exists at `key` (`If-None-Match: *`).
    async fn put_if_absent(&self, key: &Path, bytes: Bytes) -> Result<CreateOutcome>;

    /// Replaces an object only if its current version is `expected` (`If-Match`).
    ///
    /// Returns [`StorageError::Unsupported`](crate::StorageError::Unsupported) where
    /// [`Capabilities::compare_and_swap`] is false.
    async fn put_if_match(
        &self,
        key: &Path,
        bytes: Bytes,
        expected: &ObjectVersion,
    ) -> Result<SwapOutcome>;

    /// Lists every object under `prefix`, recursively, sorted by key.
    async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>>;

    /// Lists the objects under `prefix` whose key sorts after `offset`, sorted by key.
    async fn list_after(&self, prefix: &Path, offset: &Path) -> Result<Vec<ObjectMeta>>;

    /// Lists one level under `prefix`: its objects and its sub-prefixes, each sorted.
    async fn list_with_delimiter(&self, prefix: &Path) -> Result<Listing>;

    /// Deletes an object. Deleting an absent object succeeds.
    async fn delete(&self, key: &Path) -> Result<()>;

    /// Removes what writes killed mid-way left under `prefix` that listings do not show
    /// (a local folder's staging files, `name#N`), last modified before `before_ms` on the
    /// store's clock; returns how many. The default, for stores that leave none (S3, GCS and
    /// Azure discard an upload that never completed), removes nothing.
    async fn remove_stale_uploads(&self, prefix: &Path, before_ms: i64) -> Result<usize> {
        let _ = (prefix, before_ms);
        Ok(0)
    }

    /// The `object_store` view of the same root, for readers such as DataFusion.
    fn object_store(&self) -> Arc<dyn ObjectStore>;

    /// The requests made through this backend since it was opened, by kind, when it counts
    /// them (a running node reports its request rate and cost from these). The default
    /// counts nothing.
    fn request_counts(&self) -> Option<crate::RequestCounts> {
        None
    }

    /// The same requests by operation and outcome, with how long each took to be
    /// answered, when the backend counts them. The default counts nothing.
    fn request_stats(&self) -> Option<crate::RequestStats> {
        None
    }
}
