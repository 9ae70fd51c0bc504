//! Queries on a node are admitted by its bees: a query waits for a free bee, takes the idle
//! ones nobody is waiting for, and runs with their memory; its pool spills to the node's
//! scratch directory.

use std::path::PathBuf;
use std::sync::Arc;

use apiary_query::{Admission, Grant, QueryError};
use apiary_swarm::Bees;
use async_trait::async_trait;

/// The bees of a running node, as the query engine's admission.
#[derive(Debug)]
pub(crate) struct BeeAdmission {
    pub(crate) bees: Arc<Bees>,
    pub(crate) scratch: PathBuf,
}

#[async_trait]
impl Admission for BeeAdmission {
    async fn admit(&self) -> apiary_query::Result<Grant> {
        let first = self.bees.acquire().await.map_err(|leaving| {
            QueryError::failed(
                "this node is leaving the swarm and takes no new queries; run it on another node",
                apiary_storage::ErrorKind::Closed,
                leaving,
            )
        })?;
        let mut held = vec![first];
        while let Some(more) = self.bees.try_acquire() {
            held.push(more);
        }
        Ok(Grant {
            memory_bytes: (held.len() as u64 * self.bees.memory_per_bee()) as usize,
            hold: Box::new(held),
        })
    }

    fn task_memory(&self) -> usize {
        self.bees.memory_per_bee() as usize
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.scratch.clone())
    }
}
