//! Reading the past: the version a frame had at a time, whether a past version is still
//! retained, and the history of commits.
//!
//! * **A time** means the latest version committed at or before it, judged on the entries'
//!   `committed_at_ms` stamps, which are on the store's clock and never decrease along a
//!   ledger (see [`crate::stamp`]). Finding it is a binary search over versions: at most
//!   `ceil(log2(head + 1))` entry reads, none when the head itself is old enough.
//! * **Retention.** Vacuum deletes a cell no longer live only once the entry that removed it
//!   is older than its retention (judged on object modification times, the store's clock).
//!   Every vacuum records the horizon it used in `{frame}/_vacuum/horizon.json` *before*
//!   deleting anything. A past version `v` is retained when all its cells are still live,
//!   when no vacuum ever ran, or when entry `v + 1` is newer than the highest horizon: then
//!   every entry that removed one of its cells is too. Otherwise reading it fails with
//!   [`LedgerError::NotRetained`], naming the oldest version that is retained.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use apiary_storage::{ObjectMeta, Path, get_opt};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::entry::{Action, Entry};
use crate::error::{LedgerError, Result};
use crate::layout;
use crate::ledger::FrameLedger;
use crate::state::{FrameState, LiveFrame};

/// How far past the store's clock (as a node estimates it) a time may be and still be read
/// as now: `TIMESTAMP AS OF now()` on a node whose clock runs a little ahead of the store's
/// must not be refused. Past it, a time is in the future and refused.
pub const FUTURE_SLACK_MS: i64 = 2_000;

/// The version a frame had at a time (see [`FrameLedger::version_at_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionAt {
    /// The latest version committed at or before the time.
    pub version: u64,
    /// Its commit stamp.
    pub committed_at_ms: i64,
    /// Ledger entries read to find it (beyond the head probe).
    pub reads: u32,
}

/// What vacuum records before it deletes: the highest horizon any vacuum of the frame used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Horizon {
    /// Entries (and files) modified before this time, on the store's clock, may have lost
    /// cells to vacuum.
    pub(crate) horizon_ms: i64,
    /// The retention that vacuum ran with.
    pub(crate) retention_ms: u64,
}

/// The key of a frame's vacuum horizon.
pub(crate) fn horizon_key(ledger: &FrameLedger) -> Path {
    layout::frame_root(ledger.frame())
        .join("_vacuum")
        .join("horizon.json")
}

/// Reads the recorded horizon, if a vacuum ever ran. A damaged record is damage.
pub(crate) async fn read_horizon(ledger: &FrameLedger) -> Result<Option<Horizon>> {
    let key = horizon_key(ledger);
    let Some(object) = get_opt(ledger.backend().as_ref(), &key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&object.bytes)
        .map(Some)
        .map_err(|e| LedgerError::Corrupt {
            key: key.to_string(),
            reason: format!("not a vacuum horizon: {e}"),
        })
}

/// Records `horizon` unless a higher one is recorded already. Two vacuums racing may both
/// write; the one written last wins, which can only lower the record by the difference of
/// their horizons, both of which were just recorded before either deletes.
pub(crate) async fn record_horizon(ledger: &FrameLedger, horizon: Horizon) -> Result<()> {
    if let Some(existing) = read_horizon(ledger).await?
        && existing.horizon_ms >= horizon.horizon_ms
    {
        return Ok(());
    }
    let bytes = serde_json::to_vec(&horizon)
        .map_err(|e| LedgerError::Invalid(format!("vacuum horizon cannot be encoded: {e}")))?;
    ledger
        .backend()
        .put(&horizon_key(ledger), Bytes::from(bytes))
        .await?;
    Ok(())
}

/// `2026-09-01T10:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    let time = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(time).to_string()
}

