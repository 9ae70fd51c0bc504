//! Vacuum: deleting cell files no one can need any more.
//!
//! A file under a frame's `data/` folder is deleted only when all of these hold:
//!
//! * no live cell of the newest version references it;
//! * no ledger entry committed within the retention removed it, so a query that began on a
//!   version up to the retention old can still read every cell it planned;
//! * it was written longer ago than the retention, so cells of a write still in flight
//!   (uploaded, not yet committed) are never touched. Writes refuse to commit once their
//!   first upload is older than their `max_write_age` (30 minutes by default), which must
//!   stay below the retention (one hour by default).
//!
//! Every age is judged on the **store's** clock: "now" is the modification stamp of a probe
//! object ([`store_now`]), and an entry's age is its object's stamp, never the
//! `committed_at_ms` a writer's clock put in it. A node whose clock is hours off therefore
//! deletes exactly what a node with a correct clock would.
//!
//! Orphans of failed or killed writes and cells of dropped frames go the same way, and so do
//! the staging files a killed write leaves in a local folder (which listings hide).
//!
//! Before deleting, vacuum records the horizon it judges by, so that a reader of a past
//! version can tell whether that version's cells may be gone (see [`crate::travel`]).

use std::collections::HashSet;
use std::time::Duration;

use apiary_storage::{StorageBackend, get_opt, store_now};
use serde::Serialize;

use crate::entry::{Action, Entry};
use crate::error::Result;
use crate::layout::{self, frame_root};
use crate::ledger::FrameLedger;

/// What a vacuum did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VacuumResult {
    /// Files deleted.
    pub files_deleted: usize,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// Files kept.
    pub files_kept: usize,
}

/// Vacuums the frame of `ledger`, keeping everything the last `retention` may need.
pub async fn vacuum(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    retention: Duration,
) -> Result<VacuumResult> {
    let state = ledger.refresh().await?;
    let now =
        if apiary_storage::planted::is_planted(apiary_storage::planted::VACUUM_ON_THE_NODE_CLOCK) {
            ledger.config().clock.wall_ms()
        } else {
            store_now(backend).await?
        };
    let horizon = now.saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
    // Recorded before anything is deleted, so a reader of a past version learns that its
    // cells may be gone (see `crate::travel`).
    crate::travel::record_horizon(
        ledger,
        crate::travel::Horizon {
            horizon_ms: horizon,
            retention_ms: retention.as_millis().min(u64::MAX as u128) as u64,
        },
    )
    .await?;
    let mut needed: HashSet<String> = state
        .as_ref()
        .and_then(|s| s.live.as_ref())
        .map(|l| l.cells.keys().cloned().collect())
        .unwrap_or_default();
    // Walk back through the entries committed within the retention: what they removed (or
    // dropped) may still be read by a query that began before them.
    let dir = layout::ledger_dir(ledger.frame());
    let mut version = state.as_ref().map(|s| s.version);
    while let Some(v) = version {
        let key = layout::version_key(&dir, v);
        let Some(object) = get_opt(backend, &key).await? else {
            break;
        };
        if object.meta.last_modified_ms < horizon {
            break;
        }
        let entry = Entry::decode(key.as_ref(), &object.bytes, v)?;
        for action in &entry.actions {
            if let Action::RemoveCell { path } = action {
                needed.insert(path.clone());
            }
        }
        if entry.actions.iter().any(|a| matches!(a, Action::Drop)) {
            // Everything a dropped incarnation held is needed until the drop ages out.
            if let Some(previous) = v.checked_sub(1) {
                needed.extend(cells_at(ledger, backend, previous).await?);
            }
        }
        version = v.checked_sub(1);
    }
    let root = frame_root(ledger.frame());
    let data = root.clone().join("data");
    let prefix = format!("{root}/");
    let mut result = VacuumResult {
        files_deleted: 0,
        bytes_deleted: 0,
        files_kept: 0,
    };
    // Staging files of writes killed mid-way (a local folder's `name#N`), which listings
    // do not show: ledger entries, checkpoints and cells alike.
    result.files_deleted += backend.remove_stale_uploads(&root, horizon).await?;
    for meta in backend.list(&data).await? {
        let relative = meta.key.as_ref().strip_prefix(&prefix).unwrap_or_default();
        if needed.contains(relative) || meta.last_modified_ms >= horizon {
            result.files_kept += 1;
            continue;
        }
        backend.delete(&meta.key).await?;
        result.files_deleted += 1;
        result.bytes_deleted += meta.size;
    }
    Ok(result)
}

/// The live cell paths at `version`, replayed from the start (only needed after a drop).
async fn cells_at(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    version: u64,
) -> Result<Vec<String>> {
    let dir = layout::ledger_dir(ledger.frame());
    let mut live: HashSet<String> = HashSet::new();
    for v in 0..=version {
        let key = layout::version_key(&dir, v);
        let Some(object) = get_opt(backend, &key).await? else {
            break;
        };
        for action in Entry::decode(key.as_ref(), &object.bytes, v)?.actions {
            match action {
                Action::AddCell(cell) => {
                    live.insert(cell.path);
                }
                Action::RemoveCell { path } => {
                    live.remove(&path);
                }
                Action::Drop | Action::Create(_) => live.clear(),
                Action::AddColumn(_) => {}
            }
        }
    }
    Ok(live.into_iter().collect())
}
