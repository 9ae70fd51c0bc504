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
