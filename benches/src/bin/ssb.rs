//! The Star Schema Benchmark, three ways over the same Parquet files: Apiary (SQL through
//! its catalog, ledger and cell pruning), plain DataFusion over the cells Apiary wrote, and
//! DuckDB (the Python package, when installed). Also measures write throughput (Apiary's
//! `write_to_frame` against DataFusion writing the same batches as Parquet) and planning
//! overhead on a frame of 1 000 cells.
//!
//! Two passes over Apiary: with the memory tier off (what a first query pays once the files
//! are in the OS page cache and their footers in DataFusion's cache), and warm, with the
//! memory tier on and every query run twice before it is timed (read, then admitted), as on
//! a node that answers the same dashboards all day. Peak memory of the warm pass is printed
//! next to the tier's share and the memory budget.
//!
//! `cargo run --release -p apiary-benches --bin ssb -- --sf 1 --runs 5`
//!
//! `--explain Q3.2` times one query and its planning alone on both engines over `--runs` runs
//! (wall and CPU time), prints both engines' `EXPLAIN ANALYZE` of it and stops;
//! `--set key=value,...` applies DataFusion settings to both.

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use apiary::apiary_storage::StorageUri;
use apiary::{Apiary, ApiaryOptions, SqlSession};
use apiary_benches::harness::{
    datafusion_over_cells, flag, flags, geo_mean, load_apiary, median, result_rows, rows,
    run_datafusion,
};
use apiary_benches::ssb::{QUERIES, Table, generate};
use apiary_query::datafusion::dataframe::DataFrameWriteOptions;
use apiary_query::datafusion::prelude::SessionContext;
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

struct Args {
    sf: f64,
    runs: usize,
    seed: u64,
    /// DataFusion settings for Apiary's sessions and plain DataFusion alike
    /// (`--set datafusion.execution.parquet.pushdown_filters=true,…`).
    settings: Vec<(String, String)>,
    /// Print Apiary's and DataFusion's `EXPLAIN ANALYZE` of this query (`Q3.2`), then stop.
    explain: Option<String>,
}

