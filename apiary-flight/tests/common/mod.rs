//! Helpers the Flight link tests share: transports with a short connect timeout, and one
//! task run from a coordinator to a worker.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use apiary_flight::{FlightConfig, FlightShuffle, FlightTls, StaticPeers};
use apiary_shuffle::conformance::task;
use apiary_shuffle::{ShuffleTransport, TaskOutcome, TaskReport};
use apiary_storage::StorageBackend;

/// A transport over `backend` that finds nodes in `peers`, with TLS when `tls` is given.
pub fn transport(
    backend: &Arc<dyn StorageBackend>,
    peers: &StaticPeers,
    tls: Option<FlightTls>,
) -> Arc<FlightShuffle> {
    let config = FlightConfig {
        connect_timeout: Duration::from_millis(500),
        tls,
        ..FlightConfig::default()
    };
    Arc::new(FlightShuffle::with_config(
        Arc::clone(backend),
        Arc::new(peers.clone()),
        config,
    ))
}

/// Collects until `key` has an outcome other than "running".
pub async fn ended(
    t: &dyn ShuffleTransport,
    q: &str,
    key: &apiary_shuffle::TaskKey,
) -> apiary_shuffle::Delivered {
    for _ in 0..500 {
        let got = t.collect(q, std::slice::from_ref(key)).await.unwrap();
        if let Some(d) = got.into_iter().find(|d| d.outcome != TaskOutcome::Running) {
            return d;
        }
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {key} never ended");
}

/// Publishes one task of `q` for node `node`, which `worker` takes and answers with no
/// rows: how the answer came back (`flight` or `storage`).
pub async fn one_task(
    coordinator: &FlightShuffle,
    worker: &FlightShuffle,
    q: &str,
    node: &str,
) -> String {
    let spec = task(q, 0, 1, node);
    coordinator
        .publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert_eq!(
        worker.poll_tasks(node).await.unwrap(),
        vec![spec.clone()],
        "the task reached the worker"
    );
    worker
        .publish_outcome(&spec, TaskOutcome::Empty, &TaskReport::default())
        .await
        .unwrap();
    let d = ended(coordinator, q, &spec.key()).await;
    assert_eq!(d.outcome, TaskOutcome::Empty);
    coordinator.finish(q).await.unwrap();
    d.report.via
}