impl FrameLedger {
    /// Entry `version` and its object's metadata, if it exists.
    pub async fn read_entry(&self, version: u64) -> Result<Option<(Entry, ObjectMeta)>> {
        let key = layout::version_key(&layout::ledger_dir(self.frame()), version);
        let Some(object) = get_opt(self.backend().as_ref(), &key).await? else {
            return Ok(None);
        };
        let entry = Entry::decode(key.as_ref(), &object.bytes, version)?;
        Ok(Some((entry, object.meta)))
    }

    /// Entry `version`, which must exist because a later version does.
    async fn must_read(&self, version: u64) -> Result<(Entry, ObjectMeta)> {
        self.read_entry(version)
            .await?
            .ok_or_else(|| LedgerError::Corrupt {
                key: layout::version_key(&layout::ledger_dir(self.frame()), version).to_string(),
                reason: format!("version {version} is missing from the ledger"),
            })
    }

    /// The latest version committed at or before `at_ms` (milliseconds since the epoch, on
    /// the store's clock). A time in the future (more than [`FUTURE_SLACK_MS`] past the
    /// store's clock now, as this node estimates it) and a time before the frame's first
    /// version are refused.
    pub async fn version_at_time(&self, at_ms: i64) -> Result<VersionAt> {
        let now = self.store_now_estimate();
        if at_ms > now.saturating_add(FUTURE_SLACK_MS) {
            return Err(LedgerError::Invalid(format!(
                "{} is in the future (the store's clock reads {}); ask for a time that has \
                 passed",
                format_ms(at_ms),
                format_ms(now)
            )));
        }
        let head = self.refresh().await?.ok_or_else(|| LedgerError::NotFound {
            what: format!("frame `{}`", self.frame()),
        })?;
        // A head stamp of 0 comes from a checkpoint older than stamps in states: read it.
        if head.committed_at_ms > 0 && head.committed_at_ms <= at_ms {
            return Ok(VersionAt {
                version: head.version,
                committed_at_ms: head.committed_at_ms,
                reads: 0,
            });
        }
        // The first version whose stamp is after `at_ms` lies in `lo..=hi`.
        let (mut lo, mut hi) = (0u64, head.version);
        if head.committed_at_ms == 0 {
            hi = head.version + 1;
        }
        let mut stamps: HashMap<u64, i64> = HashMap::new();
        let mut reads = 0;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (entry, _) = self.must_read(mid).await?;
            reads += 1;
            stamps.insert(mid, entry.committed_at_ms);
            if entry.committed_at_ms <= at_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(version) = lo.checked_sub(1) else {
            let first = match stamps.get(&0) {
                Some(stamp) => *stamp,
                None => self.must_read(0).await?.0.committed_at_ms,
            };
            return Err(LedgerError::NotFound {
                what: format!(
                    "frame `{}` at {}: its first version was committed at {}",
                    self.frame(),
                    format_ms(at_ms),
                    format_ms(first)
                ),
            });
        };
        let committed_at_ms = match stamps.get(&version) {
            Some(stamp) => *stamp,
            None if version == head.version => head.committed_at_ms,
            None => self.must_read(version).await?.0.committed_at_ms,
        };
        Ok(VersionAt {
            version,
            committed_at_ms,
            reads,
        })
    }

