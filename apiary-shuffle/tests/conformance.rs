//! The shuffle transport conformance suite on the storage transport over memory, a local
//! folder and the S3 test server; and the manifest decoder against arbitrary bytes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_shuffle::{ShuffleTransport, StorageShuffle, TaskSpec, conformance};
use apiary_storage::conformance::s3_test_uri;
use apiary_storage::{StorageUri, open};
use proptest::prelude::*;

async fn storage_shuffle(uri: &StorageUri) -> Arc<dyn ShuffleTransport> {
    Arc::new(StorageShuffle::new(open(uri).await.unwrap()))
}

/// A storage transport on a fresh memory store, and the store (to look at what it wrote).
async fn memory_shuffle() -> (Arc<dyn apiary_storage::StorageBackend>, StorageShuffle) {
    let backend = open(&StorageUri::parse("memory://").unwrap())
        .await
        .unwrap();
    let t = StorageShuffle::new(Arc::clone(&backend));
    (backend, t)
}

#[tokio::test]
async fn storage_shuffle_on_memory() {
    conformance::run_all(storage_shuffle(&StorageUri::parse("memory://").unwrap()).await).await;
}

#[tokio::test]
async fn storage_shuffle_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let uri = StorageUri::parse(&dir.path().display().to_string()).unwrap();
    conformance::run_all(storage_shuffle(&uri).await).await;
    // Nothing of any query is left under `_queries/`.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("_queries"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn storage_shuffle_on_s3() {
    conformance::run_all(storage_shuffle(&s3_test_uri("shuffle")).await).await;
}

#[tokio::test]
async fn a_sweep_removes_only_old_queries() {
    let (backend, t) = memory_shuffle().await;
    t.publish_tasks("q-old", "c", &[conformance::task("q-old", 0, 1, "n")])
        .await
        .unwrap();
    assert_eq!(
        t.sweep(std::time::Duration::from_secs(60)).await.unwrap(),
        0
    );
    apiary_storage::time::sleep(std::time::Duration::from_millis(30)).await;
    assert_eq!(
        t.sweep(std::time::Duration::from_millis(10)).await.unwrap(),
        1
    );
    let left = backend
        .list(&apiary_storage::Path::from("_queries"))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_sweep_removes_doorbells_not_rung_for_a_while() {
    use std::time::Duration;
    let backend = open(&StorageUri::parse("memory://").unwrap())
        .await
        .unwrap();
    let doorbells = || async {
        let listed = backend
            .list(&apiary_storage::Path::from("_doorbells"))
            .await
            .unwrap();
        listed.len()
    };
    // Rung by publications: one doorbell per node given a task.
    let t = StorageShuffle::new(Arc::clone(&backend));
    for node in ["gone-1", "gone-2"] {
        let q = format!("q-{node}");
        t.publish_tasks(&q, "c", &[conformance::task(&q, 0, 1, node)])
            .await
            .unwrap();
        t.finish(&q).await.unwrap();
    }
    assert_eq!(doorbells().await, 2);
    // A day by default: a sweep now keeps them.
    t.sweep(Duration::from_secs(60)).await.unwrap();
    assert_eq!(doorbells().await, 2);
    // Idle longer than the transport's limit: removed, and a new ring makes one again.
    apiary_storage::time::sleep(Duration::from_millis(30)).await;
    let t = StorageShuffle::new(Arc::clone(&backend)).with_doorbell_idle(Duration::from_millis(10));
    t.sweep(Duration::from_secs(60)).await.unwrap();
    assert_eq!(doorbells().await, 0);
    t.publish_tasks("q-new", "c", &[conformance::task("q-new", 0, 1, "back")])
        .await
        .unwrap();
    assert_eq!(t.poll_tasks("back").await.unwrap().len(), 1);
    assert_eq!(doorbells().await, 1);
}

#[tokio::test]
async fn a_parts_claim_keeps_the_hash_out_of_object_keys() {
    let (backend, t) = memory_shuffle().await;
    let key = conformance::task("q-parts", 0, 1, "n").key();
    let cell = "h/b/f/cells/c.parquet";
    let part = apiary_shuffle::units::part_key(cell, &(0..100));
    assert!(t.claim(&key, cell).await.unwrap());
    assert!(t.claim(&key, &part).await.unwrap());
    let mut keys: Vec<String> = backend
        .list(&apiary_storage::Path::from("_queries"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "_queries/q-parts/claims/1/cells/h/b/f/cells/c.parquet",
            "_queries/q-parts/claims/1/parts/0-100/h/b/f/cells/c.parquet",
        ]
    );
    t.finish("q-parts").await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Arbitrary bytes, and mutations of a valid task, decode or fail with an error naming
    /// the object; never a panic. A task that decodes round-trips.
    #[test]
    fn task_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                  flip in any::<(usize, u8)>()) {
        let _ = TaskSpec::decode("t", &bytes);
        let mut valid = conformance::task("q-p", 1, 1, "n").encode().unwrap();
        let at = flip.0 % valid.len();
        valid[at] ^= flip.1;
        match TaskSpec::decode("t", &valid) {
            Ok(task) => prop_assert_eq!(TaskSpec::decode("t", &task.encode().unwrap()).unwrap(), task),
            Err(e) => prop_assert!(e.to_string().contains("task `t`")),
        }
    }
}

