//! The checksums cells were written with, and the check of every cell fetched from storage
//! against them: a stored cell that rotted (one flipped byte) fails its reads instead of
//! answering wrongly.
//!
//! Frame scans tell [`CellDigests`] the CRC-32C each cell's ledger entry records before
//! they read it. A cell fetched whole (into the cache, or to check it where no cache is
//! installed) is checked; a mismatch is fetched once more (a fault on the way), and a second
//! mismatch fails the read with [`CacheError::Corrupt`](crate::CacheError::Corrupt). Where
//! no cache is installed, a cell is read whole and checked once per process before its
//! ranges are served, so a node without a cache pays a whole read per cell for the check.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use quick_cache::sync::Cache;

use crate::error::CacheError;

/// Checksums (and checks passed) kept in memory; a cell whose checksum was forgotten is
/// read unchecked until a scan tells it again.
const KEPT: usize = 1 << 16;

/// Expected checksums of cells, by storage key, and the cells already checked.
#[derive(Debug)]
pub struct CellDigests {
    expected: Cache<String, u32>,
    checked: Cache<String, ()>,
    mismatches: AtomicU64,
}

impl Default for CellDigests {
    fn default() -> Self {
        Self {
            expected: Cache::new(KEPT),
            checked: Cache::new(KEPT),
            mismatches: AtomicU64::new(0),
        }
    }
}

/// A whole cell as storage returned it, checked.
pub(crate) struct Fetched {
    pub(crate) bytes: Bytes,
    pub(crate) last_modified_ms: i64,
    pub(crate) e_tag: Option<String>,
}

impl CellDigests {
    /// Records that the cell under `key` was written with CRC-32C `crc32c`.
    pub fn expect(&self, key: &str, crc32c: u32) {
        self.expected.insert(key.to_string(), crc32c);
    }

    /// The checksum recorded for `key`, if known.
    pub fn expected(&self, key: &str) -> Option<u32> {
        self.expected.get(key)
    }

    /// Fetches that failed their checksum (each retried), since the start.
    pub fn mismatches(&self) -> u64 {
        self.mismatches.load(Ordering::Relaxed)
    }

    /// Whether the cell under `key` has a checksum and has not been checked in this
    /// process yet (a read of it must then fetch it whole).
    pub(crate) fn unchecked(&self, key: &str) -> bool {
        self.expected.get(key).is_some() && self.checked.get(key).is_none()
    }

    /// Fetches the whole cell under `key` from `store` and checks it against its recorded
    /// checksum, fetching once more on a mismatch.
    pub(crate) async fn fetch(
        &self,
        store: &dyn ObjectStore,
        key: &Path,
    ) -> object_store::Result<Fetched> {
        let mut attempts = 0;
        loop {
            let result = store.get(key).await?;
            let (last_modified_ms, e_tag) = (
                result.meta.last_modified.timestamp_millis(),
                result.meta.e_tag.clone(),
            );
            let bytes = result.bytes().await?;
            let fetched = Fetched {
                bytes,
                last_modified_ms,
                e_tag,
            };
            let Some(expected) = self.expected(key.as_ref()) else {
                return Ok(fetched);
            };
            let actual = crc32c::crc32c(&fetched.bytes);
            if actual == expected {
                self.checked.insert(key.to_string(), ());
                return Ok(fetched);
            }
            self.mismatches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(cell = %key, expected = format!("{expected:08x}"), actual = format!("{actual:08x}"), "a cell fetched from storage fails its checksum");
            attempts += 1;
            if attempts == 2 {
                return Err(object_store::Error::Generic {
                    store: "cell check",
                    source: Box::new(CacheError::Corrupt {
                        key: key.to_string(),
                        expected,
                        actual,
                        size: fetched.bytes.len() as u64,
                    }),
                });
            }
        }
    }
}
