//! The conformance suite and the conditional-write guarantees, on every backend: memory, a
//! local folder, and the real S3 server started by `scripts/s3-server.sh`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_storage::conformance::{run_all, s3_test_uri};
use apiary_storage::{
    CreateOutcome, FaultConfig, InstrumentedStore, ObjectStoreBackend, Path, StorageBackend,
    StorageError, StorageUri, object_store_for, open, preflight,
};
use bytes::Bytes;

/// A backend with faults injected below it, and a clean one over the same store.
fn faulty_and_clean(
    uri: &StorageUri,
    faults: FaultConfig,
) -> (Arc<dyn StorageBackend>, Arc<dyn StorageBackend>) {
    let (store, caps) = object_store_for(uri).unwrap();
    let faulty = Arc::new(InstrumentedStore::new(Arc::clone(&store), faults));
    (
        Arc::new(ObjectStoreBackend::new(faulty, caps, uri.to_string())),
        Arc::new(ObjectStoreBackend::new(store, caps, uri.to_string())),
    )
}

fn ignoring_preconditions(uri: &StorageUri) -> Arc<dyn StorageBackend> {
    let faults = FaultConfig {
        ignore_preconditions: true,
        ..FaultConfig::none()
    };
    faulty_and_clean(uri, faults).0
}

fn local_uri(dir: &tempfile::TempDir) -> StorageUri {
    StorageUri::Local(dir.path().join("store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_conforms() {
    let b = open(&StorageUri::Memory).await.unwrap();
    run_all(b, &Path::from("conformance")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_folder_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&local_uri(&dir)).await.unwrap();
    assert!(
        !b.capabilities().compare_and_swap,
        "local folders have no CAS"
    );
    run_all(b, &Path::from("conformance")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_conforms() {
    let b = open(&s3_test_uri("conformance")).await.unwrap();
    assert!(b.capabilities().compare_and_swap);
    run_all(b, &Path::from("conformance")).await;
}

#[tokio::test]
async fn preflight_refuses_a_store_that_ignores_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    for uri in [StorageUri::Memory, local_uri(&dir)] {
        let b = ignoring_preconditions(&uri);
        let err = preflight(b.as_ref()).await.unwrap_err();
        assert!(matches!(err, StorageError::Preflight { .. }), "{err}");
        assert!(err.to_string().contains("If-None-Match"), "{err}");
    }
}

#[tokio::test]
async fn preflight_refuses_ignored_preconditions_on_s3() {
    let b = ignoring_preconditions(&s3_test_uri("preflight"));
    let err = preflight(b.as_ref()).await.unwrap_err().to_string();
    assert!(err.contains("ignores"), "{err}");
}

#[tokio::test]
async fn preflight_leaves_no_probe_behind() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(&local_uri(&dir)).await.unwrap();
    assert!(b.list(&Path::from("_apiary")).await.unwrap().is_empty());
}

/// Retries a create-if-absent whose outcome stayed unknown: resending the same bytes is safe.
async fn put_until_known(b: &dyn StorageBackend, key: &Path, bytes: &Bytes) -> CreateOutcome {
    loop {
        match b.put_if_absent(key, bytes.clone()).await {
            Ok(o) => return o,
            Err(StorageError::OutcomeUnknown { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every conditional create under heavy faults (errors, lost responses, 409 conflicts) is
/// acknowledged exactly once per key, never reported as a conflict for its own write, and a
/// rival writer is always refused.
async fn lost_responses_are_resolved(uri: StorageUri, keys: usize) {
    let faults = FaultConfig {
        seed: 7,
        error_rate: 0.15,
        lost_response_rate: 0.35,
        conflict_rate: 0.1,
        max_latency: Duration::from_millis(2),
        ignore_preconditions: false,
        list_omission_rate: 0.0,
    };
    let (b, clean) = faulty_and_clean(&uri, faults);
    for i in 0..keys {
        let key = Path::from(format!("lost/{i:04}.json"));
        let mine = Bytes::from(format!("{{\"write_id\":\"mine-{i}\"}}"));
        let outcome = put_until_known(b.as_ref(), &key, &mine).await;
        assert!(
            matches!(outcome, CreateOutcome::Created(_)),
            "key {i}: our own write was reported as a conflict"
        );
        assert_eq!(clean.get(&key).await.unwrap().bytes, mine);
        let rival = Bytes::from(format!("{{\"write_id\":\"rival-{i}\"}}"));
        let outcome = put_until_known(b.as_ref(), &key, &rival).await;
        match outcome {
            CreateOutcome::AlreadyExists(o) => assert_eq!(o.bytes, mine),
            CreateOutcome::Created(_) => panic!("key {i}: a rival overwrote a committed object"),
        }
        assert_eq!(clean.get(&key).await.unwrap().bytes, mine);
    }
}

#[tokio::test]
async fn lost_responses_are_resolved_in_memory() {
    lost_responses_are_resolved(StorageUri::Memory, 400).await;
}

#[tokio::test]
async fn lost_responses_are_resolved_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    lost_responses_are_resolved(local_uri(&dir), 200).await;
}

#[tokio::test]
async fn lost_responses_are_resolved_on_s3() {
    lost_responses_are_resolved(s3_test_uri("lost"), 60).await;
}
