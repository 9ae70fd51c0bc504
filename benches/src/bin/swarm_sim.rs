//! Requests per node per minute of storage-heartbeat membership, simulated for swarms of
//! 10, 100 and 1000 nodes (or the sizes given as arguments) at the default intervals, on an
//! in-memory store with request counters and a simulated clock.
//!
//! `cargo run --release -p apiary-benches --bin swarm_sim [-- 10 100 1000]`

use std::time::Duration;

use apiary_swarm::SwarmConfig;
use apiary_swarm::simulation::simulate;

fn main() {
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
        .build()
        .expect("runtime");
    println!("default intervals: heartbeat 5s, poll 5s, dead 30s, 6 content reads/min");
    println!(
        "{:>6}  {:>10}  {:>8}  {:>6}  {:>6}  {:>6}  {:>6}  {:>8}",
        "nodes", "req/node/m", "max/node", "PUT", "LIST", "GET", "HEAD", "alive@0"
    );
    for nodes in sizes {
        let warmup = Duration::from_secs(60);
        let measure = Duration::from_secs(180);
        let r = rt.block_on(simulate(nodes, warmup, measure, SwarmConfig::default(), 42));
        let per_min = |n: u64| n as f64 / r.minutes;
        println!(
            "{:>6}  {:>10.2}  {:>8.2}  {:>6.2}  {:>6.2}  {:>6.2}  {:>6.2}  {:>8}",
            nodes,
            r.per_node_per_minute,
            r.max_node_per_minute,
            per_min(r.mean.put),
            per_min(r.mean.list),
            per_min(r.mean.get),
            per_min(r.mean.head),
            r.final_view.alive(),
        );
    }
}
