//! A frame as a DataFusion table: the cells of one ledger version, read through the node's
//! object store with DataFusion's Parquet source.
//!
//! The scan keeps DataFusion's own machinery end to end (projection, predicate pushdown,
//! row-group and page pruning, byte-range repartitioning, the footer cache) and adds what
//! only the ledger knows: which cells exist, their partition values and their exact column
//! statistics. Cells whose statistics prove that no row can match the pushed-down filters
//! are never opened.
//!
//! DataFusion's table schema for a file scan puts partition columns after the file columns;
//! a frame's schema may place them anywhere, so the scan always projects back into frame
//! order.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::common::stats::Statistics;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::exec::PlannedCell;
use crate::exec::{FrameScanExec, ScanSummary};
use crate::scans::ScanStores;
use crate::tier::{self, Choice, MemoryTierExec, OutputColumn, Source, TierCell};

mod index;
pub use index::FrameIndex;
use index::is_partition_filter;

/// A frame at one ledger version, as a DataFusion table.
#[derive(Debug, Clone)]
pub struct FrameTable {
    index: Arc<FrameIndex>,
    scans: Arc<ScanStores>,
}

impl FrameTable {
    /// A table over `index`, whose cells are read through `scans` (each scan counted on
    /// its own).
    pub fn new(index: Arc<FrameIndex>, scans: Arc<ScanStores>) -> Self {
        Self { index, scans }
    }

    /// The ledger version's scan index.
    pub fn index(&self) -> &Arc<FrameIndex> {
        &self.index
    }

    fn summary(&self, read: usize) -> ScanSummary {
        ScanSummary {
            frame: self.index.frame.to_string(),
            version: self.index.version,
            cells_total: self.index.cells.len(),
            cells_read: read,
        }
    }
}

/// Spreads items over at most `groups` groups by `size`, largest first onto the lightest
/// group, so every core gets a similar number of bytes; each group in `name` order.
fn spread<T>(
    mut items: Vec<T>,
    groups: usize,
    size: impl Fn(&T) -> u64,
    name: impl Fn(&T) -> &str,
) -> Vec<Vec<T>> {
    let groups = groups.clamp(1, items.len().max(1));
    items.sort_by(|a, b| size(b).cmp(&size(a)).then_with(|| name(a).cmp(name(b))));
    let mut buckets: Vec<(u64, Vec<T>)> = (0..groups).map(|_| (0, Vec::new())).collect();
    for item in items {
        let Some(lightest) = buckets.iter_mut().min_by_key(|(bytes, _)| *bytes) else {
            break;
        };
        lightest.0 += size(&item);
        lightest.1.push(item);
    }
    buckets
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(_, mut items)| {
            items.sort_by(|a, b| name(a).cmp(name(b)));
            items
        })
        .collect()
}

/// Spreads files over at most `groups` file groups (see [`spread`]).
fn spread_files(files: Vec<PartitionedFile>, groups: usize) -> Vec<FileGroup> {
    spread(
        files,
        groups,
        |f| f.object_meta.size,
        |f| f.object_meta.location.as_ref(),
    )
    .into_iter()
    .map(FileGroup::new)
    .collect()
}

