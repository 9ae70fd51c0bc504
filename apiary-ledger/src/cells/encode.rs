//! Encoding a cell: Arrow batches to one Parquet file, compressed with zstd, with page-level
//! statistics and the page index (so readers can prune row groups and pages), row groups
//! sized for scans, and the ledger's per-column statistics computed on the way.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::cells::stats::StatsBuilder;
use crate::entry::ColumnStats;
use crate::error::{LedgerError, Result};

/// Rows per row group: large enough for efficient scans, small enough to prune.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// A finished cell, ready to upload.
#[derive(Debug, Clone)]
pub struct EncodedCell {
    /// The Parquet file.
    pub bytes: Bytes,
    /// Rows in it.
    pub rows: u64,
    /// Per-column statistics.
    pub stats: BTreeMap<String, ColumnStats>,
}

/// Writes batches of one schema into one Parquet cell in memory.
pub struct CellEncoder {
    writer: ArrowWriter<Vec<u8>>,
    stats: Vec<(String, StatsBuilder)>,
    rows: u64,
}

impl std::fmt::Debug for CellEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellEncoder")
            .field("rows", &self.rows)
            .finish()
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> LedgerError {
    LedgerError::Invalid(format!("the data cannot be written as Parquet: {e}"))
}

impl CellEncoder {
    /// A new, empty cell with `schema`.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let level = ZstdLevel::try_new(3).map_err(parquet_error)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let stats = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), StatsBuilder::new(f.data_type().clone())))
            .collect();
        let writer =
            ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(parquet_error)?;
        Ok(Self {
            writer,
            stats,
            rows: 0,
        })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        for ((_, builder), column) in self.stats.iter_mut().zip(batch.columns()) {
            builder.update(column);
        }
        self.writer.write(batch).map_err(parquet_error)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Bytes the cell would take if finished now (encoded plus buffered).
    pub fn estimated_bytes(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size()
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finishes the file.
    pub fn finish(self) -> Result<EncodedCell> {
        let bytes = self.writer.into_inner().map_err(parquet_error)?;
        Ok(EncodedCell {
            bytes: Bytes::from(bytes),
            rows: self.rows,
            stats: self
                .stats
                .into_iter()
                .map(|(name, builder)| (name, builder.finish()))
                .collect(),
        })
    }
}
