//! One cached cell on disk: its two files (`{id}.cell`, `{id}.meta`), written atomically,
//! recovered at start, and read back with every touched block's checksum verified.

use std::fs::File;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use apiary_storage::Random;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::BLOCK_BYTES;
use crate::error::{CacheError, Result};

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    key: String,
    size: u64,
    last_modified_ms: i64,
    #[serde(default)]
    e_tag: Option<String>,
    block_bytes: u64,
    crcs: Vec<u32>,
}

const META_FORMAT: u32 = 1;

/// One cached cell. Cheap to clone behind an `Arc`; its files are deleted when it has been
/// evicted (or found damaged) and the last holder drops it.
#[derive(Debug)]
pub struct CachedCell {
    pub(super) key: String,
    pub(super) data: PathBuf,
    pub(super) meta: PathBuf,
    pub(super) size: u64,
    last_modified_ms: i64,
    e_tag: Option<String>,
    block_bytes: u64,
    crcs: Vec<u32>,
    doomed: AtomicBool,
}

impl CachedCell {
    /// An entry whose meta parses and whose data file has the recorded size (what a
    /// restarted cache keeps).
    pub(super) fn recover(meta_path: &FsPath) -> Option<Self> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(meta_path).ok()?).ok()?;
        let data = meta_path.with_extension("cell");
        let on_disk = std::fs::metadata(&data).ok()?.len();
        let blocks = meta.size.div_ceil(meta.block_bytes.max(1));
        if meta.format != META_FORMAT
            || on_disk != meta.size
            || meta.block_bytes == 0
            || meta.crcs.len() as u64 != blocks
        {
            return None;
        }
        Some(Self {
            key: meta.key,
            data,
            meta: meta_path.to_path_buf(),
            size: meta.size,
            last_modified_ms: meta.last_modified_ms,
            e_tag: meta.e_tag,
            block_bytes: meta.block_bytes,
            crcs: meta.crcs,
            doomed: AtomicBool::new(false),
        })
    }

    /// The storage key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object's modification stamp in storage (milliseconds since the epoch).
    pub fn last_modified_ms(&self) -> i64 {
        self.last_modified_ms
    }

    /// The object's ETag in storage, if it had one.
    pub fn e_tag(&self) -> Option<&str> {
        self.e_tag.as_deref()
    }

    pub(super) fn doom(&self) {
        self.doomed.store(true, Ordering::SeqCst);
    }

    /// A cell fetched but not written to disk: served from the fetched bytes only, never
    /// read from disk, and never indexed.
    pub(super) fn unwritten(
        key: &str,
        bytes: &Bytes,
        last_modified_ms: i64,
        e_tag: Option<String>,
    ) -> Self {
        Self {
            key: key.to_string(),
            data: PathBuf::new(),
            meta: PathBuf::new(),
            size: bytes.len() as u64,
            last_modified_ms,
            e_tag,
            block_bytes: BLOCK_BYTES,
            crcs: Vec::new(),
            doomed: AtomicBool::new(false),
        }
    }

    /// Reads `range` from disk, verifying every block it touches. Blocking.
    pub fn read(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        let mut out = self.read_ranges(std::slice::from_ref(&range))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Reads every range from disk with one open of the file: the blocks the ranges touch
    /// are read and verified once each (runs of adjacent blocks in one read), and each range
    /// is a slice of them. Blocking.
    pub fn read_ranges(&self, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
        if let Some(bad) = ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            return Err(CacheError::Range {
                key: self.key.clone(),
                range: bad.clone(),
                size: self.size,
            });
        }
        // The blocks wanted, as sorted runs of adjacent block indexes.
        let mut blocks: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| (r.start / self.block_bytes, (r.end - 1) / self.block_bytes))
            .collect();
        blocks.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::with_capacity(blocks.len());
        for (first, last) in blocks {
            match runs.last_mut() {
                Some((_, end)) if first <= *end + 1 => *end = (*end).max(last),
                _ => runs.push((first, last)),
            }
        }
        let mut file = None;
        // Each run read and verified: (first byte, its bytes).
        let mut read: Vec<(u64, Bytes)> = Vec::with_capacity(runs.len());
        for (first, last) in runs {
            let file = match &file {
                Some(f) => f,
                None => file.insert(
                    File::open(&self.data)
                        .map_err(|e| self.damaged(format!("cannot open: {e}")))?,
                ),
            };
            let start = first * self.block_bytes;
            let end = ((last + 1) * self.block_bytes).min(self.size);
            let buf = read_run(file, start, end - start)
                .map_err(|e| self.damaged(format!("cannot read: {e}")))?;
            for (i, block) in buf.chunks(self.block_bytes as usize).enumerate() {
                let index = first as usize + i;
                let expected = self.crcs.get(index).copied();
                if expected != Some(crc32c::crc32c(block)) {
                    return Err(self.damaged(format!("block {index} fails its checksum")));
                }
            }
            read.push((start, Bytes::from(buf)));
        }
        Ok(ranges
            .iter()
            .map(|r| {
                if r.is_empty() {
                    return Bytes::new();
                }
                // The run that starts at or before the range holds all of it.
                let at = read
                    .partition_point(|(start, _)| *start <= r.start)
                    .saturating_sub(1);
                let (start, bytes) = &read[at];
                bytes.slice((r.start - start) as usize..(r.end - start) as usize)
            })
            .collect())
    }

    fn damaged(&self, reason: String) -> CacheError {
        CacheError::Damaged {
            key: self.key.clone(),
            reason,
        }
    }
}

