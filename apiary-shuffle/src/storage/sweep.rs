//! The storage transport's sweep: what coordinators that died and nodes that left leave
//! behind.

use std::time::Duration;

use apiary_storage::Path;

use super::{DOORBELL_DIR, QUERIES_DIR, StorageShuffle};
use crate::error::Result;

impl StorageShuffle {
    /// What [`ShuffleTransport::sweep`] does: removes queries whose newest object is older
    /// than `retention` and doorbells not rung for [`StorageShuffle::with_doorbell_idle`]'s
    /// time (a day by default); returns how many queries.
    pub(super) async fn sweep_left_behind(&self, retention: Duration) -> Result<usize> {
        let queries = self
            .backend
            .list_with_delimiter(&Path::from(QUERIES_DIR))
            .await?;
        let doorbells = self.backend.list(&Path::from(DOORBELL_DIR)).await?;
        let old = |age: Duration| age.as_millis().min(i64::MAX as u128) as i64;
        if queries.prefixes.is_empty() && doorbells.is_empty() {
            return Ok(0);
        }
        let now = apiary_storage::store_now(self.backend.as_ref()).await?;
        let mut swept = 0;
        for prefix in queries.prefixes {
            let objects = self.backend.list(&prefix).await?;
            let newest = objects.iter().map(|m| m.last_modified_ms).max();
            if newest.is_some_and(|t| now.saturating_sub(t) > old(retention)) {
                tracing::info!(query = %prefix, "removing a query left by its coordinator");
                self.delete_all(objects.into_iter().map(|m| m.key).collect())
                    .await?;
                swept += 1;
            }
        }
        let idle: Vec<Path> = doorbells
            .into_iter()
            .filter(|m| now.saturating_sub(m.last_modified_ms) > old(self.doorbell_idle))
            .map(|m| m.key)
            .collect();
        if !idle.is_empty() {
            tracing::info!(
                doorbells = idle.len(),
                "removing doorbells not rung for a day"
            );
            self.delete_all(idle).await?;
        }
        Ok(swept)
    }
}
