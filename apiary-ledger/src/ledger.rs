//! [`FrameLedger`]: an open frame ledger, its in-memory state, and the commit protocol.
//!
//! Readers never wait on writers. The newest known state is *published* in an
//! [`ArcSwapOption`]: [`cached`](FrameLedger::cached) is a lock-free load, and
//! [`refresh`](FrameLedger::refresh) probes for newer versions without taking the commit
//! lock when a commit holds it. Commits of one handle are serialized by that lock alone, so
//! a contended commit's PUTs and backoff sleeps hold up only other commits.
//!
//! The committer keeps a *working* copy of the state beside the published one and applies
//! each new entry to both in place (the previous published copy becomes the next working
//! copy), so a commit on a frame with many cells costs the size of its entry, not of the
//! frame; a copy is made only while a reader still holds the old snapshot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_storage::time::{Clock, Random, SystemClock};
use apiary_storage::{CreateOutcome, Path, StorageBackend, get_opt};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::commits::CommitTally;
use crate::entry::{Entry, FORMAT_VERSION, parse_version_file};
use crate::error::{LedgerError, Result};
use crate::layout;
use crate::names::FrameRef;
use crate::ops::{Operation, Resolution};
use crate::stamp::StoreClock;
use crate::state::{Checkpoint, CheckpointRef, FrameState, LastCheckpoint};

/// Tuning of ledgers and their commit protocol, and the time and randomness they use.
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
    /// The clock: entries' `committed_at_ms` (corrected by `store_clock`) and backoff sleeps.
    pub clock: Arc<dyn Clock>,
    /// Corrects `clock` to the store's clock for commit stamps (see [`crate::stamp`]);
    /// `None` stamps with `clock` as it is (simulations and golden files).
    pub store_clock: Option<Arc<StoreClock>>,
    /// Who commits (a node id), recorded in each entry's `writer`.
    pub writer: Option<String>,
    /// Write ids, cell names and backoff jitter; seed it to replay a history exactly.
    pub random: Random,
    /// Open frame ledgers a registry keeps, least recently used evicted first.
    pub max_open_ledgers: usize,
    /// Where attempts to create ledger entries are counted, by outcome (shared by clones).
    pub commits: CommitTally,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: 50,
            max_attempts: 100,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
            clock: SystemClock::shared(),
            store_clock: Some(Arc::new(StoreClock::default())),
            writer: None,
            random: Random::process(),
            max_open_ledgers: 1024,
            commits: CommitTally::default(),
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

type Slot = Option<Arc<FrameState>>;

