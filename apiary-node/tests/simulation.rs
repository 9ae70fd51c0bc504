//! The seeded simulation: two nodes, a coordinating client and a writer in one process,
//! on one current-thread runtime whose clock is tokio's paused one, each over its own store
//! on one storage that injects seeded faults (lost responses, failed requests,
//! conditional-write conflicts, every request late by up to 0.1 s and listings by up to 2 s
//! more).
//! Each seed draws its faults, its nodes' clock skews and its workload (appends,
//! compactions, vacuums, distributed queries at pinned versions, a node killed, a node
//! paused while a query runs); after every run the invariants are checked:
//!
//! * every acknowledged write is visible exactly once, and a write refused with a known
//!   outcome not at all;
//! * no distributed answer differs from the answer read locally, on clean storage, at the
//!   version it pinned, and every version acknowledged within the retention reads;
//! * no query read a cell twice (the coordinator refused no result for holding a cell
//!   another result delivered);
//! * `_queries/` drains;
//! * no task runs forever: every bee is idle again within a minute and holds no memory;
//! * the nodes' views converge: within the swarm's promise (an idle node's deadline and an
//!   idle listing), every node still running sees the others alive and none dead.
//!
//! `APIARY_SIM_SEEDS` seeds are run (default 200, about 25 s), from `APIARY_SIM_SEED`
//! (default 1); a failure names its seed, and `APIARY_SIM_SEED=N APIARY_SIM_SEEDS=1` runs it
//! alone (`APIARY_SIM_TRACE=1` prints its steps and writes its requests to
//! `target/tmp/trace-SEED.txt`; `APIARY_SIM_LOG=debug` prints the nodes' logs). The run is on one simulated clock (the
//! store stamps objects with it too), randomness is seeded per run, blocking work runs in
//! place (`apiary_storage::blocking`), and a seed replays byte for byte
//! (`a_seed_replays_its_history`). The harness can fail: bugs planted on purpose
//! (`apiary_storage::planted`) are caught within 200 seeds.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "simulation/checks.rs"]
mod checks;
mod common;

use std::collections::{BTreeMap, BTreeSet};

use checks::{FRAME, answer, batch, check_query, converge, ids};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apiary::apiary_ledger::LedgerConfig;
use apiary::apiary_query::DistributeMode;
use apiary::{ApiaryBuilder, ApiaryOptions, NodeOptions};
use apiary_storage::{
    ErrorKind, FaultConfig, Hold, InstrumentedStore, ObjectStoreBackend, Path, Random, RequestKind,
    RequestTrace, StampedStore, StorageBackend, StorageUri, SystemClock, object_store_for,
};

/// Where the simulated wall clock starts (2026-06-01): the store's stamps, the ledger's
/// times and the nodes' skewed clocks all move from here with tokio's paused time.
const SIMULATED_EPOCH_MS: i64 = 1_780_272_000_000;

/// What one seed's run found wrong.
type Violation = String;

/// The seed's draws, in order: faults, skews, then the workload.
struct Draws(Random);

impl Draws {
    fn below(&self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }
    fn rate(&self, max: f64) -> f64 {
        self.0.unit() * max
    }
}

fn fast_swarm() -> apiary::apiary_swarm::SwarmConfig {
    apiary::apiary_swarm::SwarmConfig {
        heartbeat_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
        dead_threshold: Duration::from_secs(3),
        ..Default::default()
    }
}

