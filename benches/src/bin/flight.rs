//! The Flight transport against the storage shuffle, transport to transport in one process
//! over loopback (a coordinator and a worker, each its own `ShuffleTransport`):
//!
//! * the fixed overhead of one tiny task: publish, push or poll, an empty outcome, collect,
//!   finish; p50 and p99 of `--tasks N` (default 500), and the storage requests per task;
//! * the result throughput of one pair: `--mib M` (default 1024) of Int64 rows written by
//!   the worker and collected by the coordinator (each chunk read back).
//!
//! The storage shuffle's worker polls every `--poll-ms` (default 100, the pace of an active
//! node). Prints one JSON line per transport.
//!
//! `target/release/flight --storage /tmp/flight-bench --tasks 500 --mib 1024`

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_benches::harness::{flag, flags};
use apiary_flight::{FlightShuffle, StaticPeers};
use apiary_shuffle::conformance::task;
use apiary_shuffle::{ShuffleTransport, StorageShuffle, TaskOutcome, TaskReport};
use apiary_storage::StorageUri;
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    apiary_benches::allocate_like_a_node();
    let flags = flags(&["storage", "tasks", "mib", "poll-ms"]);
    let root = std::path::PathBuf::from(flags.get("storage").ok_or("--storage DIR is required")?);
    let tasks: usize = flag(&flags, "tasks", 500);
    let mib: usize = flag(&flags, "mib", 1024);
    let poll = Duration::from_millis(flag(&flags, "poll-ms", 100));
    for name in ["flight", "storage"] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let uri = StorageUri::parse(&dir.display().to_string())?;
        let (backend, counts) = apiary_storage::counted_backend(&uri)?;
        let peers = StaticPeers::default();
        let worker: Arc<dyn ShuffleTransport>;
        let coordinator: Arc<dyn ShuffleTransport>;
        let mut _port = None;
        if name == "flight" {
            let w = Arc::new(FlightShuffle::new(
                Arc::clone(&backend),
                Arc::new(StaticPeers::default()),
            ));
            let port = w.serve("127.0.0.1:0".parse()?).await?;
            peers.set("w", Some(&port.local_addr().to_string()));
            _port = Some(port);
            worker = w;
            coordinator = Arc::new(FlightShuffle::new(Arc::clone(&backend), Arc::new(peers)));
        } else {
            worker = Arc::new(StorageShuffle::new(Arc::clone(&backend)));
            coordinator = Arc::new(StorageShuffle::new(Arc::clone(&backend)));
        }
        // The worker: wakes on a push (or polls), answers every task empty.
        let serving = {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = worker.tasks_arrived("w") => {}
                        () = apiary_storage::time::sleep(poll) => {}
                    }
                    for t in worker.poll_tasks("w").await.unwrap_or_default() {
                        let report = TaskReport {
                            node_id: "w".into(),
                            ..TaskReport::default()
                        };
                        let _ = worker
                            .publish_outcome(&t, TaskOutcome::Empty, &report)
                            .await;
                    }
                }
            })
        };
        // Warm the link.
        one_task(coordinator.as_ref(), "q-warm").await;
        let before = counts.snapshot().total();
        let mut times = Vec::with_capacity(tasks);
        for i in 0..tasks {
            let started = Instant::now();
            one_task(coordinator.as_ref(), &format!("q-{name}-{i}")).await;
            times.push(started.elapsed());
        }
        let requests = counts.snapshot().total() - before;
        serving.abort();
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        let throughput = throughput(coordinator.as_ref(), worker.as_ref(), mib).await;
        println!(
            "{{\"transport\":\"{name}\",\"tasks\":{tasks},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"requests_per_task\":{:.2},\"mib\":{mib},\"mib_per_s\":{:.0}}}",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            requests as f64 / tasks as f64,
            throughput
        );
    }
    Ok(())
}

/// Publishes one tiny task to `w`, waits for its outcome (woken by a push, or looking every
/// millisecond), and finishes the query.
async fn one_task(t: &dyn ShuffleTransport, q: &str) {
    let spec = task(q, 0, 1, "w");
    t.publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    loop {
        let got = t.collect(q, &[spec.key()]).await.expect("collect");
        if got.iter().any(|d| d.outcome != TaskOutcome::Running) {
            break;
        }
        tokio::select! {
            () = t.results_arrived(q) => {}
            () = apiary_storage::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    t.finish(q).await.expect("finish");
}

/// MiB per second of one result of `mib` MiB from `worker` to `coordinator`, its chunks read
/// back.
async fn throughput(
    coordinator: &dyn ShuffleTransport,
    worker: &dyn ShuffleTransport,
    mib: usize,
) -> f64 {
    let q = "q-throughput";
    let spec = task(q, 0, 1, "w");
    let schema = Arc::new(Schema::new(vec![Field::new("c0", DataType::Int64, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from_iter_values(0..131_072))],
    )
    .expect("batch");
    let batches = mib * (1 << 20) / (131_072 * 8);
    let started = Instant::now();
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    let polled = loop {
        let p = worker.poll_tasks("w").await.expect("poll");
        if !p.is_empty() {
            break p;
        }
    };
    let mut w = worker.open_result(&polled[0], schema);
    let writing = async {
        for _ in 0..batches {
            w.write(batch.clone()).await.expect("write");
        }
        w.finish(&TaskReport::default()).await.expect("finish");
    };
    writing.await;
    let mut rows = 0;
    loop {
        let got = coordinator
            .collect(q, &[spec.key()])
            .await
            .expect("collect");
        if let Some(TaskOutcome::Rows(r)) = got
            .into_iter()
            .map(|d| d.outcome)
            .find(|o| *o != TaskOutcome::Running)
        {
            for c in &r.chunks {
                rows += coordinator
                    .read_chunk(q, c)
                    .await
                    .expect("chunk")
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>();
            }
            rows += r.batches.iter().map(|b| b.num_rows()).sum::<usize>();
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(rows, batches * 131_072);
    coordinator.finish(q).await.expect("finish");
    (batches * 131_072 * 8) as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}
