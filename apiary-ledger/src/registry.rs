//! The registry of hives, boxes and frames.
//!
//! Every hive and box has its own small chain of versioned entries (create, seal, unseal,
//! drop), and every frame is its own ledger, so DDL on one object never contends with DDL on
//! another. Dropping a hive or box first *seals* it: creators of children check their parent
//! after committing and undo their create if it was sealed meanwhile, so a create that was
//! acknowledged is never lost to a concurrent drop, and a frame's liveness depends on its own
//! ledger alone (which keeps a warm append at one conditional PUT).

use std::sync::Arc;

use apiary_storage::{CreateOutcome, Path, StorageBackend, get_opt};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::entry::{FORMAT_VERSION, FormatProbe, FrameDefinition, parse_version_file};
use crate::error::{LedgerError, Result};
use crate::layout;
use crate::ledger::{FrameLedger, LedgerConfig};
use crate::names::{FrameRef, validate_name};
use crate::ops::Operation;

mod frames;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChainAction {
    Create,
    Seal,
    Unseal,
    Drop,
}

/// One entry of a hive or box chain (format 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChainEntry {
    format: u32,
    kind: String,
    name: String,
    version: u64,
    write_id: String,
    committed_at_ms: i64,
    action: ChainAction,
}

/// The lifecycle state of a hive or box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Usable.
    Live,
    /// A drop is in progress: no new children may be created.
    Dropping,
}

#[derive(Debug, Clone, Copy)]
struct ChainHead {
    version: u64,
    action: ChainAction,
}

impl ChainHead {
    fn lifecycle(&self) -> Option<Lifecycle> {
        match self.action {
            ChainAction::Create | ChainAction::Unseal => Some(Lifecycle::Live),
            ChainAction::Seal => Some(Lifecycle::Dropping),
            ChainAction::Drop => None,
        }
    }
}

/// A hive (database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HiveInfo {
    /// Name.
    pub name: String,
    /// Live, or being dropped.
    pub state: Lifecycle,
}

/// A box (schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxInfo {
    /// Hive name.
    pub hive: String,
    /// Box name.
    pub name: String,
    /// Live, or being dropped.
    pub state: Lifecycle,
}

/// A frame (table) at its current version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameInfo {
    /// `hive.box.frame`.
    pub name: String,
    /// Ledger version.
    pub version: u64,
    /// Schema and partitioning.
    pub definition: FrameDefinition,
    /// Live cells.
    pub cells: usize,
    /// Rows over live cells.
    pub rows: u64,
    /// Bytes over live cells.
    pub bytes: u64,
}

/// Whether a create call made something new or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call created it.
    New,
    /// An identical object already existed.
    Existing,
}

/// The registry, over one storage root. Cheap to share; it caches open frame ledgers.
pub struct Registry {
    backend: Arc<dyn StorageBackend>,
    config: LedgerConfig,
    /// Open ledgers of existing (or dropped) frames, bounded by `max_open_ledgers`.
    ledgers: std::sync::Mutex<lru::LruCache<FrameRef, Arc<FrameLedger>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("storage", &self.backend.to_string())
            .finish()
    }
}

struct Chain {
    dir: Path,
    kind: &'static str,
    name: String,
}

impl Chain {
    fn hive(hive: &str) -> Self {
        Chain {
            dir: layout::hive_chain(hive),
            kind: "hive",
            name: hive.to_string(),
        }
    }

    fn r#box(hive: &str, r#box: &str) -> Self {
        Chain {
            dir: layout::box_chain(hive, r#box),
            kind: "box",
            name: format!("{hive}.{box}"),
        }
    }

    fn describe(&self) -> String {
        format!("{} `{}`", self.kind, self.name)
    }
}

