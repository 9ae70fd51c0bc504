//! A simulated swarm: many real [`SwarmAgent`]s on one in-memory store, each counting its
//! own requests, on tokio's clock. Run it on a current-thread runtime whose time is paused
//! (`#[tokio::test(start_paused = true)]`, or `Builder::start_paused`): time then jumps
//! from one timer to the next, so an hour of a hundred nodes takes seconds, and the same
//! run makes the same requests.
//!
//! It measures what membership (and, optionally, looking for tasks at the cadence of
//! [`Discovery`]) costs a node, idle or working, and checks the promises made for it: a
//! node joining an idle swarm is seen within seconds, a working node's death within the
//! dead threshold.

use std::sync::Arc;
use std::time::Duration;

use apiary_storage::cost::S3_STANDARD;
use apiary_storage::{
    CountsHandle, FaultConfig, InstrumentedStore, ObjectStoreBackend, Path, RequestCounts,
    StorageBackend, StorageUri, object_store_for,
};
use tokio::sync::watch;

use crate::agent::{AgentConfig, SwarmAgent};
use crate::clock::{Clock, SystemClock};
use crate::discovery::Discovery;
use crate::heartbeat::{Capacity, NodeId};
use crate::load::{Bee, Bees};
use crate::storage::StorageHeartbeats;
use crate::view::{NodeState, SwarmConfig, WorldView};

/// How finely [`Simulation::time_until`] watches.
pub const STEP: Duration = Duration::from_millis(10);

/// How the simulated nodes run.
#[derive(Debug, Clone, Default)]
pub struct SimulationConfig {
    /// Membership's intervals and thresholds.
    pub swarm: SwarmConfig,
    /// When set, every node also looks for tasks at this cadence (one HEAD of its doorbell
    /// each time, as the storage shuffle transport does).
    pub discovery: Option<Discovery>,
}

/// One simulated node.
struct SimNode {
    id: NodeId,
    agent: Option<SwarmAgent>,
    bees: Arc<Bees>,
    counts: CountsHandle,
    /// Work this node holds (a bee per item).
    work: Vec<Bee>,
    stop: watch::Sender<bool>,
}

/// A swarm of real agents on one in-memory store.
pub struct Simulation {
    store: Arc<dyn apiary_storage::object_store::ObjectStore>,
    caps: apiary_storage::Capabilities,
    config: SimulationConfig,
    clock: Arc<dyn Clock>,
    nodes: Vec<SimNode>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// What a measured window cost, per node.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// Simulated minutes measured.
    pub minutes: f64,
    /// Mean requests per node per minute.
    pub per_node_per_minute: f64,
    /// The largest any one node made per minute.
    pub max_node_per_minute: f64,
    /// Requests of the mean node over the window, by kind.
    pub mean: RequestCounts,
    /// The mean node's monthly cost at S3 Standard prices, in dollars.
    pub monthly_cost: f64,
    /// The dearest node's monthly cost at S3 Standard prices, in dollars.
    pub max_monthly_cost: f64,
    /// The view of node 0 at the end.
    pub final_view: WorldView,
}

fn capacity() -> Capacity {
    Capacity {
        cores: 4,
        bees: 4,
        memory_bytes: 8 << 30,
        memory_per_bee_bytes: 2 << 30,
        target_cell_bytes: 128 << 20,
    }
}

/// Looks for tasks at `discovery`'s cadence, one HEAD of the doorbell each time, until
/// stopped.
async fn look_for_tasks(
    backend: Arc<dyn StorageBackend>,
    id: NodeId,
    discovery: Discovery,
    clock: Arc<dyn Clock>,
    mut activity: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let doorbell = Path::from(format!("_doorbells/{id}.json").as_str());
    loop {
        let active = *activity.borrow_and_update();
        let wait = discovery.interval(None, None, active);
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = clock.sleep(wait) => {}
            Ok(()) = activity.changed(), if !active => {}
        }
        let _ = backend.head(&doorbell).await;
    }
}

impl Simulation {
    /// An empty swarm.
    pub fn new(config: SimulationConfig) -> Self {
        let (store, caps) = match object_store_for(&StorageUri::Memory) {
            Ok(s) => s,
            Err(e) => panic!("memory store: {e}"),
        };
        Self {
            store,
            caps,
            config,
            clock: Arc::new(SystemClock::new()),
            nodes: Vec::new(),
        }
    }

    /// Starts `n` more nodes, one after another.
    pub async fn add_nodes(&mut self, n: usize) {
        for _ in 0..n {
            self.add_node().await;
        }
    }

