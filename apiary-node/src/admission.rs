//! Queries on a node are admitted by its colony and its bees: a hot colony slows new
//! queries, a critical one refuses them; then a query waits for a free bee, takes the idle
//! ones nobody is waiting for, and runs with their memory; its pool spills to the node's
//! scratch directory.

use std::path::PathBuf;
use std::sync::Arc;

use apiary_query::{Admission, Grant, PoolReading, QueryError};
use apiary_storage::ErrorKind;
use apiary_swarm::Colony;
use async_trait::async_trait;

/// The colony and bees of a running node, as the query engine's admission.
#[derive(Debug)]
pub(crate) struct BeeAdmission {
    pub(crate) colony: Arc<Colony>,
    pub(crate) scratch: PathBuf,
}

#[async_trait]
impl Admission for BeeAdmission {
    async fn admit(&self) -> apiary_query::Result<Grant> {
        self.colony
            .admit()
            .await
            .map_err(|hot| QueryError::failed(hot.to_string(), ErrorKind::Unavailable, hot))?;
        let bees = self.colony.bees();
        let first = bees.acquire().await.map_err(|leaving| {
            QueryError::failed(
                "this node is leaving the swarm and takes no new queries; run it on another node",
                ErrorKind::Closed,
                leaving,
            )
        })?;
        let mut held = vec![first];
        while let Some(more) = bees.try_acquire() {
            held.push(more);
        }
        let held = Arc::new(held);
        let memory_bytes = (held.len() as u64 * bees.memory_per_bee()) as usize;
        let attach = Arc::clone(&held);
        Ok(Grant {
            memory_bytes,
            hold: Box::new(held),
            on_pool: Some(Box::new(move |pool: PoolReading| {
                // Each bee reports its share of the query's pool.
                let share = attach.len().max(1) as u64;
                for bee in attach.iter() {
                    let pool = Arc::clone(&pool);
                    bee.attach_memory(Arc::new(move || pool() / share));
                }
            })),
        })
    }

    fn task_memory(&self) -> usize {
        self.colony.bees().memory_per_bee() as usize
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.scratch.clone())
    }
}
