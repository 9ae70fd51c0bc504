//! What an idle swarm costs and what it still promises, on real agents under tokio's
//! paused clock (see `apiary_swarm::simulation`).

use std::time::Duration;

use apiary_swarm::simulation::{STEP, Simulation, SimulationConfig, Workload, simulate};
use apiary_swarm::{Discovery, NodeState, SwarmConfig};

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);

/// The defaults a node runs with: membership and looking for tasks.
fn defaults() -> SimulationConfig {
    SimulationConfig {
        swarm: SwarmConfig::default(),
        discovery: Some(Discovery::default()),
    }
}

/// An idle swarm at its steady state: every node has gone idle and listed at the idle
/// cadence at least once.
async fn idle_swarm(nodes: usize) -> Simulation {
    let mut sim = Simulation::new(defaults());
    sim.add_nodes(nodes).await;
    sim.run_for(10 * MIN).await;
    for i in 0..nodes {
        assert!(
            !sim.believes_active(i),
            "node {i} still thinks the swarm works"
        );
    }
    sim
}

/// The README's cost table, between its markers.
const TABLE_START: &str = "<!-- idle-cost:start -->";
const TABLE_END: &str = "<!-- idle-cost:end -->";

/// An idle node at the defaults costs at most a dollar a month in S3 Standard request fees,
/// whatever the swarm's size; the README's table says what the simulation measured
/// (`APIARY_BLESS=1` rewrites it).
#[tokio::test(start_paused = true)]
async fn an_idle_node_costs_under_a_dollar_a_month() {
    let mut rows = vec![
        "| nodes | PUT/min | LIST/min | GET/min | HEAD/min | $/month per node |".to_string(),
        "|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    for nodes in [1, 3, 10, 100] {
        let r = simulate(nodes, Workload::Idle, 10 * MIN, 60 * MIN, defaults()).await;
        assert!(
            r.max_monthly_cost <= 1.0,
            "{nodes} nodes: the dearest idle node costs ${:.2} a month: {r:?}",
            r.max_monthly_cost
        );
        assert_eq!(r.final_view.alive(), nodes, "{nodes} nodes: {r:?}");
        let per_min = |n: u64| n as f64 / r.minutes;
        rows.push(format!(
            "| {nodes} | {:.2} | {:.2} | {:.2} | {:.2} | ${:.2} |",
            per_min(r.mean.put + r.mean.conditional_put),
            per_min(r.mean.list),
            per_min(r.mean.get),
            per_min(r.mean.head),
            r.monthly_cost,
        ));
    }
    let table = rows.join("\n");
    let readme_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (Some(start), Some(end)) = (readme.find(TABLE_START), readme.find(TABLE_END)) else {
        panic!("README.md has no {TABLE_START} … {TABLE_END} section");
    };
    let stored = readme[start + TABLE_START.len()..end].trim();
    if std::env::var_os("APIARY_BLESS").is_some() {
        let updated = format!(
            "{}{TABLE_START}\n{table}\n{}",
            &readme[..start],
            &readme[end..]
        );
        std::fs::write(&readme_path, updated).unwrap();
    } else {
        assert_eq!(
            stored, table,
            "the README's idle-cost table is not what the simulation measures; rerun with \
             APIARY_BLESS=1 to rewrite it"
        );
    }
}

/// A node joining an idle swarm is seen by every node within 10 s: it records its join in
/// the roster, which idle nodes probe every poll.
#[tokio::test(start_paused = true)]
async fn a_node_joining_an_idle_swarm_is_seen_within_ten_seconds() {
    let mut sim = idle_swarm(3).await;
    let new = sim.add_node().await;
    let took = sim
        .time_until(MIN, |s| {
            (0..3).all(|i| matches!(s.state(i, new), Some(NodeState::Joining | NodeState::Alive)))
        })
        .await;
    assert!(took.is_some_and(|t| t <= 10 * SEC), "seen after {took:?}");
}

/// Work on one node wakes the swarm within a poll, and it goes back to sleep once the
/// work is over and the idle delay has passed.
#[tokio::test(start_paused = true)]
async fn work_wakes_the_swarm_within_a_poll() {
    let mut sim = idle_swarm(3).await;
    sim.work(0);
    let took = sim
        .time_until(MIN, |s| (0..3).all(|i| s.believes_active(i)))
        .await;
    assert!(took.is_some_and(|t| t <= 6 * SEC), "woke after {took:?}");
    sim.rest(0);
    let took = sim
        .time_until(10 * MIN, |s| (0..3).all(|i| !s.believes_active(i)))
        .await;
    assert!(
        took.is_some_and(|t| t <= 3 * MIN),
        "back to sleep after {took:?}"
    );
}

/// A working node's death is seen by an idle peer within 30 s: its last change is seen up
/// to a poll late and the judgement waits for a listing, so the dead threshold plus two
/// polls, as on a swarm that never idles.
#[tokio::test(start_paused = true)]
async fn a_working_node_s_death_is_seen_within_the_dead_threshold() {
    let mut sim = idle_swarm(3).await;
    sim.work(1);
    sim.run_for(20 * SEC).await;
    assert_eq!(sim.state(0, 1), Some(NodeState::Alive));
    sim.kill(1);
    let took = sim
        .time_until(10 * MIN, |s| s.state(0, 1) == Some(NodeState::Dead))
        .await;
    let config = SwarmConfig::default();
    let bound = config.dead_threshold + 2 * config.poll_interval;
    assert!(bound <= 30 * SEC);
    assert!(
        took.is_some_and(|t| t <= bound + STEP),
        "dead after {took:?}"
    );
}

/// An idle node's death is seen too, within its promised deadline and an idle listing, and
/// an idle node is never taken for dead while it lives.
#[tokio::test(start_paused = true)]
async fn an_idle_node_s_death_is_seen_and_a_live_one_stays_alive() {
    let mut sim = idle_swarm(3).await;
    let config = SwarmConfig::default();
    // An hour of idling: no node ever seen otherwise than alive.
    for _ in 0..60 {
        sim.run_for(MIN).await;
        for i in 0..3 {
            for of in 0..3 {
                assert_eq!(sim.state(i, of), Some(NodeState::Alive), "{i} sees {of}");
            }
        }
    }
    sim.kill(2);
    let took = sim
        .time_until(20 * MIN, |s| s.state(0, 2) == Some(NodeState::Dead))
        .await;
    let deadline = Duration::from_millis(config.beat(false).dead_after_ms)
        + config.idle_list_interval
        + config.poll_interval;
    assert!(took.is_some_and(|t| t <= deadline), "dead after {took:?}");
}

/// An idle node writes its heartbeat once a minute, lists the swarm every five minutes and
/// looks for tasks every 30 s.
#[tokio::test(start_paused = true)]
async fn an_idle_node_beats_once_a_minute() {
    let sim = idle_swarm(2).await;
    let report = sim.measure(30 * MIN).await;
    let per_min = |n: u64| n as f64 / report.minutes;
    assert!((per_min(report.mean.put) - 1.0).abs() <= 0.1, "{report:?}");
    assert!(
        (per_min(report.mean.list) - 0.2).abs() <= 0.05,
        "{report:?}"
    );
    // Roster probes are GETs (12 a minute, 404s), doorbell looks HEADs (2 a minute).
    assert!((per_min(report.mean.get) - 12.0).abs() <= 0.5, "{report:?}");
    assert!((per_min(report.mean.head) - 2.0).abs() <= 0.5, "{report:?}");
}
