//! The world view: what one node believes about the swarm, built only from what it observed.
//!
//! [`Observer`] is a pure state machine: it is fed listings of `_heartbeats/` (key and the
//! store's metadata for each object) and fetched heartbeat contents, each at a time of the
//! observer's own monotonic clock, and it answers the view at a given time. Liveness is
//! judged by *observing a heartbeat change* (its ETag, size or modification stamp in the
//! listing) on that clock; the writer's timestamps are never compared with anything, so a
//! node whose clock is hours off is judged like any other.
//!
//! States: `joining` (first seen, not yet seen to change), `alive`, `suspect` (no change
//! for more than half its dead threshold), `dead` (none for its dead threshold), `leaving`
//! (the node says it is draining). A node's dead threshold is the one its heartbeat
//! promises ([`Beat`]: an idle node beats rarely and asks for longer), else the observer's.
//! The view is judged when a listing is applied: a node that lists the swarm only every few
//! minutes (an idle swarm) holds the view of its last listing in between, so a node is
//! never taken for dead for want of a look.
//!
//! Two readings shorten `joining`. A node is alive in its own view once it has joined: its
//! heartbeat is durable and it knows it is running. And a node that has written its own
//! heartbeat has a reading of the *store's* clock, its heartbeat's modification stamp: a
//! heartbeat seen for the first time is aged against that stamp (plus the time since the
//! write, on this node's monotonic clock), so one written within half the dead threshold
//! counts as alive at first sight, and an old one is suspect or dead at once. Nodes' own
//! clocks are still never compared. (This relies on listings that include every completed
//! write, which S3, GCS, Azure and local folders give.)

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::heartbeat::{Beat, Heartbeat, Lifecycle, NodeId};

/// Timing and request budget of membership.
///
/// A node is *active* while it works (a bee busy within [`idle_after`](Self::idle_after))
/// and *idle* otherwise. The swarm is active when any node in a node's view says it is. An
/// active node beats every [`heartbeat_interval`](Self::heartbeat_interval); an idle one
/// every [`idle_heartbeat_interval`](Self::idle_heartbeat_interval), and each heartbeat
/// says which ([`Beat`]), so peers judge each node by its own cadence. While the swarm is
/// active a node lists the heartbeats every [`poll_interval`](Self::poll_interval); while
/// it is idle it only probes the roster that often (one GET) and lists every
/// [`idle_list_interval`](Self::idle_list_interval). See [`storage`](crate::storage) for
/// what each costs.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// How often an active node rewrites its heartbeat (default 5 s).
    pub heartbeat_interval: Duration,
    /// How often an idle node rewrites its heartbeat (default 60 s).
    pub idle_heartbeat_interval: Duration,
    /// A node with no work for this long is idle (default 60 s).
    pub idle_after: Duration,
    /// How often a node reads the swarm: a listing while the swarm is active, a probe of
    /// the roster while it is idle (default 5 s).
    pub poll_interval: Duration,
    /// How often a node lists the heartbeats while the swarm is idle (default 5 min).
    pub idle_list_interval: Duration,
    /// An active node whose heartbeat has not changed for this long is dead (default
    /// 20 s: with the last change seen up to a poll late and the judgement made at a
    /// listing, a working node's death is seen within 30 s); half of it, suspect. An idle node is given the difference between the two
    /// heartbeat intervals on top.
    pub dead_threshold: Duration,
    /// Heartbeats of nodes dead this long are removed (default 1 h).
    pub retention: Duration,
    /// Heartbeat contents fetched per minute to refresh peers' load, beyond the one fetch of
    /// each new node (default 6). This is what keeps a node's requests flat in swarm size.
    pub content_reads_per_minute: f64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            idle_heartbeat_interval: Duration::from_secs(60),
            idle_after: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
            idle_list_interval: Duration::from_secs(300),
            dead_threshold: Duration::from_secs(20),
            retention: Duration::from_secs(3600),
            content_reads_per_minute: 6.0,
        }
    }
}