async fn run(seed: u64, trace: RequestTrace) -> Result<(), Violation> {
    let draws = Draws(Random::seeded(seed));
    let dir = tempfile::tempdir().unwrap();
    // One clock for the run, on tokio's paused time: the store stamps objects with it, the
    // nodes' and the client's clocks are skewed copies of it, the trace times requests on it.
    let clock = SystemClock::simulated(SIMULATED_EPOCH_MS);
    let trace_clock: Arc<dyn apiary_storage::Clock> = Arc::new(clock.clone());
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let store: Arc<dyn apiary_storage::object_store::ObjectStore> =
        Arc::new(StampedStore::new(store, Arc::clone(&trace_clock)));
    let clean: Arc<dyn StorageBackend> = Arc::new(ObjectStoreBackend::new(
        Arc::new(
            InstrumentedStore::new(Arc::clone(&store), FaultConfig::none())
                .with_clock(Arc::clone(&trace_clock))
                .with_trace("clean", trace.clone()),
        ),
        caps,
        "memory://",
    ));
    let faults = FaultConfig {
        seed,
        error_rate: draws.rate(0.03),
        lost_response_rate: draws.rate(0.03),
        conflict_rate: draws.rate(0.02),
        // Every request is late by up to a tenth of a second, and listings by up to two
        // seconds more. (Blocking work runs in place here, `run_traced`: on a pool thread,
        // which holds tokio's paused clock, a compaction's delayed cell read never ended.)
        max_latency: Duration::from_millis(draws.below(100)),
        max_list_latency: Duration::from_millis(draws.below(2000)),
        ..FaultConfig::none()
    };
    // Each process has its own faulty store over the one storage; a node's can be paused.
    let faulty_store = |salt: u64, hold: Option<Hold>| -> Arc<dyn StorageBackend> {
        let mut faults = faults.clone();
        faults.seed = seed.wrapping_add(salt);
        let mut instrumented = InstrumentedStore::new(Arc::clone(&store), faults)
            .with_clock(Arc::clone(&trace_clock))
            .with_trace(&format!("s{salt}"), trace.clone());
        if let Some(hold) = hold {
            instrumented = instrumented.with_hold(hold);
        }
        Arc::new(
            ObjectStoreBackend::new(Arc::new(instrumented), caps, "memory://")
                .with_resolve_pause(Duration::ZERO),
        )
    };
    let faulty = faulty_store(0, None);
    let options = |mode: DistributeMode, salt: u64| {
        let mut o = ApiaryOptions::new(StorageUri::Memory);
        o.swarm = fast_swarm();
        o.distribute_mode = mode;
        o.distribute.orphan_retention = Duration::from_secs(1);
        o.ledger = LedgerConfig {
            random: Random::seeded(seed.wrapping_mul(31).wrapping_add(salt)),
            clock: Arc::new(clock.clone()),
            ..LedgerConfig::default()
        };
        o
    };
    // The truth: a local reader on storage without faults.
    let truth = ApiaryBuilder::new(options(DistributeMode::Never, 0))
        .backend(Arc::clone(&clean))
        .build()
        .await
        .unwrap();
    truth.create_hive(FRAME.0).await.unwrap();
    truth.create_box(FRAME.0, FRAME.1).await.unwrap();
    truth
        .create_frame(
            FRAME.0,
            FRAME.1,
            FRAME.2,
            &[("id", "int64"), ("write", "int64")],
            &[],
        )
        .await
        .unwrap();

    // Two nodes whose clocks are skewed up to an hour either way, on faulty storage.
    let mut nodes = Vec::new();
    let mut pauses = Vec::new();
    for i in 0..2u64 {
        let skew = Duration::from_secs(draws.below(3600));
        let ahead = draws.below(2) == 0;
        let pause = Hold::new(&ALL_REQUESTS);
        pauses.push(pause.clone());
        let node = ApiaryBuilder::new(options(DistributeMode::Never, 1 + i))
            .backend(faulty_store(1 + i, Some(pause)))
            .build()
            .await
            .unwrap();
        node.start_with(NodeOptions {
            node_id: Some(format!("sim-{i}")),
            state_dir: dir.path().join(format!("n{i}")),
            swarm: fast_swarm(),
            task_poll_interval: Duration::from_millis(10),
            cache_bytes: Some(0),
            memory_tier_bytes: Some(0),
            memory_bytes: Some(1 << 30),
            clock: Arc::new(clock.skewed(skew, ahead)),
            // The process's resident memory changes from run to run; heartbeats report a
            // figure of the node's own, so a replay writes the same bytes.
            resident_memory: Some(Arc::new(|| 100 << 20)),
            ..NodeOptions::default()
        })
        .await
        .map_err(|e| format!("seed {seed}: node {i} did not start: {e}"))?;
        nodes.push((format!("sim-{i}"), node));
    }
    // The client coordinates every query, writes, compacts and vacuums, on faulty storage
    // too, with a clock two hours ahead (vacuum must judge ages on the store's clock).
    let mut client_options = options(DistributeMode::Always, 9);
    client_options.ledger.clock = Arc::new(clock.skewed(Duration::from_secs(7200), true));
    let client = ApiaryBuilder::new(client_options)
        .backend(Arc::clone(&faulty))
        .build()
        .await
        .unwrap();

    let mut acknowledged: BTreeMap<i64, u64> = BTreeMap::new(); // write → version
    let mut refused: BTreeSet<i64> = BTreeSet::new();
    let mut versions: Vec<u64> = Vec::new();
    let (mut queries, mut answered) = (0u64, 0u64);
    let rows = 50;
    for step in 0..16i64 {
        let op = draws.below(10);
        if std::env::var_os("APIARY_SIM_TRACE").is_some() {
            let at = trace_clock.monotonic().as_secs_f64();
            eprintln!("seed {seed} step {step} at {at:.3} s: op {op}");
        }
        match op {
            0..=2 => {
                let write = step;
                match client
                    .write_to_frame(
                        FRAME.0,
                        FRAME.1,
                        FRAME.2,
                        [batch(write * rows..(write + 1) * rows, write)],
                    )
                    .await
                {
                    Ok(done) => {
                        acknowledged.insert(write, done.version);
                        versions.push(done.version);
                    }
                    Err(e) if e.kind() == ErrorKind::OutcomeUnknown => {}
                    Err(_) => {
                        refused.insert(write);
                    }
                }
            }
            3 => {
                // A compaction may fail under faults; it must never lose or double rows.
                if let Ok(done) = client.compact(FRAME.0, FRAME.1, FRAME.2).await {
                    COMPACTIONS.fetch_add(done.commits as u64, Ordering::Relaxed);
                }
            }
            8 if nodes.len() == 2 => {
                // A node killed: its process gone at once, its heartbeat left behind, its
                // running tasks given up and read again elsewhere.
                let victim = draws.below(2) as usize;
                let (_, node) = nodes.remove(victim);
                pauses.remove(victim).open();
                node.halt().await;
            }
            9 if !versions.is_empty() => {
                // A node paused (every request it makes waits, as a stopped VM's would) for
                // about as long as its peers take to judge it gone, while a query runs: its
                // tasks go elsewhere, and what it sends when it wakes must not count twice.
                let victim = draws.below(pauses.len() as u64) as usize;
                let pause = pauses[victim].clone();
                let after = Duration::from_millis(draws.below(300));
                let length = Duration::from_millis(2500 + draws.below(3000));
                tokio::spawn(async move {
                    apiary_storage::time::sleep(after).await;
                    pause.close();
                    apiary_storage::time::sleep(length).await;
                    pause.open();
                });
                let version = versions[draws.below(versions.len() as u64) as usize];
                queries += 1;
                answered += u64::from(check_query(seed, &truth, &client, version, &faults).await?);
            }
            4 => {
                // Within the hour's retention nothing a past version reads may go.
                let _ = client.vacuum(FRAME.0, FRAME.1, FRAME.2, None).await;
            }
            _ if !versions.is_empty() => {
                let version = versions[draws.below(versions.len() as u64) as usize];
                queries += 1;
                answered += u64::from(check_query(seed, &truth, &client, version, &faults).await?);
            }
            _ => {}
        }
    }

    for pause in &pauses {
        pause.open();
    }

    // Every version acknowledged reads (all are within vacuum's hour of retention).
    for version in &versions {
        let sql = format!("SELECT COUNT(*) FROM sim.b.t VERSION AS OF {version}");
        if let Err(e) = answer(&truth, &sql).await {
            return Err(format!(
                "seed {seed}: version {version}, acknowledged within the retention, does not \
                 read: {e}"
            ));
        }
    }

    // Acknowledged writes are there exactly once; refused ones are not there at all.
    let present = ids(&truth).await;
    for (&write, &version) in &acknowledged {
        for id in write * rows..(write + 1) * rows {
            match present.get(&id) {
                Some(1) => {}
                other => {
                    return Err(format!(
                        "seed {seed}: row {id} of write {write}, acknowledged at version \
                         {version}, is there {other:?} times"
                    ));
                }
            }
        }
    }
    for write in &refused {
        if present.contains_key(&(write * rows)) {
            return Err(format!(
                "seed {seed}: write {write} was refused with a known outcome, yet it is there"
            ));
        }
    }
    if let Some((id, n)) = present.iter().find(|(_, n)| **n != 1) {
        return Err(format!("seed {seed}: row {id} is there {n} times"));
    }

    // No query read a cell twice: claims give every shared cell to one task of a round,
    // and later rounds read only what is missing.
    let counts = client.coordinator_counts();
    if counts.duplicate_reads != 0 {
        return Err(format!(
            "seed {seed}: {} results held a cell another result had delivered already \
             ({counts:?})",
            counts.duplicate_reads
        ));
    }

    // The queries' folders drain (the coordinator cleans up; sweeps take what a fault left).
    client.settle().await;
    let mut left = Vec::new();
    for _ in 0..100 {
        left = clean.list(&Path::from("_queries")).await.unwrap();
        if left.is_empty() {
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(100)).await;
    }
    if !left.is_empty() {
        return Err(format!(
            "seed {seed}: {} objects stay under _queries/ ({queries} queries): {:?}",
            left.len(),
            left.iter()
                .take(3)
                .map(|m| m.key.to_string())
                .collect::<Vec<_>>()
        ));
    }
    // No task runs forever: within a minute every bee is idle again and holds no memory
    // (a task of an answered query stops at its next check that it is still wanted).
    for (_, node) in &nodes {
        let mut busy = None;
        for _ in 0..600 {
            let colony = node.colony_status().unwrap();
            busy = colony
                .bees
                .iter()
                .find(|b| b.state != "idle" || b.memory_used != 0)
                .map(|bee| format!("node {}: {bee:?}", colony.node_id));
            if busy.is_none() {
                break;
            }
            apiary_storage::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(bee) = busy {
            return Err(format!("seed {seed}: a minute after the run, {bee}"));
        }
    }
    // Within the swarm's promise: a node killed while the swarm idled is dead once its
    // idle deadline passes, and seen so at the next idle listing.
    let swarm = fast_swarm();
    let promise = Duration::from_millis(swarm.beat(false).dead_after_ms)
        + swarm.listing_interval(false)
        + swarm.poll_interval;
    converge(seed, &nodes, promise).await?;
    for (_, node) in &nodes {
        node.shutdown().await.unwrap();
    }
    eprintln!(
        "seed {seed}: {} writes acknowledged, {} refused, {answered}/{queries} queries \
         answered; faults: {:.3} errors, {:.3} lost responses, {:.3} conflicts",
        acknowledged.len(),
        refused.len(),
        faults.error_rate,
        faults.lost_response_rate,
        faults.conflict_rate,
    );
    Ok(())
}

/// Every kind of request (a paused process makes none).
const ALL_REQUESTS: [RequestKind; 5] = [
    RequestKind::Get,
    RequestKind::Head,
    RequestKind::Put,
    RequestKind::ConditionalPut,
    RequestKind::List,
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeds `first..first + seeds`, each on a fresh paused runtime; the violations found.
fn run_seeds(first: u64, seeds: u64, stop_at_first: bool) -> Vec<Violation> {
    let mut failures = Vec::new();
    for seed in first..first + seeds {
        if let Err(violation) = run_traced(seed).0 {
            failures.push(violation);
            if stop_at_first {
                break;
            }
        }
    }
    failures
}

/// Log times on the simulated clock: seconds since the run began.
struct SimulatedTime(tokio::time::Instant);

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:9.3}", self.0.elapsed().as_secs_f64())
    }
}

