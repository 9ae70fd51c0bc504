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

use apiary_ledger::{FrameRef, LiveFrame, frame_root};
use apiary_storage::object_store::ObjectMeta;
use apiary_storage::object_store::path::Path;
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::stats::Statistics;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;

use crate::exec::PlannedCell;
use crate::exec::{FrameScanExec, ScanSummary};
use crate::scans::ScanStores;
use crate::stats::{self, CellFacts, CellPruningStats};
use crate::tier::{self, Choice, MemoryTierExec, OutputColumn, Source, TierCell};

/// Cells are immutable and uniquely named, so every cell gets the same modification time;
/// a stable value lets DataFusion's footer cache recognise a cell it has read before.
fn cell_mtime() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
}

/// What a scan needs of one ledger version, computed once per version and shared by every
/// query that reads it.
#[derive(Debug)]
pub struct FrameIndex {
    frame: FrameRef,
    version: u64,
    incarnation: u64,
    /// The columns as scanned, in frame order (strings and binaries as views).
    schema: SchemaRef,
    /// The columns as declared, in frame order.
    declared: SchemaRef,
    /// Non-partition columns, in frame order: the columns stored in the cells.
    file_schema: SchemaRef,
    /// Partition columns, in `partition_by` order.
    partition_fields: Vec<FieldRef>,
    /// For each frame column, its index in DataFusion's table schema (file columns, then
    /// partition columns).
    table_index: Vec<usize>,
    /// DataFusion's table schema columns, each with its partition flag.
    table_fields: Vec<(FieldRef, bool)>,
    cells: Vec<IndexedCell>,
    partition_by: Vec<String>,
    /// Whether the statistics are exact: not for a task that may read only some of its
    /// cells (see [`FrameIndex::inexact`]).
    exact: bool,
    /// One row per cell: its partition values (for evaluating partition filters exactly).
    partition_values: Option<RecordBatch>,
}

#[derive(Debug)]
struct IndexedCell {
    /// Path relative to the frame, as the ledger records it.
    path: String,
    facts: CellFacts,
    file: PartitionedFile,
}

