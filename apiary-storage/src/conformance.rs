//! The conformance suite every [`StorageBackend`] must pass (behind the `testing` feature).
//!
//! Each check writes under its own fresh prefix, so the suite can run against a shared
//! bucket. Backend crates (and researchers plugging in their own) call [`run_all`] from a
//! test, and print the [`Report`] it returns: a check a backend cannot run (compare-and-swap
//! on a local folder) is reported as skipped, with the reason, never passed silently.
//! Backends over an `object_store` also run [`lost_responses`], which injects faults below
//! the backend to prove that a conditional write whose response was lost is resolved, never
//! reported as a conflict or applied twice. The checks panic with a message naming the rule
//! that was broken.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::backend::{Capabilities, CreateOutcome, StorageBackend, SwapOutcome};
use crate::error::StorageError;
use crate::instrumented::{FaultConfig, InstrumentedStore};
use crate::object::ObjectStoreBackend;

/// What a conformance run did: the checks that passed and those skipped, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Checks that ran and passed.
    pub passed: Vec<&'static str>,
    /// Checks (or parts of checks) that could not run on this backend, and why.
    pub skipped: Vec<(&'static str, &'static str)>,
}

impl Report {
    fn pass(&mut self, check: &'static str) {
        self.passed.push(check);
    }

    fn skip(&mut self, check: &'static str, why: &'static str) {
        self.skipped.push((check, why));
    }

    /// The names of the skipped checks.
    pub fn skipped_checks(&self) -> Vec<&'static str> {
        self.skipped.iter().map(|(c, _)| *c).collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} checks passed", self.passed.len())?;
        for (check, why) in &self.skipped {
            write!(f, "; skipped {check}: {why}")?;
        }
        Ok(())
    }
}

fn base(root: &Path, check: &str) -> Path {
    root.clone()
        .join(check)
        .join(crate::Random::process().id().as_str())
}

/// Runs every check against `backend`, under `root`, and reports what ran.
pub async fn run_all(backend: Arc<dyn StorageBackend>, root: &Path) -> Report {
    let mut report = Report::default();
    round_trip(backend.as_ref(), root).await;
    report.pass("round_trip");
    overwrite_and_delete(backend.as_ref(), root).await;
    report.pass("overwrite_and_delete");
    put_if_absent_semantics(backend.as_ref(), root).await;
    report.pass("put_if_absent_semantics");
    put_if_match_semantics(backend.as_ref(), root).await;
    report.pass("put_if_match_semantics");
    listing(backend.as_ref(), root).await;
    report.pass("listing");
    racing_creates(Arc::clone(&backend), root).await;
    report.pass("racing_creates");
    if backend.capabilities().compare_and_swap {
        racing_swaps(Arc::clone(&backend), root).await;
        report.pass("racing_swaps");
    } else {
        report.skip(
            "racing_swaps",
            "no compare-and-swap (checked: put_if_match says Unsupported)",
        );
    }
    no_torn_reads(Arc::clone(&backend), root).await;
    report.pass("no_torn_reads");
    report
}