/// Seed `seed` on a fresh paused runtime: what it found, and the requests it made.
fn run_traced(seed: u64) -> (Result<(), Violation>, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let trace = RequestTrace::new();
    let _seeded = Random::seed_thread(seed);
    // Encoders and cache files run in place: a pool thread's end would order tasks.
    let _inline = apiary_storage::blocking::inline_on_this_thread();
    // `APIARY_SIM_LOG=debug` (a tracing filter) prints what the nodes log, on the
    // simulated clock's time.
    let _logs = std::env::var("APIARY_SIM_LOG").ok().map(|filter| {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_timer(SimulatedTime(
                    runtime.block_on(async { tokio::time::Instant::now() }),
                ))
                .finish(),
        )
    });
    let result = runtime.block_on(run(seed, trace.clone()));
    let lines = trace.lines();
    if std::env::var_os("APIARY_SIM_TRACE").is_some() {
        let path =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trace-{seed}.txt"));
        std::fs::write(&path, lines.join("\n")).unwrap();
        eprintln!("seed {seed}: its requests are in {}", path.display());
    }
    (result, lines)
}

/// Compactions committed by the seeds run so far: the runs must exercise it (a compaction
/// that always fails keeps every invariant).
static COMPACTIONS: AtomicU64 = AtomicU64::new(0);