fn args() -> Args {
    let f = flags(&["sf", "runs", "seed", "set", "explain"]);
    let settings = f
        .get("set")
        .map(|list| {
            list.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    let (k, v) = s
                        .split_once('=')
                        .unwrap_or_else(|| panic!("--set takes key=value pairs, not `{s}`"));
                    (k.trim().to_string(), v.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Args {
        sf: flag(&f, "sf", 1.0),
        runs: flag(&f, "runs", 5),
        seed: flag(&f, "seed", 42),
        settings,
        explain: f.get("explain").cloned(),
    }
}

/// `SET key = value` statements for `settings`.
fn set_statements(settings: &[(String, String)]) -> Vec<String> {
    settings
        .iter()
        .map(|(k, v)| format!("SET {k} = '{v}'"))
        .collect()
}

/// Seconds DataFusion takes to write the same batches as Parquet (its defaults: zstd).
async fn datafusion_write(tables: &[Table], dir: &Path) -> f64 {
    let ctx = SessionContext::new();
    let mut seconds = 0.0;
    for table in tables {
        let frame = ctx.read_batches(table.batches.clone()).expect("batches");
        let start = Instant::now();
        frame
            .write_parquet(
                &format!("{}/{}/", dir.display(), table.name),
                DataFrameWriteOptions::new(),
                None,
            )
            .await
            .expect("DataFusion write");
        seconds += start.elapsed().as_secs_f64();
    }
    seconds
}

/// What DuckDB measured: seconds to write every table from memory with `COPY … TO`
/// (Parquet, zstd), and per-query medians in ms over the same cells.
struct Duck {
    write_s: f64,
    query_ms: Vec<f64>,
}

/// DuckDB's figures, or `None` without DuckDB.
fn duckdb(root: &Path, runs: usize) -> Option<Duck> {
    let have = Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .ok()?
        .success();
    if !have {
        eprintln!("DuckDB (python3 -m pip install duckdb) not installed: skipping it");
        return None;
    }
    let queries: Vec<&str> = QUERIES.iter().map(|(_, q)| *q).collect();
    let script = format!(
        r#"
import duckdb, json, os, tempfile, time
root = {root:?}
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
tables = ["dwdate", "customer", "supplier", "part", "lineorder"]
for t in tables:
    con.execute(f"CREATE VIEW {{t}} AS SELECT * FROM read_parquet('{{root}}/ssb/sf/{{t}}/data/*.parquet')")
write = 0.0
with tempfile.TemporaryDirectory() as d:
    for t in tables:
        con.execute(f"CREATE TABLE mem_{{t}} AS SELECT * FROM {{t}}")
        s = time.perf_counter()
        con.execute(f"COPY mem_{{t}} TO '{{d}}/{{t}}.parquet' (FORMAT parquet, COMPRESSION zstd)")
        write += time.perf_counter() - s
        con.execute(f"DROP TABLE mem_{{t}}")
print(write)
out = []
for q in json.loads({queries:?}):
    con.execute(q).fetchall()
    times = []
    for _ in range({runs}):
        s = time.perf_counter(); con.execute(q).fetchall(); times.append((time.perf_counter() - s) * 1000)
    times.sort(); out.append(times[len(times) // 2])
print(json.dumps(out))
"#,
        root = root.display().to_string(),
        queries = serde_json_string(&queries),
        runs = runs,
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("DuckDB failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let parsed = (|| {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let write_s = lines.next()?.trim().parse().ok()?;
        let inner = lines
            .next()?
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let query_ms: Vec<f64> = inner
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        (query_ms.len() == QUERIES.len()).then_some(Duck { write_s, query_ms })
    })();
    if parsed.is_none() {
        eprintln!("DuckDB's output could not be read: {text}");
    }
    parsed
}

/// The queries as a JSON array of strings (they hold no quotes or backslashes that need
/// more than this).
fn serde_json_string(queries: &[&str]) -> String {
    let items: Vec<String> = queries
        .iter()
        .map(|q| format!("\"{}\"", q.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", items.join(","))
}

/// Resets the process's peak resident memory (Linux: `clear_refs` 5), where it can.
fn reset_peak_memory() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("cannot reset the peak memory mark: the peak covers the whole run");
    }
}

/// One timed run of an engine: wall milliseconds and CPU ticks.
#[derive(Clone, Copy)]
struct Timed {
    ms: f64,
    ticks: u64,
}

/// `runs` runs of `sql` on Apiary (`[0]`) and on DataFusion (`[1]`), interleaved so drift in
/// the machine's speed hits both alike, each engine first in every other pair (whichever
/// runs second finds the other's freed memory and warmed caches).
async fn interleaved(
    session: &mut SqlSession,
    df: &SessionContext,
    sql: &str,
    runs: usize,
) -> [Vec<Timed>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for engine in [run % 2, 1 - run % 2] {
            let (s, c) = (Instant::now(), cpu_ticks());
            if engine == 0 {
                session.sql(sql).await.expect("apiary");
            } else {
                run_datafusion(df, sql).await;
            }
            out[engine].push(Timed {
                ms: s.elapsed().as_secs_f64() * 1000.0,
                ticks: cpu_ticks().saturating_sub(c),
            });
        }
    }
    out
}

/// User and system CPU time of this process so far, in clock ticks (0 where unknown).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// The process's peak resident memory in bytes (Linux `VmHWM`).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Median ms to plan (EXPLAIN) a filtered query over a frame of 1 000 cells, on a warm node,
/// for Apiary and for DataFusion over the same files.
async fn planning(root: &Path, runs: usize) -> (f64, f64) {
    let ap = Apiary::open(root.to_str().expect("utf-8"))
        .await
        .expect("open");
    ap.create_hive("plan").await.expect("hive");
    ap.create_box("plan", "b").await.expect("box");
    ap.create_frame(
        "plan",
        "b",
        "cells",
        &[("k", "int64"), ("v", "int64")],
        &["k"],
    )
    .await
    .expect("frame");
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]));
    for half in 0..2 {
        let ks: Vec<i64> = (0..5_000).map(|i| half * 500 + i % 500).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(Int64Array::from(ks.clone())),
                std::sync::Arc::new(Int64Array::from_iter_values(ks.iter().map(|k| k * 7))),
            ],
        )
        .expect("batch");
        ap.write_to_frame("plan", "b", "cells", [batch])
            .await
            .expect("write");
    }
    let cells = ap
        .describe_frame("plan", "b", "cells")
        .await
        .expect("describe")
        .cells;
    assert_eq!(cells, 1_000);
    let query = "EXPLAIN SELECT SUM(v) FROM {t} WHERE v > 3000";
    let ours = query.replace("{t}", "plan.b.cells");
    let df = SessionContext::new();
    df.register_parquet(
        "cells",
        format!("{}/plan/b/cells/data/", root.display()),
        Default::default(),
    )
    .await
    .expect("register");
    let theirs = query.replace("{t}", "cells");
    let mut a = Vec::new();
    let mut d = Vec::new();
    for i in 0..runs.max(5) * 4 + 1 {
        let s = Instant::now();
        ap.sql(&ours).await.expect("explain");
        let t = s.elapsed().as_secs_f64() * 1000.0;
        let s = Instant::now();
        run_datafusion(&df, &theirs).await;
        let u = s.elapsed().as_secs_f64() * 1000.0;
        if i > 0 {
            a.push(t);
            d.push(u);
        }
    }
    (median(a), median(d))
}