#[async_trait]
impl TableProvider for FrameTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.index.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters on partition columns only are decided exactly per cell. The rest prune
        // cells by statistics and are still applied to the rows by DataFusion (pushed into
        // the Parquet reader where it can).
        Ok(filters
            .iter()
            .map(|f| {
                if is_partition_filter(&self.index.partition_by, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        let cells: Vec<_> = self.index.cells.iter().map(|c| &c.facts).collect();
        let table = self.index.statistics_of(&cells);
        Some(reorder(table, &self.index.table_index))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(|p| p.as_slice()))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> DfResult<ScanResult> {
        let index = &self.index;
        let filters = args.filters().unwrap_or_default();
        let projection: Vec<usize> = match args.projection() {
            Some(p) => p.iter().map(|&i| index.table_index[i]).collect(),
            None => index.table_index.clone(),
        };
        let mut selected = index.select(state, filters)?;
        // Without filters a limit needs only as many cells as hold that many rows.
        if let (Some(limit), true) = (args.limit(), filters.is_empty()) {
            let mut rows = 0u64;
            selected.retain(|&i| {
                let keep = rows < limit as u64;
                rows += index.cells[i].facts.rows();
                keep
            });
        }
        let summary = self.summary(selected.len());
        self.scans.count_scan(
            selected.len() as u64,
            selected.iter().map(|&i| index.cells[i].facts.bytes()).sum(),
        );
        // Every read of these cells from storage is checked against their checksums.
        let digests = self.scans.cells().digests();
        for &i in &selected {
            let cell = &index.cells[i];
            if let Some(crc32c) = cell.crc32c {
                digests.expect(cell.file.object_meta.location.as_ref(), crc32c);
            }
        }
        let projected = Arc::new(
            index.schema.project(
                &args
                    .projection()
                    .map(|p| p.to_vec())
                    .unwrap_or_else(|| (0..index.schema.fields().len()).collect()),
            )?,
        );
        if selected.is_empty() {
            let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(projected));
            return Ok(ScanResult::new(Arc::new(FrameScanExec::new(
                empty, summary, None,
            ))));
        }
        let file_count = index.file_schema.fields().len();
        let file_projection: Vec<usize> = projection
            .iter()
            .copied()
            .filter(|&t| t < file_count)
            .collect();
        let file_columns: Vec<String> = file_projection
            .iter()
            .map(|&t| index.table_fields[t].0.name().clone())
            .collect();
        // Cells whose columns are held in memory (or are read often enough to be) go to the
        // memory tier; the rest to DataFusion's Parquet scan.
        let tier = self.scans.tier();
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for &i in &selected {
            let key = index.cells[i].file.object_meta.location.as_ref();
            match tier::choose(tier, key, &file_columns) {
                Choice::Cold => cold.push(i),
                Choice::Held(columns) => warm.push((i, Some(columns))),
                Choice::Load => warm.push((i, None)),
            }
        }

        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let table_schema = TableSchema::builder(Arc::clone(&index.file_schema))
            .with_table_partition_cols(index.partition_fields.clone())
            .build();
        let (url, counters) = self.scans.register()?;
        let facts = |cells: &mut dyn Iterator<Item = usize>| {
            let kept: Vec<_> = cells.map(|i| &index.cells[i].facts).collect();
            index.statistics_of(&kept)
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !cold.is_empty() {
            let statistics = facts(&mut cold.iter().copied());
            let files = cold.iter().map(|&i| index.cells[i].file.clone()).collect();
            let config =
                FileScanConfigBuilder::new(url.clone(), format.file_source(table_schema.clone()))
                    .with_file_groups(spread_files(files, state.config().target_partitions()))
                    .with_statistics(statistics)
                    .with_projection_indices(Some(projection.clone()))?
                    .with_limit(args.limit())
                    .build();
            inputs.push(format.create_physical_plan(state, config).await?);
        }
        if !warm.is_empty() {
            let statistics = facts(&mut warm.iter().map(|(i, _)| *i)).project(Some(&projection));
            let layout: Vec<OutputColumn> = projection
                .iter()
                .scan((0, 0), |(file, part), &t| {
                    Some(if t < file_count {
                        *file += 1;
                        OutputColumn::File(*file - 1)
                    } else {
                        *part += 1;
                        OutputColumn::Partition(*part - 1)
                    })
                })
                .collect();
            let mut cells = Vec::with_capacity(warm.len());
            for (i, held) in warm {
                let cell = &index.cells[i];
                let source = match held {
                    Some(columns) => Source::Held(columns),
                    None => {
                        // The whole cell, no filter: what is admitted serves any later query.
                        let config = FileScanConfigBuilder::new(
                            url.clone(),
                            format.file_source(table_schema.clone()),
                        )
                        .with_file_groups(vec![FileGroup::new(vec![cell.file.clone()])])
                        .with_projection_indices(Some(file_projection.clone()))?
                        .build();
                        Source::Load(format.create_physical_plan(state, config).await?)
                    }
                };
                let tier_cell = TierCell {
                    key: cell.file.object_meta.location.to_string(),
                    bytes: cell.facts.bytes(),
                    partition_values: projection
                        .iter()
                        .filter(|&&t| t >= file_count)
                        .map(|&t| cell.file.partition_values[t - file_count].clone())
                        .collect(),
                    source,
                    rows: None,
                };
                cells.push((tier_cell, cell.facts.rows()));
            }
            let cells = tier::cut_held(cells, state.config().target_partitions());
            let groups = spread(
                cells,
                state.config().target_partitions(),
                |c| c.bytes,
                |c| c.key.as_str(),
            );
            inputs.push(Arc::new(MemoryTierExec::new(
                Arc::clone(&projected),
                layout,
                file_columns,
                groups,
                statistics,
                args.limit(),
                Arc::clone(tier),
            )));
        }
        let plan = UnionExec::try_new(inputs)?;
        let cells = selected
            .iter()
            .map(|&i| {
                let cell = &index.cells[i];
                let planned = PlannedCell {
                    location: cell.file.object_meta.location.clone(),
                    rows: cell.facts.rows(),
                };
                (cell.path.clone(), planned)
            })
            .collect();
        Ok(ScanResult::new(Arc::new(
            FrameScanExec::new(plan, summary, Some(counters)).with_cells(cells),
        )))
    }
}

/// Table statistics in DataFusion's table-schema order, put into frame order.
fn reorder(mut stats: Statistics, table_index: &[usize]) -> Statistics {
    let columns = std::mem::take(&mut stats.column_statistics);
    let mut by_index: BTreeMap<usize, _> = columns.into_iter().enumerate().collect();
    stats.column_statistics = table_index
        .iter()
        .map(|i| by_index.remove(i).unwrap_or_default())
        .collect();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> PartitionedFile {
        PartitionedFile::new(name.to_string(), size)
    }

    #[test]
    fn spread_balances_bytes_and_never_makes_empty_groups() {
        let files = vec![file("a", 100), file("b", 60), file("c", 50), file("d", 10)];
        let groups = spread_files(files, 2);
        let sums: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(sums.iter().sum::<u64>(), 220);
        assert_eq!(sums.len(), 2);
        assert!(sums.iter().all(|&s| s == 110), "{sums:?}");

        let groups = spread_files(vec![file("a", 1)], 16);
        assert_eq!(groups.len(), 1);
    }
}
