//! Two transports in one process, as a coordinator and a worker on different machines
//! would be: what a client without the key gets, a node that cannot be reached, and a link
//! cut in the middle of a result.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_flight::testing::Proxy;
use apiary_flight::{FlightConfig, FlightShuffle, StaticPeers};
use apiary_shuffle::conformance::task;
use apiary_shuffle::{ShuffleTransport, TaskOutcome, TaskReport};
use apiary_storage::{ErrorKind, StorageBackend};
use arrow_array::{Int64Array, RecordBatch};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_schema::{DataType, Field, Schema};

mod common;
use common::{ended, one_task};

fn transport(backend: &Arc<dyn StorageBackend>, peers: &StaticPeers) -> Arc<FlightShuffle> {
    common::transport(backend, peers, None)
}

/// A worker serving Flight as node `w`, and a coordinator that reaches it, on one store.
async fn pair() -> (
    Arc<dyn StorageBackend>,
    Arc<FlightShuffle>,
    apiary_flight::FlightServer,
    Arc<FlightShuffle>,
) {
    let backend = apiary_storage::memory();
    let worker = transport(&backend, &StaticPeers::default());
    let port = worker.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let peers = StaticPeers::default();
    peers.set("w", Some(&port.local_addr().to_string()));
    let coordinator = transport(&backend, &peers);
    (backend, worker, port, coordinator)
}

