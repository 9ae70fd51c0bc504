//! [`FrameLedger`]: an open frame ledger, its in-memory state, and the commit protocol.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_storage::{CreateOutcome, Path, StorageBackend, get_opt};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::entry::{Entry, FORMAT_VERSION, parse_version_file};
use crate::error::{LedgerError, Result};
use crate::layout;
use crate::names::FrameRef;
use crate::ops::{Operation, Resolution};
use crate::state::{Checkpoint, CheckpointRef, FrameState, LastCheckpoint};

/// Tuning of ledgers and their commit protocol.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// A checkpoint is written at every version that is a multiple of this.
    pub checkpoint_interval: u64,
    /// Attempts a commit makes before giving up with [`LedgerError::Contention`].
    pub max_attempts: u32,
    /// First backoff after a lost race; doubles per attempt, with full jitter.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Seed of the backoff jitter; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: 50,
            max_attempts: 100,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
            seed: None,
        }
    }
}

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The version now current (the new entry's, or the existing one for a no-op).
    pub version: u64,
    /// False when the state already was what the operation asked for.
    pub committed: bool,
    /// Races lost to other writers before this commit landed.
    pub conflicts: u32,
}

/// An open frame ledger: the state at its head, kept in memory and moved forward by probing
/// the versions after it.
///
/// Commits go through [`commit`](Self::commit). The handle is cheap to share (`Arc`) and
/// serializes its own callers; across handles and processes the conditional put does.
pub struct FrameLedger {
    backend: Arc<dyn StorageBackend>,
    frame: FrameRef,
    ledger_dir: Path,
    checkpoint_dir: Path,
    config: LedgerConfig,
    state: tokio::sync::Mutex<Option<Arc<FrameState>>>,
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for FrameLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameLedger")
            .field("frame", &self.frame.to_string())
            .finish()
    }
}

impl FrameLedger {
    /// Opens the ledger of `frame`: reads the newest checkpoint and replays the versions
    /// after it. A frame that was never created opens with no state.
    pub async fn open(
        backend: Arc<dyn StorageBackend>,
        frame: FrameRef,
        config: LedgerConfig,
    ) -> Result<Self> {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let ledger = Self {
            ledger_dir: layout::ledger_dir(&frame),
            checkpoint_dir: layout::checkpoint_dir(&frame),
            backend,
            frame,
            config,
            state: tokio::sync::Mutex::new(None),
            rng: Mutex::new(rng),
        };
        let state = ledger.load().await?;
        *ledger.state.lock().await = state;
        Ok(ledger)
    }

    /// The frame this ledger belongs to.
    pub fn frame(&self) -> &FrameRef {
        &self.frame
    }

    /// The state as last read or committed by this handle (no storage request).
    pub async fn cached(&self) -> Option<Arc<FrameState>> {
        self.state.lock().await.clone()
    }

    /// Moves the state forward to the newest version, probing `head + 1`, `head + 2`, … (one
    /// GET when nothing changed).
    pub async fn refresh(&self) -> Result<Option<Arc<FrameState>>> {
        let mut guard = self.state.lock().await;
        self.probe_forward(&mut guard).await?;
        Ok(guard.clone())
    }

    /// The state at exactly `version`, for readers that must all see one snapshot (the
    /// tasks of a distributed query). The open state is used when it is that version or can
    /// move forward to it; an older version is rebuilt from the newest checkpoint at or
    /// before it (or from version 0) without touching the open state.
    pub async fn state_at(&self, version: u64) -> Result<Arc<FrameState>> {
        {
            let mut guard = self.state.lock().await;
            let head = guard.as_ref().map(|s| s.version);
            if head.is_none_or(|h| h < version) {
                self.probe_forward(&mut guard).await?;
            }
            match guard.as_ref() {
                Some(s) if s.version == version => return Ok(Arc::clone(s)),
                Some(s) if s.version > version => {}
                _ => {
                    return Err(LedgerError::NotFound {
                        what: format!("version {version} of frame `{}`", self.frame),
                    });
                }
            }
        }
        let interval = self.config.checkpoint_interval;
        let mut state = None;
        if interval > 0 && version >= interval {
            state = self
                .read_checkpoint_at(version - version % interval)
                .await?
                .map(Arc::new);
        }
        let first = state.as_ref().map_or(0, |s| s.version + 1);
        self.apply_versions(&mut state, first, version).await?;
        state.ok_or_else(|| LedgerError::NotFound {
            what: format!("version {version} of frame `{}`", self.frame),
        })
    }

