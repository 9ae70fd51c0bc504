//! [`ObjectStoreBackend`]: the default [`StorageBackend`], on top of any `object_store`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::backend::{
    Capabilities, CreateOutcome, Listing, Object, ObjectMeta, ObjectVersion, StorageBackend,
    SwapOutcome,
};
use crate::error::{Result, StorageError};

/// How many times a conditional write whose outcome is unknown is re-examined and re-sent
/// before it is reported as [`StorageError::OutcomeUnknown`].
const RESOLVE_ATTEMPTS: u32 = 6;

/// A [`StorageBackend`] over an `object_store` [`ObjectStore`].
///
/// Conditional writes resolve unknown outcomes by reading the object back (see the trait
/// documentation); an `AlreadyExists` answer is resolved the same way, because the store's
/// own retry of a request that had already landed answers `412` to its own write.
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    capabilities: Capabilities,
    description: String,
    resolve_pause: Duration,
    /// The folder a local store lives in (its staging files are swept from there).
    local_root: Option<std::path::PathBuf>,
    /// The counters of the requests made through this backend, when it counts them.
    counts: Option<crate::CountsHandle>,
}

impl ObjectStoreBackend {
    /// Wraps `store`. `description` is how the store is named in messages (its URI).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        capabilities: Capabilities,
        description: impl Into<String>,
    ) -> Self {
        Self {
            store,
            capabilities,
            description: description.into(),
            resolve_pause: Duration::from_millis(5),
            local_root: None,
            counts: None,
        }
    }

    /// Tells the backend that its store is a local folder at `root`, whose killed writes
    /// leave staging files (`name#N`) that listings hide (see
    /// [`StorageBackend::remove_stale_uploads`]).
    pub fn with_local_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.local_root = Some(root.into());
        self
    }

    /// Counts every request made through this backend (its store, and the store it hands
    /// to readers such as DataFusion), for [`StorageBackend::request_counts`].
    pub fn counting(mut self) -> Self {
        let counted = crate::InstrumentedStore::counting(Arc::clone(&self.store));
        self.counts = Some(counted.counts());
        self.store = Arc::new(counted);
        self
    }

    /// Sets the first pause between attempts to resolve a conditional write whose outcome
    /// was unknown (default 5 ms, doubling per attempt). Tests with in-process faults set it
    /// to zero.
    pub fn with_resolve_pause(mut self, pause: Duration) -> Self {
        self.resolve_pause = pause;
        self
    }

    /// A short pause between resolution attempts, growing with the attempt number.
    async fn pause(&self, attempt: u32) {
        let pause = self.resolve_pause.saturating_mul(1 << attempt.min(6));
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            crate::time::sleep(pause).await;
        }
    }

    fn err(&self, key: &Path, e: object_store::Error) -> StorageError {
        StorageError::from_object_store(key.as_ref(), e)
    }

    /// Reads `key` for resolution: `Ok(None)` when absent, `Err` for a failed read.
    async fn read_back(
        &self,
        key: &Path,
    ) -> std::result::Result<Option<Object>, object_store::Error> {
        match self.store.get(key).await {
            Ok(result) => {
                let meta = ObjectMeta {
                    key: key.clone(),
                    ..convert_meta(&result.meta)
                };
                let bytes = result.bytes().await?;
                Ok(Some(Object { meta, bytes }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("store", &self.description)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl fmt::Display for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// Whether an error leaves the outcome of a write unknown (it may or may not have applied).
fn is_ambiguous(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    ) && !never_sent(e)
}

/// Whether a request failed before it reached the store (its connection could not be made:
/// refused, unreachable, no such host): then it certainly did not apply, and its outcome is
/// known, not ambiguous.
pub(crate) fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    if credentials_unavailable(e) {
        // Signing needs credentials first: the request itself was never sent.
        return true;
    }
    let mut source = Some(e);
    while let Some(error) = source {
        if let Some(http) = error.downcast_ref::<object_store::client::HttpError>() {
            return http.kind() == object_store::client::HttpErrorKind::Connect;
        }
        source = error.source();
    }
    false
}

/// Whether `e` is the cloud's instance metadata service failing to hand out credentials
/// (the fallback when none are configured): its addresses or its paths appear in the error,
/// which `object_store` does not expose as a type.
pub(crate) fn credentials_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    const MARKS: [&str; 4] = [
        "169.254.169.254",
        "fd00:ec2::254",
        "/latest/api/token",
        "/latest/meta-data/iam/security-credentials",
    ];
    let mut source = Some(e);
    while let Some(error) = source {
        let text = error.to_string();
        if MARKS.iter().any(|mark| text.contains(mark)) {
            return true;
        }
        source = error.source();
    }
    false
}

fn convert_meta(meta: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        key: meta.location.clone(),
        size: meta.size,
        last_modified_ms: meta.last_modified.timestamp_millis(),
        version: ObjectVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        },
    }
}