fn ints(from: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("c0", DataType::Int64, true)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_without_the_key_is_refused_and_served_nothing() {
    let backend = apiary_storage::memory();
    let peers = StaticPeers::default();
    let worker = transport(&backend, &peers);
    let port = worker.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = port.local_addr().to_string();

    // No proof at all: a plain Flight client.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut plain = FlightServiceClient::new(channel);
    let hello = arrow_flight::HandshakeRequest::default();
    let refused = plain
        .handshake(futures::stream::iter([hello]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("serves only processes that can read its storage"),
        "{}",
        refused.message()
    );
    let refused = plain
        .do_exchange(futures::stream::iter([arrow_flight::FlightData::default()]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A coordinator of another storage (another key): its handshake is refused, so its
    // task goes through its own storage, and the worker's inbox stays empty.
    let elsewhere = apiary_storage::memory();
    let outsider_peers = StaticPeers::default();
    outsider_peers.set("w", Some(&address));
    let outsider = transport(&elsewhere, &outsider_peers);
    let q = "q-outsider";
    let spec = task(q, 0, 1, "w");
    outsider
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert!(
        worker.poll_tasks("w").await.unwrap().is_empty(),
        "nothing reached the worker"
    );
    assert_eq!(
        outsider.poll_tasks("w").await.unwrap().len(),
        1,
        "it went to the outsider's storage"
    );
}

#[tokio::test]
async fn a_node_that_cannot_be_reached_gets_its_tasks_through_storage() {
    let backend = apiary_storage::memory();
    let peers = StaticPeers::default();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    peers.set("gone", Some(&closed.to_string()));
    let coordinator = transport(&backend, &peers);
    let worker = transport(&backend, &StaticPeers::default());
    let q = "q-unreachable";
    let spec = task(q, 0, 1, "gone");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    let polled = worker.poll_tasks("gone").await.unwrap();
    assert_eq!(polled, vec![spec.clone()]);
    assert!(!worker.pushed(&spec.key()), "found in storage, not pushed");
    assert!(
        !coordinator.pushes_results(q),
        "its result must be looked for"
    );
    worker
        .publish_outcome(
            &spec,
            TaskOutcome::Empty,
            &TaskReport {
                node_id: "gone".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d = ended(coordinator.as_ref(), q, &spec.key()).await;
    assert_eq!(
        (d.outcome, d.report.via.as_str()),
        (TaskOutcome::Empty, "storage")
    );
    coordinator.finish(q).await.unwrap();
}

#[tokio::test]
async fn a_link_cut_mid_result_fails_the_attempt_and_the_next_goes_through_storage() {
    let backend = apiary_storage::memory();
    let worker = transport(&backend, &StaticPeers::default());
    let port = worker.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(port.local_addr()).await.unwrap();
    let peers = StaticPeers::default();
    peers.set("w", Some(&proxy.address().to_string()));
    let coordinator = transport(&backend, &peers);

    let q = "q-cut";
    let first = task(q, 0, 1, "w");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&first))
        .await
        .unwrap();
    let polled = worker.poll_tasks("w").await.unwrap();
    assert_eq!(polled.len(), 1);
    assert!(
        worker.pushed(&first.key()),
        "the first attempt came over Flight"
    );
    assert!(
        coordinator.pushes_results(q),
        "so far every result comes over Flight"
    );
    let mut w = worker.open_result(&first, ints(0, 0).schema());
    w.write(ints(0, 100_000)).await.unwrap();
    assert!(worker.wanted(&first.key()).await.unwrap());

    proxy.cut();
    let d = ended(coordinator.as_ref(), q, &first.key()).await;
    let TaskOutcome::Failed(f) = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert!(f.retryable && f.kind == ErrorKind::Unavailable, "{f:?}");
    assert!(
        f.message.contains("next attempt goes through storage"),
        "{}",
        f.message
    );
    // The worker hears that no one waits for the task any more.
    let mut unwanted = false;
    for _ in 0..200 {
        if !worker.wanted(&first.key()).await.unwrap() {
            unwanted = true;
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unwanted, "the cut exchange's task is no longer wanted");
    assert!(w.write(ints(0, 10)).await.is_err() || w.finish(&TaskReport::default()).await.is_err());

    // A claim of the cut task is refused (it may read nothing more).
    assert!(worker.claim(&first.key(), "data/c.parquet").await.is_err());
    // The next attempt goes through storage, and its result counts.
    let second = task(q, 0, 2, "w");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&second))
        .await
        .unwrap();
    // The worker tidies after its unwanted task, as its loop does: the query runs on, so
    // nothing of it in storage goes.
    worker.cancel(q).await.unwrap();
    let polled = worker.poll_tasks("w").await.unwrap();
    assert_eq!(polled, vec![second.clone()]);
    assert!(
        !worker.pushed(&second.key()),
        "the second was found in storage"
    );
    assert!(
        !coordinator.pushes_results(q),
        "a result now comes through storage, which must be looked for"
    );
    let mut w = worker.open_result(&second, ints(0, 0).schema());
    w.write(ints(0, 5)).await.unwrap();
    w.finish(&TaskReport {
        rows: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = ended(coordinator.as_ref(), q, &second.key()).await;
    assert_eq!(d.report.via, "storage");
    let TaskOutcome::Rows(rows) = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    let values = apiary_shuffle::conformance::read_rows(coordinator.as_ref(), q, rows).await;
    assert_eq!(values, vec![0, 1, 2, 3, 4]);
    coordinator.finish(q).await.unwrap();
}

/// A result much larger than the coordinator's memory budget spills to files and comes
/// back whole; LZ4 on the way.
#[tokio::test]
async fn large_results_spill_past_the_memory_budget() {
    let backend = apiary_storage::memory();
    let config = FlightConfig {
        memory_bytes: 1 << 20,
        chunk_bytes: 256 << 10,
        lz4: true,
        ..FlightConfig::default()
    };
    let worker = Arc::new(FlightShuffle::with_config(
        Arc::clone(&backend),
        Arc::new(StaticPeers::default()),
        config.clone(),
    ));
    let port = worker.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let peers = StaticPeers::default();
    peers.set("w", Some(&port.local_addr().to_string()));
    let coordinator = FlightShuffle::with_config(Arc::clone(&backend), Arc::new(peers), config);
    let q = "q-spill";
    let spec = task(q, 0, 1, "w");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    worker.poll_tasks("w").await.unwrap();
    let mut w = worker.open_result(&spec, ints(0, 0).schema());
    for i in 0..40 {
        w.write(ints(i * 50_000, 50_000)).await.unwrap();
    }
    w.finish(&TaskReport {
        rows: 2_000_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = ended(&coordinator, q, &spec.key()).await;
    let TaskOutcome::Rows(rows) = &d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert!(rows.chunks.len() > 4, "{} chunks", rows.chunks.len());
    let values = apiary_shuffle::conformance::read_rows(&coordinator, q, rows).await;
    assert_eq!(values, (0..2_000_000).collect::<Vec<i64>>());
    coordinator.finish(q).await.unwrap();
}

/// Cancelling a query reaches its running tasks at once: their exchanges end, and the
/// worker hears that no one waits for them.
#[tokio::test]
async fn a_cancel_reaches_the_running_task() {
    let (backend, worker, _port, coordinator) = pair().await;
    let q = "q-cancel";
    let spec = task(q, 0, 1, "w");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert_eq!(worker.poll_tasks("w").await.unwrap().len(), 1);
    let mut w = worker.open_result(&spec, ints(0, 0).schema());
    w.write(ints(0, 1000)).await.unwrap();
    assert!(worker.wanted(&spec.key()).await.unwrap());
    coordinator.cancel(q).await.unwrap();
    let mut unwanted = false;
    for _ in 0..200 {
        if !worker.wanted(&spec.key()).await.unwrap() {
            unwanted = true;
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(unwanted, "the cancelled task is no longer wanted");
    // Its late outcome is dropped, not sent through storage.
    worker
        .publish_outcome(&spec, TaskOutcome::Empty, &TaskReport::default())
        .await
        .unwrap();
    assert!(
        backend
            .list(&apiary_storage::Path::from("_queries"))
            .await
            .unwrap()
            .is_empty(),
        "nothing of the query went to storage"
    );
}

/// A node restarted on the same address: the coordinator's old connection is stale, and the
/// task still goes over Flight on a new one.
#[tokio::test]
async fn a_node_restarted_on_its_address_gets_its_task_over_a_new_connection() {
    let backend = apiary_storage::memory();
    let first = transport(&backend, &StaticPeers::default());
    let port = first.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = port.local_addr();
    let peers = StaticPeers::default();
    peers.set("w", Some(&address.to_string()));
    let coordinator = transport(&backend, &peers);
    let q = "q-restart";
    let spec = task(q, 0, 1, "w");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert_eq!(first.poll_tasks("w").await.unwrap().len(), 1);
    coordinator.finish(q).await.unwrap();

    port.shutdown().await;
    drop(first);
    let second = transport(&backend, &StaticPeers::default());
    let _port = second.serve(address).await.unwrap();
    assert_eq!(
        one_task(&coordinator, &second, "q-restart-2", "w").await,
        "flight",
        "pushed to the new process over a new connection"
    );
}

/// `warm` opens the link while the coordinator plans, and the task then goes over that
/// same connection; a node whose link cannot open still gets its task through storage.
#[tokio::test]
async fn warm_opens_links_ahead_and_publishing_reuses_them() {
    let backend = apiary_storage::memory();
    let worker = transport(&backend, &StaticPeers::default());
    let port = worker.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(port.local_addr()).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let peers = StaticPeers::default();
    peers.set("w", Some(&proxy.address().to_string()));
    peers.set("gone", Some(&closed.to_string()));
    let coordinator = transport(&backend, &peers);

    // Nodes without an address, or unknown, are left alone; warm returns at once.
    coordinator.warm(&["w".into(), "gone".into(), "nobody".into()]);
    for _ in 0..200 {
        if proxy.connections() > 0 {
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.connections(), 1, "the link to w opened ahead");
    // Warming again while the link is open makes no new connection.
    coordinator.warm(&["w".into()]);

    assert_eq!(
        one_task(&coordinator, &worker, "q-warm", "w").await,
        "flight"
    );
    assert_eq!(proxy.connections(), 1, "the task used the warmed link");

    // The node whose link cannot open gets its task through storage.
    let q = "q-warm-gone";
    let spec = task(q, 0, 1, "gone");
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert_eq!(
        worker.poll_tasks("gone").await.unwrap(),
        vec![spec.clone()],
        "through storage"
    );
    coordinator.cancel(q).await.unwrap();
}