impl FrameIndex {
    /// Indexes the live frame at `version`.
    pub fn build(
        frame: &FrameRef,
        version: u64,
        live: &LiveFrame,
    ) -> Result<Self, apiary_ledger::LedgerError> {
        let declared: SchemaRef = Arc::new(live.definition.schema.to_arrow()?);
        let partition_by = live.definition.partition_by.clone();
        let is_partition = |name: &str| partition_by.iter().any(|p| p == name);
        // Strings and binaries stored in cells are read as views, as DataFusion reads any
        // Parquet file by default (`schema_force_view_types`): decoding into views is what
        // makes its string-heavy scans fast. Partition columns keep their declared type.
        let schema: SchemaRef = Arc::new(Schema::new(
            declared
                .fields()
                .iter()
                .map(|f| {
                    let view = match f.data_type() {
                        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8View),
                        DataType::Binary | DataType::LargeBinary => Some(DataType::BinaryView),
                        _ => None,
                    };
                    match view {
                        Some(t) if !is_partition(f.name()) => {
                            Arc::new(f.as_ref().clone().with_data_type(t))
                        }
                        _ => Arc::clone(f),
                    }
                })
                .collect::<Vec<_>>(),
        ));
        let file_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect();
        let partition_fields: Vec<FieldRef> = partition_by
            .iter()
            .filter_map(|p| schema.field_with_name(p).ok())
            .map(|f| Arc::new(f.clone()))
            .collect();
        let table_fields: Vec<(FieldRef, bool)> = file_fields
            .iter()
            .map(|f| (Arc::clone(f), false))
            .chain(partition_fields.iter().map(|f| (Arc::clone(f), true)))
            .collect();
        let table_index = schema
            .fields()
            .iter()
            .map(|f| {
                table_fields
                    .iter()
                    .position(|(t, _)| t.name() == f.name())
                    .unwrap_or_default()
            })
            .collect();
        let root = frame_root(frame);
        let cells = live
            .cells
            .values()
            .map(|cell| {
                // The cell path is already a valid object path (partition values are
                // percent-escaped when written): parse it, never re-encode it.
                let location = Path::parse(format!("{root}/{}", cell.path)).map_err(|e| {
                    apiary_ledger::LedgerError::Corrupt {
                        key: cell.path.clone(),
                        reason: format!("not a valid cell path: {e}"),
                    }
                })?;
                let mut file = PartitionedFile::new_from_meta(ObjectMeta {
                    location,
                    last_modified: cell_mtime(),
                    size: cell.bytes,
                    e_tag: None,
                    version: None,
                });
                let facts = CellFacts::new(cell, &table_fields);
                let first_partition = table_fields.len() - partition_fields.len();
                file.partition_values = partition_fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        facts
                            .partition_value(first_partition + i)
                            .cloned()
                            .ok_or_else(|| apiary_ledger::LedgerError::Corrupt {
                                key: cell.path.clone(),
                                reason: format!(
                                    "the ledger records no valid value of partition column `{}`",
                                    f.name()
                                ),
                            })
                    })
                    .collect::<Result<_, _>>()?;
                file.statistics = Some(Arc::new(stats::statistics(&[&facts], table_fields.len())));
                Ok(IndexedCell {
                    path: cell.path.clone(),
                    facts,
                    file,
                })
            })
            .collect::<Result<Vec<IndexedCell>, apiary_ledger::LedgerError>>()?;
        let partition_values = partition_batch(&partition_fields, &cells)?;
        Ok(Self {
            partition_values,
            frame: frame.clone(),
            version,
            incarnation: live.incarnation,
            file_schema: Arc::new(Schema::new(file_fields)),
            schema,
            declared,
            partition_fields,
            table_index,
            table_fields,
            cells,
            partition_by,
            exact: true,
        })
    }

    /// This index with statistics that bound the rows rather than count them: for a
    /// distributed task, which reads only the cells (and parts) it claims of those it
    /// names, so nothing may be answered from the statistics alone (a `COUNT(*)` would
    /// count cells another task read).
    pub fn inexact(mut self) -> Self {
        self.exact = false;
        for cell in &mut self.cells {
            if let Some(stats) = cell.file.statistics.take() {
                cell.file.statistics = Some(Arc::new(stats.as_ref().clone().to_inexact()));
            }
        }
        self
    }

    /// The statistics of `cells`, exact where this index's are.
    fn statistics_of(&self, cells: &[&CellFacts]) -> Statistics {
        let stats = stats::statistics(cells, self.table_fields.len());
        if self.exact {
            stats
        } else {
            stats.to_inexact()
        }
    }

    /// The frame.
    pub fn frame(&self) -> &FrameRef {
        &self.frame
    }

    /// The cells a scan with `filters` must read (after ledger pruning), with their sizes.
    pub fn select_cells(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> DfResult<Vec<crate::parts::SplitCell>> {
        Ok(self
            .select(state, filters)?
            .into_iter()
            .map(|i| crate::parts::SplitCell {
                path: self.cells[i].path.clone(),
                bytes: self.cells[i].facts.bytes(),
                rows: self.cells[i].facts.rows(),
                part: None,
            })
            .collect())
    }

    /// The ledger version this index describes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The incarnation (version of the `create`) this index describes.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The frame's schema as scanned (strings and binaries as views).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The frame's schema as declared.
    pub fn declared_schema(&self) -> &SchemaRef {
        &self.declared
    }

    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.cells.len()
    }

    /// Rows over all cells.
    pub fn rows(&self) -> u64 {
        self.cells.iter().map(|c| c.facts.rows()).sum()
    }

    /// Bytes over all cells.
    pub fn bytes(&self) -> u64 {
        self.cells.iter().map(|c| c.facts.bytes()).sum()
    }

    /// The partition columns.
    pub fn partition_by(&self) -> &[String] {
        &self.partition_by
    }

    /// The cells a scan with these filters must read: the ones the ledger statistics cannot
    /// rule out. Filters that cannot be evaluated on statistics rule nothing out.
    fn select(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<usize>> {
        let (exact, other): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|f| is_partition_filter(&self.partition_by, f));
        let all: Vec<usize> = self.matching_partitions(state, &exact)?;
        let Some(predicate) = self.pruning_predicate(state, &other) else {
            return Ok(all);
        };
        let stats = CellPruningStats::new(
            self.cells.iter().map(|c| &c.facts).collect(),
            &self.table_fields,
        );
        Ok(match predicate.prune(&stats) {
            Ok(keep) => all.into_iter().filter(|&i| keep[i]).collect(),
            Err(e) => {
                tracing::debug!(frame = %self.frame, "cell pruning skipped: {e}");
                all
            }
        })
    }

    /// The cells whose partition values satisfy every one of `filters` (partition filters,
    /// which the scan then reports to DataFusion as applied exactly).
    fn matching_partitions(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<usize>> {
        let all = (0..self.cells.len()).collect();
        let (Some(batch), Some(filter)) = (&self.partition_values, conjunction(filters.to_vec()))
        else {
            return Ok(all);
        };
        let schema = DFSchema::try_from(batch.schema())?;
        let physical = state.create_physical_expr(unnormalize_col(filter), &schema)?;
        let verdict = physical.evaluate(batch)?.into_array(batch.num_rows())?;
        let verdict = verdict.as_boolean_opt().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("a partition filter is not a boolean".into())
        })?;
        Ok((0..self.cells.len())
            .filter(|&i| verdict.is_valid(i) && verdict.value(i))
            .collect())
    }

    fn pruning_predicate(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Option<Arc<PruningPredicate>> {
        if filters.is_empty() || self.cells.is_empty() {
            return None;
        }
        let table_schema = Arc::new(Schema::new(
            self.table_fields
                .iter()
                .map(|(f, _)| Arc::clone(f))
                .collect::<Vec<_>>(),
        ));
        let df_schema = DFSchema::try_from(Arc::clone(&table_schema)).ok()?;
        // Each filter on its own: one that cannot be planned here (it never should) only
        // loses its pruning, never the others'.
        let planned: Vec<_> = filters
            .iter()
            .filter_map(|f| {
                state
                    .create_physical_expr(unnormalize_col(f.clone()), &df_schema)
                    .ok()
            })
            .collect();
        if planned.is_empty() {
            return None;
        }
        let physical = datafusion::physical_expr::conjunction(planned);
        PruningPredicateBuilder::new()
            .with_file_schema(table_schema)
            .with_max_in_list_size(state.config_options().execution.parquet.max_in_list_size)
            .build(physical)
    }
}

