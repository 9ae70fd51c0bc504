//! One node against two: the Star Schema Benchmark with its fact frame split over `apiary
//! node` processes that each have one bee (pinned to one core with `taskset`), next to the
//! same queries on one such node alone (a swarm of its own) and on one bee in one process,
//! all taking turns query by query so that the machine's drift does not enter their
//! ratios, and next to them on two bees in one process
//! (no distribution: what the machine's second core gives DataFusion itself), and next to
//! two whole copies of each query run at once by two one-bee processes (the most any split
//! over two processes can reach on this machine: see [`Twins`]); then the fixed cost of
//! distributing a tiny query at the default task poll interval, with the coordinator's
//! storage requests.
//!
//! ```sh
//! cargo build --release -p apiary-node -p apiary-benches
//! target/release/distributed --sf 1 --runs 3
//! ```
//!
//! `--flight 1` runs it all over Arrow Flight: the nodes serve it on loopback and the
//! coordinators push their tasks over it (compare with a run without it).
//!
//! Every distributed answer is checked against the local one. The memory tier is off on
//! every side by default, so the speed-up is that of the scans and joins themselves;
//! `--memory-tier BYTES` (say 1073741824) gives every side a tier, to compare warm nodes.
//! The nodes look for tasks every `--task-poll` (default `20ms`; a busy node looks four
//! times as often): on a local folder a look is one `stat`, so a short interval costs
//! little, and it is what a query waits for its tasks to be picked up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::apiary_ledger::{FrameDefinition, FrameRef, FrameSchema};
use apiary::apiary_storage::{StorageUri, counted_backend};
use apiary::apiary_swarm::NodeState;
use apiary::{Apiary, ApiaryOptions, SqlSession};
use apiary_benches::harness::{
    apiary_binary, flag, flags, geo_mean, load_apiary, median, result_rows,
};
use apiary_benches::ssb::{QUERIES, generate};
use arrow_array::RecordBatch;

struct Args {
    sf: f64,
    runs: usize,
    cells: usize,
    explain: usize,
    keep: Option<PathBuf>,
    /// Bytes of the memory tier on every side, the nodes and the one-bee baseline alike.
    memory_tier: u64,
    /// The nodes' task poll interval in the speed-up runs.
    task_poll: String,
    /// `apiary.min_part_rows` of the distributed sessions, if given.
    min_part_rows: Option<u64>,
    /// Set in a twin process ([`Twins`]): the storage it runs queries on.
    serve: Option<String>,
    /// `--flight 1`: the nodes serve Arrow Flight and the coordinators push over it.
    flight: bool,
    /// Tiny queries on active nodes per pair of nodes started (`--tiny-per-pair`, default 1).
    tiny_per_pair: usize,
}

/// Whether the nodes serve Arrow Flight and the coordinators use it (`--flight 1`).
static FLIGHT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// The Flight options of a coordinator, with `--flight 1`.
fn flight_options() -> Option<apiary::FlightOptions> {
    FLIGHT
        .get()
        .copied()
        .unwrap_or(false)
        .then(apiary::FlightOptions::client)
}

/// `apiary.min_part_rows` of every distributed session (`--min-part-rows`).
static MIN_PART_ROWS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

fn args() -> Args {
    let f = flags(&[
        "sf",
        "runs",
        "cells",
        "explain",
        "keep",
        "memory-tier",
        "task-poll",
        "min-part-rows",
        "serve",
        "flight",
        "tiny-per-pair",
    ]);
    Args {
        sf: flag(&f, "sf", 1.0),
        runs: flag(&f, "runs", 3),
        cells: flag(&f, "cells", 16),
        explain: flag(&f, "explain", 0),
        keep: f.get("keep").map(PathBuf::from),
        memory_tier: flag(&f, "memory-tier", 0),
        task_poll: f.get("task-poll").cloned().unwrap_or_else(|| "20ms".into()),
        min_part_rows: f.get("min-part-rows").map(|_| flag(&f, "min-part-rows", 0)),
        serve: f.get("serve").cloned(),
        flight: flag(&f, "flight", 0) != 0,
        tiny_per_pair: flag(&f, "tiny-per-pair", 1),
    }
}

