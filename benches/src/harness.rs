//! Apiary next to plain DataFusion on the same data: load tables through `write_to_frame`,
//! and register the very cells Apiary wrote as DataFusion Parquet tables, so the two engines
//! differ only in what Apiary adds (catalog, ledger, cell pruning).

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::path::Path;

use apiary::apiary_ledger::{FrameDefinition, FrameRef, FrameSchema};
use apiary::apiary_query::datafusion;
use apiary::{Apiary, QueryResult};
use arrow_array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

use crate::ssb::Table;

/// Creates `hive.box` and one frame per table, and writes each table in one commit.
/// Returns the seconds spent writing.
pub async fn load_apiary(ap: &Apiary, hive: &str, r#box: &str, tables: &[Table]) -> f64 {
    ap.create_hive(hive).await.expect("create hive");
    ap.create_box(hive, r#box).await.expect("create box");
    let mut seconds = 0.0;
    for table in tables {
        create_frame_for(ap, hive, r#box, table).await;
        let start = std::time::Instant::now();
        ap.write_to_frame(hive, r#box, table.name, table.batches.clone())
            .await
            .expect("write");
        seconds += start.elapsed().as_secs_f64();
    }
    seconds
}

/// A plain DataFusion session with each table registered over the cells Apiary wrote for it
/// under the local folder `root`.
pub async fn datafusion_over_cells(
    root: &Path,
    hive: &str,
    r#box: &str,
    tables: &[Table],
    target_partitions: usize,
) -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_target_partitions(target_partitions),
    );
    for table in tables {
        let dir = root.join(hive).join(r#box).join(table.name).join("data");
        ctx.register_parquet(
            table.name,
            format!("{}/", dir.display()),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register the cells");
    }
    ctx
}

/// Runs `sql` on plain DataFusion.
pub async fn run_datafusion(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every row as text, in order (for comparing results of two engines exactly).
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Rows of an Apiary result, like [`rows`].
pub fn result_rows(result: &QueryResult) -> Vec<String> {
    rows(result.batches())
}

/// The `--name value` flags a benchmark binary was given, checked against `allowed`.
pub fn flags(allowed: &[&str]) -> std::collections::HashMap<String, String> {
    let mut flags = std::collections::HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let name = flag.trim_start_matches("--").to_string();
        assert!(
            flag.starts_with("--") && allowed.contains(&name.as_str()),
            "unknown argument {flag}; the flags are {}",
            allowed
                .iter()
                .map(|a| format!("--{a} N"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        flags.insert(name, it.next().unwrap_or_default());
    }
    flags
}

/// Flag `name` parsed, or `default` when it was not given.
pub fn flag<T: std::str::FromStr>(
    flags: &std::collections::HashMap<String, String>,
    name: &str,
    default: T,
) -> T {
    flags.get(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("--{name} takes a number, not `{v}`"))
    })
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The geometric mean of `v`.
pub fn geo_mean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// The `apiary` binary cargo built beside the running executable: next to a benchmark binary
/// (`target/<profile>/`) or one folder up from a test (`target/<profile>/deps/`).
pub fn apiary_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dirs = exe.ancestors().skip(1).take(2);
    let found = dirs.map(|d| d.join("apiary")).find(|b| b.exists());
    found.unwrap_or_else(|| {
        panic!(
            "the `apiary` binary is missing beside {}: build it with the same profile and \
             packages (`cargo build --release -p apiary-node -p apiary-benches`, or \
             `cargo test --workspace`)",
            exe.display()
        )
    })
}

/// Creates the frame `hive.box.{table}` with the table's schema, unpartitioned.
async fn create_frame_for(ap: &Apiary, hive: &str, r#box: &str, table: &Table) {
    let frame = FrameRef::new(hive, r#box, table.name).expect("valid name");
    let schema = FrameSchema::from_arrow(&table.schema).expect("supported schema");
    let definition = FrameDefinition::new(schema, Vec::new()).expect("valid definition");
    ap.create_frame_with(&frame, definition)
        .await
        .expect("create frame");
}

/// Creates `hive.box.{table}` and writes its rows in four commits, so that the frame has
/// cells to split over a swarm.
pub async fn load_in_quarters(ap: &Apiary, hive: &str, r#box: &str, table: &Table) {
    create_frame_for(ap, hive, r#box, table).await;
    for batch in &table.batches {
        let quarter = batch.num_rows().div_ceil(4).max(1);
        for start in (0..batch.num_rows()).step_by(quarter) {
            let part = batch.slice(start, quarter.min(batch.num_rows() - start));
            ap.write_to_frame(hive, r#box, table.name, [part])
                .await
                .expect("write");
        }
    }
}

/// `apiary node` processes on one storage, killed when dropped.
pub struct Nodes(pub Vec<std::process::Child>);

/// Node arguments for [`Nodes::start_with`]: 2 GiB each, serving Arrow Flight on a free
/// loopback port.
pub const FLIGHT_NODES: &[&str] = &["--memory", "2GiB", "--flight", "127.0.0.1:0"];

/// A handle on `storage` whose distributed queries push their tasks over Arrow Flight to
/// the nodes that serve it.
pub async fn flight_client(storage: &str) -> Apiary {
    let mut options = apiary::ApiaryOptions::new(
        apiary::apiary_storage::StorageUri::parse(storage).expect("a storage URI"),
    );
    options.flight = Some(apiary::FlightOptions::client());
    Apiary::open_with(options).await.expect("a Flight client")
}

/// `n` nodes as [`Nodes::start`] makes them, serving Arrow Flight when `flight` is set, and
/// the handle that coordinates their queries (`observer` itself, or a Flight client).
pub async fn swarm(
    storage: &str,
    dir: &Path,
    prefix: &str,
    n: usize,
    observer: &Apiary,
    flight: bool,
) -> (Nodes, Apiary) {
    if flight {
        let nodes = Nodes::start_with(storage, dir, prefix, n, observer, FLIGHT_NODES).await;
        (nodes, flight_client(storage).await)
    } else {
        let nodes = Nodes::start(storage, dir, prefix, n, observer).await;
        (nodes, observer.clone())
    }
}

/// The `via=` of every task line of an `EXPLAIN ANALYZE`'s rows.
pub fn task_transports(plan: &[String]) -> Vec<String> {
    plan.join("\n")
        .split(" via=")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next().map(str::to_string))
        .collect()
}

impl Nodes {
    /// `n` nodes named `{prefix}-{i}` on `storage`, with their state under `dir`: one-second
    /// timings cut to a fifth, tasks looked for every 50 ms, 2 GiB each. Returns once
    /// `observer` sees them all alive (at most a minute).
    pub async fn start(
        storage: &str,
        dir: &Path,
        prefix: &str,
        n: usize,
        observer: &Apiary,
    ) -> Self {
        Self::start_with(storage, dir, prefix, n, observer, &["--memory", "2GiB"]).await
    }

    /// [`Nodes::start`] with `args` added to each node's command line instead of its
    /// memory (give `--memory` there).
    pub async fn start_with(
        storage: &str,
        dir: &Path,
        prefix: &str,
        n: usize,
        observer: &Apiary,
        args: &[&str],
    ) -> Self {
        use std::process::{Command, Stdio};
        let nodes = Nodes(
            (0..n)
                .map(|i| {
                    Command::new(apiary_binary())
                        .args(["node", "--storage", storage])
                        .args(["--node-id", &format!("{prefix}-{i}")])
                        .arg("--state-dir")
                        .arg(dir.join(format!("state-{i}")))
                        .args(["--heartbeat-interval", "200ms", "--poll-interval", "200ms"])
                        .args(["--task-poll-interval", "50ms"])
                        .args(args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("an apiary node process")
                })
                .collect(),
        );
        let started = std::time::Instant::now();
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
        let up = |status: apiary::SwarmStatus| {
            ids.iter().all(|id| {
                status
                    .nodes
                    .iter()
                    .any(|s| &s.node_id == id && s.state == apiary::apiary_swarm::NodeState::Alive)
            })
        };
        while !up(observer.swarm_status().await.expect("the swarm")) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "nodes never came up"
            );
            apiary::apiary_storage::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        nodes
    }
}

impl Nodes {
    /// Stops the nodes as an operator would (SIGTERM): each leaves the swarm, so that the
    /// next nodes on the storage do not wait for them to be seen dead.
    pub fn leave(mut self) {
        for n in &mut self.0 {
            // SAFETY: sending a signal to a child process of ours.
            unsafe { libc::kill(n.id() as libc::pid_t, libc::SIGTERM) };
        }
        for n in &mut self.0 {
            let _ = n.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.0 {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}