/// The partition values of `cells` as a batch, one row per cell (`None` when unpartitioned).
fn partition_batch(
    fields: &[FieldRef],
    cells: &[IndexedCell],
) -> Result<Option<RecordBatch>, apiary_ledger::LedgerError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let columns = (0..fields.len())
        .map(|i| {
            ScalarValue::iter_to_array(cells.iter().map(|c| c.file.partition_values[i].clone()))
        })
        .collect::<Result<Vec<_>, _>>();
    let schema = Arc::new(Schema::new(fields.to_vec()));
    let batch = match columns {
        Ok(columns) if !cells.is_empty() => RecordBatch::try_new(schema, columns),
        _ => Ok(RecordBatch::new_empty(schema)),
    };
    batch
        .map(Some)
        .map_err(|e| apiary_ledger::LedgerError::Invalid(e.to_string()))
}

/// Whether `filter` reads only partition columns (at least one), with no subquery and no
/// volatile function: such a filter is decided per cell, exactly, from partition values.
fn is_partition_filter(partition_by: &[String], filter: &Expr) -> bool {
    if partition_by.is_empty() {
        return false;
    }
    let names: Vec<&str> = partition_by.iter().map(String::as_str).collect();
    let subquery = filter.exists(|e| {
        Ok(matches!(
            e,
            Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::ScalarSubquery(_)
                | Expr::SetComparison(_)
        ))
    });
    expr_applicable_for_cols(&names, filter)
        && !filter.column_refs().is_empty()
        && !matches!(subquery, Ok(true) | Err(_))
}

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
                cells.push(TierCell {
                    key: cell.file.object_meta.location.to_string(),
                    bytes: cell.facts.bytes(),
                    partition_values: projection
                        .iter()
                        .filter(|&&t| t >= file_count)
                        .map(|&t| cell.file.partition_values[t - file_count].clone())
                        .collect(),
                    source,
                    rows: None,
                });
            }
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
