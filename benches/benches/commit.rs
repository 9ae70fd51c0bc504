//! Commits per second on a frame ledger, uncontended and with 8 concurrent writers, on a local
//! folder and (when `APIARY_BENCH_S3` names an `s3://` URI) on S3. Also prints the storage
//! requests each commit cost, counted below the backend.
//!
//! `cargo bench -p apiary-benches --bench commit`

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apiary_ledger::{
    Cell, FrameDefinition, FrameLedger, FrameRef, FrameSchema, LedgerConfig, Operation, Registry,
};
use apiary_storage::{
    CountsHandle, FaultConfig, InstrumentedStore, ObjectStoreBackend, StorageBackend, StorageUri,
    object_store_for,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const WRITERS: usize = 8;

struct Target {
    name: &'static str,
    uri: StorageUri,
    _dir: Option<tempfile::TempDir>,
}

fn targets() -> Vec<Target> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut out = vec![Target {
        name: "local",
        uri: StorageUri::Local(dir.path().join("store")),
        _dir: Some(dir),
    }];
    if let Ok(s3) = std::env::var("APIARY_BENCH_S3") {
        let uri = format!(
            "{}/bench-{}",
            s3.trim_end_matches('/'),
            apiary_storage::Random::process().id()
        );
        out.push(Target {
            name: "s3",
            uri: StorageUri::parse(&uri).expect("APIARY_BENCH_S3 must be a storage URI"),
            _dir: None,
        });
    } else {
        eprintln!("APIARY_BENCH_S3 not set: benchmarking the local folder only");
    }
    out
}

fn counted(uri: &StorageUri) -> (Arc<dyn StorageBackend>, CountsHandle) {
    let (store, caps) = object_store_for(uri).expect("store");
    let store = InstrumentedStore::new(store, FaultConfig::none());
    let counts = store.counts();
    let backend = ObjectStoreBackend::new(Arc::new(store), caps, uri.to_string());
    (Arc::new(backend), counts)
}

static NEXT_CELL: AtomicU64 = AtomicU64::new(0);

fn append() -> Operation {
    let n = NEXT_CELL.fetch_add(1, Ordering::Relaxed);
    Operation::Append(vec![Cell {
        path: format!("data/{n}.parquet"),
        rows: 1000,
        bytes: 65536,
        partition_values: BTreeMap::new(),
        stats: BTreeMap::new(),
        crc32c: None,
    }])
}

async fn new_frame(backend: &Arc<dyn StorageBackend>, name: &str) -> FrameRef {
    let registry = Registry::new(Arc::clone(backend), LedgerConfig::default());
    registry.create_hive("bench").await.expect("hive");
    registry.create_box("bench", "commits").await.expect("box");
    let frame = FrameRef::new("bench", "commits", name).expect("name");
    let definition = FrameDefinition::new(
        FrameSchema::parse_compact("event_id:int64,page:utf8").expect("schema"),
        vec![],
    )
    .expect("definition");
    registry
        .create_frame(&frame, definition)
        .await
        .expect("frame");
    frame
}

fn bench_commits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for target in targets() {
        let (backend, counts) = counted(&target.uri);
        let mut group = c.benchmark_group(format!("commit/{}", target.name));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        group.throughput(Throughput::Elements(1));

        let frame = rt.block_on(new_frame(&backend, "uncontended"));
        let ledger = rt
            .block_on(FrameLedger::open(
                Arc::clone(&backend),
                frame,
                LedgerConfig::default(),
            ))
            .expect("open");
        let before = counts.snapshot();
        let mut commits = 0u64;
        group.bench_function("uncontended", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        ledger.commit(&append()).await.expect("commit");
                    }
                    commits += iters;
                    start.elapsed()
                })
            })
        });
        report(
            target.name,
            "uncontended",
            counts.snapshot() - before,
            commits,
        );

        let frame = rt.block_on(new_frame(&backend, "contended"));
        let ledgers: Vec<Arc<FrameLedger>> = (0..WRITERS)
            .map(|_| {
                let open =
                    FrameLedger::open(Arc::clone(&backend), frame.clone(), LedgerConfig::default());
                Arc::new(rt.block_on(open).expect("open"))
            })
            .collect();
        let before = counts.snapshot();
        let mut commits = 0u64;
        group.bench_function(format!("{WRITERS}_writers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let per_writer = iters.div_ceil(WRITERS as u64);
                    let start = Instant::now();
                    let tasks: Vec<_> = ledgers
                        .iter()
                        .map(|l| {
                            let l = Arc::clone(l);
                            tokio::spawn(async move {
                                for _ in 0..per_writer {
                                    l.commit(&append()).await.expect("commit");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("writer");
                    }
                    commits += per_writer * WRITERS as u64;
                    // Criterion divides by `iters`; report time per commit actually made.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_writer * WRITERS as u64) as f64)
                })
            })
        });
        report(
            target.name,
            &format!("{WRITERS}_writers"),
            counts.snapshot() - before,
            commits,
        );
        group.finish();
    }
}

fn report(target: &str, case: &str, used: apiary_storage::RequestCounts, commits: u64) {
    let per = |n: u64| n as f64 / commits.max(1) as f64;
    eprintln!(
        "requests per commit [{target}/{case}, {commits} commits]: conditional PUT {:.3}, \
         PUT {:.3}, GET {:.3}, HEAD {:.3}, LIST {:.3}, DELETE {:.3}, total {:.3}",
        per(used.conditional_put),
        per(used.put),
        per(used.get),
        per(used.head),
        per(used.list),
        per(used.delete),
        per(used.total()),
    );
}

criterion_group!(benches, bench_commits);
criterion_main!(benches);
