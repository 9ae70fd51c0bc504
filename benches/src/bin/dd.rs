//! The Star Schema Benchmark on `datafusion-distributed` (version 4, on the same DataFusion
//! 55, Arrow Flight and tonic as Apiary): one worker against two, each worker a process
//! pinned to one core, over the same Parquet cells Apiary writes for the SSB frames: the
//! reference point for `target/release/distributed --flight 1` (two Apiary nodes over one).
//!
//! ```sh
//! cargo build --release -p apiary-benches --features datafusion-distributed --bin dd
//! target/release/dd --sf 1 --runs 3
//! ```
//!
//! Every answer is checked against plain DataFusion on the same files. Queries take turns
//! (one worker, then two) so that the machine's drift does not enter the ratio.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiary::Apiary;
use apiary_benches::harness::{
    datafusion_over_cells, flag, flags, geo_mean, load_apiary, load_in_quarters, median, rows,
    run_datafusion,
};
use apiary_benches::ssb::{QUERIES, generate};
use apiary_query::datafusion::common::DataFusionError;
use apiary_query::datafusion::execution::SessionStateBuilder;
use apiary_query::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt, Worker, WorkerResolver};

/// Workers on fixed loopback ports.
#[derive(Clone)]
struct Ports(Vec<u16>);

impl WorkerResolver for Ports {
    fn get_urls(&self) -> Result<Vec<url::Url>, DataFusionError> {
        self.0
            .iter()
            .map(|p| {
                url::Url::parse(&format!("http://127.0.0.1:{p}"))
                    .map_err(|e| DataFusionError::External(Box::new(e)))
            })
            .collect()
    }
}

/// Worker processes, killed when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A session that distributes over the workers on `ports`, reading the cells under `root`.
async fn distributed(root: &std::path::Path, ports: &[u16]) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(SessionConfig::new().with_target_partitions(1))
        .with_distributed_worker_resolver(Ports(ports.to_vec()))
        .with_distributed_planner()
        .build();
    let ctx = SessionContext::from(state);
    for table in ["lineorder", "customer", "supplier", "part", "dwdate"] {
        let dir = root.join("ssb").join("sf").join(table).join("data");
        ctx.register_parquet(
            table,
            format!("{}/", dir.display()),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register the cells");
    }
    ctx
}

#[tokio::main]
async fn main() {
    apiary_benches::allocate_like_a_node();
    let f = flags(&["sf", "runs", "worker", "keep"]);
    if let Some(port) = f.get("worker") {
        let port: u16 = port.parse().expect("--worker PORT");
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        tonic::transport::Server::builder()
            .add_service(Worker::default().into_worker_server())
            .serve(address)
            .await
            .expect("a datafusion-distributed worker");
        return;
    }
    let sf: f64 = flag(&f, "sf", 1.0);
    let runs: usize = flag(&f, "runs", 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = f
        .get("keep")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("data"));
    std::fs::create_dir_all(&root).expect("data folder");
    let tables = generate(sf, 7);
    if !root.join("ssb").exists() {
        let ap = Apiary::open(&root.display().to_string())
            .await
            .expect("open");
        let (facts, dims): (Vec<_>, Vec<_>) =
            tables.iter().cloned().partition(|t| t.name == "lineorder");
        load_apiary(&ap, "ssb", "sf", &dims).await;
        for fact in &facts {
            load_in_quarters(&ap, "ssb", "sf", fact).await;
        }
    }
    let plain = datafusion_over_cells(&root, "ssb", "sf", &tables, 2).await;
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        })
        .collect();
    let me = std::env::current_exe().expect("this binary");
    let _workers = Workers(
        ports
            .iter()
            .enumerate()
            .map(|(core, port)| {
                Command::new("taskset")
                    .args(["-c", &core.to_string()])
                    .arg(&me)
                    .args(["--worker", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("taskset and a worker")
            })
            .collect(),
    );
    apiary_storage::time::sleep(Duration::from_secs(1)).await;
    let one = distributed(&root, &ports[..1]).await;
    let two = distributed(&root, &ports).await;
    let mut ratios = Vec::new();
    for (name, sql) in QUERIES {
        let expected = rows(&run_datafusion(&plain, sql).await);
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        for _ in 0..runs + 1 {
            for (ctx, times) in [(&one, &mut t1), (&two, &mut t2)] {
                let t = Instant::now();
                let got = rows(&run_datafusion(ctx, sql).await);
                times.push(t.elapsed().as_secs_f64());
                assert_eq!(got, expected, "{name}: datafusion-distributed differs");
            }
        }
        // The first run of each warms the workers' caches.
        let (m1, m2) = (median(t1[1..].to_vec()), median(t2[1..].to_vec()));
        ratios.push(m1 / m2);
        println!(
            "{name}: one worker {:.0} ms, two {:.0} ms, {:.2}x",
            m1 * 1e3,
            m2 * 1e3,
            m1 / m2
        );
    }
    println!(
        "datafusion-distributed SSB SF {sf}: two workers {:.2}x one (geometric mean of {} queries)",
        geo_mean(&ratios),
        ratios.len()
    );
}
