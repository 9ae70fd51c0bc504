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
//! `--tiny-only 1` measures only the fixed cost of the tiny query; `--idle-samples N`
//! (default 3) queries on nodes idle for `--idle-secs` (default 61, past a node's busy
//! window) take that long each.
//!
//! `--flight 1` runs it all over Arrow Flight: the nodes serve it on loopback and the
//! coordinators push their tasks over it (compare with a run without it).
//!
//! After the table of times it prints where the CPU went: per query, this process (the
//! coordinator) and each node, idle ones included, and what one node spends on each query
//! against two together, and how evenly the two nodes' tasks end (`--balance-runs N`
//! `EXPLAIN ANALYZE` runs a query, default 3).
//!
//! Every distributed answer is checked against the local one. The memory tier is off on
//! every side by default, so the speed-up is that of the scans and joins themselves;
//! `--memory-tier BYTES` (say 1073741824) gives every side a tier, to compare warm nodes.
//! The nodes look for tasks every `--task-poll` (default `20ms`; a busy node looks four
//! times as often): on a local folder a look is one `stat`, so a short interval costs
//! little, and it is what a query waits for its tasks to be picked up.

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
mod balance;
mod processes;
mod timing;
mod tiny;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apiary::apiary_ledger::{FrameDefinition, FrameRef, FrameSchema};
use apiary::apiary_storage::{StorageUri, counted_backend};
use apiary::{Apiary, ApiaryOptions, SqlSession};
use apiary_benches::harness::{flag, flags, geo_mean, load_apiary, result_rows};
use apiary_benches::ssb::{QUERIES, generate};

use processes::{Nodes, Twins, link_copy, node, serve, wait_alive};
use timing::{CpuUse, Side, Timed, range, round_geo_means, side, time_interleaved};

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
    /// `--tiny-only 1`: only the tiny query's fixed cost, not the SSB speed-up.
    tiny_only: bool,
    /// Tiny queries on nodes idle for `idle_secs` (`--idle-samples`, default 3).
    idle_samples: usize,
    /// How long the nodes idle before each of those (`--idle-secs`, default 61: past a
    /// node's busy window).
    idle_secs: u64,
    /// `EXPLAIN ANALYZE` runs a query for how evenly the two tasks end (`--balance-runs`,
    /// default 3; 0 skips it).
    balance_runs: usize,
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
        "tiny-only",
        "idle-samples",
        "idle-secs",
        "balance-runs",
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
        tiny_only: flag(&f, "tiny-only", 0) != 0,
        idle_samples: flag(&f, "idle-samples", 3),
        idle_secs: flag(&f, "idle-secs", 61),
        balance_runs: flag(&f, "balance-runs", 3),
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

/// Prints the wall time of `sql` under EXPLAIN ANALYZE and its task lines.
async fn explain(s: &mut SqlSession, on: &str, name: &str, sql: &str, full: bool) {
    let t = Instant::now();
    let plan = result_rows(
        &s.sql(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .expect("explain"),
    );
    let wall = t.elapsed();
    println!("{name} on {on}, {:.0} ms in all:", wall.as_secs_f64() * 1e3);
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
    apiary_benches::allocate_like_a_node();
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

    let state = dir.path().join("state");
    if a.tiny_only {
        tiny::measure(&ap, &counts, &storage, &state, &a).await;
        return;
    }

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
    let watched: Vec<u32> = std::iter::once(std::process::id())
        .chain(nodes.0.iter().map(|c| c.id()))
        .collect();
    let (timed, cpu) = time_interleaved(&mut sides, a.runs, &watched).await;
    let [
        one_bee,
        one_bee_unpinned,
        one_node,
        two_nodes,
        two_bees,
        twins,
    ]: [Vec<_>; 6] = timed.try_into().expect("six sides");
    drop(sides);
    let mut spread = session(&ap, "always").await;
    let mut alone = session(&solo, "always").await;
    // Where the time of a distributed query goes: each task's time on its worker, on one
    // node and on two (Q2.1, or every query with `--explain 1`).
    let shown = if a.explain > 0 {
        0..QUERIES.len()
    } else {
        3..4
    };
    for (name, sql) in &QUERIES[shown] {
        explain(&mut alone, "one node", name, sql, a.explain > 1).await;
        explain(&mut spread, "two nodes", name, sql, a.explain > 1).await;
    }

    println!(
        "\nquery   1 bee (1 core)   1 bee (2 cores)   1 node   2 nodes   speed-up (1 bee / 2 nodes)   (1 node / 2 nodes)   2 bees in 1 process   ceiling (2 copies at once)"
    );
    let mut ratios = Vec::new();
    let mut node_ratios = Vec::new();
    let mut unpinned_ratios = Vec::new();
    let mut local_ratios = Vec::new();
    let mut ceiling_ratios = Vec::new();
    let mut two_node_ms = Vec::new();
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
        two_node_ms.push(nodes * 1e3);
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
    print_cpu(&cpu);
    if a.balance_runs > 0 {
        balance::report(&mut spread, &QUERIES, &two_node_ms, a.balance_runs).await;
    }
    drop(nodes);

    tiny::measure(&ap, &counts, &storage, &state, &a).await;
}

/// Where each side's CPU went, per query: this process (the coordinator, or the one-bee
/// baseline) and each node, idle ones included (their task polls and heartbeats).
fn print_cpu(cpu: &CpuUse) {
    println!(
        "\nCPU per query, mean over every query and round (ms): this process | bench-solo | bench-a | bench-b"
    );
    for (side, name) in [(0, "1 bee (1 core)"), (2, "1 node"), (3, "2 nodes")] {
        let ms: Vec<String> = (0..cpu.processes())
            .map(|p| format!("{:.1}", cpu.per_query_ms(side, p)))
            .collect();
        println!("  {name:<15} {}", ms.join(" | "));
    }
    // The nodes' work per query: what one node spends on it against what two spend
    // together (each task repeats its planning and its dimension frames' scans and hash
    // tables).
    println!("node CPU per query (ms): one node | two nodes together | two over one");
    for (q, (name, _)) in QUERIES.iter().enumerate() {
        let one = cpu.query_ms(2, q, 1);
        let two = cpu.query_ms(3, q, 2) + cpu.query_ms(3, q, 3);
        println!("  {name:<6} {one:>7.1} | {two:>7.1} | {:+.1}", two - one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int32Array;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

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
