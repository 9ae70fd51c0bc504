//! [`CachingStore`]: an `object_store` that serves cells through a [`CellCache`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::digests::CellDigests;
use crate::disk::{CachedCell, CellCache};
use crate::error::CacheError;

/// Whether `key` is a cell: `{hive}/{box}/{frame}/data/…/{name}.parquet`. Cells are
/// immutable and uniquely named; nothing else (ledgers, hints, heartbeats, query results)
/// may ever be cached.
pub fn is_cell_key(key: &Path) -> bool {
    let mut parts = key.parts();
    let data = parts.nth(3);
    key.as_ref().ends_with(".parquet")
        && data.is_some_and(|p| p.as_ref() == "data")
        && parts.next().is_some()
}

/// What one reader (a frame scan, a distributed task) got from the cache and from storage.
#[derive(Debug, Default)]
pub struct ScanCounters {
    /// Cell reads served from the node's disk.
    pub hits: std::sync::atomic::AtomicU64,
    /// Cell reads that went to storage (fetching the cell into the cache, or reading it
    /// directly where no cache is installed).
    pub misses: std::sync::atomic::AtomicU64,
    /// Bytes read from storage.
    pub bytes_from_storage: std::sync::atomic::AtomicU64,
    /// Bytes read from the node's disk.
    pub bytes_from_cache: std::sync::atomic::AtomicU64,
}

impl ScanCounters {
    fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counts as `(hits, misses, bytes from storage, bytes from cache)`.
    pub fn get(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.hits.load(Relaxed),
            self.misses.load(Relaxed),
            self.bytes_from_storage.load(Relaxed),
            self.bytes_from_cache.load(Relaxed),
        )
    }
}

/// Serves cells from a [`CellCache`] (whole-object and ranged GETs, HEADs) and passes every
/// other request, and every request while no cache is installed, to the inner store.
/// A GET with conditions (`if_match`, versions, …) always goes to storage.
pub struct CachingStore {
    inner: Arc<dyn ObjectStore>,
    /// Shared by the store and its counted views, so installing a cache reaches them all.
    cache: Arc<ArcSwapOption<CellCache>>,
    /// Where a counted view counts its reads.
    counters: Option<Arc<ScanCounters>>,
    /// The checksums cells are checked against.
    digests: Arc<CellDigests>,
}

impl fmt::Debug for CachingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStore")
            .field("inner", &self.inner.to_string())
            .field(
                "cache",
                &self.cache.load().as_ref().map(|c| c.dir().to_path_buf()),
            )
            .finish()
    }
}

impl fmt::Display for CachingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cached({})", self.inner)
    }
}

fn plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
}

fn store_error(e: CacheError) -> object_store::Error {
    object_store::Error::Generic {
        store: "cell cache",
        source: Box::new(e),
    }
}