    /// Commits `op`: resolves it against the newest known state and creates the next
    /// version. A lost race reads the winner's entry (returned by the failed put), applies it,
    /// backs off with jitter and resolves the operation again.
    pub async fn commit(&self, op: &Operation) -> Result<CommitInfo> {
        let what = self.frame.to_string();
        let mut guard = self.state.lock().await;
        let mut conflicts = 0;
        loop {
            let actions = match op.resolve(guard.as_deref(), &what)? {
                Resolution::Noop => {
                    return Ok(CommitInfo {
                        version: guard.as_ref().map_or(0, |s| s.version),
                        committed: false,
                        conflicts,
                    });
                }
                Resolution::Commit(actions) => actions,
            };
            let read_version = guard.as_ref().map(|s| s.version);
            let version = read_version.map_or(0, |v| v + 1);
            let entry = Entry {
                format: FORMAT_VERSION,
                version,
                write_id: uuid::Uuid::new_v4().simple().to_string(),
                committed_at_ms: now_ms(),
                operation: op.name().to_string(),
                read_version,
                actions,
            };
            let key = layout::version_key(&self.ledger_dir, version);
            let bytes = Bytes::from(entry.encode()?);
            match self.backend.put_if_absent(&key, bytes).await? {
                CreateOutcome::Created(_) => {
                    advance(&mut guard, &entry, key.as_ref())?;
                    let state = guard.clone();
                    drop(guard);
                    if let Some(state) = state {
                        self.maybe_checkpoint(&state).await;
                    }
                    return Ok(CommitInfo {
                        version,
                        committed: true,
                        conflicts,
                    });
                }
                CreateOutcome::AlreadyExists(winner) => {
                    let entry = Entry::decode(key.as_ref(), &winner.bytes, version)?;
                    advance(&mut guard, &entry, key.as_ref())?;
                    conflicts += 1;
                    if conflicts >= self.config.max_attempts {
                        return Err(LedgerError::Contention {
                            what: format!("frame `{what}`"),
                            attempts: conflicts,
                        });
                    }
                    tokio::time::sleep(self.backoff(conflicts)).await;
                    // Others may have moved on further while we slept: learn everything up to
                    // the head in one listing, so the next attempt is not one behind again.
                    // A failed read here costs nothing: the next conditional put tells the
                    // truth anyway. Damage does stop the commit.
                    match self.replay_after(&mut guard).await {
                        Ok(()) => {}
                        Err(LedgerError::Storage(e)) => {
                            tracing::debug!(frame = %what, error = %e, "catch-up read failed");
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.backoff_max);
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        ceiling.mul_f64(rng.random::<f64>())
    }

    /// Writes a checkpoint at `state.version` when it is due. Failures only cost readers some
    /// replay, so they are logged, never returned: the commit itself is already durable.
    async fn maybe_checkpoint(&self, state: &FrameState) {
        let interval = self.config.checkpoint_interval;
        if interval == 0 || state.version == 0 || !state.version.is_multiple_of(interval) {
            return;
        }
        if let Err(e) = self.write_checkpoint(state).await {
            tracing::warn!(frame = %self.frame, version = state.version, error = %e,
                "checkpoint not written; readers will replay from an older one");
        }
    }

    async fn write_checkpoint(&self, state: &FrameState) -> Result<()> {
        let checkpoint = CheckpointRef {
            format: FORMAT_VERSION,
            state,
        };
        let bytes = serde_json::to_vec(&checkpoint)
            .map_err(|e| LedgerError::Invalid(format!("checkpoint cannot be encoded: {e}")))?;
        let key = layout::version_key(&self.checkpoint_dir, state.version);
        // Whoever wrote it first wrote the same state; either way it exists now.
        self.backend.put_if_absent(&key, Bytes::from(bytes)).await?;
        let hint = serde_json::to_vec(&LastCheckpoint {
            version: state.version,
        })
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        self.backend
            .put(
                &self.checkpoint_dir.clone().join("_last"),
                Bytes::from(hint),
            )
            .await?;
        Ok(())
    }

    /// Reads the newest usable checkpoint, then every version after it.
    async fn load(&self) -> Result<Option<Arc<FrameState>>> {
        let mut state = self.read_checkpoint().await?.map(Arc::new);
        self.replay_after(&mut state).await?;
        Ok(state)
    }

    /// Applies every version after `state` (all of them when `None`).
    ///
    /// One LIST tells how far the ledger goes; the versions up to there are then fetched by
    /// number, concurrently, and applied in order, and a final probe past the end catches
    /// what the listing did not show. A listing is not a snapshot (a local folder's readdir
    /// can skip a file created during it), so it is never trusted to be complete.
    async fn replay_after(&self, state: &mut Option<Arc<FrameState>>) -> Result<()> {
        let listed = match state.as_deref() {
            Some(s) => {
                let offset = layout::version_key(&self.ledger_dir, s.version);
                self.backend.list_after(&self.ledger_dir, &offset).await?
            }
            None => self.backend.list(&self.ledger_dir).await?,
        };
        let newest_listed = listed
            .iter()
            .filter_map(|m| parse_version_file(m.key.filename()?))
            .max();
        let first = state.as_ref().map_or(0, |s| s.version + 1);
        if let Some(last) = newest_listed.filter(|last| *last >= first) {
            self.apply_versions(state, first, last).await?;
        }
        self.probe_forward(state).await
    }

    /// Fetches versions `first..=last` by number (concurrently) and applies them in order;
    /// a missing one is damage, since a later one exists.
    async fn apply_versions(
        &self,
        state: &mut Option<Arc<FrameState>>,
        first: u64,
        last: u64,
    ) -> Result<()> {
        let backend = &self.backend;
        let dir = &self.ledger_dir;
        let mut entries = futures::stream::iter(first..=last)
            .map(|v| async move {
                let key = layout::version_key(dir, v);
                match get_opt(backend.as_ref(), &key).await? {
                    Some(object) => Ok((v, key, object.bytes)),
                    None => Err(LedgerError::Corrupt {
                        key: key.to_string(),
                        reason: format!(
                            "version {v} is missing from the ledger, but version {last} exists"
                        ),
                    }),
                }
            })
            .buffered(8);
        while let Some((v, key, bytes)) = entries.try_next().await? {
            let entry = Entry::decode(key.as_ref(), &bytes, v)?;
            advance(state, &entry, key.as_ref())?;
        }
        Ok(())
    }

    /// Applies `head + 1`, `head + 2`, … until one does not exist.
    async fn probe_forward(&self, state: &mut Option<Arc<FrameState>>) -> Result<()> {
        loop {
            let next = state.as_ref().map_or(0, |s| s.version + 1);
            let key = layout::version_key(&self.ledger_dir, next);
            let Some(object) = get_opt(self.backend.as_ref(), &key).await? else {
                return Ok(());
            };
            let entry = Entry::decode(key.as_ref(), &object.bytes, next)?;
            advance(state, &entry, key.as_ref())?;
        }
    }

    /// The checkpoint the hint points at. A missing or damaged checkpoint is not fatal (the
    /// ledger itself is the truth): it is logged and the ledger is replayed from the start.
    async fn read_checkpoint(&self) -> Result<Option<FrameState>> {
        let hint_key = self.checkpoint_dir.clone().join("_last");
        let Some(hint) = get_opt(self.backend.as_ref(), &hint_key).await? else {
            return Ok(None);
        };
        let Ok(hint) = serde_json::from_slice::<LastCheckpoint>(&hint.bytes) else {
            tracing::warn!(key = %hint_key, "damaged checkpoint hint ignored; replaying the ledger");
            return Ok(None);
        };
        self.read_checkpoint_at(hint.version).await
    }

    /// The checkpoint at `version`, if it exists and is sound (damage is logged and ignored:
    /// the ledger itself is the truth).
    async fn read_checkpoint_at(&self, version: u64) -> Result<Option<FrameState>> {
        let key = layout::version_key(&self.checkpoint_dir, version);
        let Some(object) = get_opt(self.backend.as_ref(), &key).await? else {
            tracing::warn!(key = %key, "checkpoint missing; replaying the ledger");
            return Ok(None);
        };
        match serde_json::from_slice::<Checkpoint>(&object.bytes) {
            Ok(cp) if cp.format == FORMAT_VERSION && cp.state.version == version => {
                Ok(Some(cp.state))
            }
            _ => {
                tracing::warn!(key = %key, "damaged checkpoint ignored; replaying the ledger");
                Ok(None)
            }
        }
    }
}

/// Applies `entry` to the state in `slot` (creating it from version 0), in place; the state
/// is cloned only while a reader still holds a snapshot of it.
fn advance(slot: &mut Option<Arc<FrameState>>, entry: &Entry, key: &str) -> Result<()> {
    match slot {
        None => *slot = Some(Arc::new(FrameState::from_first(entry, key)?)),
        Some(state) => Arc::make_mut(state).apply(entry, key)?,
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
