//! A simulated swarm: many nodes on one in-memory store, each counting its own requests,
//! driven by a simulated clock. It measures what membership costs a node as the swarm grows.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use apiary_storage::{
    CountsHandle, FaultConfig, InstrumentedStore, ObjectStoreBackend, RequestCounts, StorageUri,
    object_store_for,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{Clock, ManualClock};
use crate::heartbeat::{Capacity, HEARTBEAT_FORMAT, Heartbeat, Lifecycle, Load, NodeId};
use crate::membership::Membership;
use crate::storage::StorageHeartbeats;
use crate::view::{SwarmConfig, WorldView};

/// What a simulation measured.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// Simulated minutes measured (after the warm-up).
    pub minutes: f64,
    /// Mean requests per node per minute over the measured window.
    pub per_node_per_minute: f64,
    /// The largest any one node made per minute.
    pub max_node_per_minute: f64,
    /// Mean requests per node over the measured window, by kind.
    pub mean: RequestCounts,
    /// The view of node 0 at the end.
    pub final_view: WorldView,
}

struct SimNode {
    id: NodeId,
    membership: StorageHeartbeats,
    counts: CountsHandle,
    seq: u64,
}

fn heartbeat(id: &NodeId, seq: u64, clock: &ManualClock, rng: &mut StdRng) -> Heartbeat {
    let busy = rng.random_range(0..=4u32);
    Heartbeat {
        format: HEARTBEAT_FORMAT,
        node_id: id.clone(),
        seq,
        state: if seq == 1 {
            Lifecycle::Joining
        } else {
            Lifecycle::Alive
        },
        software_version: env!("CARGO_PKG_VERSION").into(),
        hostname: id.to_string(),
        started_at_ms: 0,
        written_at_ms: clock.wall_ms(),
        capacity: Capacity {
            cores: 4,
            bees: 4,
            memory_bytes: 8 << 30,
            memory_per_bee_bytes: 3 << 29,
            target_cell_bytes: 128 << 20,
        },
        load: Load {
            busy_bees: busy,
            idle_bees: 4 - busy,
            memory_pressure: rng.random_range(0.0..1.0),
            queue_depth: 0,
            temperature: f64::from(busy) / 4.0,
            ..Load::default()
        },
        cache: Default::default(),
        attributes: Default::default(),
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Beat(usize),
    Poll(usize),
}

/// Simulates `nodes` nodes for `warmup + measure` simulated time and reports the requests
/// each made per minute during `measure`. Nodes start at random moments within the first
/// heartbeat interval; listings are counted as one request per page of 1000 keys.
pub async fn simulate(
    nodes: usize,
    warmup: Duration,
    measure: Duration,
    config: SwarmConfig,
    seed: u64,
) -> SimulationReport {
    let (store, caps) = match object_store_for(&StorageUri::Memory) {
        Ok(s) => s,
        Err(e) => panic!("memory store: {e}"),
    };
    let clock = ManualClock::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim: Vec<SimNode> = (0..nodes)
        .map(|i| {
            let id = NodeId::new(&format!("n{i:05}"))
                .unwrap_or_else(|_| NodeId::generate(&apiary_storage::Random::from_os()));
            let counted = InstrumentedStore::new(Arc::clone(&store), FaultConfig::none());
            let counts = counted.counts();
            let backend = Arc::new(ObjectStoreBackend::new(
                Arc::new(counted),
                caps,
                "memory://",
            ));
            SimNode {
                membership: StorageHeartbeats::new(
                    backend,
                    id.clone(),
                    Arc::new(clock.clone()),
                    config.clone(),
                ),
                id,
                counts,
                seq: 0,
            }
        })
        .collect();
    let mut queue = BinaryHeap::new();
    for i in 0..nodes {
        let start = config.heartbeat_interval.mul_f64(rng.random::<f64>());
        queue.push(Reverse((start, Event::Beat(i))));
        queue.push(Reverse((start + Duration::from_millis(1), Event::Poll(i))));
    }
    let end = warmup + measure;
    let mut before: Option<Vec<RequestCounts>> = None;
    while let Some(Reverse((at, event))) = queue.pop() {
        if at > end {
            break;
        }
        if before.is_none() && at >= warmup {
            before = Some(sim.iter().map(|n| n.counts.snapshot()).collect());
        }
        clock.set(at);
        match event {
            Event::Beat(i) => {
                let node = &mut sim[i];
                node.seq += 1;
                let hb = heartbeat(&node.id, node.seq, &clock, &mut rng);
                let _ = node.membership.publish(&hb).await;
                queue.push(Reverse((at + config.heartbeat_interval, Event::Beat(i))));
            }
            Event::Poll(i) => {
                let _ = sim[i].membership.refresh().await;
                queue.push(Reverse((at + config.poll_interval, Event::Poll(i))));
            }
        }
    }
    let before = before.unwrap_or_else(|| sim.iter().map(|n| n.counts.snapshot()).collect());
    let minutes = measure.as_secs_f64() / 60.0;
    let used: Vec<RequestCounts> = sim
        .iter()
        .zip(&before)
        .map(|(n, b)| n.counts.snapshot() - *b)
        .collect();
    let totals: Vec<f64> = used.iter().map(|u| u.total() as f64 / minutes).collect();
    let n = nodes.max(1) as u64;
    let sum = used.iter().fold(RequestCounts::default(), |a, u| a + *u);
    SimulationReport {
        nodes,
        minutes,
        per_node_per_minute: totals.iter().sum::<f64>() / nodes.max(1) as f64,
        max_node_per_minute: totals.iter().copied().fold(0.0, f64::max),
        mean: sum.divided_by(n),
        final_view: sim[0].membership.world_view(),
    }
}
