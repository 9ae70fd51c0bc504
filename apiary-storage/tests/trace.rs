//! A request trace writes down every request, in order, with the fault it drew: two stores
//! given the same seed and the same requests write the same trace, and a store with
//! another seed draws other faults.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_storage::{
    FaultConfig, InstrumentedStore, ManualClock, ObjectStoreBackend, Path, RequestTrace,
    StorageBackend, StorageUri, object_store_for,
};
use bytes::Bytes;

async fn requests(seed: u64) -> Vec<String> {
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let clock = ManualClock::new();
    let trace = RequestTrace::new();
    let faults = FaultConfig {
        seed,
        error_rate: 0.3,
        ..FaultConfig::none()
    };
    let backend = ObjectStoreBackend::new(
        Arc::new(
            InstrumentedStore::new(store, faults)
                .with_clock(Arc::new(clock.clone()))
                .with_trace("a", trace.clone()),
        ),
        caps,
        "memory://",
    )
    .with_resolve_pause(std::time::Duration::ZERO);
    for i in 0..20 {
        clock.advance(std::time::Duration::from_millis(5));
        let key = Path::from(format!("k/{}", i % 4));
        let _ = backend.put(&key, Bytes::from_static(b"x")).await;
        let _ = backend.get(&key).await;
    }
    let _ = backend.list(&Path::from("k")).await;
    let _ = backend.delete(&Path::from("k/0")).await;
    trace.lines()
}

#[tokio::test]
async fn a_trace_records_requests_and_their_faults() {
    let once = requests(7).await;
    assert_eq!(once, requests(7).await, "the same seed, the same trace");
    assert_ne!(once, requests(8).await, "another seed draws other faults");
    assert!(once[0].starts_with("5 a put k/0 "), "{once:#?}");
    assert!(once.iter().any(|l| l.ends_with(" ok")), "{once:#?}");
    assert!(once.iter().any(|l| l.ends_with(" failed")), "{once:#?}");
    assert!(once.iter().any(|l| l.contains(" a list k/ ")), "{once:#?}");
    assert!(
        once.iter().any(|l| l.contains(" a delete k/0 ")),
        "{once:#?}"
    );
    // Every request is there: 40 puts and gets, a list, a delete.
    assert!(once.len() >= 42, "{once:#?}");
}

/// A stamped store reports the stamps of its clock for what was written through it: in
/// reads, HEADs and listings, for puts and copies; deleting forgets the stamp, and an
/// object written around it keeps the inner store's.
#[tokio::test]
async fn a_stamped_store_stamps_on_its_clock() {
    use apiary_storage::StampedStore;
    use apiary_storage::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use futures::TryStreamExt;

    let (inner, _) = object_store_for(&StorageUri::Memory).unwrap();
    let clock = ManualClock::new();
    let store = StampedStore::new(Arc::clone(&inner), Arc::new(clock.clone()));
    let ms = |m: &apiary_storage::object_store::ObjectMeta| m.last_modified.timestamp_millis();
    let start = apiary_storage::Clock::wall_ms(&clock);

    store
        .put(&Path::from("a"), PutPayload::from_static(b"x"))
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(7));
    store
        .copy(&Path::from("a"), &Path::from("b"))
        .await
        .unwrap();
    inner
        .put(&Path::from("c"), PutPayload::from_static(b"x"))
        .await
        .unwrap();

    assert_eq!(ms(&store.head(&Path::from("a")).await.unwrap()), start);
    let got = store.get(&Path::from("b")).await.unwrap();
    assert_eq!(ms(&got.meta), start + 7000);
    let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
    let stamps: Vec<(String, i64)> = listed
        .iter()
        .map(|m| (m.location.to_string(), ms(m)))
        .collect();
    let real = ms(&inner.head(&Path::from("c")).await.unwrap());
    assert_eq!(
        stamps,
        [
            ("a".to_string(), start),
            ("b".to_string(), start + 7000),
            ("c".to_string(), real)
        ]
    );
    let delimited = store.list_with_delimiter(None).await.unwrap();
    assert_eq!(ms(&delimited.objects[0]), start);

    store.delete(&Path::from("a")).await.unwrap();
    store
        .put(&Path::from("a"), PutPayload::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(
        ms(&store.head(&Path::from("a")).await.unwrap()),
        start + 7000,
        "written again: stamped again"
    );
}