#[tokio::test]
async fn a_cancelled_or_finished_query_is_no_longer_wanted_in_storage() {
    let (_, t) = memory_shuffle().await;
    for cancel in [true, false] {
        let q = if cancel { "q-cancelled" } else { "q-finished" };
        let task = conformance::task(q, 0, 1, "w");
        t.publish_tasks(q, "c", std::slice::from_ref(&task))
            .await
            .unwrap();
        assert!(t.wanted(&task.key()).await.unwrap());
        if cancel {
            t.cancel(q).await.unwrap();
        } else {
            t.finish(q).await.unwrap();
        }
        assert!(!t.wanted(&task.key()).await.unwrap(), "{q}");
    }
}

/// A result goes out as it is produced, in chunks near the configured size, before its end
/// is written; the end names them all.
#[tokio::test]
async fn results_go_out_in_chunks_of_bounded_size_as_they_are_written() {
    use apiary_shuffle::{TaskOutcome, TaskReport};
    use arrow_array::{Int64Array, RecordBatch};
    let (backend, t) = memory_shuffle().await;
    let t = t.with_chunk_bytes(64 << 10);
    let spec = conformance::task("q-chunks", 0, 1, "w");
    t.publish_tasks("q-chunks", "c", std::slice::from_ref(&spec))
        .await
        .unwrap();
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "c0",
        arrow_schema::DataType::Int64,
        true,
    )]));
    let mut w = t.open_result(&spec, Arc::clone(&schema));
    // One large batch (cut by the writer) and many small ones.
    let big: Vec<i64> = (0..200_000).collect();
    w.write(
        RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(big))]).unwrap(),
    )
    .await
    .unwrap();
    for i in 0..100 {
        let small: Vec<i64> = (0..1_000).map(|v| 200_000 + i * 1_000 + v).collect();
        w.write(
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(small))])
                .unwrap(),
        )
        .await
        .unwrap();
    }
    let results = apiary_storage::Path::from("_queries/q-chunks/results");
    let chunks = backend.list(&results).await.unwrap();
    assert!(
        chunks.len() >= 20,
        "chunks go out before the end: {}",
        chunks.len()
    );
    for c in &chunks {
        assert!(c.size < 160 << 10, "a chunk of {} bytes", c.size);
    }
    w.finish(&TaskReport::default()).await.unwrap();
    let got = t.collect("q-chunks", &[spec.key()]).await.unwrap();
    let TaskOutcome::Rows(rows) = &got[0].outcome else {
        panic!("{got:?}");
    };
    assert_eq!(rows.chunks.len(), chunks.len(), "the end names every chunk");
    let values = conformance::read_rows(&t, "q-chunks", rows).await;
    assert_eq!(values, (0..300_000).collect::<Vec<i64>>());
    t.finish("q-chunks").await.unwrap();
    assert!(
        backend
            .list(&apiary_storage::Path::from("_queries"))
            .await
            .unwrap()
            .is_empty()
    );
}
