//! The conformance suite and the conditional-write guarantees, on every backend: memory, a
//! local folder, the real S3 server started by `scripts/s3-server.sh`, and Azure Blob
//! storage on Azurite (`scripts/azure-server.sh`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_storage::conformance::{Report, azure_test_uri, run_object_store, s3_test_uri};
use apiary_storage::{
    FaultConfig, InstrumentedStore, ObjectStoreBackend, Path, StorageBackend, StorageError,
    StorageUri, object_store_for, open, preflight,
};

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

/// The preflight accepts the store, then the whole suite runs on the default backend over
/// it, lost-response resolution (faults injected below the backend) included.
async fn conforms(uri: StorageUri, lost_response_keys: usize) -> Report {
    open(&uri).await.unwrap();
    let (store, caps) = object_store_for(&uri).unwrap();
    let report =
        run_object_store(store, caps, &Path::from("conformance"), lost_response_keys).await;
    println!("{uri}: {report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_conforms() {
    let report = conforms(StorageUri::Memory, 400).await;
    assert!(report.skipped.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_folder_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let report = conforms(local_uri(&dir), 200).await;
    assert_eq!(
        report.skipped_checks(),
        ["racing_swaps"],
        "local folders have no compare-and-swap, and only that is skipped: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_conforms() {
    let report = conforms(s3_test_uri("conformance"), 60).await;
    assert!(report.skipped.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_conforms() {
    let report = conforms(azure_test_uri("conformance"), 60).await;
    assert!(report.skipped.is_empty(), "{report}");
}

#[tokio::test]
async fn preflight_refuses_ignored_preconditions_on_azure() {
    let b = ignoring_preconditions(&azure_test_uri("preflight"));
    let err = preflight(b.as_ref()).await.unwrap_err().to_string();
    assert!(err.contains("ignores"), "{err}");
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

#[tokio::test]
async fn opening_a_missing_bucket_says_the_bucket_does_not_exist() {
    // The test server's endpoint and credentials, a bucket nobody made.
    let base = s3_test_uri("missing-bucket");
    assert!(matches!(base, StorageUri::S3 { .. }), "{base}");
    let missing = StorageUri::parse(&format!(
        "s3://apiary-missing-{}/p",
        apiary_storage::Random::process().id()
    ))
    .unwrap();
    let err = open(&missing).await.unwrap_err().to_string();
    assert!(
        err.contains("the bucket (or container) does not exist"),
        "{err}"
    );
    assert!(!err.contains("preflight/"), "{err}");
}

#[tokio::test]
async fn a_write_that_never_reached_the_store_is_not_an_unknown_outcome() {
    use apiary_storage::object_store::{RetryConfig, aws::AmazonS3Builder};
    // A port nothing listens on: the connection is refused, the request never sent.
    let store = AmazonS3Builder::new()
        .with_bucket_name("apiary-unreachable")
        .with_endpoint("http://127.0.0.1:9")
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        .build()
        .unwrap();
    let backend = apiary_storage::ObjectStoreBackend::new(
        Arc::new(store),
        apiary_storage::Capabilities {
            compare_and_swap: true,
        },
        "s3://apiary-unreachable",
    );
    let err = backend
        .put_if_absent(&Path::from("k"), bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.never_sent(), "{err}");
    assert!(
        !matches!(err, apiary_storage::StorageError::OutcomeUnknown { .. }),
        "{err}"
    );
}