/// [`run_all`] on the default backend over `store`, then [`lost_responses`] with faults
/// injected below it.
pub async fn run_object_store(
    store: Arc<dyn ObjectStore>,
    capabilities: Capabilities,
    root: &Path,
    lost_response_keys: usize,
) -> Report {
    let backend = Arc::new(ObjectStoreBackend::new(
        Arc::clone(&store),
        capabilities,
        "conformance",
    ));
    let mut report = run_all(backend, root).await;
    lost_responses(store, capabilities, root, lost_response_keys).await;
    report.pass("lost_responses");
    report
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

/// Every conditional create under heavy faults injected below the backend (errors, lost
/// responses, S3's 409 conflicts, latency) is acknowledged exactly once per key, never
/// reported as a conflict for its own write, and a rival writer is always refused.
pub async fn lost_responses(
    store: Arc<dyn ObjectStore>,
    capabilities: Capabilities,
    root: &Path,
    keys: usize,
) {
    let faults = FaultConfig {
        seed: 7,
        error_rate: 0.15,
        lost_response_rate: 0.35,
        conflict_rate: 0.1,
        max_latency: Duration::from_millis(2),
        ignore_preconditions: false,
        list_omission_rate: 0.0,
        max_list_latency: Duration::ZERO,
    };
    let faulty = Arc::new(InstrumentedStore::new(Arc::clone(&store), faults));
    let b = ObjectStoreBackend::new(faulty, capabilities, "faulty");
    let clean = ObjectStoreBackend::new(store, capabilities, "clean");
    let dir = base(root, "lost_responses");
    for i in 0..keys {
        let key = dir.clone().join(format!("{i:04}.json").as_str());
        let mine = Bytes::from(format!("{{\"write_id\":\"mine-{i}\"}}"));
        let outcome = put_until_known(&b, &key, &mine).await;
        assert!(
            matches!(outcome, CreateOutcome::Created(_)),
            "key {i}: our own write was reported as a conflict"
        );
        assert_eq!(clean.get(&key).await.unwrap().bytes, mine);
        let rival = Bytes::from(format!("{{\"write_id\":\"rival-{i}\"}}"));
        match put_until_known(&b, &key, &rival).await {
            CreateOutcome::AlreadyExists(o) => assert_eq!(o.bytes, mine),
            CreateOutcome::Created(_) => panic!("key {i}: a rival overwrote a committed object"),
        }
        assert_eq!(clean.get(&key).await.unwrap().bytes, mine);
    }
}

/// put, get, get_range, head; a missing key is `NotFound`.
pub async fn round_trip(b: &dyn StorageBackend, root: &Path) {
    let dir = base(root, "round_trip");
    let key = dir.clone().join("a.bin");
    let data = Bytes::from_static(b"hello, apiary");
    b.put(&key, data.clone()).await.unwrap();
    let got = b.get(&key).await.unwrap();
    assert_eq!(got.bytes, data, "get returns what put wrote");
    assert_eq!(got.meta.size, data.len() as u64, "meta size");
    assert_eq!(got.meta.key, key, "meta key is relative to the root");
    assert_eq!(b.get_range(&key, 7..13).await.unwrap(), &data[7..13]);
    assert_eq!(b.head(&key).await.unwrap().size, data.len() as u64);
    let missing = dir.join("missing");
    assert!(
        b.get(&missing).await.unwrap_err().is_not_found(),
        "get of absent key"
    );
    assert!(
        b.head(&missing).await.unwrap_err().is_not_found(),
        "head of absent key"
    );
}

/// put replaces; delete removes and is idempotent.
pub async fn overwrite_and_delete(b: &dyn StorageBackend, root: &Path) {
    let key = base(root, "overwrite").join("x");
    b.put(&key, Bytes::from_static(b"one")).await.unwrap();
    b.put(&key, Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(b.get(&key).await.unwrap().bytes, "two");
    b.delete(&key).await.unwrap();
    assert!(b.get(&key).await.unwrap_err().is_not_found(), "deleted");
    b.delete(&key).await.unwrap();
}

/// put_if_absent creates once; a second writer gets the first object back; resending the
/// same bytes is recognised as the caller's own write.
pub async fn put_if_absent_semantics(b: &dyn StorageBackend, root: &Path) {
    let key = base(root, "put_if_absent").join("v1");
    let first = Bytes::from_static(b"{\"writer\":1}");
    let second = Bytes::from_static(b"{\"writer\":2}");
    assert!(matches!(
        b.put_if_absent(&key, first.clone()).await.unwrap(),
        CreateOutcome::Created(_)
    ));
    match b.put_if_absent(&key, second).await.unwrap() {
        CreateOutcome::AlreadyExists(existing) => assert_eq!(existing.bytes, first),
        CreateOutcome::Created(_) => panic!("create-if-absent overwrote an existing object"),
    }
    assert!(
        matches!(
            b.put_if_absent(&key, first.clone()).await.unwrap(),
            CreateOutcome::Created(_)
        ),
        "resending identical bytes is the caller's own (lost-response) write"
    );
    assert_eq!(b.get(&key).await.unwrap().bytes, first);
}

/// put_if_match swaps on the current version only, or says clearly it is unsupported.
pub async fn put_if_match_semantics(b: &dyn StorageBackend, root: &Path) {
    let key = base(root, "put_if_match").join("doc");
    b.put(&key, Bytes::from_static(b"v1")).await.unwrap();
    let v1 = b.head(&key).await.unwrap().version;
    if !b.capabilities().compare_and_swap {
        let err = b
            .put_if_match(&key, Bytes::from_static(b"v2"), &v1)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::Unsupported { .. }),
            "unsupported CAS must be `StorageError::Unsupported`: {err}"
        );
        return;
    }
    match b
        .put_if_match(&key, Bytes::from_static(b"v2"), &v1)
        .await
        .unwrap()
    {
        SwapOutcome::Swapped(_) => {}
        SwapOutcome::Mismatch(_) => panic!("CAS on the current version was refused"),
    }
    match b
        .put_if_match(&key, Bytes::from_static(b"v3"), &v1)
        .await
        .unwrap()
    {
        SwapOutcome::Mismatch(Some(current)) => assert_eq!(current.bytes, "v2"),
        other => panic!("CAS on a stale version must be refused, got {other:?}"),
    }
    let absent = key.clone().join("absent");
    assert!(matches!(
        b.put_if_match(&absent, Bytes::from_static(b"x"), &v1)
            .await
            .unwrap(),
        SwapOutcome::Mismatch(None)
    ));
    assert_eq!(b.get(&key).await.unwrap().bytes, "v2");
}

