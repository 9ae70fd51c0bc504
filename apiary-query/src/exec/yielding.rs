//! Joins that yield: a physical optimizer rule that puts a [`CooperativeExec`] above every
//! cross join and nested loop join.
//!
//! Such a join turns one input batch into many output batches without asking its inputs
//! for more, so the task running it never returns to Tokio: dropping the query's stream
//! (Ctrl-C in the shell, a client hanging up, a distributed task cancelled) aborts the task
//! only at its next yield, which a cross join of a few thousand rows each side reaches after
//! minutes of a busy core. Above the join, each output batch spends Tokio's cooperative
//! budget, so the task yields every 128 batches and a cancelled query stops at once.
//! (DataFusion's `EnsureCooperative` covers leaves and eager operators, not this.)

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};

/// Puts a [`CooperativeExec`] above every cross join and nested loop join.
#[derive(Debug, Default)]
pub struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let many_per_input = node.downcast_ref::<CrossJoinExec>().is_some()
                || node.downcast_ref::<NestedLoopJoinExec>().is_some();
            Ok(if many_per_input {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
            } else {
                Transformed::no(node)
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "apiary_yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