/// `len` bytes of `file` from `start`, read straight into fresh memory: a zeroed buffer
/// would cost a pass over every byte before the read writes it (a few percent of a scan).
fn read_run(file: &File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut reader = file;
    reader.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the file ends {} bytes short of the run",
                len - buf.len() as u64
            ),
        ));
    }
    Ok(buf)
}

impl Drop for CachedCell {
    fn drop(&mut self) {
        if self.doomed.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.meta);
            let _ = std::fs::remove_file(&self.data);
        }
    }
}

/// Writes entries into a cache directory (the part of [`super::CellCache`] a blocking thread needs).
pub(super) struct EntryWriter {
    pub(super) dir: PathBuf,
    pub(super) random: Random,
}

impl EntryWriter {
    /// Writes the data file, then the meta file (each to a temporary name, then renamed).
    pub(super) fn write_entry(
        &self,
        key: &str,
        bytes: &Bytes,
        last_modified_ms: i64,
        e_tag: Option<String>,
    ) -> Result<CachedCell> {
        let id = self.random.id();
        let data = self.dir.join(format!("{id}.cell"));
        let meta_path = self.dir.join(format!("{id}.meta"));
        let meta = Meta {
            format: META_FORMAT,
            key: key.to_string(),
            size: bytes.len() as u64,
            last_modified_ms,
            e_tag: e_tag.clone(),
            block_bytes: BLOCK_BYTES,
            crcs: bytes
                .chunks(BLOCK_BYTES as usize)
                .map(crc32c::crc32c)
                .collect(),
        };
        let encoded = serde_json::to_vec(&meta)
            .map_err(|e| CacheError::Config(format!("cache metadata cannot be encoded: {e}")))?;
        match write_atomically(&data, bytes) {
            // The folder was removed under the running node (a cleaner of temporary
            // files, an operator): made again, and the write tried once more.
            Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).map_err(|source| CacheError::Io {
                    what: format!("cannot create {}", self.dir.display()),
                    source,
                })?;
                tracing::warn!(dir = %self.dir.display(), "the cell cache's folder was gone; made it again");
                write_atomically(&data, bytes)?;
            }
            other => other?,
        }
        if let Err(e) = write_atomically(&meta_path, &encoded) {
            let _ = std::fs::remove_file(&data);
            return Err(e);
        }
        Ok(CachedCell {
            key: meta.key,
            data,
            meta: meta_path,
            size: meta.size,
            last_modified_ms,
            e_tag,
            block_bytes: BLOCK_BYTES,
            crcs: meta.crcs,
            doomed: AtomicBool::new(false),
        })
    }
}

fn write_atomically(path: &FsPath, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |source: std::io::Error| CacheError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    };
    let mut file = File::create(&tmp).map_err(io)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| {
            drop(file);
            std::fs::rename(&tmp, path)
        })
        .map_err(io);
    if written.is_err() {
        // A full disk must not keep the part that was written.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("dir");
        // The rename cannot replace a non-empty folder: the write fails after the data.
        let path = dir.path().join("cell.data");
        std::fs::create_dir_all(path.join("inside")).expect("folder");
        assert!(write_atomically(&path, b"bytes").is_err());
        assert!(!path.with_extension("tmp").exists());
        // A write that succeeds leaves only its file.
        let ok = dir.path().join("other.data");
        write_atomically(&ok, b"bytes").expect("write");
        assert_eq!(std::fs::read(&ok).expect("read"), b"bytes");
        assert!(!ok.with_extension("tmp").exists());
    }
}