/// Listings are sorted, respect segment boundaries, and `list_after` is exclusive.
pub async fn listing(b: &dyn StorageBackend, root: &Path) {
    let dir = base(root, "listing");
    for name in ["a/1", "a/2", "a/3", "a_b/1", "b/deep/1", "top"] {
        b.put(&dir.clone().join_path(name), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let a = dir.clone().join("a");
    let keys: Vec<String> = b
        .list(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    let expect: Vec<String> = ["a/1", "a/2", "a/3"]
        .iter()
        .map(|n| format!("{dir}/{n}"))
        .collect();
    assert_eq!(keys, expect, "prefix `a` must not match `a_b`");
    let after: Vec<String> = b
        .list_after(&a, &a.clone().join("1"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(after, expect[1..].to_vec(), "list_after is exclusive");
    let level = b.list_with_delimiter(&dir).await.unwrap();
    let objects: Vec<String> = level.objects.iter().map(|m| m.key.to_string()).collect();
    assert_eq!(objects, vec![format!("{dir}/top")]);
    let prefixes: Vec<String> = level.prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        prefixes,
        vec![format!("{dir}/a"), format!("{dir}/a_b"), format!("{dir}/b")]
    );
    assert!(b.list(&dir.join("none")).await.unwrap().is_empty());
}

trait JoinPath {
    fn join_path(self, rel: &str) -> Path;
}

impl JoinPath for Path {
    fn join_path(self, rel: &str) -> Path {
        rel.split('/').fold(self, |p, seg| p.join(seg))
    }
}

/// Many writers race create-if-absent on one key: exactly one wins, all others see the
/// winner's bytes.
pub async fn racing_creates(b: Arc<dyn StorageBackend>, root: &Path) {
    let key = base(root, "racing_creates").join("00000000000000000001.json");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let b = Arc::clone(&b);
            let key = key.clone();
            tokio::spawn(async move {
                let mine = Bytes::from(format!("{{\"writer\":{i}}}"));
                (mine.clone(), b.put_if_absent(&key, mine).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (mine, CreateOutcome::Created(_)) => winners.push(mine),
            (_, CreateOutcome::AlreadyExists(o)) => seen.push(o.bytes),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create-if-absent wins");
    assert!(
        seen.iter().all(|s| *s == winners[0]),
        "losers see the winner"
    );
    assert_eq!(b.get(&key).await.unwrap().bytes, winners[0]);
}

/// Many writers race compare-and-swap from one version: exactly one wins. Only for
/// backends with compare-and-swap.
pub async fn racing_swaps(b: Arc<dyn StorageBackend>, root: &Path) {
    let key = base(root, "racing_swaps").join("doc");
    b.put(&key, Bytes::from_static(b"start")).await.unwrap();
    let start = b.head(&key).await.unwrap().version;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let b = Arc::clone(&b);
            let key = key.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let mine = Bytes::from(format!("writer {i}"));
                (
                    mine.clone(),
                    b.put_if_match(&key, mine, &start).await.unwrap(),
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        if let (mine, SwapOutcome::Swapped(_)) = t.await.unwrap() {
            winners.push(mine);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one compare-and-swap wins");
    assert_eq!(b.get(&key).await.unwrap().bytes, winners[0]);
}

/// Readers racing overwrites of a large object see a whole version, never a mix.
pub async fn no_torn_reads(b: Arc<dyn StorageBackend>, root: &Path) {
    let key = base(root, "torn").join("big");
    let size = 2 * 1024 * 1024;
    let version = move |n: u8| Bytes::from(vec![n; size]);
    b.put(&key, version(0)).await.unwrap();
    let writer = {
        let b = Arc::clone(&b);
        let key = key.clone();
        tokio::spawn(async move {
            for n in 1..=6u8 {
                b.put(&key, version(n)).await.unwrap();
            }
        })
    };
    for _ in 0..12 {
        let got = b.get(&key).await.unwrap().bytes;
        assert_eq!(got.len(), size, "a read saw a partial object");
        assert!(
            got.iter().all(|&x| x == got[0]),
            "a read saw a mix of two versions"
        );
    }
    writer.await.unwrap();
}

/// The S3 URI the test rig provides (`APIARY_TEST_S3`, set by `scripts/s3-server.sh`), with
/// a fresh prefix so that runs never see each other's objects.
///
/// Panics when the variable is missing: the S3 tests are not optional. Run the tests with
/// `scripts/test.sh`, which starts the server.
pub fn s3_test_uri(name: &str) -> crate::StorageUri {
    rig_uri("APIARY_TEST_S3", "scripts/s3-server.sh", name)
}

/// The Azure Blob URI the test rig provides (`APIARY_TEST_AZURE`, set by
/// `scripts/azure-server.sh`, which starts Azurite), with a fresh prefix. Panics when the
/// variable is missing, as [`s3_test_uri`] does.
pub fn azure_test_uri(name: &str) -> crate::StorageUri {
    rig_uri("APIARY_TEST_AZURE", "scripts/azure-server.sh", name)
}

fn rig_uri(variable: &str, script: &str, name: &str) -> crate::StorageUri {
    let base = std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: these tests need the local server `{script}` starts. Run \
             the tests with `scripts/test.sh` (it starts it), or `eval \"$({script})\"` first"
        )
    });
    let uri = format!(
        "{}/{name}-{}",
        base.trim_end_matches('/'),
        crate::Random::process().id()
    );
    crate::StorageUri::parse(&uri).unwrap()
}