impl SwarmConfig {
    /// The cadence a node promises in its heartbeat, active or idle.
    pub fn beat(&self, active: bool) -> Beat {
        let (interval, dead_after) = if active {
            (self.heartbeat_interval, self.dead_threshold)
        } else {
            // The same margin for a late write as an active node has.
            let idle = self.idle_heartbeat_interval.max(self.heartbeat_interval);
            (idle, self.dead_threshold + (idle - self.heartbeat_interval))
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Beat {
            active,
            interval_ms: ms(interval),
            dead_after_ms: ms(dead_after),
        }
    }

    /// How long a node waits between listings of the heartbeats, the swarm active or not.
    pub fn listing_interval(&self, swarm_active: bool) -> Duration {
        if swarm_active {
            self.poll_interval
        } else {
            self.idle_list_interval.max(self.poll_interval)
        }
    }
}

/// A node's state in someone's world view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// First seen, not yet seen to publish steadily.
    Joining,
    /// Publishing.
    Alive,
    /// No change seen for more than half the dead threshold.
    Suspect,
    /// No change seen for the dead threshold.
    Dead,
    /// Draining before it leaves.
    Leaving,
}

impl NodeState {
    /// The lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Dead => "dead",
            NodeState::Leaving => "leaving",
        }
    }
}

/// One node as seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The node.
    pub node_id: NodeId,
    /// Its state.
    pub state: NodeState,
    /// Time since its heartbeat was last seen to change.
    pub last_seen: Duration,
    /// Its newest heartbeat content fetched.
    pub heartbeat: Heartbeat,
}

/// One node's view of the swarm.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WorldView {
    /// Every node with a heartbeat, sorted by id.
    pub nodes: Vec<NodeView>,
    /// Objects under `_heartbeats/` that were skipped, and why.
    pub problems: Vec<String>,
    /// Whether an operator asked the observing node to leave.
    pub drain_requested: bool,
    /// Polls made so far.
    pub polls: u64,
}

impl WorldView {
    /// Nodes in the `alive` state.
    pub fn alive(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.state == NodeState::Alive)
            .count()
    }

    /// Bees of alive nodes.
    pub fn total_bees(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.state == NodeState::Alive)
            .map(|n| u64::from(n.heartbeat.capacity.bees))
            .sum()
    }

    /// One node.
    pub fn node(&self, id: &NodeId) -> Option<&NodeView> {
        self.nodes.iter().find(|n| &n.node_id == id)
    }

    /// Whether any node that is not dead says it is active: the swarm is busy, and its
    /// members read it often.
    pub fn is_active(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.state != NodeState::Dead && n.heartbeat.is_active())
    }
}

/// What a listing says about one heartbeat object: enough to see that it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// ETag, where the store has one.
    pub e_tag: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// The store's modification stamp (compared for equality only).
    pub last_modified_ms: i64,
}

/// An object listed under `_heartbeats/`.
#[derive(Debug, Clone)]
pub enum Listed {
    /// A heartbeat.
    Node(NodeId, Token),
    /// A drain request.
    Drain(NodeId),
    /// Anything else (reported, skipped).
    Foreign(String),
}

#[derive(Debug)]
struct Tracked {
    token: Token,
    last_change: Duration,
    /// How old its heartbeat already was, on the store's clock, when first seen (zero once
    /// it has been seen to change).
    age_at_first_sight: Duration,
    /// Whether that age was measured on the store's clock (else it is judged by
    /// observation alone until it changes).
    aged: bool,
    changes: u64,
    content: Option<Heartbeat>,
    /// Token at the time of the last fetch (or failed decode).
    fetched_token: Option<Token>,
    fetched_at: Duration,
    problem: Option<String>,
}

impl Tracked {
    /// Time since its heartbeat last changed, as of `now`.
    fn since(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_change) + self.age_at_first_sight
    }
}

/// Builds a world view from observations (see the module documentation).
#[derive(Debug)]
pub struct Observer {
    me: NodeId,
    config: SwarmConfig,
    tracked: BTreeMap<NodeId, Tracked>,
    foreign: Vec<String>,
    drain_requested: bool,
    budget: f64,
    last_poll: Option<Duration>,
    polls: u64,
    /// This node's own newest heartbeat (known locally, never fetched).
    own: Option<Heartbeat>,
    /// When this node's newest heartbeat write completed, on the monotonic clock.
    own_written_at: Option<Duration>,
}

