//! [`StampedStore`]: an `ObjectStore` wrapper whose objects' modification times come from a
//! [`Clock`] instead of the inner store's, for simulations on tokio's paused time (the
//! in-memory store stamps objects with the system's clock, which paused time does not
//! move: ages judged on the store's clock would depend on how fast the machine ran).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::Clock;

/// When each object written through the wrapper was last written, on the wrapper's clock.
#[derive(Debug, Clone)]
struct Stamps {
    clock: Arc<dyn Clock>,
    by_path: Arc<Mutex<HashMap<Path, DateTime<Utc>>>>,
}

impl Stamps {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Path, DateTime<Utc>>> {
        self.by_path.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn written(&self, path: &Path) {
        let now = DateTime::from_timestamp_millis(self.clock.wall_ms()).unwrap_or_default();
        self.lock().insert(path.clone(), now);
    }

    fn restamp(&self, meta: &mut ObjectMeta) {
        if let Some(stamp) = self.lock().get(&meta.location) {
            meta.last_modified = *stamp;
        }
    }
}

/// Stamps every object written through it with its clock's wall time, and reports that
/// stamp as the object's modification time in every answer (reads, HEADs, listings).
/// Objects written around it keep the inner store's stamps.
pub struct StampedStore {
    inner: Arc<dyn ObjectStore>,
    stamps: Stamps,
}

impl StampedStore {
    /// Wraps `inner`, stamping on `clock`.
    pub fn new(inner: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            stamps: Stamps {
                clock,
                by_path: Arc::default(),
            },
        }
    }

    fn restamped(
        &self,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let stamps = self.stamps.clone();
        stream
            .map(move |item| {
                item.map(|mut meta| {
                    stamps.restamp(&mut meta);
                    meta
                })
            })
            .boxed()
    }
}

impl fmt::Debug for StampedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StampedStore")
            .field("inner", &self.inner.to_string())
            .finish()
    }
}

impl fmt::Display for StampedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stamped({})", self.inner)
    }
}

/// A multipart upload whose object is stamped when it completes.
#[derive(Debug)]
struct StampedUpload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    stamps: Stamps,
}

#[async_trait]
impl MultipartUpload for StampedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await?;
        self.stamps.written(&self.location);
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for StampedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let done = self.inner.put_opts(location, payload, opts).await?;
        self.stamps.written(location);
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(StampedUpload {
            inner,
            location: location.clone(),
            stamps: self.stamps.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut result = self.inner.get_opts(location, options).await?;
        self.stamps.restamp(&mut result.meta);
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let stamps = self.stamps.clone();
        self.inner
            .delete_stream(locations)
            .inspect(move |result| {
                if let Ok(path) = result {
                    stamps.lock().remove(path);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.restamped(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.restamped(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        for meta in &mut result.objects {
            self.stamps.restamp(meta);
        }
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.stamps.written(to);
        Ok(())
    }
}