    /// Starts one more node (it joins before this returns) and returns its index.
    pub async fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let id = NodeId::new(&format!("n{index:05}")).unwrap_or_else(|e| panic!("{e}"));
        let counted = InstrumentedStore::new(Arc::clone(&self.store), FaultConfig::none());
        let counts = counted.counts();
        let backend: Arc<dyn StorageBackend> = Arc::new(ObjectStoreBackend::new(
            Arc::new(counted),
            self.caps,
            "memory://",
        ));
        let membership = Arc::new(StorageHeartbeats::new(
            Arc::clone(&backend),
            id.clone(),
            Arc::clone(&self.clock),
            self.config.swarm.clone(),
        ));
        let capacity = capacity();
        let bees = Bees::new(capacity.bees, capacity.memory_bytes);
        let agent = SwarmAgent::start(
            membership,
            id.clone(),
            capacity,
            Arc::clone(&bees),
            Arc::clone(&self.clock),
            AgentConfig {
                swarm: self.config.swarm.clone(),
                hostname: id.to_string(),
                ..AgentConfig::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("node {id} could not join: {e}"));
        let (stop, stop_rx) = watch::channel(false);
        if let Some(discovery) = self.config.discovery {
            tokio::spawn(look_for_tasks(
                backend,
                id.clone(),
                discovery,
                Arc::clone(&self.clock),
                agent.activity(),
                stop_rx,
            ));
        }
        self.nodes.push(SimNode {
            id,
            agent: Some(agent),
            bees,
            counts,
            work: Vec::new(),
            stop,
        });
        index
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// Node `i` takes a bee and keeps it (it works) until [`rest`](Self::rest).
    pub fn work(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(bee) = node.bees.try_acquire() {
            node.work.push(bee);
        }
    }

    /// Node `i` lets go of its work.
    pub fn rest(&mut self, i: usize) {
        self.nodes[i].work.clear();
    }

    /// Node `i` stops at once, as a process killed: no leave, its heartbeat stays.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.agent = None;
        node.work.clear();
        let _ = node.stop.send(true);
    }

    /// Node `i`'s newest view (`None` once killed).
    pub fn view(&self, i: usize) -> Option<WorldView> {
        self.nodes[i].agent.as_ref().map(SwarmAgent::view)
    }

    /// Node `i`'s state of node `of` in its newest view.
    pub fn state(&self, i: usize, of: usize) -> Option<NodeState> {
        let of = &self.nodes[of].id;
        self.view(i)?.node(of).map(|n| n.state)
    }

    /// Whether node `i` believes the swarm is active.
    pub fn believes_active(&self, i: usize) -> bool {
        self.nodes[i]
            .agent
            .as_ref()
            .is_some_and(|a| *a.activity().borrow())
    }

    /// Lets `d` of simulated time pass.
    pub async fn run_for(&self, d: Duration) {
        self.clock.sleep(d).await;
    }

    /// Lets time pass, in steps of [`STEP`], until `done` holds or `limit` passed; returns
    /// the time it took (at most a step late), or `None` at the limit.
    pub async fn time_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.clock.monotonic();
        loop {
            let took = self.clock.monotonic().saturating_sub(start);
            if done(self) {
                return Some(took);
            }
            if took > limit {
                return None;
            }
            self.clock.sleep(STEP).await;
        }
    }

    /// Requests of every node so far, by node.
    pub fn counts(&self) -> Vec<RequestCounts> {
        self.nodes.iter().map(|n| n.counts.snapshot()).collect()
    }

    /// Runs for `measure` and reports what the live nodes' requests in that window cost.
    pub async fn measure(&self, measure: Duration) -> SimulationReport {
        let before = self.counts();
        self.run_for(measure).await;
        let after = self.counts();
        let live: Vec<RequestCounts> = self
            .nodes
            .iter()
            .zip(after.iter().zip(&before))
            .filter(|(n, _)| n.agent.is_some())
            .map(|(_, (a, b))| *a - *b)
            .collect();
        let minutes = measure.as_secs_f64() / 60.0;
        let n = live.len().max(1);
        let rates: Vec<f64> = live.iter().map(|u| u.total() as f64 / minutes).collect();
        let sum = live.iter().fold(RequestCounts::default(), |a, u| a + *u);
        SimulationReport {
            nodes: live.len(),
            minutes,
            per_node_per_minute: rates.iter().sum::<f64>() / n as f64,
            max_node_per_minute: rates.iter().copied().fold(0.0, f64::max),
            mean: sum.divided_by(n as u64),
            monthly_cost: S3_STANDARD.monthly(&sum, measure) / n as f64,
            max_monthly_cost: live
                .iter()
                .map(|u| S3_STANDARD.monthly(u, measure))
                .fold(0.0, f64::max),
            final_view: self.view(0).unwrap_or_default(),
        }
    }
}

/// What the simulated nodes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Nothing: the swarm goes idle.
    Idle,
    /// Every node holds a bee throughout.
    Working,
}

/// Starts `nodes` nodes doing `workload`, lets `warmup` pass, and reports the requests of
/// the `measure` window that follows.
pub async fn simulate(
    nodes: usize,
    workload: Workload,
    warmup: Duration,
    measure: Duration,
    config: SimulationConfig,
) -> SimulationReport {
    let mut sim = Simulation::new(config);
    sim.add_nodes(nodes).await;
    if workload == Workload::Working {
        for i in 0..nodes {
            sim.work(i);
        }
    }
    sim.run_for(warmup).await;
    sim.measure(measure).await
}