fn put_version(result: object_store::PutResult) -> ObjectVersion {
    ObjectVersion {
        e_tag: result.e_tag,
        version: result.version,
    }
}

#[async_trait]
impl StorageBackend for ObjectStoreBackend {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn get(&self, key: &Path) -> Result<Object> {
        let result = self.store.get(key).await.map_err(|e| self.err(key, e))?;
        // Some wrappers (PrefixStore) report the full location here; the key asked for is
        // the one relative to our root.
        let meta = ObjectMeta {
            key: key.clone(),
            ..convert_meta(&result.meta)
        };
        let bytes = result.bytes().await.map_err(|e| self.err(key, e))?;
        Ok(Object { meta, bytes })
    }

    async fn get_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(key, range)
            .await
            .map_err(|e| self.err(key, e))
    }

    async fn head(&self, key: &Path) -> Result<ObjectMeta> {
        let meta = self.store.head(key).await.map_err(|e| self.err(key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            ..convert_meta(&meta)
        })
    }

    async fn put(&self, key: &Path, bytes: Bytes) -> Result<ObjectVersion> {
        let result = self
            .store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(|e| self.err(key, e))?;
        Ok(put_version(result))
    }

    async fn put_if_absent(&self, key: &Path, bytes: Bytes) -> Result<CreateOutcome> {
        let mut last_error = None;
        for attempt in 0..RESOLVE_ATTEMPTS {
            if attempt > 0 {
                self.pause(attempt).await;
            }
            let opts = PutOptions::from(PutMode::Create);
            let sent = self
                .store
                .put_opts(key, PutPayload::from(bytes.clone()), opts)
                .await;
            match sent {
                Ok(result) => return Ok(CreateOutcome::Created(put_version(result))),
                Err(e @ object_store::Error::AlreadyExists { .. })
                | Err(e @ object_store::Error::Precondition { .. }) => {
                    last_error = Some(e);
                }
                Err(e) if is_ambiguous(&e) => last_error = Some(e),
                Err(e) => return Err(self.err(key, e)),
            }
            // Either someone's object is there, or ours landed and its response was lost, or
            // (S3's 409 ConditionalRequestConflict) nothing is there yet: look.
            match self.read_back(key).await {
                Ok(Some(existing))
                    if existing.bytes == bytes
                        && !crate::planted::is_planted(
                            crate::planted::LOST_CREATE_IS_A_CONFLICT,
                        ) =>
                {
                    return Ok(CreateOutcome::Created(existing.meta.version));
                }
                Ok(Some(existing)) => return Ok(CreateOutcome::AlreadyExists(existing)),
                // Absent: our write did not land (a delayed copy of it can only fail later,
                // because we retry with the same create-if-absent); send it again.
                Ok(None) => {}
                Err(e) if is_ambiguous(&e) => last_error = Some(e),
                Err(e) => return Err(self.err(key, e)),
            }
        }
        Err(StorageError::OutcomeUnknown {
            operation: "put_if_absent",
            key: key.to_string(),
            attempts: RESOLVE_ATTEMPTS,
            source: Box::new(last_error.unwrap_or_else(|| object_store::Error::Generic {
                store: "apiary",
                source: "no attempt was made".into(),
            })),
        })
    }

    async fn put_if_match(
        &self,
        key: &Path,
        bytes: Bytes,
        expected: &ObjectVersion,
    ) -> Result<SwapOutcome> {
        if !self.capabilities.compare_and_swap {
            return Err(StorageError::Unsupported {
                store: self.description.clone(),
                operation: "compare-and-swap (put_if_match)",
                hint: "use put_if_absent on a fresh key, or an object store (S3, GCS, Azure)",
            });
        }
        // Once a request's outcome was unknown, a later mismatch cannot be told apart from
        // "ours landed, then a third writer replaced it", so it is reported as unknown.
        let mut last_error: Option<object_store::Error> = None;
        let mismatch =
            |current: Option<Object>, last_error: Option<object_store::Error>| match last_error {
                None => Ok(SwapOutcome::Mismatch(current)),
                Some(e) => Err(StorageError::OutcomeUnknown {
                    operation: "put_if_match",
                    key: key.to_string(),
                    attempts: RESOLVE_ATTEMPTS,
                    source: Box::new(e),
                }),
            };
        for attempt in 0..RESOLVE_ATTEMPTS {
            if attempt > 0 {
                self.pause(attempt).await;
            }
            let opts = PutOptions::from(PutMode::Update(UpdateVersion {
                e_tag: expected.e_tag.clone(),
                version: expected.version.clone(),
            }));
            let sent = self
                .store
                .put_opts(key, PutPayload::from(bytes.clone()), opts)
                .await;
            let definite_mismatch = match sent {
                Ok(result) => return Ok(SwapOutcome::Swapped(put_version(result))),
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::NotFound { .. }) => true,
                Err(e) if is_ambiguous(&e) => {
                    last_error = Some(e);
                    false
                }
                Err(e) => return Err(self.err(key, e)),
            };
            match self.read_back(key).await {
                Ok(Some(current)) if current.bytes == bytes => {
                    return Ok(SwapOutcome::Swapped(current.meta.version));
                }
                Ok(current) if definite_mismatch => return mismatch(current, last_error),
                // Unchanged: our write did not land, and cannot land later out of order
                // because it is conditional on this very version. Send it again.
                Ok(Some(current)) if version_matches(&current.meta.version, expected) => {}
                Ok(current) => return mismatch(current, last_error),
                Err(e) if is_ambiguous(&e) => last_error = Some(e),
                Err(e) => return Err(self.err(key, e)),
            }
        }
        Err(StorageError::OutcomeUnknown {
            operation: "put_if_match",
            key: key.to_string(),
            attempts: RESOLVE_ATTEMPTS,
            source: Box::new(last_error.unwrap_or_else(|| object_store::Error::Generic {
                store: "apiary",
                source: "no attempt was made".into(),
            })),
        })
    }

    async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(Some(prefix))
            .map_ok(|m| convert_meta(&m))
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_after(&self, prefix: &Path, offset: &Path) -> Result<Vec<ObjectMeta>> {
        let mut out: Vec<ObjectMeta> = self
            .store
            .list_with_offset(Some(prefix), offset)
            .map_ok(|m| convert_meta(&m))
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_with_delimiter(&self, prefix: &Path) -> Result<Listing> {
        let result = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(|e| self.err(prefix, e))?;
        let mut objects: Vec<ObjectMeta> = result.objects.iter().map(convert_meta).collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut prefixes = result.common_prefixes;
        prefixes.sort();
        Ok(Listing { objects, prefixes })
    }

    async fn delete(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn request_counts(&self) -> Option<crate::RequestCounts> {
        self.counts.as_ref().map(crate::CountsHandle::snapshot)
    }

    fn request_stats(&self) -> Option<crate::RequestStats> {
        self.counts.as_ref().map(crate::CountsHandle::stats)
    }

    async fn remove_stale_uploads(&self, prefix: &Path, before_ms: i64) -> Result<usize> {
        let Some(root) = self.local_root.clone() else {
            return Ok(0);
        };
        let dir = prefix
            .parts()
            .fold(root, |dir, part| dir.join(part.as_ref()));
        let key = prefix.to_string();
        crate::blocking::run(move || remove_staging_files(&dir, before_ms))
            .await
            .map_err(|e| StorageError::Backend {
                key: key.clone(),
                source: Box::new(object_store::Error::Generic {
                    store: "local folder",
                    source: Box::new(e),
                }),
            })?
            .map_err(|e| StorageError::Backend {
                key,
                source: Box::new(object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                }),
            })
    }

    fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }
}