/// An open frame ledger: the state at its head, kept in memory and moved forward by probing
/// the versions after it.
///
/// Commits go through [`commit`](Self::commit). The handle is cheap to share (`Arc`) and
/// serializes its own committers; across handles and processes the conditional put does.
pub struct FrameLedger {
    backend: Arc<dyn StorageBackend>,
    frame: FrameRef,
    ledger_dir: Path,
    checkpoint_dir: Path,
    config: LedgerConfig,
    /// The newest state this handle knows, for readers.
    published: ArcSwapOption<FrameState>,
    /// Serializes publishing, so the published version never goes backwards (held for a
    /// comparison and a pointer swap, never across I/O).
    publish_lock: Mutex<()>,
    /// The commit lock, guarding the committer's working copy of the state.
    working: tokio::sync::Mutex<Slot>,
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
        let ledger = Self {
            ledger_dir: layout::ledger_dir(&frame),
            checkpoint_dir: layout::checkpoint_dir(&frame),
            backend,
            frame,
            config,
            published: ArcSwapOption::empty(),
            publish_lock: Mutex::new(()),
            working: tokio::sync::Mutex::new(None),
        };
        let state = ledger.load().await?;
        ledger.publish(state.clone());
        *ledger.working.lock().await = state;
        Ok(ledger)
    }

    /// The frame this ledger belongs to.
    pub fn frame(&self) -> &FrameRef {
        &self.frame
    }

    /// The configuration (clock, randomness, tuning) this ledger was opened with.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// The state as last read or committed by this handle (no storage request, no lock).
    pub fn cached(&self) -> Option<Arc<FrameState>> {
        self.published.load_full()
    }

    /// Moves the state forward to the newest version, probing `head + 1`, `head + 2`, … (one
    /// GET when nothing changed). Never waits for a commit in progress.
    pub async fn refresh(&self) -> Result<Option<Arc<FrameState>>> {
        match self.working.try_lock() {
            Ok(mut working) => {
                self.catch_up(&mut working);
                // The working copy may be ahead of the published state: a commit that
                // failed after learning newer versions leaves it so. Publish it either way.
                self.publish(working.clone());
                while let Some((entry, key)) = self.fetch_next(&working).await? {
                    self.install(&mut working, &entry, key.as_ref())?;
                }
            }
            Err(_) => {
                // A commit is running: move a copy of the published state forward instead.
                let mut state = self.cached();
                while let Some((entry, key)) = self.fetch_next(&state).await? {
                    advance(&mut state, &entry, key.as_ref())?;
                }
                self.publish(state);
            }
        }
        Ok(self.cached())
    }

    /// The state at exactly `version`, for readers that must all see one snapshot (the
    /// tasks of a distributed query). The open state is used when it is that version or can
    /// move forward to it; an older version is rebuilt from the newest checkpoint at or
    /// before it (or from version 0) without touching the open state.
    pub async fn state_at(&self, version: u64) -> Result<Arc<FrameState>> {
        let mut head = self.cached();
        if head.as_ref().is_none_or(|s| s.version < version) {
            head = self.refresh().await?;
        }
        match head {
            Some(s) if s.version == version => return Ok(s),
            Some(s) if s.version > version => {}
            _ => {
                return Err(LedgerError::NotFound {
                    what: format!("version {version} of frame `{}`", self.frame),
                });
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
        self.commit_by(op, None).await
    }

    /// [`commit`](Self::commit), but no attempt is sent after `deadline` (a time of the
    /// ledger clock's [`monotonic`](Clock::monotonic) scale): the commit then fails with
    /// [`LedgerError::Expired`] and nothing is committed. Writes use it so that cells
    /// uploaded long ago, which a vacuum may already treat as orphans, are never committed.
    pub async fn commit_by(
        &self,
        op: &Operation,
        deadline: Option<Duration>,
    ) -> Result<CommitInfo> {
        self.commit_to(op, deadline, None).await
    }

    /// [`commit_by`](Self::commit_by), only into the incarnation of the frame that began
    /// at version `incarnation` (see [`LiveFrame::incarnation`](crate::LiveFrame)): a
    /// write planned against a frame that was dropped (and perhaps created again, with
    /// another schema) while its cells uploaded fails with [`LedgerError::Conflict`] and
    /// commits nothing, instead of adding its cells to the new frame.
    pub async fn commit_to(
        &self,
        op: &Operation,
        deadline: Option<Duration>,
        incarnation: Option<u64>,
    ) -> Result<CommitInfo> {
        let what = self.frame.to_string();
        let mut working = self.working.lock().await;
        self.catch_up(&mut working);
        let mut conflicts = 0;
        loop {
            if let Some(expected) = incarnation {
                let now = working
                    .as_ref()
                    .and_then(|s| s.live.as_ref())
                    .map(|l| l.incarnation);
                if now != Some(expected) {
                    return Err(LedgerError::Conflict {
                        what: format!("frame `{what}`"),
                        detail: format!(
                            "it was dropped{} while this change was in flight (it was \
                             planned against the frame created at version {expected}); \
                             nothing was committed: read the frame again and retry",
                            if now.is_some() {
                                " and created again"
                            } else {
                                ""
                            }
                        ),
                    });
                }
            }
            let actions = match op.resolve(working.as_deref(), &what)? {
                Resolution::Noop => {
                    return Ok(CommitInfo {
                        version: working.as_ref().map_or(0, |s| s.version),
                        committed: false,
                        conflicts,
                    });
                }
                Resolution::Commit(actions) => actions,
            };
            let read_version = working.as_ref().map(|s| s.version);
            let version = read_version.map_or(0, |v| v + 1);
            // Never before the entry this one follows: stamps order like versions.
            let after = working.as_ref().map_or(i64::MIN, |s| s.committed_at_ms);
            let entry = Entry {
                format: FORMAT_VERSION,
                version,
                write_id: self.config.random.id(),
                committed_at_ms: self.stamp().await.max(after),
                operation: op.name().to_string(),
                read_version,
                writer: self.config.writer.clone(),
                actions,
            };
            let key = layout::version_key(&self.ledger_dir, version);
            let bytes = Bytes::from(entry.encode()?);
            if let Some(deadline) = deadline {
                let now = self.config.clock.monotonic();
                if now > deadline {
                    return Err(LedgerError::Expired {
                        what: format!("the commit to frame `{what}`"),
                        detail: format!(
                            "its deadline passed {:?} ago (after {conflicts} lost races)",
                            now - deadline
                        ),
                    });
                }
            }
            let created = self.backend.put_if_absent(&key, bytes).await;
            self.config.commits.record(&created);
            match created? {
                CreateOutcome::Created(_) => {
                    self.install(&mut working, &entry, key.as_ref())?;
                    let state = working.clone();
                    drop(working);
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
                    self.install(&mut working, &entry, key.as_ref())?;
                    conflicts += 1;
                    if conflicts >= self.config.max_attempts {
                        return Err(LedgerError::Contention {
                            what: format!("frame `{what}`"),
                            attempts: conflicts,
                        });
                    }
                    self.config.clock.sleep(self.backoff(conflicts)).await;
                    // Others may have moved on further while we slept: learn everything up to
                    // the head in one listing, so the next attempt is not one behind again.
                    // A failed read here costs nothing: the next conditional put tells the
                    // truth anyway. Damage does stop the commit.
                    // Every version applied exists, so even a catch-up cut short by an error
                    // leaves a true state: publish what was learned.
                    let caught_up = self.replay_after(&mut working).await;
                    self.publish(working.clone());
                    match caught_up {
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

    /// Makes `state` the published state unless a newer one is published already. Returns
    /// the state it replaced.
    fn publish(&self, state: Slot) -> Slot {
        let state = state?;
        let _serial = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let newer = self
            .published
            .load()
            .as_ref()
            .is_none_or(|current| current.version < state.version);
        if newer {
            self.published.swap(Some(state))
        } else {
            None
        }
    }

    /// Brings the working copy up to the published state when a reader moved that further.
    fn catch_up(&self, working: &mut Slot) {
        let published = self.cached();
        let behind = match (&published, working.as_ref()) {
            (Some(p), Some(w)) => p.version > w.version,
            (Some(_), None) => true,
            _ => false,
        };
        if behind {
            *working = published;
        }
    }

    /// Applies `entry` to the working copy and publishes the result; the state it replaces
    /// in the published slot becomes the next working copy once the entry is applied to it
    /// too (in place, unless a reader still holds it).
    fn install(&self, working: &mut Slot, entry: &Entry, key: &str) -> Result<()> {
        advance(working, entry, key)?;
        let mut recycled = self.publish(working.clone());
        if recycled
            .as_ref()
            .is_some_and(|r| r.version + 1 == entry.version)
        {
            // `working` is shared with the published slot now; continue on the other copy.
            advance(&mut recycled, entry, key)?;
            *working = recycled;
        }
        Ok(())
    }

    /// The entry after `state` (version 0 when `None`), if it exists.
    async fn fetch_next(&self, state: &Slot) -> Result<Option<(Entry, Path)>> {
        let next = state.as_ref().map_or(0, |s| s.version + 1);
        let key = layout::version_key(&self.ledger_dir, next);
        let Some(object) = get_opt(self.backend.as_ref(), &key).await? else {
            return Ok(None);
        };
        let entry = Entry::decode(key.as_ref(), &object.bytes, next)?;
        Ok(Some((entry, key)))
    }

    /// Now, on the store's clock when the ledger has one (see [`crate::stamp`]).
    async fn stamp(&self) -> i64 {
        match &self.config.store_clock {
            Some(store) => {
                store
                    .now_ms(self.config.clock.as_ref(), self.backend.as_ref())
                    .await
            }
            None => self.config.clock.wall_ms(),
        }
    }

    /// The store's time now, estimated without a request (see [`StoreClock::estimate_ms`]).
    pub fn store_now_estimate(&self) -> i64 {
        match &self.config.store_clock {
            Some(store) => store.estimate_ms(self.config.clock.as_ref()),
            None => self.config.clock.wall_ms(),
        }
    }

    /// The storage the ledger lives in.
    pub fn backend(&self) -> &Arc<dyn StorageBackend> {
        &self.backend
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.backoff_max);
        self.config.random.jitter(ceiling)
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
    async fn probe_forward(&self, state: &mut Slot) -> Result<()> {
        while let Some((entry, key)) = self.fetch_next(state).await? {
            advance(state, &entry, key.as_ref())?;
        }
        Ok(())
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