impl CachingStore {
    /// Wraps `inner`, with no cache installed yet.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            cache: Arc::new(ArcSwapOption::empty()),
            counters: None,
            digests: Arc::default(),
        }
    }

    /// The checksums every cell fetched from storage is checked against (frame scans
    /// record those of the cells they read).
    pub fn digests(&self) -> &Arc<CellDigests> {
        &self.digests
    }

    /// The whole cell under `key`, checked, when it has a checksum not yet checked in this
    /// process (no cache installed: its ranges are then served from it). `None` to read
    /// the store directly.
    async fn check_uncached(
        &self,
        key: &Path,
        counters: Option<&ScanCounters>,
    ) -> object_store::Result<Option<crate::digests::Fetched>> {
        if !is_cell_key(key) || !self.digests.unchecked(key.as_ref()) {
            return Ok(None);
        }
        let fetched = self.digests.fetch(self.inner.as_ref(), key).await?;
        if let Some(c) = counters {
            ScanCounters::add(&c.misses, 1);
            ScanCounters::add(&c.bytes_from_storage, fetched.bytes.len() as u64);
        }
        Ok(Some(fetched))
    }

    /// Installs (or removes) the cache reads go through.
    pub fn set_cache(&self, cache: Option<Arc<CellCache>>) {
        self.cache.store(cache);
    }

    /// The installed cache.
    pub fn cache(&self) -> Option<Arc<CellCache>> {
        self.cache.load_full()
    }

    /// The cell under `key`, from the cache or fetched into it; with the bytes when this
    /// call fetched them.
    async fn cell(
        &self,
        cache: &CellCache,
        key: &Path,
    ) -> object_store::Result<(Arc<CachedCell>, Option<Bytes>)> {
        let inner = Arc::clone(&self.inner);
        let digests = Arc::clone(&self.digests);
        let fetch = || async move {
            let fetched = digests.fetch(inner.as_ref(), key).await?;
            Ok::<_, object_store::Error>((fetched.bytes, fetched.last_modified_ms, fetched.e_tag))
        };
        match cache.get_or_fetch(key.as_ref(), fetch).await {
            Ok(found) => Ok(found),
            // The storage's own error, unwrapped, so callers see NotFound as NotFound.
            Err(CacheError::Fetch { source, .. }) => match source.downcast::<object_store::Error>()
            {
                Ok(e) => Err(*e),
                Err(other) => Err(object_store::Error::Generic {
                    store: "cell cache",
                    source: other,
                }),
            },
            Err(e) => Err(store_error(e)),
        }
    }

    /// `range` of the cell under `key`, through the cache. A damaged cached file is dropped
    /// and the cell fetched again, once.
    async fn read(
        &self,
        cache: &CellCache,
        key: &Path,
        range: Option<&object_store::GetRange>,
        counters: Option<&ScanCounters>,
    ) -> object_store::Result<(Arc<CachedCell>, Range<u64>, Bytes)> {
        let resolve = |size: u64| match range {
            Some(r) => r.as_range(size).map_err(|e| object_store::Error::Generic {
                store: "cell cache",
                source: Box::new(e),
            }),
            None => Ok(0..size),
        };
        let (cell, mut bytes) = self
            .read_ranges(cache, key, counters, |cell| Ok(vec![resolve(cell.size())?]))
            .await?;
        let range = resolve(cell.size())?;
        Ok((cell, range, bytes.pop().unwrap_or_default()))
    }

    /// The ranges `want` names (given the cell, for its size) of the cell under `key`,
    /// through the cache: a cell just fetched is sliced, a cached one read from disk in one
    /// blocking call. A damaged cached file is dropped and the cell fetched again, once.
    async fn read_ranges(
        &self,
        cache: &CellCache,
        key: &Path,
        counters: Option<&ScanCounters>,
        mut want: impl FnMut(&CachedCell) -> object_store::Result<Vec<Range<u64>>>,
    ) -> object_store::Result<(Arc<CachedCell>, Vec<Bytes>)> {
        for _ in 0..2 {
            let (cell, fetched) = self.cell(cache, key).await?;
            if let Some(c) = counters {
                match &fetched {
                    Some(bytes) => {
                        ScanCounters::add(&c.misses, 1);
                        ScanCounters::add(&c.bytes_from_storage, bytes.len() as u64);
                    }
                    None => ScanCounters::add(&c.hits, 1),
                }
            }
            let ranges = want(&cell)?;
            if let Some(bytes) = fetched {
                let mut out = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    if r.start > r.end || r.end > bytes.len() as u64 {
                        return Err(store_error(CacheError::Range {
                            key: key.to_string(),
                            range: r.clone(),
                            size: bytes.len() as u64,
                        }));
                    }
                    out.push(bytes.slice(r.start as usize..r.end as usize));
                }
                return Ok((cell, out));
            }
            let read = {
                let cell = Arc::clone(&cell);
                apiary_storage::blocking::run(move || cell.read_ranges(&ranges))
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "cell cache",
                        source: Box::new(e),
                    })?
            };
            match read {
                Ok(out) => {
                    let bytes: u64 = out.iter().map(|b| b.len() as u64).sum();
                    cache.note_read(bytes);
                    if let Some(c) = counters {
                        ScanCounters::add(&c.bytes_from_cache, bytes);
                    }
                    return Ok((cell, out));
                }
                Err(CacheError::Damaged { .. }) => cache.note_damaged(key.as_ref()),
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(object_store::Error::Generic {
            store: "cell cache",
            source: format!("`{key}` was damaged in the cache twice in a row").into(),
        })
    }
}

/// `range` of `bytes`, the whole cell under `key`.
fn slice(key: &Path, bytes: &Bytes, range: &Range<u64>) -> object_store::Result<Bytes> {
    if range.start > range.end || range.end > bytes.len() as u64 {
        return Err(store_error(CacheError::Range {
            key: key.to_string(),
            range: range.clone(),
            size: bytes.len() as u64,
        }));
    }
    Ok(bytes.slice(range.start as usize..range.end as usize))
}

/// A GET answered from a whole cell fetched (and checked) for it.
fn served(
    key: &Path,
    options: &GetOptions,
    cell: crate::digests::Fetched,
) -> object_store::Result<GetResult> {
    let size = cell.bytes.len() as u64;
    let range = match &options.range {
        Some(r) => r.as_range(size).map_err(|e| object_store::Error::Generic {
            store: "cell check",
            source: Box::new(e),
        })?,
        None => 0..size,
    };
    let bytes = slice(key, &cell.bytes, &range)?;
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed()),
        meta: ObjectMeta {
            location: key.clone(),
            last_modified: chrono_from_ms(cell.last_modified_ms),
            size,
            e_tag: cell.e_tag,
            version: None,
        },
        range,
        attributes: Attributes::default(),
    })
}