/// A node with one bee, pinned to `core`.
fn node(storage: &str, dir: &Path, id: &str, core: usize, task_poll: &str, tier: u64) -> Child {
    Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(apiary_binary())
        .args(["node", "--storage", storage, "--node-id", id])
        .arg("--state-dir")
        .arg(dir.join(id))
        .args(["--heartbeat-interval", "500ms", "--poll-interval", "500ms"])
        .args(["--task-poll-interval", task_poll])
        .args(["--memory-tier", &tier.to_string()])
        .args(if FLIGHT.get().copied().unwrap_or(false) {
            &["--flight", "127.0.0.1:0"][..]
        } else {
            &[]
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskset and apiary node")
}

/// Pins every thread of this process to `cores` (a `taskset` list).
fn pin_process(cores: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset could not pin this process to cores {cores}");
}

/// Copies folder `from` to `to` as hard links where the file system allows (the files are
/// never written in place: storage replaces an object by renaming a new file over it).
fn link_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("a parent")).expect("copy's folder");
    let cp = |flags: &str| {
        Command::new("cp")
            .arg(flags)
            .arg(from)
            .arg(to)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !cp("-al") {
        let _ = std::fs::remove_dir_all(to);
        assert!(
            cp("-a"),
            "cannot copy {} to {}",
            from.display(),
            to.display()
        );
    }
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// Waits until the nodes alive are exactly `ids` (nodes that just left are waited out, so
/// that only these get tasks).
async fn wait_alive(ap: &Apiary, ids: &[&str]) {
    let started = Instant::now();
    loop {
        let status = ap.swarm_status().await.expect("swarm");
        let mut alive: Vec<&str> = status
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Alive)
            .map(|n| n.node_id.as_str())
            .collect();
        alive.sort_unstable();
        if alive == ids {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nodes never came up: {alive:?} alive, {ids:?} wanted"
        );
        apiary_storage::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn session(ap: &Apiary, mode: &str) -> SqlSession {
    local_session(ap, mode, 1).await
}

/// A session with `apiary.distribute = mode`; a local one (`never`) runs on `bees` bees
/// (one partition each).
async fn local_session(ap: &Apiary, mode: &str, bees: usize) -> SqlSession {
    let mut s = ap.sql_session().expect("session");
    s.sql(&format!("USE ssb.sf; SET apiary.distribute = '{mode}'"))
        .await
        .expect("settings");
    if mode == "never" {
        s.sql(&format!(
            "SET datafusion.execution.target_partitions = {bees}"
        ))
        .await
        .expect("partitions");
    } else if let Some(rows) = MIN_PART_ROWS.get().copied().flatten() {
        s.sql(&format!("SET apiary.min_part_rows = {rows}"))
            .await
            .expect("parts");
    }
    s
}

/// One way of running the queries.
enum Side {
    /// A session of this process, pinned to one core while it runs a query (the one-bee
    /// baseline) or free to use both (a coordinator, or two bees in one process).
    Session {
        session: Box<SqlSession>,
        pinned: bool,
    },
    /// Two whole copies of each query at once, one per twin process.
    Twins(Box<Twins>),
}

impl Side {
    /// Runs query `index` of [`QUERIES`]: its time and rows.
    async fn run(&mut self, index: usize) -> (f64, Vec<String>) {
        let (name, sql) = QUERIES[index];
        match self {
            Side::Session { session, pinned } => {
                pin_process(if *pinned { "0" } else { "0-1" });
                let t = Instant::now();
                let r = session
                    .sql(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (t.elapsed().as_secs_f64(), result_rows(&r))
            }
            Side::Twins(twins) => twins.run(index).await,
        }
    }
}

/// A side running in a new session with `apiary.distribute = mode`.
async fn side(ap: &Apiary, mode: &str, pinned: bool) -> Side {
    Side::Session {
        session: Box::new(session(ap, mode).await),
        pinned,
    }
}

/// Two processes of this binary (`--serve STORAGE`), each one bee pinned to a core of its
/// own, told to run the same whole query at the same moment.
///
/// Two copies of a query done in `t` are one query every `t / 2`: that is the ceiling the
/// machine sets on splitting one query over two one-bee processes, since a split does the
/// same work (plus its own costs) on the same two cores, balanced at best as evenly as two
/// equal copies are. It is measured on the workload itself, so it includes what the two
/// cores share (memory bandwidth, caches, the hypervisor's time), which a synthetic loop
/// would not.
struct Twins([Twin; 2]);

/// One twin process and its pipes: it reads a query's index a line, and answers with a
/// line `{seconds} {rows}` followed by that many lines of rows.
struct Twin {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Twins {
    /// Starts the twins on `storage`, pinned to cores 0 and 1, with memory tiers of `tier`
    /// bytes, and waits until both are ready.
    async fn start(storage: &str, tier: u64) -> Self {
        let exe = std::env::current_exe().expect("this binary");
        let start = |core: &str| {
            let mut child = tokio::process::Command::new("taskset")
                .args(["-c", core])
                .arg(&exe)
                .args(["--serve", storage, "--memory-tier", &tier.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("taskset and this binary");
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            Twin {
                _child: child,
                stdin,
                stdout: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
            }
        };
        let mut twins = Twins([start("0"), start("1")]);
        for twin in &mut twins.0 {
            let line = twin.stdout.next_line().await.expect("twin output");
            assert_eq!(line.as_deref(), Some("ready"), "a twin did not start");
        }
        twins
    }

    /// Runs query `index` on both twins at once: the time the two copies took together
    /// (the slower one's), halved, and their rows, which must agree.
    async fn run(&mut self, index: usize) -> (f64, Vec<String>) {
        use tokio::io::AsyncWriteExt;
        for twin in &mut self.0 {
            twin.stdin
                .write_all(format!("{index}\n").as_bytes())
                .await
                .expect("twin input");
            twin.stdin.flush().await.expect("twin input");
        }
        let [a, b] = &mut self.0;
        let ((ta, rows_a), (tb, rows_b)) = futures::join!(a.answer(), b.answer());
        let name = QUERIES[index].0;
        assert_eq!(rows_a, rows_b, "{name}: the twins' answers differ");
        (ta.max(tb) / 2.0, rows_a)
    }
}

impl Twin {
    /// The twin's answer to the query it was given: its time and rows.
    async fn answer(&mut self) -> (f64, Vec<String>) {
        let head = self.line().await;
        let (seconds, count) = head.split_once(' ').expect("`{seconds} {rows}`");
        let count: usize = count.parse().expect("a row count");
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            rows.push(self.line().await);
        }
        (seconds.parse().expect("seconds"), rows)
    }

    async fn line(&mut self) -> String {
        self.stdout
            .next_line()
            .await
            .expect("twin output")
            .expect("a twin stopped")
    }
}

/// A twin's life (`--serve STORAGE`): one bee (this process is pinned by its parent) that
/// runs whole queries of [`QUERIES`] locally as [`Twins`] asks.
async fn serve(storage: &str, tier: u64) {
    use std::io::{BufRead, Write};
    let uri = StorageUri::parse(storage).expect("uri");
    let ap = Apiary::open_with(ApiaryOptions {
        memory_tier: Some(tier),
        ..ApiaryOptions::new(uri)
    })
    .await
    .expect("open");
    let mut s = local_session(&ap, "never", 1).await;
    let mut out = std::io::stdout();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    // Read between queries only, when nothing else runs: blocking is harmless.
    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next().transpose().expect("stdin") {
        let index: usize = line.trim().parse().expect("a query index");
        let (name, sql) = QUERIES[index];
        let t = Instant::now();
        let r = s.sql(sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = t.elapsed().as_secs_f64();
        let rows = result_rows(&r);
        let mut answer = format!("{took} {}\n", rows.len());
        for row in rows {
            answer.push_str(&row);
            answer.push('\n');
        }
        out.write_all(answer.as_bytes()).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The timings of one query on one side: every timed run, in round order, and the rows of
/// the last.
#[derive(Debug, Clone, Default)]
struct Timed {
    seconds: Vec<f64>,
    rows: Vec<String>,
}

impl Timed {
    fn median(&self) -> f64 {
        median(self.seconds.clone())
    }
}

/// `runs` timed runs of every query on every side, indexed `[side][query]`.
///
/// The sides take turns: each query runs once untimed on every side (so every side is
/// measured in the same state: footers cached and, with a memory tier, columns admitted),
/// then `runs` rounds of one run per side. A shared virtual machine drifts: the same query
/// on the same side can take 40% longer a minute later. Runs of one round share the drift,
/// so the ratio of two sides does not depend on it, as it would if each side ran all its
/// queries in a block of its own.
async fn time_interleaved(sides: &mut [Side], runs: usize) -> Vec<Vec<Timed>> {
    let mut out: Vec<Vec<Timed>> = vec![Vec::new(); sides.len()];
    for index in 0..QUERIES.len() {
        let mut timed = vec![Timed::default(); sides.len()];
        for round in 0..=runs {
            for (i, side) in sides.iter_mut().enumerate() {
                let (took, rows) = side.run(index).await;
                if round > 0 {
                    timed[i].seconds.push(took);
                    timed[i].rows = rows;
                }
            }
        }
        for (i, t) in timed.into_iter().enumerate() {
            out[i].push(t);
        }
    }
    pin_process("0-1");
    out
}

/// The geometric mean of the speed-up of `faster` over `base` in each round (round `r`
/// pairs the `r`-th runs of every query, which ran back to back on both sides), sorted:
/// how much the figure moves with the machine's drift.
fn round_geo_means(base: &[Timed], faster: &[Timed]) -> Vec<f64> {
    let rounds = base.first().map_or(0, |t| t.seconds.len());
    let mut means: Vec<f64> = (0..rounds)
        .map(|r| {
            let ratios: Vec<f64> = base
                .iter()
                .zip(faster)
                .map(|(b, f)| b.seconds[r] / f.seconds[r])
                .collect();
            geo_mean(&ratios)
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means
}

/// `min`–`max` of sorted round means, for the report.
fn range(means: &[f64]) -> String {
    match (means.first(), means.last()) {
        (Some(lo), Some(hi)) => format!("{lo:.2}x to {hi:.2}x over {} rounds", means.len()),
        _ => "no rounds".into(),
    }
}

/// Prints the wall time of `sql` under EXPLAIN ANALYZE and its task lines.
async fn explain(s: &mut SqlSession, name: &str, sql: &str, full: bool) {
    let t = Instant::now();
    let plan = result_rows(
        &s.sql(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .expect("explain"),
    );
    let wall = t.elapsed();
    println!(
        "{name} on two nodes, {:.0} ms in all:",
        wall.as_secs_f64() * 1e3
    );
    for line in plan
        .join("\n")
        .lines()
        .filter(|l| l.trim_start().starts_with("task="))
    {
        println!("  {}", line.trim());
    }
    if full {
        println!("{}", plan.join("\n"));
    }
}

/// Generates SSB and writes it, the fact frame in `a.cells` writes so it has cells to split.
async fn load(ap: &Apiary, a: &Args) {
    eprintln!("generating SSB SF {} and loading it ...", a.sf);
    let tables = generate(a.sf, 42);
    let (facts, dims): (Vec<_>, Vec<_>) = tables.into_iter().partition(|t| t.name == "lineorder");
    load_apiary(ap, "ssb", "sf", &dims).await;
    for fact in &facts {
        let frame = FrameRef::new("ssb", "sf", fact.name).expect("name");
        let schema = FrameSchema::from_arrow(&fact.schema).expect("schema");
        let definition = FrameDefinition::new(schema, Vec::new()).expect("definition");
        ap.create_frame_with(&frame, definition)
            .await
            .expect("create");
        // Written in `cells` parts of equal rows, so the frame has even cells to split.
        for part in equal_parts(&fact.batches, a.cells) {
            ap.write_to_frame("ssb", "sf", fact.name, part)
                .await
                .expect("write");
        }
    }
}

/// `batches` cut into `parts` runs of rows as equal as rows allow (slices, not copies).
fn equal_parts(batches: &[RecordBatch], parts: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let parts = parts.clamp(1, total.max(1));
    let mut out = vec![Vec::new(); parts];
    // Row `r` of the frame goes to part `r * parts / total`.
    let mut row = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let part = row * parts / total;
            let end_of_part = ((part + 1) * total).div_ceil(parts);
            let take = (end_of_part - row).min(batch.num_rows() - offset);
            out[part].push(batch.slice(offset, take));
            offset += take;
            row += take;
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let a = args();
    let _ = MIN_PART_ROWS.set(a.min_part_rows);
    let _ = FLIGHT.set(a.flight);
    if let Some(storage) = &a.serve {
        serve(storage, a.memory_tier).await;
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // `--keep DIR` keeps the loaded data in DIR for later runs (and for trying queries by
    // hand with `apiary sql --storage DIR`).
    let data = a.keep.clone().unwrap_or_else(|| dir.path().join("data"));
    let loaded = data.join("ssb").exists();
    let storage = data.display().to_string();
    std::fs::create_dir_all(&data).expect("data folder");

    // The coordinator counts its own storage requests.
    let uri = StorageUri::parse(&storage).expect("uri");
    let (backend, counts) = counted_backend(&uri).expect("store");
    let ap = Apiary::builder(ApiaryOptions {
        memory_tier: Some(a.memory_tier),
        flight: flight_options(),
        ..ApiaryOptions::new(uri)
    })
    .backend(backend)
    .build()
    .await
    .expect("open");

    if !loaded {
        load(&ap, &a).await;
    }

    let info = ap
        .describe_frame("ssb", "sf", "lineorder")
        .await
        .expect("frame");
    println!(
        "lineorder: {} rows in {} cells ({} MB)",
        info.rows,
        info.cells,
        info.bytes / 1_000_000
    );

    // One bee is one core: the whole process (every thread, so the object store's blocking
    // reads too) is pinned to core 0 while it runs the one-bee baseline, as each node is
    // below; it may use both cores as the coordinator. The baseline runs while the nodes are
    // up and idle (each looks for tasks every `--task-poll`), interleaved with the distributed
    // runs.
    //
    // One node alone runs in the same rounds as two: a swarm of its own, over a copy of the
    // data made of hard links (the same files, so the same page cache), its node pinned to
    // core 0 as `bench-a` is.
    let solo_data = dir.path().join("solo");
    link_copy(&data.join("ssb"), &solo_data.join("ssb"));
    let solo_storage = solo_data.display().to_string();
    let solo = Apiary::open_with(ApiaryOptions {
        memory_tier: Some(a.memory_tier),
        flight: flight_options(),
        ..ApiaryOptions::new(StorageUri::parse(&solo_storage).expect("uri"))
    })
    .await
    .expect("open the copy");
    let state = dir.path().join("state");
    let nodes = Nodes(
        [
            (&solo_storage, "bench-solo", 0),
            (&storage, "bench-a", 0),
            (&storage, "bench-b", 1),
        ]
        .map(|(at, id, core)| node(at, &state, id, core, &a.task_poll, a.memory_tier))
        .into(),
    );
    wait_alive(&solo, &["bench-solo"]).await;
    wait_alive(&ap, &["bench-a", "bench-b"]).await;
    let mut alone = session(&solo, "always").await;
    let mut spread = session(&ap, "always").await;
    // The newcomer's cache fills as it is given cells, and the split follows once its
    // heartbeats report them (a few queries): the speed-up is measured after that, in the
    // steady state the one-bee baseline is measured in too.
    for (name, sql) in QUERIES {
        for s in [&mut spread, &mut alone] {
            s.sql(sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    apiary_storage::time::sleep(Duration::from_millis(1500)).await;
    let mut sides = [
        side(&ap, "never", true).await,
        side(&ap, "never", false).await,
        Side::Session {
            session: Box::new(alone),
            pinned: false,
        },
        Side::Session {
            session: Box::new(spread),
            pinned: false,
        },
        // The machine's own two-core scaling: one process, two bees, no distribution.
        Side::Session {
            session: Box::new(local_session(&ap, "never", 2).await),
            pinned: false,
        },
        // The ceiling: two whole copies at once in two one-bee processes.
        Side::Twins(Box::new(Twins::start(&storage, a.memory_tier).await)),
    ];
    let [
        one_bee,
        one_bee_unpinned,
        one_node,
        two_nodes,
        two_bees,
        twins,
    ]: [Vec<_>; 6] = time_interleaved(&mut sides, a.runs)
        .await
        .try_into()
        .expect("six sides");
    drop(sides);
    let mut spread = session(&ap, "always").await;
    // Where the time of a distributed query goes: each task's time on its worker (Q2.1, or
    // every query with `--explain 1`).
    let shown = if a.explain > 0 {
        0..QUERIES.len()
    } else {
        3..4
    };
    for (name, sql) in &QUERIES[shown] {
        explain(&mut spread, name, sql, a.explain > 1).await;
    }

    println!(
        "\nquery   1 bee (1 core)   1 bee (2 cores)   1 node   2 nodes   speed-up (1 bee / 2 nodes)   (1 node / 2 nodes)   2 bees in 1 process   ceiling (2 copies at once)"
    );
    let mut ratios = Vec::new();
    let mut node_ratios = Vec::new();
    let mut unpinned_ratios = Vec::new();
    let mut local_ratios = Vec::new();
    let mut ceiling_ratios = Vec::new();
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        assert_eq!(
            one_node[i].rows, one_bee[i].rows,
            "{name}: one node differs from local"
        );
        assert_eq!(
            two_nodes[i].rows, one_bee[i].rows,
            "{name}: two nodes differ from local"
        );
        assert_eq!(
            two_bees[i].rows, one_bee[i].rows,
            "{name}: two bees differ from one"
        );
        assert_eq!(
            twins[i].rows, one_bee[i].rows,
            "{name}: the twins differ from one bee"
        );
        let [bee, unpinned, node, nodes, bees, twin] = [
            &one_bee[i],
            &one_bee_unpinned[i],
            &one_node[i],
            &two_nodes[i],
            &two_bees[i],
            &twins[i],
        ]
        .map(Timed::median);
        let ceiling = bee / twin;
        ceiling_ratios.push(ceiling);
        let ratio = bee / nodes;
        ratios.push(ratio);
        let scaling = node / nodes;
        node_ratios.push(scaling);
        unpinned_ratios.push(unpinned / nodes);
        let local = bee / bees;
        local_ratios.push(local);
        println!(
            "{name:<6} {:>12.0} ms {:>14.0} ms {:>6.0} ms {:>7.0} ms   {ratio:>24.2}x   {scaling:>17.2}x   {:>6.0} ms {local:.2}x   {:>12.0} ms {ceiling:.2}x",
            bee * 1e3,
            unpinned * 1e3,
            node * 1e3,
            nodes * 1e3,
            bees * 1e3,
            twin * 1e3
        );
    }
    println!(
        "geometric mean speed-up, two one-bee nodes over one bee: {:.2}x (task poll {})",
        geo_mean(&ratios),
        a.task_poll
    );
    println!(
        "two one-bee nodes over one one-bee node (its own swarm, same rounds): {:.2}x",
        geo_mean(&node_ratios)
    );
    println!(
        "(over one bee whose process may use both cores for I/O threads: {:.2}x)",
        geo_mean(&unpinned_ratios)
    );
    println!(
        "the machine's own scaling, two bees in one process over one bee: {:.2}x",
        geo_mean(&local_ratios)
    );
    println!(
        "the machine's ceiling for two one-bee processes, two whole copies at once over one bee: {:.2}x ({:.0}% of it reached by two nodes)",
        geo_mean(&ceiling_ratios),
        100.0 * geo_mean(&ratios) / geo_mean(&ceiling_ratios)
    );
    // The same means round by round: the drift the medians above smooth out.
    println!(
        "round by round: two nodes {} (over one node {}); two bees in one process {}; ceiling {}",
        range(&round_geo_means(&one_bee, &two_nodes)),
        range(&round_geo_means(&one_node, &two_nodes)),
        range(&round_geo_means(&one_bee, &two_bees)),
        range(&round_geo_means(&one_bee, &twins))
    );
    drop(nodes);

    // The fixed cost at the defaults (task poll 1 s): a query over one tiny frame.
    let _ = ap.drop_frame("ssb", "sf", "tiny").await;
    ap.create_frame("ssb", "sf", "tiny", &[("x", "int64")], &[])
        .await
        .expect("tiny");
    let batch = arrow_array::RecordBatch::try_from_iter([(
        "x",
        Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as _,
    )])
    .expect("batch");
    ap.write_to_frame("ssb", "sf", "tiny", [batch])
        .await
        .expect("write tiny");
    let tiny = "SELECT SUM(x) FROM tiny";
    let mut plain = session(&ap, "never").await;
    let mut spread = session(&ap, "always").await;
    // On idle nodes (fresh ones, never given a task: they look every second), on active
    // ones (given a task in the last minute: they look four times as often), and as a
    // script's next statement (published right after the last answer: the nodes finished a
    // task within 100 ms and look every millisecond).
    let mut idle = Vec::new();
    let mut active = Vec::new();
    let mut next = Vec::new();
    // The storage requests of the last distributed tiny query.
    let mut requests = Default::default();
    for i in 0..(a.runs * 3).max(5) {
        let ids = [format!("tiny-a{i}"), format!("tiny-b{i}")];
        let pair = Nodes(vec![
            node(&storage, &state, &ids[0], 0, "1s", a.memory_tier),
            node(&storage, &state, &ids[1], 1, "1s", a.memory_tier),
        ]);
        wait_alive(&ap, &[&ids[0], &ids[1]]).await;
        // The coordinator's list of workers is at most two seconds old.
        apiary_storage::time::sleep(Duration::from_millis(2100)).await;
        // Idle once per pair; active and right after another `--tiny-per-pair` times each.
        let mut plan: Vec<(u8, bool, usize)> = vec![(0, true, 0)];
        for k in 0..a.tiny_per_pair {
            plan.push((1, true, k));
            plan.push((2, false, k));
        }
        for (which, wait, k) in plan {
            let added = match which {
                0 => &mut idle,
                1 => &mut active,
                _ => &mut next,
            };
            // Queries arrive at any point of the workers' poll cycle, not in step with it.
            if wait {
                let ms = 137 * (i * a.tiny_per_pair + k) as u64 % 1000;
                apiary_storage::time::sleep(Duration::from_millis(ms)).await;
            }
            let t = Instant::now();
            plain.sql(tiny).await.expect("local tiny");
            let base = t.elapsed().as_secs_f64();
            let before = counts.snapshot();
            let t = Instant::now();
            spread.sql(tiny).await.expect("distributed tiny");
            added.push(t.elapsed().as_secs_f64() - base);
            // The query's objects are removed after its answer: counted with it.
            ap.settle().await;
            requests = counts.snapshot() - before;
        }
        drop(pair);
    }
    for (what, mut added) in [
        ("idle nodes", idle),
        ("active nodes", active),
        ("active nodes, right after another", next),
    ] {
        added.sort_by(f64::total_cmp);
        let mean = added.iter().sum::<f64>() / added.len() as f64;
        println!(
            "tiny query on {what}, distributed at the default 1 s task poll{}: adds {:.1} ms mean, {:.1} ms median, {:.1} ms p99, {:.1} ms max over {} runs",
            if a.flight { " over Flight" } else { "" },
            mean * 1e3,
            added[added.len() / 2] * 1e3,
            added[(added.len() * 99 / 100).min(added.len() - 1)] * 1e3,
            added[added.len() - 1] * 1e3,
            added.len()
        );
    }
    println!(
        "coordinator storage requests per distributed tiny query: {} ({} GET, {} HEAD, {} PUT, {} LIST, {} DELETE)",
        requests.total(),
        requests.get,
        requests.head,
        requests.put + requests.conditional_put,
        requests.list,
        requests.delete
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int32Array;
    use arrow_schema::{DataType, Field, Schema};

    #[test]
    fn round_means_pair_the_runs_of_one_round_and_come_sorted() {
        let timed = |seconds: &[f64]| Timed {
            seconds: seconds.to_vec(),
            rows: Vec::new(),
        };
        // Round 0: speed-ups 2 and 8 (mean 4); round 1: 1 and 1; round 2: 3 and 3.
        let base = [timed(&[2.0, 1.0, 3.0]), timed(&[8.0, 5.0, 6.0])];
        let faster = [timed(&[1.0, 1.0, 1.0]), timed(&[1.0, 5.0, 2.0])];
        let means = round_geo_means(&base, &faster);
        let want = [1.0, 3.0, 4.0];
        assert_eq!(means.len(), want.len());
        for (got, want) in means.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{means:?}");
        }
        assert_eq!(range(&means), "1.00x to 4.00x over 3 rounds");
        assert_eq!(range(&[]), "no rounds");
    }

    #[test]
    fn a_link_copy_shares_the_files_and_keeps_them_apart_when_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("data/ssb");
        std::fs::create_dir_all(from.join("f")).unwrap();
        std::fs::write(from.join("f/cell.parquet"), b"rows").unwrap();
        let to = dir.path().join("solo/ssb");
        link_copy(&from, &to);
        let (a, b) = (from.join("f/cell.parquet"), to.join("f/cell.parquet"));
        assert_eq!(std::fs::read(&b).unwrap(), b"rows");
        // One file (one page cache) while neither side writes.
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
        // Storage replaces an object by renaming a new file over it: the other side keeps its own.
        std::fs::write(to.join("f/new"), b"other").unwrap();
        std::fs::rename(to.join("f/new"), &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"rows");
    }

    #[test]
    fn parts_are_equal_to_a_row_and_keep_every_row_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        let mut next = 0;
        let batches: Vec<RecordBatch> = [7, 64, 1, 30, 0, 5]
            .iter()
            .map(|&n| {
                let values: Vec<i32> = (next..next + n).collect();
                next += n;
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(values))])
                    .unwrap()
            })
            .collect();
        for parts in [1, 2, 3, 16, 107, 500] {
            let cut = equal_parts(&batches, parts);
            let sizes: Vec<usize> = cut
                .iter()
                .map(|p| p.iter().map(RecordBatch::num_rows).sum())
                .collect();
            assert_eq!(sizes.len(), parts.min(107), "{parts}");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{parts}: {sizes:?}");
            let values: Vec<i32> = cut
                .iter()
                .flatten()
                .flat_map(|b| {
                    let col = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
                    col.values().to_vec()
                })
                .collect();
            assert_eq!(values, (0..107).collect::<Vec<_>>(), "{parts}");
        }
    }
}
