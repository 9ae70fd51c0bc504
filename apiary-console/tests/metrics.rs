//! `/metrics` as rendered from a node's figures: storage requests by operation and outcome
//! with their durations, ledger commits by outcome, and the text read back as samples (what
//! `apiary.system.metrics` answers).

#![allow(clippy::unwrap_used)]

use apiary_console::NodeMetrics;
use apiary_console::metrics::{render, samples};
use apiary_storage::object_store::path::Path;
use apiary_storage::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use apiary_storage::{InstrumentedStore, StorageUri, object_store_for};

#[tokio::test]
async fn storage_requests_and_commits_are_rendered_by_outcome() {
    let (inner, _) = object_store_for(&StorageUri::Memory).unwrap();
    let store = InstrumentedStore::counting(inner);
    let counts = store.counts();
    let key = Path::from("a/b");
    store.put(&key, "x".into()).await.unwrap();
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    assert!(store.put_opts(&key, "y".into(), create).await.is_err());
    assert!(store.get(&Path::from("a/none")).await.is_err());
    store.get(&key).await.unwrap();

    let metrics = NodeMetrics {
        storage_requests: Some(counts.stats()),
        ledger_commits: vec![("committed", 4), ("conflict", 1), ("outcome_unknown", 0)],
        splits_reused: 3,
        ..NodeMetrics::default()
    };
    let text = render(&metrics, None);
    for line in [
        "apiary_storage_requests_total{operation=\"put\",outcome=\"ok\"} 1",
        "apiary_storage_requests_total{operation=\"conditional_put\",outcome=\"precondition_failed\"} 1",
        "apiary_storage_requests_total{operation=\"get\",outcome=\"not_found\"} 1",
        "apiary_storage_requests_total{operation=\"get\",outcome=\"ok\"} 1",
        "# TYPE apiary_storage_request_duration_seconds histogram",
        "apiary_storage_request_duration_seconds_count{operation=\"get\"} 2",
        "apiary_storage_request_duration_seconds_bucket{operation=\"get\",le=\"+Inf\"} 2",
        "apiary_ledger_commits_total{outcome=\"committed\"} 4",
        "apiary_ledger_commits_total{outcome=\"conflict\"} 1",
        "apiary_distributed_splits_reused_total 3",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }

    let read = samples(&text);
    let commits = read
        .iter()
        .find(|s| s.name == "apiary_ledger_commits_total" && s.labels == "outcome=\"committed\"")
        .unwrap();
    assert_eq!(commits.value, 4.0);
    assert!(
        commits
            .help
            .starts_with("Attempts to create a ledger entry")
    );
    let inf = read
        .iter()
        .find(|s| s.name.ends_with("_bucket") && s.labels.contains("+Inf"))
        .unwrap();
    assert!(inf.value >= 1.0);
    assert!(
        read.iter().all(|s| !s.name.starts_with('#')),
        "comments are not samples"
    );
}