fn meta_of(key: &Path, cell: &CachedCell) -> ObjectMeta {
    ObjectMeta {
        location: key.clone(),
        last_modified: chrono_from_ms(cell.last_modified_ms()),
        size: cell.size(),
        e_tag: cell.e_tag().map(str::to_string),
        version: None,
    }
}

fn chrono_from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[async_trait]
impl ObjectStore for CachingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.get_opts_with(location, options, self.counters.as_deref())
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.get_ranges_with(location, ranges, self.counters.as_deref())
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // A deleted cell (vacuum) leaves the cache too.
        let cache = self.cache.load_full();
        let locations = locations
            .inspect(move |location| {
                if let (Some(cache), Ok(location)) = (&cache, location) {
                    cache.remove(location.as_ref());
                }
            })
            .boxed();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

impl CachingStore {
    /// A view of this store that counts what its reads got from the cache and from storage
    /// in `counters` (a frame scan registers one per scan).
    pub fn counted(&self, counters: Arc<ScanCounters>) -> Arc<dyn ObjectStore> {
        Arc::new(Self {
            inner: Arc::clone(&self.inner),
            cache: Arc::clone(&self.cache),
            counters: Some(counters),
            digests: Arc::clone(&self.digests),
        })
    }

    async fn get_opts_with(
        &self,
        location: &Path,
        options: GetOptions,
        counters: Option<&ScanCounters>,
    ) -> object_store::Result<GetResult> {
        let cache = match self.cache.load_full() {
            Some(cache) if is_cell_key(location) && plain(&options) => cache,
            _ => {
                if plain(&options)
                    && !options.head
                    && let Some(cell) = self.check_uncached(location, counters).await?
                {
                    return served(location, &options, cell);
                }
                let result = self.inner.get_opts(location, options).await?;
                if let Some(c) = counters {
                    ScanCounters::add(&c.misses, 1);
                    ScanCounters::add(&c.bytes_from_storage, result.range.end - result.range.start);
                }
                return Ok(result);
            }
        };
        if options.head {
            if let Some(cell) = cache.peek(location.as_ref()) {
                let meta = meta_of(location, &cell);
                return Ok(GetResult {
                    range: 0..meta.size,
                    payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                    meta,
                    attributes: Attributes::default(),
                });
            }
            return self.inner.get_opts(location, options).await;
        }
        let (cell, range, bytes) = self
            .read(&cache, location, options.range.as_ref(), counters)
            .await?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                futures::stream::once(async move { Ok(bytes) }).boxed(),
            ),
            meta: meta_of(location, &cell),
            range,
            attributes: Attributes::default(),
        })
    }

    async fn get_ranges_with(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
        counters: Option<&ScanCounters>,
    ) -> object_store::Result<Vec<Bytes>> {
        let cache = match self.cache.load_full() {
            Some(cache) if is_cell_key(location) => cache,
            _ => {
                if let Some(cell) = self.check_uncached(location, counters).await? {
                    return ranges
                        .iter()
                        .map(|r| slice(location, &cell.bytes, r))
                        .collect();
                }
                let out = self.inner.get_ranges(location, ranges).await?;
                if let Some(c) = counters {
                    ScanCounters::add(&c.misses, ranges.len() as u64);
                    let bytes = out.iter().map(|b| b.len() as u64).sum();
                    ScanCounters::add(&c.bytes_from_storage, bytes);
                }
                return Ok(out);
            }
        };
        let (_, out) = self
            .read_ranges(&cache, location, counters, |_| Ok(ranges.to_vec()))
            .await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cells_are_cacheable() {
        for cell in [
            "h/b/f/data/x.parquet",
            "h/b/f/data/country=us/x.parquet",
            "h/b/f/data/a=1/b=2/x.parquet",
        ] {
            assert!(is_cell_key(&Path::from(cell)), "{cell}");
        }
        for other in [
            "h/b/f/_ledger/00000000000000000001.json",
            "h/b/f/_checkpoints/_last",
            "_heartbeats/node_a.json",
            "_queries/q/results/1-1.arrow",
            "h/b/f/data/x.json",
            "h/b/data/x.parquet",
            "x.parquet",
        ] {
            assert!(!is_cell_key(&Path::from(other)), "{other}");
        }
    }
}
