//! Encoding a cell: Arrow batches to one Parquet file, compressed with zstd, with page-level
//! statistics and the page index (so readers can prune row groups and pages), row groups
//! sized for scans, and the ledger's per-column statistics computed on the way.
//!
//! Columns are encoded in parallel: rows gather in a small buffer, and each time it fills,
//! up to `threads` threads take columns from it one at a time, each updating the column's
//! ledger statistics and feeding the same arrays to its Parquet column writer while they are
//! still in the CPU's cache. A row group is closed the same way (the last pages of every
//! column compressed in parallel) and appended to the file in column order, so the file is
//! the same as one encoded on one thread.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{ArrayRef, RecordBatch, new_empty_array};
use arrow_schema::{FieldRef, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;

use crate::cells::stats::StatsBuilder;
use crate::entry::ColumnStats;
use crate::error::{LedgerError, Result};

/// Rows per row group: large enough for efficient scans, small enough to prune.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// Rows buffered before the columns are encoded: enough work per column to be worth a
/// thread, little enough memory to ignore.
const CHUNK_ROWS: usize = 64 << 10;

/// Bytes of Arrow data buffered before the columns are encoded (wide rows fill it first).
const CHUNK_BYTES: usize = 8 << 20;

/// A finished cell, ready to upload.
#[derive(Debug, Clone)]
pub struct EncodedCell {
    /// The Parquet file.
    pub bytes: Bytes,
    /// Rows in it.
    pub rows: u64,
    /// Per-column statistics.
    pub stats: BTreeMap<String, ColumnStats>,
    /// CRC-32C of `bytes` (recorded in the ledger; every fetch of the cell is checked
    /// against it).
    pub crc32c: u32,
}

/// One top-level column: its Parquet leaf writers for the open row group and its statistics.
struct Column {
    field: FieldRef,
    /// Parquet leaves of this column (one for a flat type, more for nested ones).
    leaves: usize,
    /// Writers of the open row group (empty between row groups).
    writers: Vec<ArrowColumnWriter>,
    /// Chunks of the row group just closed.
    closed: Vec<ArrowColumnChunk>,
    stats: StatsBuilder,
}

impl Column {
    /// Feeds `arrays` (this column of each buffered batch) to the statistics and the
    /// writers, and closes the writers when `close`.
    fn encode(&mut self, arrays: &[&ArrayRef], close: bool) -> Result<()> {
        for array in arrays {
            self.stats.update(array);
            let leaves = compute_leaves(&self.field, array).map_err(parquet_error)?;
            for (writer, leaf) in self.writers.iter_mut().zip(&leaves) {
                writer.write(leaf).map_err(parquet_error)?;
            }
        }
        if close {
            self.closed = std::mem::take(&mut self.writers)
                .into_iter()
                .map(|w| w.close().map_err(parquet_error))
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

/// Writes batches of one schema into one Parquet cell in memory.
pub struct CellEncoder {
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    columns: Vec<Column>,
    threads: usize,
    /// Batches not yet encoded, all in the open row group.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    /// Arrow bytes handed to the column writers so far (for the compression ratio).
    encoded_arrow_bytes: usize,
    /// Rows in the open row group, encoded or pending.
    group_rows: usize,
    row_groups: usize,
    rows: u64,
}

impl std::fmt::Debug for CellEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellEncoder")
            .field("rows", &self.rows)
            .field("threads", &self.threads)
            .finish()
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> LedgerError {
    LedgerError::Invalid(format!("the data cannot be written as Parquet: {e}"))
}

impl CellEncoder {
    /// A new, empty cell with `schema`, encoded by up to `threads` threads (at least one).
    pub fn new(schema: SchemaRef, threads: usize) -> Result<Self> {
        let level = ZstdLevel::try_new(3).map_err(parquet_error)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        // The Arrow writer sets up the file (schema conversion, the embedded Arrow schema);
        // its lower-level parts let the columns be encoded apart.
        let (file, factory) = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet_error)?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let leaves = compute_leaves(f, &new_empty_array(f.data_type()))
                    .map_err(parquet_error)?
                    .len();
                Ok(Column {
                    field: f.clone(),
                    leaves,
                    writers: Vec::new(),
                    closed: Vec::new(),
                    stats: StatsBuilder::new(f.data_type().clone()),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            file,
            factory,
            schema,
            columns,
            threads: threads.max(1),
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            encoded_arrow_bytes: 0,
            group_rows: 0,
            row_groups: 0,
            rows: 0,
        })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let expected = self.schema.fields().iter().map(|f| f.data_type());
        if batch.num_columns() != self.schema.fields().len()
            || !expected
                .zip(batch.columns())
                .all(|(t, c)| t == c.data_type())
        {
            return Err(LedgerError::Invalid(format!(
                "internal: a batch of schema {} was written to a cell of schema {}",
                batch.schema(),
                self.schema
            )));
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (ROW_GROUP_ROWS - self.group_rows).min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            offset += take;
            self.pending_bytes += part.get_array_memory_size();
            self.pending_rows += take;
            self.pending.push(part);
            self.group_rows += take;
            self.rows += take as u64;
            if self.group_rows == ROW_GROUP_ROWS {
                self.close_row_group()?;
            } else if self.pending_rows >= CHUNK_ROWS || self.pending_bytes >= CHUNK_BYTES {
                self.encode_pending(false)?;
            }
        }
        Ok(())
    }

    /// Bytes the cell would take if finished now: what is encoded, plus the buffered rows
    /// at the compression ratio seen so far (at their Arrow size before anything is encoded).
    pub fn estimated_bytes(&self) -> usize {
        let encoded = self.file.bytes_written() + self.open_writer_bytes();
        let pending = match self.encoded_arrow_bytes {
            0 => self.pending_bytes,
            arrow => (self.pending_bytes as u128 * encoded as u128 / arrow as u128) as usize,
        };
        encoded + pending
    }

    /// Memory the encoder holds: the file so far, the open writers and the buffered rows.
    pub fn memory_bytes(&self) -> usize {
        self.file.bytes_written() + self.open_writer_bytes() + self.pending_bytes
    }

    fn open_writer_bytes(&self) -> usize {
        self.columns
            .iter()
            .flat_map(|c| &c.writers)
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum()
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finishes the file.
    pub fn finish(mut self) -> Result<EncodedCell> {
        if self.group_rows > 0 {
            self.close_row_group()?;
        }
        let bytes = self.file.into_inner().map_err(parquet_error)?;
        Ok(EncodedCell {
            crc32c: crc32c::crc32c(&bytes),
            bytes: Bytes::from(bytes),
            rows: self.rows,
            stats: self
                .columns
                .into_iter()
                .map(|c| (c.field.name().clone(), c.stats.finish()))
                .collect(),
        })
    }

    /// Encodes what is pending, closes the row group and appends it to the file.
    fn close_row_group(&mut self) -> Result<()> {
        self.encode_pending(true)?;
        let mut group = self.file.next_row_group().map_err(parquet_error)?;
        for column in &mut self.columns {
            for chunk in column.closed.drain(..) {
                chunk
                    .append_to_row_group(&mut group)
                    .map_err(parquet_error)?;
            }
        }
        group.close().map_err(parquet_error)?;
        self.row_groups += 1;
        self.group_rows = 0;
        Ok(())
    }

    /// Encodes the pending batches, column by column on up to `threads` threads; with
    /// `close`, also closes the open row group's writers.
    fn encode_pending(&mut self, close: bool) -> Result<()> {
        if self.columns.first().is_some_and(|c| c.writers.is_empty()) {
            let mut writers = self
                .factory
                .create_column_writers(self.row_groups)
                .map_err(parquet_error)?
                .into_iter();
            for column in &mut self.columns {
                column.writers = writers.by_ref().take(column.leaves).collect();
            }
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.encoded_arrow_bytes += self.pending_bytes;
        self.pending_bytes = 0;
        let arrays = |i: usize| pending.iter().map(|b| b.column(i)).collect::<Vec<_>>();
        let threads = self.threads.min(self.columns.len());
        if threads <= 1 {
            for (i, column) in self.columns.iter_mut().enumerate() {
                column.encode(&arrays(i), close)?;
            }
            return Ok(());
        }
        // Threads take the next column until none is left, which balances columns of
        // different costs (strings against integers) without planning.
        let columns: Vec<Mutex<&mut Column>> = self.columns.iter_mut().map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let work = || -> Result<()> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(column) = columns.get(i) else {
                    return Ok(());
                };
                let mut column = column.lock().unwrap_or_else(|p| p.into_inner());
                column.encode(&arrays(i), close)?;
            }
        };
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mine = work();
            helpers
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LedgerError::Invalid(
                            "internal: a column encoder panicked".into(),
                        ))
                    })
                })
                .fold(mine, |acc, r| acc.and(r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray, StructArray};
    use arrow_schema::{DataType, Field, Fields, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    fn batches(rows: usize, per: usize) -> (SchemaRef, Vec<RecordBatch>) {
        let point = Fields::from(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("label", DataType::Utf8, true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("point", DataType::Struct(point.clone()), true),
        ]));
        let out = (0..rows)
            .step_by(per)
            .map(|start| {
                let ids: Vec<i64> = (start..(start + per).min(rows)).map(|i| i as i64).collect();
                let names: StringArray = ids
                    .iter()
                    .map(|i| (i % 7 != 0).then(|| format!("n{}", i % 1000)))
                    .collect();
                let xs = Int64Array::from_iter(ids.iter().map(|i| (i % 3 != 0).then_some(-i)));
                let labels: StringArray = ids.iter().map(|i| Some(format!("p{i}"))).collect();
                let point = StructArray::new(
                    point.clone(),
                    vec![Arc::new(xs) as ArrayRef, Arc::new(labels)],
                    None,
                );
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ids)),
                        Arc::new(names),
                        Arc::new(point),
                    ],
                )
                .unwrap()
            })
            .collect();
        (schema, out)
    }

    fn encode(schema: &SchemaRef, input: &[RecordBatch], threads: usize) -> EncodedCell {
        let mut encoder = CellEncoder::new(schema.clone(), threads).unwrap();
        for b in input {
            encoder.write(b).unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn threads_change_nothing_in_the_file_or_its_statistics() {
        // More than one row group, and batches that straddle the row group boundary.
        let (schema, input) = batches(ROW_GROUP_ROWS + 150_000, 70_001);
        let one = encode(&schema, &input, 1);
        let four = encode(&schema, &input, 4);
        assert_eq!(one.bytes, four.bytes, "byte-identical files");
        assert_eq!(one.stats, four.stats);
        assert_eq!(four.rows, (ROW_GROUP_ROWS + 150_000) as u64);

        let reader = ParquetRecordBatchReaderBuilder::try_new(four.bytes.clone()).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, vec![ROW_GROUP_ROWS as i64, 150_000]);
        assert_eq!(
            reader.schema().fields(),
            schema.fields(),
            "Arrow schema kept"
        );
        let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let read = arrow_select::concat::concat_batches(&schema, &read).unwrap();
        let written = arrow_select::concat::concat_batches(&schema, &input).unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn a_batch_of_another_schema_is_refused() {
        let (schema, input) = batches(10, 10);
        let mut encoder = CellEncoder::new(schema, 2).unwrap();
        let other = input[0].project(&[1, 0, 2]).unwrap();
        let err = encoder.write(&other).unwrap_err();
        assert!(err.to_string().contains("schema"), "{err}");
    }

    #[test]
    fn an_empty_cell_is_a_valid_file() {
        let (schema, _) = batches(0, 1);
        let cell = CellEncoder::new(schema, 3).unwrap().finish().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(cell.bytes).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }
}
