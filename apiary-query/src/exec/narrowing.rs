//! A frame scan's input narrowed to some of its cells (and rows of them): the units a
//! claim queue hands out to one partition, or the cells a task keeps.

use std::collections::HashMap;
use std::sync::Arc;

use apiary_storage::Path;
use datafusion::datasource::listing::PartitionedFile;

use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::union::UnionExec;

use super::Unit;
use crate::parts::RowRanges;
use crate::tier::MemoryTierExec;

/// The pieces of one file of a Parquet scan reading only `rows`: the whole file (not the
/// byte ranges DataFusion may have cut it into) with a row selection; `pieces` unchanged
/// when all rows are read.
fn select_rows(pieces: Vec<PartitionedFile>, rows: Option<&RowRanges>) -> Vec<PartitionedFile> {
    let Some(rows) = rows.filter(|r| !r.is_all()) else {
        return pieces;
    };
    let Some(mut file) = pieces.into_iter().next() else {
        return Vec::new();
    };
    file.range = None;
    vec![file.with_extension(ParquetRowSelection::new(rows.selection()))]
}

/// `plan` (a frame scan's input) narrowed to the cells of `units` (each whole, or only the
/// rows it names), in that order, with one partition: the same scan (projection,
/// pushed-down filters, limit) of those cells alone, as one multi-file scan. `None` when
/// the scan cannot read them that way (a cell it does not plan to read, or cells on both
/// sides of a union: read those one at a time).
pub(super) fn cells(
    plan: &Arc<dyn ExecutionPlan>,
    units: &[Unit],
) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let config = source.data_source().downcast_ref::<FileScanConfig>()?;
        // Every piece of each file: DataFusion may have cut a large file into byte ranges.
        let mut pieces: HashMap<&Path, Vec<PartitionedFile>> = HashMap::new();
        for f in config.file_groups.iter().flat_map(|g| g.iter()) {
            pieces
                .entry(&f.object_meta.location)
                .or_default()
                .push(f.clone());
        }
        let mut files = Vec::new();
        for unit in units {
            let of_unit = pieces.get(&unit.location)?.clone();
            files.extend(select_rows(of_unit, unit.rows.as_ref()));
        }
        let narrowed = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(files)])
            .build();
        return Some(DataSourceExec::from_data_source(narrowed));
    }
    if let Some(tier) = plan.downcast_ref::<MemoryTierExec>() {
        let units: Vec<_> = units
            .iter()
            .map(|u| (u.location.as_ref(), u.rows.as_ref()))
            .collect();
        return Some(Arc::new(tier.only(&units)?));
    }
    if plan.downcast_ref::<UnionExec>().is_some() {
        return plan.children().into_iter().find_map(|c| cells(c, units));
    }
    // Anything else over one input (a projection the optimizer left) is kept above it.
    let [child] = plan.children()[..] else {
        return None;
    };
    let narrowed = cells(child, units)?;
    let plan = Arc::clone(plan)
        .replace_children(
            vec![narrowed],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .ok()?;
    (plan.properties().partitioning.partition_count() == 1).then_some(plan)
}

/// `plan` (a frame scan's input) reading only the cells whose location `keep` names (all
/// their rows, or `Some` of them), with the same partitions (some may be left empty) and
/// each partition's cells in order.
pub(super) fn narrow(
    plan: &Arc<dyn ExecutionPlan>,
    keep: &dyn Fn(&str) -> Option<Option<RowRanges>>,
) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let config = source.data_source().downcast_ref::<FileScanConfig>()?;
        // A file read in part is read whole once, with a selection, in the group that has
        // its first piece.
        let mut selected = std::collections::HashSet::new();
        let groups = config
            .file_groups
            .iter()
            .map(|g| {
                let mut files = Vec::new();
                for f in g.iter() {
                    let location = f.object_meta.location.as_ref();
                    match keep(location) {
                        Some(None) => files.push(f.clone()),
                        Some(Some(rows)) if rows.is_all() => files.push(f.clone()),
                        Some(Some(rows)) if selected.insert(location.to_string()) => {
                            files.extend(select_rows(vec![f.clone()], Some(&rows)));
                        }
                        // Not kept, or read already from an earlier piece.
                        _ => {}
                    }
                }
                FileGroup::new(files)
            })
            .collect();
        let narrowed = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .build();
        return Some(Arc::new(
            source.clone().with_data_source(Arc::new(narrowed)),
        ));
    }
    if let Some(tier) = plan.downcast_ref::<MemoryTierExec>() {
        return Some(Arc::new(tier.keeping(keep)));
    }
    if plan.children().is_empty() {
        return None;
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| narrow(c, keep))
        .collect::<Option<Vec<_>>>()?;
    Arc::clone(plan)
        .replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .ok()
}
