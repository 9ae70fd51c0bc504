//! The console answers from the node's memory: with every storage request of the node held
//! (as a store that stopped answering would hold them), every route and every system table
//! still answers at once.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // real sockets and real time

mod common;

use std::sync::Arc;
use std::time::Duration;

use apiary::apiary_console::{ConsoleConfig, Scope};
use apiary::{ApiaryBuilder, ApiaryOptions, NodeOptions};
use apiary_storage::{
    FaultConfig, Hold, InstrumentedStore, ObjectStoreBackend, RequestKind, StorageUri,
    object_store_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_the_storage_held() {
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let hold = Hold::new(&[
        RequestKind::Get,
        RequestKind::Head,
        RequestKind::Put,
        RequestKind::ConditionalPut,
        RequestKind::List,
    ]);
    let instrumented = InstrumentedStore::new(store, FaultConfig::none()).with_hold(hold.clone());
    let backend = Arc::new(ObjectStoreBackend::new(
        Arc::new(instrumented),
        caps,
        "memory://",
    ));
    let ap = ApiaryBuilder::new(ApiaryOptions::new(StorageUri::Memory))
        .backend(backend)
        .build()
        .await
        .unwrap();
    let read = ap.tokens().create(&[Scope::Read], None).await.unwrap().text;
    let metrics = ap
        .tokens()
        .create(&[Scope::Metrics], None)
        .await
        .unwrap()
        .text;
    let dir = tempfile::tempdir().unwrap();
    ap.start_with(NodeOptions {
        node_id: Some("held".into()),
        state_dir: dir.path().to_path_buf(),
        cache_bytes: Some(0),
        http: Some(ConsoleConfig {
            // Tokens are read at start and not again in this test.
            token_refresh: Duration::from_secs(3600),
            ..ConsoleConfig::new("127.0.0.1:0".parse().unwrap())
        }),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    let addr = ap.console_addr().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("http://{addr}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.map(|r| r.status().as_u16()) }
    };
    let body = |path: &str, token: &str| {
        let request = http.get(format!("http://{addr}{path}")).bearer_auth(token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    // Ready: tokens read, the swarm polled.
    let started = std::time::Instant::now();
    while get("/api/v1/nodes", Some(&read)).await.ok() != Some(200)
        || get("/readyz", None).await.ok() != Some(200)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writes count their ledger commits by outcome: the hive, the box, the frame, two writes.
    common::create_clicks_frame(&ap).await;
    for range in [0..10, 10..20] {
        ap.write_to_frame("analytics", "events", "clicks", [common::clicks(range)])
            .await
            .unwrap();
    }
    ap.sql("SELECT count(*) FROM analytics.events.clicks")
        .await
        .unwrap();

    // Statements this node ran are counted by outcome, with their durations.
    ap.sql("SELECT 1").await.unwrap();
    ap.sql("SELECT 2").await.unwrap();
    assert!(ap.sql("SELEC nonsense").await.is_err());
    let text = body("/metrics", &metrics).await;
    for line in [
        "apiary_queries_total{outcome=\"ok\"} 3",
        "apiary_queries_total{outcome=\"invalid_input\"} 1",
        "# TYPE apiary_query_duration_seconds histogram",
        "apiary_query_duration_seconds_bucket{le=\"+Inf\"} 4",
        "apiary_query_duration_seconds_count 4",
        "apiary_ledger_commits_total{outcome=\"committed\"} 5",
        "apiary_ledger_commits_total{outcome=\"conflict\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }

    hold.close();
    // The hold holds: what does read the storage waits.
    let listing = tokio::time::timeout(Duration::from_millis(300), ap.tokens().list()).await;
    assert!(listing.is_err(), "a token listing went through the hold");
    for (path, token, status) in [
        ("/healthz", None, 200),
        ("/readyz", None, 200),
        ("/metrics", Some(metrics.as_str()), 200),
        ("/metrics", None, 401),
        ("/api/v1/swarm", Some(read.as_str()), 200),
        ("/api/v1/colony", Some(read.as_str()), 200),
        ("/api/v1/nodes", Some(read.as_str()), 200),
        ("/api/v1/nodes/held", Some(read.as_str()), 200),
        ("/api/v1/nodes/other", Some(read.as_str()), 404),
        ("/api/v1/nodes", Some(metrics.as_str()), 403),
        ("/api/v1/nodes", None, 401),
        ("/api/v1/frames", Some(read.as_str()), 200),
        ("/api/v1/queries", Some(read.as_str()), 200),
        ("/ui", None, 200),
    ] {
        let answered = get(path, token).await;
        assert_eq!(
            answered.as_ref().ok(),
            Some(&status),
            "{path} with the storage held: {answered:?}"
        );
    }
    // The system tables too: no storage request, and no bee to wait for.
    for table in ["nodes", "queries", "metrics"] {
        let sql = format!("SELECT count(*) FROM apiary.system.{table}");
        let answered = tokio::time::timeout(Duration::from_secs(5), ap.sql(&sql)).await;
        let rows = answered
            .unwrap_or_else(|_| panic!("{sql} waited on the held storage"))
            .unwrap();
        assert_eq!(rows.num_rows(), 1, "{sql}");
    }
    let frames = body("/api/v1/frames", &read).await;
    assert!(frames.contains("\"rows\":20"), "{frames}");
    hold.open();
    ap.halt().await;
}
