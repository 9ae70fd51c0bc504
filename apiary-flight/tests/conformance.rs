//! The shuffle transport conformance suite over Flight (every node reachable) and the
//! hybrid (some nodes reachable, the rest through storage), on a memory store and on the S3
//! test server, in plain HTTP/2 and over TLS; and that a Flight round needs no storage.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_flight::testing::Authority;
use apiary_flight::{FlightConfig, FlightServer, FlightShuffle, FlightTls, Peers};
use apiary_shuffle::{ShuffleTransport, conformance};
use apiary_storage::StorageBackend;
use apiary_storage::conformance::s3_test_uri;

/// Every node is at `address` (this process serves them all), or only those `reachable`
/// says are; the others have no address.
#[derive(Debug)]
struct Table {
    address: std::sync::OnceLock<String>,
    reachable: fn(&str) -> bool,
}

impl Peers for Table {
    fn flight_address(&self, node_id: &str) -> Option<String> {
        (self.reachable)(node_id)
            .then(|| self.address.get().cloned())
            .flatten()
    }
}

/// A transport over `backend` serving its own Flight port, and the port.
async fn flight(
    backend: Arc<dyn StorageBackend>,
    reachable: fn(&str) -> bool,
) -> (Arc<FlightShuffle>, FlightServer) {
    flight_with(backend, reachable, None).await
}

/// As [`flight`], with TLS on the port and the links when `tls` is given.
async fn flight_with(
    backend: Arc<dyn StorageBackend>,
    reachable: fn(&str) -> bool,
    tls: Option<FlightTls>,
) -> (Arc<FlightShuffle>, FlightServer) {
    let table = Arc::new(Table {
        address: std::sync::OnceLock::new(),
        reachable,
    });
    let config = FlightConfig {
        tls,
        ..FlightConfig::default()
    };
    let t = Arc::new(FlightShuffle::with_config(
        backend,
        Arc::clone(&table) as Arc<dyn Peers>,
        config,
    ));
    let server = t.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = server.advertised(&server.local_addr().to_string());
    table.address.set(address).unwrap();
    (t, server)
}

fn everyone(_: &str) -> bool {
    true
}

/// About half the nodes, by name.
fn some(node: &str) -> bool {
    node.bytes().map(u32::from).sum::<u32>() % 2 == 0
}

#[tokio::test]
async fn flight_on_memory() {
    let (t, _server) = flight(apiary_storage::memory(), everyone).await;
    conformance::run_all(t).await;
}

#[tokio::test]
async fn hybrid_on_memory() {
    let (t, _server) = flight(apiary_storage::memory(), some).await;
    conformance::run_all(t).await;
}

#[tokio::test]
async fn flight_over_tls_on_memory() {
    let tls = Authority::new().node();
    let (t, server) = flight_with(apiary_storage::memory(), everyone, Some(tls)).await;
    assert!(server.tls());
    conformance::run_all(t).await;
}

#[tokio::test]
async fn hybrid_over_tls_on_memory() {
    let tls = Authority::new().node();
    let (t, _server) = flight_with(apiary_storage::memory(), some, Some(tls)).await;
    conformance::run_all(t).await;
}

#[tokio::test]
async fn hybrid_on_s3() {
    let backend = apiary_storage::open(&s3_test_uri("flight-hybrid"))
        .await
        .unwrap();
    let (t, _server) = flight(backend, some).await;
    conformance::run_all(t).await;
}

/// A Flight-only round makes no storage request at all beyond reading the key once, in
/// plain HTTP/2 and over TLS.
#[tokio::test]
async fn a_flight_round_makes_no_storage_request() {
    quiet_round(None).await;
    quiet_round(Some(Authority::new().node())).await;
}

async fn quiet_round(tls: Option<FlightTls>) {
    let uri = apiary_storage::StorageUri::parse("memory://").unwrap();
    let (counting, counts) = apiary_storage::counted_backend(&uri).unwrap();
    let (t, _server) = flight_with(counting, everyone, tls).await;
    let before = counts.snapshot().total();
    let q = "q-flight-quiet";
    let spec = conformance::task(q, 0, 1, "n1");
    t.publish_tasks(q, "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    let polled = t.poll_tasks("n1").await.unwrap();
    assert_eq!(polled.len(), 1);
    t.publish_outcome(
        &spec,
        apiary_shuffle::TaskOutcome::Empty,
        &Default::default(),
    )
    .await
    .unwrap();
    let got = t.collect(q, &[spec.key()]).await.unwrap();
    assert_eq!(got[0].outcome, apiary_shuffle::TaskOutcome::Empty);
    assert_eq!(got[0].report.via, "flight");
    t.finish(q).await.unwrap();
    let after = counts.snapshot();
    assert_eq!(after.total() - before, 0, "{after:?}");
}
