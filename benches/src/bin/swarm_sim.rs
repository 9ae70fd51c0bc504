//! Requests per node per minute of storage-heartbeat membership and looking for tasks, and
//! their monthly cost at S3 Standard prices, simulated on real agents for swarms of 10, 100
//! and 1000 nodes (or the sizes given as arguments) at the default settings: idle (no work
//! for ten minutes) and working (every node holds a bee). An in-memory store with request
//! counters, on tokio's paused clock.
//!
//! `cargo run --release -p apiary-benches --bin swarm_sim [-- 10 100 1000]`

use std::time::Duration;

use apiary_swarm::Discovery;
use apiary_swarm::simulation::{SimulationConfig, SimulationReport, Workload, simulate};

fn row(label: &str, nodes: usize, r: &SimulationReport) {
    let per_min = |n: u64| n as f64 / r.minutes;
    println!(
        "{label:>7}  {nodes:>6}  {:>10.2}  {:>8.2}  {:>6.2}  {:>6.2}  {:>6.2}  {:>6.2}  {:>9.2}  {:>8}",
        r.per_node_per_minute,
        r.max_node_per_minute,
        per_min(r.mean.put + r.mean.conditional_put),
        per_min(r.mean.list),
        per_min(r.mean.get),
        per_min(r.mean.head),
        r.monthly_cost,
        r.final_view.alive(),
    );
}

fn main() {
    apiary_benches::allocate_like_a_node();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 100, 1000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let config = SimulationConfig {
        discovery: Some(Discovery::default()),
        ..SimulationConfig::default()
    };
    println!(
        "{:>7}  {:>6}  {:>10}  {:>8}  {:>6}  {:>6}  {:>6}  {:>6}  {:>9}  {:>8}",
        "swarm",
        "nodes",
        "req/node/m",
        "max/node",
        "PUT",
        "LIST",
        "GET",
        "HEAD",
        "$/month",
        "alive@0"
    );
    let minute = Duration::from_secs(60);
    for nodes in sizes {
        let idle = rt.block_on(simulate(
            nodes,
            Workload::Idle,
            10 * minute,
            60 * minute,
            config.clone(),
        ));
        row("idle", nodes, &idle);
        let busy = rt.block_on(simulate(
            nodes,
            Workload::Working,
            minute,
            3 * minute,
            config.clone(),
        ));
        row("working", nodes, &busy);
    }
}