    /// Checks that `version` (whose live frame is `past`, `None` when it was dropped then)
    /// can still be read in full at `head`:
    /// see the module documentation. Costs nothing when every cell of `past` is still live,
    /// else one GET for the horizon and one for entry `past.version + 1` (more, to name the
    /// oldest retained version, only when the answer is no).
    pub async fn check_retained(
        &self,
        version: u64,
        past: Option<&LiveFrame>,
        head: &FrameState,
    ) -> Result<()> {
        if version >= head.version {
            return Ok(());
        }
        let all_live = past.is_none_or(|p| {
            p.cells
                .keys()
                .all(|c| head.live.as_ref().is_some_and(|h| h.cells.contains_key(c)))
        });
        if all_live {
            return Ok(());
        }
        let Some(horizon) = read_horizon(self).await? else {
            return Ok(());
        };
        let modified = |version: u64| async move {
            self.must_read(version)
                .await
                .map(|(_, meta)| meta.last_modified_ms)
        };
        if modified(version + 1).await? >= horizon.horizon_ms {
            return Ok(());
        }
        // The oldest retained version: the first `u` whose successor is newer than the
        // horizon (or the head). Modification times of successive entries do not decrease.
        let (mut lo, mut hi) = (version + 1, head.version);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if modified(mid + 1).await? >= horizon.horizon_ms {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Err(LedgerError::NotRetained {
            frame: self.frame().to_string(),
            version,
            oldest: lo,
            retention: humantime::format_duration(Duration::from_millis(horizon.retention_ms))
                .to_string(),
        })
    }

    /// Every commit of the frame, oldest first, with what it added and removed (rows of
    /// removed cells are known from the state before the commit, so the ledger is replayed
    /// from version 0: one GET per version).
    pub async fn history(&self) -> Result<Vec<Commit>> {
        let Some(head) = self.refresh().await? else {
            return Ok(Vec::new());
        };
        let mut state: Option<FrameState> = None;
        let mut commits = Vec::with_capacity(head.version as usize + 1);
        let mut entries = futures::stream::iter(0..=head.version)
            .map(|version| async move { self.must_read(version).await.map(|(e, _)| e) })
            .buffered(16);
        while let Some(entry) = entries.try_next().await? {
            let version = entry.version;
            let before = state.as_ref().and_then(|s| s.live.as_ref());
            let mut commit = Commit {
                version,
                committed_at_ms: entry.committed_at_ms,
                operation: entry.operation.clone(),
                writer: entry.writer.clone(),
                cells_added: 0,
                cells_removed: 0,
                rows_added: 0,
                rows_removed: 0,
            };
            // Rows of a removed cell: from the state before the entry, or from this entry
            // when it added the cell itself.
            let mut added: HashMap<&str, u64> = HashMap::new();
            for action in &entry.actions {
                match action {
                    Action::AddCell(cell) => {
                        commit.cells_added += 1;
                        commit.rows_added += cell.rows;
                        added.insert(&cell.path, cell.rows);
                    }
                    Action::RemoveCell { path } => {
                        commit.cells_removed += 1;
                        commit.rows_removed += added.remove(path.as_str()).unwrap_or_else(|| {
                            before.and_then(|l| l.cells.get(path)).map_or(0, |c| c.rows)
                        });
                    }
                    Action::Drop => {
                        let cells = before.map_or(0, |l| l.cells.len()) + added.len();
                        commit.cells_removed += cells as u64;
                        commit.rows_removed +=
                            before.map_or(0, |l| l.rows()) + added.values().sum::<u64>();
                        added.clear();
                    }
                    Action::Create(_) | Action::AddColumn(_) => {}
                }
            }
            let key = layout::version_key(&layout::ledger_dir(self.frame()), version);
            match &mut state {
                None => state = Some(FrameState::from_first(&entry, key.as_ref())?),
                Some(s) => s.apply(&entry, key.as_ref())?,
            }
            commits.push(commit);
        }
        Ok(commits)
    }
}

/// One commit of a frame, as [`FrameLedger::history`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// The version it made.
    pub version: u64,
    /// Its stamp on the store's clock (milliseconds since the epoch).
    pub committed_at_ms: i64,
    /// `create`, `append`, `overwrite`, `rewrite` (compaction), `add_column`, `drop`.
    pub operation: String,
    /// The node that committed, when recorded.
    pub writer: Option<String>,
    /// Cells it added.
    pub cells_added: u64,
    /// Cells it removed (a drop removes every live cell).
    pub cells_removed: u64,
    /// Rows in the cells it added.
    pub rows_added: u64,
    /// Rows in the cells it removed.
    pub rows_removed: u64,
}