impl Observer {
    /// An observer for node `me`.
    pub fn new(me: NodeId, config: SwarmConfig) -> Self {
        Self {
            me,
            config,
            tracked: BTreeMap::new(),
            foreign: Vec::new(),
            drain_requested: false,
            budget: 1.0,
            last_poll: None,
            polls: 0,
            own: None,
            own_written_at: None,
        }
    }

    /// Records this node's own heartbeat as written, the write completing at `now` (it is
    /// never fetched).
    pub fn set_own(&mut self, heartbeat: Heartbeat, now: Duration) {
        self.own = Some(heartbeat);
        self.own_written_at = Some(now);
    }

    /// How long ago `token` was written, on the store's clock, from this node's own
    /// heartbeat in the same listing; `None` without one.
    fn store_age(&self, own: Option<&Token>, token: &Token, now: Duration) -> Option<Duration> {
        let own = own?;
        let since_own = now.saturating_sub(self.own_written_at?);
        let store_now = own
            .last_modified_ms
            .saturating_add(i64::try_from(since_own.as_millis()).unwrap_or(i64::MAX));
        let age_ms = store_now.saturating_sub(token.last_modified_ms).max(0);
        Some(Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)))
    }

    /// Applies a listing made at `now`. Returns the nodes whose content to fetch now: new
    /// nodes always; changed ones within the content-read budget, those whose size changed
    /// (a new state or shape) first, then the stalest.
    pub fn observe_listing(&mut self, listed: Vec<Listed>, now: Duration) -> Vec<NodeId> {
        let elapsed = self
            .last_poll
            .map_or(Duration::ZERO, |t| now.saturating_sub(t));
        self.last_poll = Some(now);
        self.polls += 1;
        let rate = self.config.content_reads_per_minute;
        let cap = 1.0 + rate * self.config.poll_interval.as_secs_f64() / 60.0;
        self.budget = (self.budget + rate * elapsed.as_secs_f64() / 60.0).min(cap);

        self.foreign.clear();
        self.drain_requested = false;
        let own_token = listed.iter().find_map(|item| match item {
            Listed::Node(id, token) if *id == self.me && self.own.is_some() => Some(token.clone()),
            _ => None,
        });
        let mut seen = HashSet::new();
        for item in listed {
            match item {
                Listed::Foreign(key) => self.foreign.push(key),
                Listed::Drain(id) => {
                    if id == self.me {
                        self.drain_requested = true;
                    }
                }
                Listed::Node(id, token) => {
                    seen.insert(id.clone());
                    match self.tracked.get_mut(&id) {
                        Some(t) if t.token != token => {
                            t.token = token;
                            t.last_change = now;
                            t.age_at_first_sight = Duration::ZERO;
                            t.changes += 1;
                        }
                        Some(_) => {}
                        None => {
                            // First sight: aged on the store's clock where this node has
                            // a reading of it, else judged by observation from now on.
                            let age = self.store_age(own_token.as_ref(), &token, now);
                            self.tracked.insert(
                                id,
                                Tracked {
                                    last_change: now,
                                    age_at_first_sight: age.unwrap_or_default(),
                                    aged: age.is_some(),
                                    changes: 0,
                                    token,
                                    content: None,
                                    fetched_token: None,
                                    fetched_at: now,
                                    problem: None,
                                },
                            );
                        }
                    }
                }
            }
        }
        // Objects no longer listed are gone: the node left, or was cleaned up.
        self.tracked.retain(|id, _| seen.contains(id));

        let mut fetch = Vec::new();
        let mut changed: Vec<(bool, Duration, NodeId)> = Vec::new();
        for (id, t) in &self.tracked {
            if *id == self.me {
                continue;
            }
            match &t.fetched_token {
                None => fetch.push(id.clone()),
                Some(f) if *f != t.token => {
                    // First claim on the budget: a new size (a new state or shape), or a
                    // node whose content we hold is in a transitional state.
                    let transitional = t
                        .content
                        .as_ref()
                        .is_some_and(|c| c.state != Lifecycle::Alive);
                    let urgent = f.size != t.token.size || transitional || t.problem.is_some();
                    changed.push((!urgent, t.fetched_at, id.clone()));
                }
                Some(_) => {}
            }
        }
        changed.sort();
        let mut over_budget = Vec::new();
        for (_, _, id) in changed {
            if self.budget < 1.0 {
                over_budget.push(id);
                continue;
            }
            self.budget -= 1.0;
            fetch.push(id);
        }
        // A node about to be judged suspect on content older than its newest change is
        // read first, outside the budget: it may have promised a slower cadence (it went
        // idle). At most one read per change of its heartbeat.
        for id in over_budget {
            if let Some(t) = self.tracked.get(&id)
                && t.since(now) > self.suspect_after(&id, t)
            {
                fetch.push(id);
            }
        }
        fetch
    }

    /// Records the content fetched for `id` (or why it could not be read), as of the token
    /// listed when the fetch was decided.
    pub fn record_content(
        &mut self,
        id: &NodeId,
        content: Result<Heartbeat, String>,
        now: Duration,
    ) {
        if let Some(t) = self.tracked.get_mut(id) {
            t.fetched_token = Some(t.token.clone());
            t.fetched_at = now;
            match content {
                Ok(hb) => {
                    t.content = Some(hb);
                    t.problem = None;
                }
                Err(problem) => {
                    t.content = None;
                    t.problem = Some(problem);
                }
            }
        }
    }

    fn content<'a>(&'a self, id: &NodeId, t: &'a Tracked) -> Option<&'a Heartbeat> {
        if *id == self.me {
            self.own.as_ref()
        } else {
            t.content.as_ref()
        }
    }

    /// When `id` is judged dead: by the cadence its newest content promises.
    fn dead_after(&self, id: &NodeId, t: &Tracked) -> Duration {
        self.content(id, t).map_or(self.config.dead_threshold, |c| {
            c.dead_after(self.config.dead_threshold)
        })
    }

    /// When `id` is judged suspect: by the cadence its newest content promises (see
    /// [`Heartbeat::suspect_after`]).
    fn suspect_after(&self, id: &NodeId, t: &Tracked) -> Duration {
        self.content(id, t)
            .map_or(self.config.dead_threshold / 2, |c| {
                c.suspect_after(self.config.dead_threshold)
            })
    }

    fn state(&self, id: &NodeId, t: &Tracked, now: Duration) -> NodeState {
        let since = t.since(now);
        let declared = self.content(id, t).map(|c| c.state);
        let dead_after = self.dead_after(id, t);
        if since > dead_after {
            NodeState::Dead
        } else if since > self.suspect_after(id, t) {
            NodeState::Suspect
        } else if declared == Some(Lifecycle::Leaving) {
            // Sticky: a leaving node never goes back, so even older content tells the truth.
            NodeState::Leaving
        } else if t.changes == 0 && !t.aged && *id != self.me {
            // Judged by observation alone: content may be older than the newest change. (A
            // node that joined knows it is alive; one aged on the store's clock at first
            // sight is judged by the cadence its content promises, like any other.)
            NodeState::Joining
        } else {
            NodeState::Alive
        }
    }

    /// The view at `now`.
    pub fn view(&self, now: Duration) -> WorldView {
        let mut nodes = Vec::new();
        let mut problems: Vec<String> = self
            .foreign
            .iter()
            .map(|k| format!("`{k}` is not a heartbeat or drain request; ignored"))
            .collect();
        for (id, t) in &self.tracked {
            if let Some(problem) = &t.problem {
                problems.push(problem.clone());
                continue;
            }
            let Some(heartbeat) = self.content(id, t) else {
                continue;
            };
            nodes.push(NodeView {
                node_id: id.clone(),
                state: self.state(id, t, now),
                last_seen: t.since(now),
                heartbeat: heartbeat.clone(),
            });
        }
        WorldView {
            nodes,
            problems,
            drain_requested: self.drain_requested,
            polls: self.polls,
        }
    }

    /// Nodes dead for longer than the retention, with the token they were last seen with:
    /// their heartbeats may be removed if still unchanged.
    pub fn expired(&self, now: Duration) -> Vec<(NodeId, Token)> {
        self.tracked
            .iter()
            .filter(|(id, t)| {
                **id != self.me && t.since(now) > self.dead_after(id, t) + self.config.retention
            })
            .map(|(id, t)| (id.clone(), t.token.clone()))
            .collect()
    }
}
