//! The colony regulates itself: load drives a node from cold through hot (new queries slow
//! down) to critical (new queries are refused) and back to cold; abandoned tasks are counted.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::time::Duration;

use apiary::apiary_swarm::{ColonyConfig, Regulation};
use apiary::{Apiary, ErrorKind, NodeOptions};

async fn node(dir: &std::path::Path) -> Apiary {
    let ap = Apiary::open(dir.join("s").to_str().unwrap()).await.unwrap();
    common::create_clicks_frame(&ap).await;
    ap.start_with(NodeOptions {
        node_id: Some("a".into()),
        state_dir: dir.join("state"),
        cache_bytes: Some(0),
        swarm: apiary::apiary_swarm::SwarmConfig {
            heartbeat_interval: Duration::from_millis(100),
            ..Default::default()
        },
        colony: ColonyConfig {
            max_backpressure: Duration::from_millis(100),
            // This test is about load: a slow heartbeat write on a busy machine must not
            // move the bands (the storage signal has its own unit test).
            latency_reference: Duration::from_secs(3600),
            ..ColonyConfig::default()
        },
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    ap
}

/// Waits (bounded) until `n` queries wait for a bee.
async fn until_waiting(ap: &Apiary, n: u32) {
    let bees = ap.bees().unwrap();
    for _ in 0..2000 {
        if bees.load().queue_depth == n {
            return;
        }
        apiary::apiary_storage::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("expected {n} queries waiting, have {:?}", bees.load());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drives_the_colony_from_cold_to_critical_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let ap = node(dir.path()).await;
    let regulation = || ap.colony_status().unwrap().regulation;
    assert_eq!(regulation(), Regulation::Cold);
    let status = ap.colony_status().unwrap();
    assert_eq!(status.setpoint, 0.7);
    assert!(
        status
            .bees
            .iter()
            .all(|b| b.state == "idle" && b.memory_budget > 0)
    );

    // Every bee busy: warm.
    let bees = ap.bees().unwrap();
    let total = bees.total();
    let mut held = Vec::new();
    for _ in 0..total {
        held.push(bees.acquire().await.unwrap());
    }
    assert_eq!(regulation(), Regulation::Warm);
    assert!(ap.bee_status().unwrap().iter().all(|b| b.state == "busy"));

    // Queries queue up behind them: hot, and from then on new ones are slowed down.
    let mut queries = Vec::new();
    let mut waiting = 0;
    while regulation() != Regulation::Critical {
        let node = ap.clone();
        queries.push(tokio::spawn(async move {
            node.sql("SELECT COUNT(*) FROM analytics.events.clicks")
                .await
        }));
        waiting += 1;
        until_waiting(&ap, waiting).await;
        if regulation() == Regulation::Hot {
            assert!(ap.colony_status().unwrap().refused == 0);
        }
        assert!(waiting <= 4 * total, "never became critical");
    }
    let status = ap.colony_status().unwrap();
    assert!(
        status.throttled > 0,
        "admission slowed down while hot: {status:?}"
    );
    assert!(status.temperature > 2.0, "{status:?}");

    // Critical: a new query is refused, saying why and when to retry.
    let refused = ap
        .sql("SELECT COUNT(*) FROM analytics.events.clicks")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(refused.to_string().contains("overloaded"), "{refused}");
    assert!(refused.to_string().contains("retry"), "{refused}");
    assert_eq!(ap.colony_status().unwrap().refused, 1);

    // The load ends: every waiting query completes, and the colony cools down.
    held.clear();
    for query in queries {
        query.await.unwrap().unwrap();
    }
    assert_eq!(regulation(), Regulation::Cold);
    ap.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_with_the_users_error_is_abandoned_at_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ap = node(dir.path()).await;
    let batch = {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(Int64Array::from(vec![1, 2])),
            std::sync::Arc::new(StringArray::from(vec!["u", "v"])),
            std::sync::Arc::new(StringArray::from(vec!["/home", "/docs"])),
            std::sync::Arc::new(Int64Array::from(vec![10, 20])),
            std::sync::Arc::new(StringArray::from(vec!["us", "de"])),
        ];
        RecordBatch::try_new(common::clicks_schema(), columns).unwrap()
    };
    ap.write_to_frame("analytics", "events", "clicks", [batch])
        .await
        .unwrap();
    let mut session = ap.sql_session().unwrap();
    session
        .sql("SET apiary.distribute = 'always'")
        .await
        .unwrap();
    // Fails while running: a page is not a number. Every attempt would fail the same way,
    // so there is one, and the query fails with the user's error.
    let err = session
        .sql("SELECT CAST(page AS INT) FROM analytics.events.clicks")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("Cannot cast"), "{err}");
    let status = ap.colony_status().unwrap();
    assert_eq!(status.abandoned_tasks, 1, "{status:?}");
    let abandoned = &status.recent_abandoned[0];
    assert_eq!(abandoned.frame, "analytics.events.clicks");
    assert_eq!(abandoned.causes.len(), 1, "{abandoned:?}");
    assert!(abandoned.causes[0].contains("Cannot cast"), "{abandoned:?}");
    assert!(!abandoned.cells.is_empty());
    // The count and the setpoint travel in the node's heartbeats: `apiary colony --json`,
    // another process, shows them.
    let storage = dir.path().join("s");
    let mut seen = serde_json::Value::Null;
    for _ in 0..200 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["colony", "--json", "--storage"])
            .arg(&storage)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        seen = serde_json::from_slice(&out.stdout).unwrap();
        if seen["nodes"][0]["abandoned_tasks"] == 1 {
            break;
        }
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
    let node = &seen["nodes"][0];
    assert_eq!(node["abandoned_tasks"], 1, "{seen}");
    assert_eq!(node["setpoint"], 0.7, "{seen}");
    assert_eq!(node["node_id"], "a", "{seen}");
    ap.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_own_distributed_tasks_hold_its_bees() {
    let dir = tempfile::tempdir().unwrap();
    let ap = node(dir.path()).await;
    common::write_numbers(&ap).await;
    let bees = ap.bees().unwrap();
    assert_eq!(bees.occupancy().0, 0);
    // Alone in its swarm, the node runs every task of its distributed query itself.
    let coordinator = ap.clone();
    let query = tokio::spawn(async move {
        let mut session = coordinator.sql_session().unwrap();
        session
            .sql("SET apiary.distribute = 'always'")
            .await
            .unwrap();
        session.sql(common::LONG_QUERY).await
    });
    // While they run, they hold bees, as a worker's tasks do: the idle bees it publishes
    // are the truth.
    let started = std::time::Instant::now();
    while bees.occupancy().0 == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no bee was taken"
        );
        assert!(!query.is_finished(), "the query ended: {:?}", query.await);
        apiary::apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ap.status(&NodeOptions::default()).bees >= 1);
    // Dropped, the query gives its bees back.
    query.abort();
    let dropped = std::time::Instant::now();
    while bees.occupancy().0 > 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(10),
            "bees still held"
        );
        apiary::apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    ap.shutdown().await.unwrap();
}