/// Planted bugs are process-wide: the tests of this file take turns.
static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn seeded_runs_keep_every_invariant() {
    let _turn = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let first = env_u64("APIARY_SIM_SEED", 1);
    let seeds = env_u64("APIARY_SIM_SEEDS", 200);
    let compacted = COMPACTIONS.load(Ordering::Relaxed);
    let failures = run_seeds(first, seeds, false);
    let compacted = COMPACTIONS.load(Ordering::Relaxed) - compacted;
    eprintln!(
        "{seeds} seeds run from {first}, {} failed; {compacted} compactions committed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        compacted >= seeds / 10,
        "{compacted} compactions committed in {seeds} seeds: compaction no longer runs here"
    );
}

/// The harness can fail: each planted bug is caught within 200 seeds (in practice within the first
/// few dozen).
#[test]
fn the_simulation_catches_planted_bugs() {
    use apiary_storage::planted;
    let _turn = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    for bug in [
        planted::LOST_CREATE_IS_A_CONFLICT,
        planted::VACUUM_ON_THE_NODE_CLOCK,
        planted::CLAIM_TAKEN_WHEN_HELD,
        planted::DOUBLE_COUNTED_RESULT,
    ] {
        planted::clear();
        planted::plant(bug);
        let caught = run_seeds(1, 200, true);
        planted::clear();
        eprintln!("planted {bug}: {caught:?}");
        assert!(
            !caught.is_empty(),
            "planted bug {bug} was not caught in 200 seeds"
        );
    }
}