fn version_matches(current: &ObjectVersion, expected: &ObjectVersion) -> bool {
    match (&expected.e_tag, &expected.version) {
        (Some(tag), _) if current.e_tag.as_ref() == Some(tag) => true,
        (_, Some(v)) if current.version.as_ref() == Some(v) => true,
        _ => false,
    }
}

/// Convenience: an in-memory backend for unit tests.
pub fn memory() -> Arc<dyn StorageBackend> {
    Arc::new(ObjectStoreBackend::new(
        Arc::new(object_store::memory::InMemory::new()),
        Capabilities {
            compare_and_swap: true,
        },
        "memory://",
    ))
}

/// Reads the whole object at `key`, or `None` if it does not exist.
pub async fn get_opt(backend: &dyn StorageBackend, key: &Path) -> Result<Option<Object>> {
    match backend.get(key).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the staging files (`name#N`, the local store's uploads in progress) under `dir`
/// last modified before `before_ms`; how many. A missing folder has none.
fn remove_staging_files(dir: &std::path::Path, before_ms: i64) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            removed += remove_staging_files(&entry.path(), before_ms)?;
            continue;
        }
        let name = entry.file_name();
        let staging = name
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !staging {
            continue;
        }
        let modified_ms = entry
            .metadata()?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
        if modified_ms < before_ms {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}
