//! How far a running query is, read from its physical plan while it runs: what a shell's
//! progress line and `\timing` show.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;

use super::DistributedExec;
use crate::FrameScanExec;

/// A query's progress, summed over its plan's scans and distributed parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryProgress {
    /// Cells the query reads (after pruning): local scans' and distributed parts'.
    pub cells: usize,
    /// Of the distributed parts' cells, those whose tasks have finished.
    pub distributed_done: usize,
    /// Of `cells`, those in distributed parts.
    pub distributed_cells: usize,
    /// Bytes local scans read from storage so far.
    pub bytes_from_storage: u64,
    /// Bytes local scans read from the node's cell cache so far.
    pub bytes_from_cache: u64,
    /// Cells finished per node, for distributed parts (`local` for the coordinator).
    pub nodes: BTreeMap<String, usize>,
}

impl QueryProgress {
    /// The progress of the query `plan` is running (any moment, from any thread).
    pub fn of(plan: &Arc<dyn ExecutionPlan>) -> Self {
        let mut progress = Self::default();
        progress.add(plan);
        progress
    }

    fn add(&mut self, plan: &Arc<dyn ExecutionPlan>) {
        if let Some(scan) = plan.downcast_ref::<FrameScanExec>() {
            self.cells += scan.summary().cells_read;
            if let Some(metrics) = scan.metrics() {
                let count =
                    |name: &str| metrics.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
                self.bytes_from_storage += count("bytes_from_storage");
                self.bytes_from_cache += count("bytes_from_cache");
            }
            return;
        }
        if let Some(distributed) = plan.downcast_ref::<DistributedExec>() {
            let cells = distributed.fragment().cells.len();
            self.cells += cells;
            self.distributed_cells += cells;
            for run in distributed.runs() {
                self.distributed_done += run.cells;
                *self.nodes.entry(run.node_id.clone()).or_default() += run.cells;
                self.bytes_from_storage += run.bytes_from_storage;
            }
            // Parts of a cell count one each: never report more done than there are.
            self.distributed_done = self.distributed_done.min(self.distributed_cells);
            return;
        }
        for child in plan.children() {
            self.add(child);
        }
    }

    /// One line: `cells 12/40 · node-a 8, node-b 4 · 3.1 MB from storage, 1.0 MB cached`.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if self.distributed_cells > 0 {
            parts.push(format!(
                "cells {}/{} done",
                self.distributed_done, self.distributed_cells
            ));
            if self.cells > self.distributed_cells {
                parts.push(format!("{} read here", self.cells - self.distributed_cells));
            }
            if !self.nodes.is_empty() {
                let nodes: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|(node, cells)| format!("{node} {cells}"))
                    .collect();
                parts.push(nodes.join(", "));
            }
        } else {
            parts.push(format!("cells {}", self.cells));
        }
        parts.push(format!(
            "{} from storage, {} cached",
            crate::size_text(self.bytes_from_storage),
            crate::size_text(self.bytes_from_cache)
        ));
        parts.join(" · ")
    }
}