#[tokio::main]
async fn main() {
    apiary_benches::allocate_like_a_node();
    let args = args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "SSB at SF {} ({} runs per query, {cores} cores)",
        args.sf, args.runs
    );
    let start = Instant::now();
    let tables = generate(args.sf, args.seed);
    let total_rows: usize = tables.iter().map(Table::rows).sum();
    println!(
        "generated {total_rows} rows in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("apiary");
    let open = |tier: Option<u64>| {
        let uri = StorageUri::Local(root.clone());
        Apiary::open_with(ApiaryOptions {
            memory_tier: tier,
            ..ApiaryOptions::new(uri)
        })
    };
    let ap = open(Some(0)).await.expect("open");
    let write_apiary = load_apiary(&ap, "ssb", "sf", &tables).await;
    let write_df = datafusion_write(&tables, &dir.path().join("datafusion")).await;
    println!(
        "write: Apiary {write_apiary:.2} s ({:.2} M rows/s), DataFusion {write_df:.2} s: ratio {:.2}",
        total_rows as f64 / write_apiary / 1e6,
        write_apiary / write_df
    );

    let df = datafusion_over_cells(&root, "ssb", "sf", &tables, cores).await;
    let mut session = ap.sql_session().expect("session");
    session.sql("USE ssb.sf").await.expect("use");
    for set in set_statements(&args.settings) {
        session.sql(&set).await.expect("Apiary setting");
        run_datafusion(&df, &set).await;
        println!("{set}");
    }
    if let Some(query) = &args.explain {
        let (_, sql) = QUERIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(query))
            .unwrap_or_else(|| panic!("--explain takes a query name such as Q3.2, not `{query}`"));
        let analyze = format!("EXPLAIN ANALYZE {sql}");
        // Total wall and CPU time of each engine over the runs, running the query and
        // planning it alone.
        let plan = format!("EXPLAIN {sql}");
        for (what, sql) in [("query", *sql), ("planning", plan.as_str())] {
            let [a, d] = interleaved(&mut session, &df, sql, args.runs).await;
            let total = |t: &[Timed]| {
                (
                    t.iter().map(|t| t.ms).sum::<f64>(),
                    t.iter().map(|t| t.ticks).sum::<u64>(),
                )
            };
            let ((a_ms, a_ticks), (d_ms, d_ticks)) = (total(&a), total(&d));
            println!(
                "{what}, {} runs: Apiary {a_ms:.1} ms wall, {a_ticks} CPU ticks; DataFusion \
                 {d_ms:.1} ms wall, {d_ticks} CPU ticks",
                args.runs
            );
        }
        let ours = session.sql(&analyze).await.expect("apiary");
        println!("Apiary:\n{}", result_rows(&ours).join("\n"));
        let theirs = run_datafusion(&df, &analyze).await;
        println!("DataFusion:\n{}", rows(&theirs).join("\n"));
        return;
    }
    let duck = duckdb(&root, args.runs);
    if let Some(duck) = &duck {
        println!(
            "write: DuckDB COPY TO Parquet (zstd) {:.2} s: Apiary / DuckDB {:.2}",
            duck.write_s,
            write_apiary / duck.write_s
        );
    }
    let duck = duck.map(|d| d.query_ms);
    let mut ratios = Vec::new();
    let mut duck_ratios = Vec::new();
    let mut df_ms = Vec::new();
    let mut apiary_ms = Vec::new();
    println!(
        "{:<6} {:>11} {:>14} {:>7} {:>10}",
        "query", "apiary ms", "datafusion ms", "ratio", "duckdb ms"
    );
    for (i, (name, sql)) in QUERIES.iter().enumerate() {
        // Warm both (footers cached, files in the page cache) and check they agree.
        let ours = result_rows(&session.sql(sql).await.expect("apiary"));
        let theirs = rows(&run_datafusion(&df, sql).await);
        assert_eq!(ours, theirs, "{name}: Apiary and DataFusion disagree");
        let [a, d] = interleaved(&mut session, &df, sql, args.runs).await;
        let ms = |t: Vec<Timed>| t.into_iter().map(|t| t.ms).collect::<Vec<_>>();
        let (a, d) = (ms(a), ms(d));
        let (a, d) = (median(a), median(d));
        ratios.push(a / d);
        df_ms.push(d);
        apiary_ms.push(a);
        let duck_ms = duck.as_ref().and_then(|v| v.get(i).copied());
        if let Some(k) = duck_ms {
            duck_ratios.push(a / k);
        }
        println!(
            "{name:<6} {a:>11.1} {d:>14.1} {:>7.3} {:>10}",
            a / d,
            duck_ms.map_or("-".to_string(), |k| format!("{k:.1}"))
        );
    }
    println!(
        "geometric mean of Apiary / DataFusion: {:.3}",
        geo_mean(&ratios)
    );
    println!(
        "geometric mean of query times: Apiary {:.1} ms, DataFusion {:.1} ms",
        geo_mean(&apiary_ms),
        geo_mean(&df_ms)
    );
    if !duck_ratios.is_empty() {
        println!(
            "geometric mean of Apiary / DuckDB: {:.3}",
            geo_mean(&duck_ratios)
        );
    }

    // The warm pass: the memory tier on (its default share), each query read and admitted
    // before it is timed. Peak memory is measured from here on.
    drop(session);
    drop(tables);
    reset_peak_memory();
    let warm = open(None).await.expect("open");
    let mut session = warm.sql_session().expect("session");
    session.sql("USE ssb.sf").await.expect("use");
    for set in set_statements(&args.settings) {
        session.sql(&set).await.expect("Apiary setting");
    }
    let mut warm_df = Vec::new();
    let mut warm_duck = Vec::new();
    let mut warm_ms = Vec::new();
    println!(
        "{:<6} {:>14} {:>7} {:>11}",
        "query", "warm apiary ms", "vs df", "vs duckdb"
    );
    for (i, (name, sql)) in QUERIES.iter().enumerate() {
        for _ in 0..2 {
            session.sql(sql).await.expect("apiary");
        }
        let mut w = Vec::new();
        for _ in 0..args.runs {
            let s = Instant::now();
            session.sql(sql).await.expect("apiary");
            w.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        let w = median(w);
        warm_ms.push(w);
        warm_df.push(w / df_ms[i]);
        let duck_ms = duck.as_ref().and_then(|v| v.get(i).copied());
        if let Some(k) = duck_ms {
            warm_duck.push(w / k);
        }
        println!(
            "{name:<6} {w:>14.1} {:>7.3} {:>11}",
            w / df_ms[i],
            duck_ms.map_or("-".to_string(), |k| format!("{:.3}", w / k))
        );
    }
    println!(
        "geometric mean of warm Apiary / DataFusion: {:.3} (warm Apiary {:.1} ms)",
        geo_mean(&warm_df),
        geo_mean(&warm_ms)
    );
    if !warm_duck.is_empty() {
        println!(
            "geometric mean of warm Apiary / DuckDB: {:.3}",
            geo_mean(&warm_duck)
        );
    }
    let tier = warm.memory_tier().expect("tier");
    let capacity = apiary::apiary_swarm::detect_capacity(None);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "memory: peak RSS of the warm pass {:.0} MiB; the tier holds {:.0} MiB in {} columns \
         (share {:.0} MiB of a {:.0} MiB budget)",
        mib(peak_memory().unwrap_or_default()),
        mib(tier.bytes),
        tier.columns,
        mib(tier.share_bytes),
        mib(capacity.memory_per_bee_bytes * u64::from(capacity.bees)),
    );
    drop(session);
    let (plan_apiary, plan_df) = planning(&dir.path().join("plan"), args.runs).await;
    println!(
        "planning (EXPLAIN, 1 000 cells, warm): Apiary {plan_apiary:.2} ms, DataFusion {plan_df:.2} ms"
    );
}
