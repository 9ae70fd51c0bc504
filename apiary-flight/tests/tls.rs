//! TLS on Flight links: a node serving TLS is reached over it; a peer whose certificate
//! does not check out, a plain peer seen by a TLS process and a TLS peer seen by a plain
//! process all get their tasks through storage; a port serving TLS needs a usable
//! certificate and key.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_flight::testing::Authority;
use apiary_flight::{FlightServer, FlightShuffle, FlightTls, StaticPeers};

mod common;
use common::{one_task, transport};

/// A worker node `w` serving Flight with `worker_tls`, and a coordinator with
/// `coordinator_tls` that finds it at `address(port)`.
async fn pair(
    worker_tls: Option<FlightTls>,
    coordinator_tls: Option<FlightTls>,
    address: impl Fn(&FlightServer) -> String,
) -> (Arc<FlightShuffle>, FlightServer, Arc<FlightShuffle>) {
    let backend = apiary_storage::memory();
    let worker = transport(&backend, &StaticPeers::default(), worker_tls);
    let port = worker.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let peers = StaticPeers::default();
    peers.set("w", Some(&address(&port)));
    let coordinator = transport(&backend, &peers, coordinator_tls);
    (worker, port, coordinator)
}

/// What the port advertises: `https://127.0.0.1:PORT` when it serves TLS.
fn advertised(port: &FlightServer) -> String {
    port.advertised(&port.local_addr().to_string())
}

#[tokio::test]
async fn a_node_serving_tls_is_reached_over_tls() {
    let ca = Authority::new();
    let (worker, port, coordinator) = pair(Some(ca.node()), Some(ca.node()), advertised).await;
    assert!(port.tls());
    assert!(advertised(&port).starts_with("https://127.0.0.1:"));
    assert_eq!(
        one_task(&coordinator, &worker, "q-tls", "w").await,
        "flight"
    );
}

#[tokio::test]
async fn one_certificate_for_the_swarm_is_checked_against_the_configured_name() {
    let ca = Authority::new();
    let (certificate, key) = ca.issue(&["apiary-swarm"]);
    let swarm_tls = |domain: Option<&str>| FlightTls {
        certificate: Some(certificate.clone()),
        private_key: Some(key.clone()),
        ca: Some(ca.ca_pem()),
        domain: domain.map(str::to_string),
    };
    let (worker, _port, coordinator) = pair(
        Some(swarm_tls(None)),
        Some(swarm_tls(Some("apiary-swarm"))),
        advertised,
    )
    .await;
    assert_eq!(
        one_task(&coordinator, &worker, "q-named", "w").await,
        "flight"
    );
    // Without the name, the certificate does not match 127.0.0.1.
    let (worker, _port, coordinator) =
        pair(Some(swarm_tls(None)), Some(swarm_tls(None)), advertised).await;
    assert_eq!(
        one_task(&coordinator, &worker, "q-unnamed", "w").await,
        "storage"
    );
}

#[tokio::test]
async fn a_certificate_from_another_authority_sends_tasks_through_storage() {
    let ours = Authority::new();
    let theirs = Authority::new();
    let (worker, _port, coordinator) =
        pair(Some(theirs.node()), Some(ours.node()), advertised).await;
    assert_eq!(
        one_task(&coordinator, &worker, "q-stranger", "w").await,
        "storage"
    );
}

#[tokio::test]
async fn a_process_with_tls_never_pushes_rows_to_a_plain_node() {
    let ca = Authority::new();
    let (worker, port, coordinator) = pair(None, Some(ca.node()), advertised).await;
    assert!(!port.tls());
    assert!(!advertised(&port).contains("://"));
    assert_eq!(
        one_task(&coordinator, &worker, "q-plain-peer", "w").await,
        "storage"
    );
    // Nor when the plain address is spelled with its scheme.
    let (worker, _port, coordinator) = pair(None, Some(ca.node()), |p| {
        format!("http://{}", p.local_addr())
    })
    .await;
    assert_eq!(
        one_task(&coordinator, &worker, "q-http-peer", "w").await,
        "storage"
    );
}

#[tokio::test]
async fn a_plain_process_gets_nothing_from_a_tls_port() {
    let ca = Authority::new();
    // Apiary without TLS settings checks the system's roots, which do not know this CA.
    let (worker, port, coordinator) = pair(Some(ca.node()), None, advertised).await;
    assert_eq!(
        one_task(&coordinator, &worker, "q-no-roots", "w").await,
        "storage"
    );
    // A plain HTTP/2 client does not get through the TLS port at all: its call fails in
    // the transport, before the service could even refuse it for lacking a proof.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", port.local_addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    if let Ok(channel) = plain.connect().await {
        let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
        let hello = arrow_flight::HandshakeRequest::default();
        let refused = client
            .handshake(futures::stream::iter([hello]))
            .await
            .unwrap_err();
        assert_ne!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    }
}

#[tokio::test]
async fn serving_tls_needs_a_usable_certificate_and_key() {
    let backend = apiary_storage::memory();
    let ca = Authority::new();
    let trust_only = FlightTls {
        ca: Some(ca.ca_pem()),
        ..FlightTls::default()
    };
    let t = transport(&backend, &StaticPeers::default(), Some(trust_only));
    let e = t
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs both a certificate and its private key"),
        "{e}"
    );

    let garbage = FlightTls {
        certificate: Some(b"not a certificate".to_vec()),
        private_key: Some(b"not a key".to_vec()),
        ..FlightTls::default()
    };
    let t = transport(&backend, &StaticPeers::default(), Some(garbage));
    let e = t
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("TLS certificate or key is not usable"), "{e}");
}
