//! The Star Schema Benchmark, three ways over the same Parquet files: Apiary (SQL through
//! its catalog, ledger and cell pruning), plain DataFusion over the cells Apiary wrote, and
//! DuckDB (the Python package, when installed). Also measures write throughput (Apiary's
//! `write_to_frame` against DataFusion writing the same batches as Parquet) and planning
//! overhead on a frame of 1 000 cells.
//!
//! `cargo run --release -p apiary-benches --bin ssb -- --sf 1 --runs 5`

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use apiary::Apiary;
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
}

fn args() -> Args {
    let f = flags(&["sf", "runs", "seed"]);
    Args {
        sf: flag(&f, "sf", 1.0),
        runs: flag(&f, "runs", 5),
        seed: flag(&f, "seed", 42),
    }
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

/// Per-query medians in ms from DuckDB over the same cells, or `None` without DuckDB.
fn duckdb(root: &Path, runs: usize) -> Option<Vec<f64>> {
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
import duckdb, json, os, time
root = {root:?}
con = duckdb.connect()
for t in ["dwdate", "customer", "supplier", "part", "lineorder"]:
    con.execute(f"CREATE VIEW {{t}} AS SELECT * FROM read_parquet('{{root}}/ssb/sf/{{t}}/data/*.parquet')")
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
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    Some(
        inner
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect(),
    )
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
    let ap = Apiary::open(root.to_str().expect("utf-8"))
        .await
        .expect("open");
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
    let duck = duckdb(&root, args.runs);
    let mut ratios = Vec::new();
    let mut duck_ratios = Vec::new();
    println!(
        "{:<6} {:>11} {:>14} {:>7} {:>10}",
        "query", "apiary ms", "datafusion ms", "ratio", "duckdb ms"
    );
    for (i, (name, sql)) in QUERIES.iter().enumerate() {
        // Warm both (footers cached, files in the page cache) and check they agree.
        let ours = result_rows(&session.sql(sql).await.expect("apiary"));
        let theirs = rows(&run_datafusion(&df, sql).await);
        assert_eq!(ours, theirs, "{name}: Apiary and DataFusion disagree");
        let mut a = Vec::new();
        let mut d = Vec::new();
        // Interleaved, so drift in the machine's speed hits both alike.
        for _ in 0..args.runs {
            let s = Instant::now();
            session.sql(sql).await.expect("apiary");
            a.push(s.elapsed().as_secs_f64() * 1000.0);
            let s = Instant::now();
            run_datafusion(&df, sql).await;
            d.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        let (a, d) = (median(a), median(d));
        ratios.push(a / d);
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
    if !duck_ratios.is_empty() {
        println!(
            "geometric mean of Apiary / DuckDB: {:.3}",
            geo_mean(&duck_ratios)
        );
    }
    let (plan_apiary, plan_df) = planning(&dir.path().join("plan"), args.runs).await;
    println!(
        "planning (EXPLAIN, 1 000 cells, warm): Apiary {plan_apiary:.2} ms, DataFusion {plan_df:.2} ms"
    );
}
