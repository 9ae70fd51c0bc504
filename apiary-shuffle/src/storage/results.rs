//! Results through storage: a worker's rows go out in chunks as they are produced, and the
//! end of a result names its chunks (see the layout in the parent module).

use std::collections::HashMap;

use apiary_storage::Path;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;

use super::StorageShuffle;
use crate::error::{Result, ShuffleError};
use crate::manifest::{TaskKey, TaskSpec};
use crate::result;
use crate::transport::{Delivered, ResultWriter, Rows, TaskFailure, TaskOutcome, TaskReport};

/// Writes a result as chunks of about [`StorageShuffle::with_chunk_bytes`] bytes; holds at
/// most one chunk's rows (plus the batch being cut).
pub(super) struct ChunkWriter<'a> {
    shuffle: &'a StorageShuffle,
    task: &'a TaskSpec,
    schema: SchemaRef,
    /// This writer's name for its chunks: a restarted worker's chunks never overwrite them.
    writer: String,
    held: Vec<RecordBatch>,
    held_bytes: usize,
    /// Chunks written, in order, by their names relative to the query's results.
    chunks: Vec<String>,
}

impl<'a> ChunkWriter<'a> {
    pub(super) fn new(shuffle: &'a StorageShuffle, task: &'a TaskSpec, schema: SchemaRef) -> Self {
        Self {
            shuffle,
            task,
            schema,
            writer: apiary_storage::Random::process().id(),
            held: Vec::new(),
            held_bytes: 0,
            chunks: Vec::new(),
        }
    }

    /// Writes the rows held as the next chunk.
    async fn flush(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let name = format!(
            "{:06}-{}/{}-{:06}.arrow",
            self.task.task_id,
            self.task.attempt,
            self.writer,
            self.chunks.len()
        );
        let bytes = result::encode(&self.schema, &self.held, HashMap::new())?;
        let path = chunk_path(&StorageShuffle::query_dir(&self.task.query_id), &name)?;
        self.shuffle.backend.put(&path, bytes).await?;
        self.chunks.push(name);
        self.held.clear();
        self.held_bytes = 0;
        Ok(())
    }
}

#[async_trait]
impl ResultWriter for ChunkWriter<'_> {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let limit = self.shuffle.chunk_bytes;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let size = batch.get_array_memory_size().max(1);
        // A batch larger than a chunk is cut by rows, in proportion to its size.
        let per_piece = if size > limit {
            (rows * limit / size).max(1)
        } else {
            rows
        };
        let mut offset = 0;
        while offset < rows {
            let len = per_piece.min(rows - offset);
            self.held.push(batch.slice(offset, len));
            self.held_bytes += size * len / rows;
            offset += len;
            if self.held_bytes >= limit {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn finish(self: Box<Self>, report: &TaskReport) -> Result<()> {
        let rows = Rows {
            batches: self.held,
            chunks: self.chunks,
        };
        let bytes = result::encode_end(&self.schema, &rows.batches, report, &rows.chunks)?;
        self.shuffle
            .backend
            .put(
                &StorageShuffle::result_key(&self.task.key(), "arrow"),
                bytes,
            )
            .await?;
        Ok(())
    }
}

/// The end object of a result published whole (`rows` named by a writer, or all in hand).
pub(super) fn end(task: &TaskSpec, rows: &Rows, report: &TaskReport) -> Result<Bytes> {
    let schema = match rows.batches.first() {
        Some(b) => b.schema(),
        None => task.expected_schema()?,
    };
    result::encode_end(&schema, &rows.batches, report, &rows.chunks)
}

/// The outcome a result's end object (`what`, read as `bytes`) stands for: its rows and
/// chunks with the worker's report, or a failed attempt when it cannot be read.
pub(super) fn delivered(key: TaskKey, what: &str, bytes: &[u8]) -> Delivered {
    let read = result::decode(what, bytes).and_then(|(schema, batches)| {
        let chunks = result::chunks_of(&schema)?;
        Ok((
            result::report_of(&schema).unwrap_or_default(),
            batches,
            chunks,
        ))
    });
    match read {
        Ok((report, batches, chunks)) => Delivered {
            key,
            outcome: TaskOutcome::Rows(Rows { batches, chunks }),
            report,
        },
        // The attempt failed: its rows cannot be known. Another attempt may read them.
        Err(e) => Delivered {
            key,
            outcome: TaskOutcome::Failed(TaskFailure {
                kind: apiary_storage::ErrorKind::Corrupt,
                retryable: true,
                message: format!("its result cannot be read: {e}"),
            }),
            report: TaskReport::default(),
        },
    }
}

/// Where chunk `name` (`{task}-{attempt}/{writer}-{n}.arrow`, as an end names it) of the
/// query in `query_dir` lives. Any other name is refused: it comes from a stored object.
pub(super) fn chunk_path(query_dir: &Path, name: &str) -> Result<Path> {
    let refuse = || ShuffleError::Invalid(format!("`{name}` is not the name of a result chunk"));
    let (attempt, file) = name.split_once('/').ok_or_else(refuse)?;
    let (task, attempt) = attempt.split_once('-').ok_or_else(refuse)?;
    let (stem, ext) = file.rsplit_once('.').ok_or_else(refuse)?;
    let (writer, n) = stem.rsplit_once('-').ok_or_else(refuse)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let named = digits(task)
        && digits(attempt)
        && digits(n)
        && ext == "arrow"
        && !writer.is_empty()
        && writer.bytes().all(|b| b.is_ascii_alphanumeric());
    if !named {
        return Err(refuse());
    }
    Ok(query_dir
        .clone()
        .join("results")
        .join(format!("{task}-{attempt}"))
        .join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunk_names_are_read() {
        let dir = Path::from("_queries/q-1");
        let path = chunk_path(&dir, "000003-2/abc123-000004.arrow").expect("a chunk");
        assert_eq!(
            path.as_ref(),
            "_queries/q-1/results/000003-2/abc123-000004.arrow"
        );
        for bad in [
            "../other/x-1.arrow",
            "000003-2/../../x-1.arrow",
            "000003-2/abc-1.json",
            "000003/abc-1.arrow",
            "000003-2/a/b-1.arrow",
            "000003-2/-1.arrow",
            "",
        ] {
            assert!(chunk_path(&dir, bad).is_err(), "{bad}");
        }
    }
}