impl Registry {
    /// A registry over `backend`.
    pub fn new(backend: Arc<dyn StorageBackend>, config: LedgerConfig) -> Self {
        let capacity = std::num::NonZeroUsize::new(config.max_open_ledgers)
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            backend,
            config,
            ledgers: std::sync::Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn StorageBackend> {
        &self.backend
    }

    /// The configuration of its ledgers (tuning, clock, randomness).
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    // ----- chains -----

    /// The newest entry of a chain. The listing only says where to start reading: versions
    /// are then read by number until one is absent, so a listing that missed the newest
    /// entries (a local folder's readdir is not a snapshot) cannot hide them.
    async fn head(&self, chain: &Chain) -> Result<Option<ChainHead>> {
        let listed = self.backend.list(&chain.dir).await?;
        let newest_listed = listed
            .iter()
            .filter_map(|m| parse_version_file(m.key.filename()?))
            .max();
        let mut head = None;
        let mut version = newest_listed.unwrap_or(0);
        loop {
            let key = layout::version_key(&chain.dir, version);
            let Some(object) = get_opt(self.backend.as_ref(), &key).await? else {
                if head.is_none() && newest_listed.is_some() {
                    return Err(LedgerError::Corrupt {
                        key: key.to_string(),
                        reason: "a listed registry entry vanished; registry entries are never \
                                 deleted"
                            .into(),
                    });
                }
                return Ok(head);
            };
            let entry = decode_chain_entry(key.as_ref(), &object.bytes, version)?;
            head = Some(ChainHead {
                version,
                action: entry.action,
            });
            version += 1;
        }
    }

    /// Appends `action` after `head`; `Ok(false)` when another writer took that version.
    async fn append(
        &self,
        chain: &Chain,
        head: Option<ChainHead>,
        action: ChainAction,
    ) -> Result<bool> {
        let version = head.map_or(0, |h| h.version + 1);
        let entry = ChainEntry {
            format: FORMAT_VERSION,
            kind: chain.kind.to_string(),
            name: chain.name.clone(),
            version,
            write_id: self.config.random.id(),
            committed_at_ms: self.config.clock.wall_ms(),
            action,
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| LedgerError::Invalid(format!("registry entry cannot be encoded: {e}")))?;
        let key = layout::version_key(&chain.dir, version);
        let created = self.backend.put_if_absent(&key, Bytes::from(bytes)).await;
        self.config.commits.record(&created);
        Ok(matches!(created?, CreateOutcome::Created(_)))
    }

    /// True when nothing was appended to the chain after `version`.
    async fn unchanged_since(&self, chain: &Chain, version: u64) -> Result<bool> {
        let key = layout::version_key(&chain.dir, version + 1);
        match self.backend.head(&key).await {
            Ok(_) => Ok(false),
            Err(e) if e.is_not_found() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn live_head(&self, chain: &Chain) -> Result<ChainHead> {
        match self.head(chain).await? {
            Some(h) if h.lifecycle() == Some(Lifecycle::Live) => Ok(h),
            Some(h) if h.lifecycle() == Some(Lifecycle::Dropping) => Err(LedgerError::Conflict {
                what: chain.describe(),
                detail: "it is being dropped; nothing can be created in it".into(),
            }),
            _ => Err(LedgerError::NotFound {
                what: chain.describe(),
            }),
        }
    }

    /// Creates the chain's object if it is absent or dropped. Idempotent.
    async fn create_in_chain(&self, chain: &Chain) -> Result<(Created, ChainHead)> {
        for _ in 0..self.config.max_attempts {
            let head = self.head(chain).await?;
            match head.map(|h| (h, h.lifecycle())) {
                Some((h, Some(Lifecycle::Live))) => return Ok((Created::Existing, h)),
                Some((_, Some(Lifecycle::Dropping))) => {
                    return Err(LedgerError::Conflict {
                        what: chain.describe(),
                        detail: "a drop of it is in progress; run the drop again to finish it, \
                                 then create it"
                            .into(),
                    });
                }
                _ => {
                    if self.append(chain, head, ChainAction::Create).await? {
                        let version = head.map_or(0, |h| h.version + 1);
                        return Ok((
                            Created::New,
                            ChainHead {
                                version,
                                action: ChainAction::Create,
                            },
                        ));
                    }
                }
            }
        }
        Err(LedgerError::Contention {
            what: chain.describe(),
            attempts: self.config.max_attempts,
        })
    }

    /// Moves a chain from `from` to `to` (seal, unseal, drop), re-reading on lost races.
    /// Returns the new head, or `None` if the chain is no longer in a state that allows it.
    async fn transition(
        &self,
        chain: &Chain,
        allowed_from: &[ChainAction],
        to: ChainAction,
    ) -> Result<Option<ChainHead>> {
        for _ in 0..self.config.max_attempts {
            let head = self.head(chain).await?;
            let Some(current) = head else { return Ok(None) };
            if current.action == to {
                return Ok(Some(current));
            }
            if !allowed_from.contains(&current.action) {
                return Ok(None);
            }
            if self.append(chain, head, to).await? {
                return Ok(Some(ChainHead {
                    version: current.version + 1,
                    action: to,
                }));
            }
        }
        Err(LedgerError::Contention {
            what: chain.describe(),
            attempts: self.config.max_attempts,
        })
    }

    /// Names one level below `dir` that are user names (not Apiary's `_` folders).
    async fn child_names(&self, dir: &Path) -> Result<Vec<String>> {
        let listing = self.backend.list_with_delimiter(dir).await?;
        Ok(listing
            .prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| validate_name("child", n).is_ok())
            .collect())
    }

    // ----- hives -----

    /// Creates a hive; creating an existing hive is a no-op.
    pub async fn create_hive(&self, hive: &str) -> Result<Created> {
        validate_name("hive", hive)?;
        Ok(self.create_in_chain(&Chain::hive(hive)).await?.0)
    }

    /// A hive, if it exists.
    pub async fn get_hive(&self, hive: &str) -> Result<HiveInfo> {
        validate_name("hive", hive)?;
        let chain = Chain::hive(hive);
        match self.head(&chain).await?.and_then(|h| h.lifecycle()) {
            Some(state) => Ok(HiveInfo {
                name: hive.to_string(),
                state,
            }),
            None => Err(LedgerError::NotFound {
                what: chain.describe(),
            }),
        }
    }

    /// All hives, sorted by name.
    pub async fn list_hives(&self) -> Result<Vec<HiveInfo>> {
        let names = self.child_names(&Path::default()).await?;
        let found: Vec<Option<HiveInfo>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.get_hive(&name).await {
                    Ok(info) => Ok(Some(info)),
                    Err(LedgerError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Drops a hive. Without `cascade` it must have no boxes.
    pub async fn drop_hive(&self, hive: &str, cascade: bool) -> Result<()> {
        validate_name("hive", hive)?;
        let chain = Chain::hive(hive);
        let sealed = self
            .transition(
                &chain,
                &[ChainAction::Create, ChainAction::Unseal],
                ChainAction::Seal,
            )
            .await?;
        if sealed.is_none() {
            return Err(LedgerError::NotFound {
                what: chain.describe(),
            });
        }
        let boxes = self.list_boxes(hive).await?;
        if !boxes.is_empty() && !cascade {
            self.transition(&chain, &[ChainAction::Seal], ChainAction::Unseal)
                .await?;
            return Err(LedgerError::Conflict {
                what: chain.describe(),
                detail: format!(
                    "it still has boxes ({}); drop them first or drop with cascade",
                    boxes
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for b in boxes {
            self.drop_box(hive, &b.name, true).await?;
        }
        self.transition(&chain, &[ChainAction::Seal], ChainAction::Drop)
            .await?;
        Ok(())
    }

    // ----- boxes -----

    /// Creates a box in an existing hive; creating an existing box is a no-op.
    pub async fn create_box(&self, hive: &str, r#box: &str) -> Result<Created> {
        validate_name("hive", hive)?;
        validate_name("box", r#box)?;
        let parent = Chain::hive(hive);
        let parent_head = self.live_head(&parent).await?;
        let chain = Chain::r#box(hive, r#box);
        let (created, _) = self.create_in_chain(&chain).await?;
        if created == Created::New && !self.unchanged_since(&parent, parent_head.version).await? {
            // The hive was sealed for a drop while we created: undo, and say so.
            self.transition(
                &chain,
                &[ChainAction::Create, ChainAction::Unseal, ChainAction::Seal],
                ChainAction::Drop,
            )
            .await?;
            return Err(LedgerError::Conflict {
                what: chain.describe(),
                detail: format!(
                    "{} was dropped concurrently; nothing was created",
                    parent.describe()
                ),
            });
        }
        Ok(created)
    }

    /// A box, if it exists.
    pub async fn get_box(&self, hive: &str, r#box: &str) -> Result<BoxInfo> {
        validate_name("hive", hive)?;
        validate_name("box", r#box)?;
        let chain = Chain::r#box(hive, r#box);
        match self.head(&chain).await?.and_then(|h| h.lifecycle()) {
            Some(state) => Ok(BoxInfo {
                hive: hive.to_string(),
                name: r#box.to_string(),
                state,
            }),
            None => {
                self.get_hive(hive).await?;
                Err(LedgerError::NotFound {
                    what: chain.describe(),
                })
            }
        }
    }

    /// The boxes of a hive, sorted by name.
    pub async fn list_boxes(&self, hive: &str) -> Result<Vec<BoxInfo>> {
        self.get_hive(hive).await?;
        let names = self.child_names(&Path::from(hive)).await?;
        let found: Vec<Option<BoxInfo>> = futures::stream::iter(names)
            .map(|name| async move {
                let chain = Chain::r#box(hive, &name);
                Ok::<_, LedgerError>(self.head(&chain).await?.and_then(|h| h.lifecycle()).map(
                    |state| BoxInfo {
                        hive: hive.to_string(),
                        name,
                        state,
                    },
                ))
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Drops a box. Without `cascade` it must have no frames.
    pub async fn drop_box(&self, hive: &str, r#box: &str, cascade: bool) -> Result<()> {
        validate_name("hive", hive)?;
        validate_name("box", r#box)?;
        let chain = Chain::r#box(hive, r#box);
        let sealed = self
            .transition(
                &chain,
                &[ChainAction::Create, ChainAction::Unseal],
                ChainAction::Seal,
            )
            .await?;
        if sealed.is_none() {
            return Err(LedgerError::NotFound {
                what: chain.describe(),
            });
        }
        let frames = self.list_frames(hive, r#box).await?;
        if !frames.is_empty() && !cascade {
            self.transition(&chain, &[ChainAction::Seal], ChainAction::Unseal)
                .await?;
            return Err(LedgerError::Conflict {
                what: chain.describe(),
                detail: format!(
                    "it still has frames ({}); drop them first or drop with cascade",
                    frames
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for f in frames {
            match self.drop_frame(&FrameRef::parse(&f.name)?).await {
                Ok(()) | Err(LedgerError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.transition(&chain, &[ChainAction::Seal], ChainAction::Drop)
            .await?;
        Ok(())
    }
}

pub(crate) fn decode_chain_entry(key: &str, bytes: &[u8], version: u64) -> Result<ChainEntry> {
    let corrupt = |reason: String| LedgerError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let probe: FormatProbe =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a registry entry: {e}")))?;
    if probe.format != FORMAT_VERSION {
        return Err(corrupt(format!(
            "registry entry format {} is not supported by this Apiary (it reads format \
             {FORMAT_VERSION}); upgrade Apiary",
            probe.format
        )));
    }
    let entry: ChainEntry = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(format!("malformed registry entry: {e}")))?;
    if entry.version != version {
        return Err(corrupt(format!(
            "entry says it is version {} but is stored as version {version}",
            entry.version
        )));
    }
    Ok(entry)
}