/// A seed replays its history byte for byte: run twice, it makes the same requests, in the
/// same order, at the same times, writing the same bytes (each write's checksum is in the
/// trace), draws the same faults and ends the same way. Runs `APIARY_SIM_REPLAYS` seeds
/// (default 20) from `APIARY_SIM_SEED`, and writes both traces of the first that diverges
/// into `target/tmp`.
#[test]
fn a_seed_replays_its_history() {
    let _turn = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    let first = env_u64("APIARY_SIM_SEED", 1);
    let seeds = env_u64("APIARY_SIM_REPLAYS", 20);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut diverged = Vec::new();
    for seed in first..first + seeds {
        let (ended, once) = run_traced(seed);
        let (ended_again, again) = run_traced(seed);
        let same = once.iter().zip(&again).take_while(|(a, b)| a == b).count();
        eprintln!(
            "seed {seed}: {} requests, the first {same} the same",
            once.len()
        );
        if ended != ended_again {
            diverged.push(format!(
                "seed {seed}: ended {ended:?}, then {ended_again:?}"
            ));
        }
        if same == once.len() && same == again.len() {
            continue;
        }
        if diverged.is_empty() {
            for (name, trace) in [("once", &once), ("again", &again)] {
                let path = dir.join(format!("replay-{seed}-{name}.txt"));
                std::fs::write(path, trace.join("\n")).unwrap();
            }
        }
        diverged.push(format!(
            "seed {seed}: after {same} requests alike, {:?} then {:?}",
            once.get(same),
            again.get(same)
        ));
    }
    assert!(
        diverged.is_empty(),
        "{} of {seeds} seeds did not replay (the first one's traces are in \
         {}/replay-*.txt):\n{}",
        diverged.len(),
        dir.display(),
        diverged.join("\n")
    );
}
