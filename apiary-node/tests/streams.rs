//! Row results as streams, on nodes started in this process: workers send their rows in
//! many small chunks, the coordinating node keeps its own task's rows in its query's pool
//! and spills them past it, and the answer is every row once, as a local run gives it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use apiary::apiary_query::distributed::StorageShuffle;
use apiary::apiary_storage::{self, StorageUri};
use apiary::{Apiary, ApiaryOptions, NodeOptions};
use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;

const ROWS_PER_CELL: i64 = 10_000;
const CELLS: i64 = 24;

/// `(id, payload)` rows `start..start + ROWS_PER_CELL`, the payload 100 characters that
/// name the id (so a row's payload can be checked against its id).
fn wide(start: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + ROWS_PER_CELL).collect();
    let payloads: Vec<String> = ids.iter().map(|i| format!("{i:0>100}")).collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as _),
        ("payload", Arc::new(StringArray::from(payloads)) as _),
    ])
    .unwrap()
}

/// The ids of every row of `sql`'s answer on `ap` (checking each payload), streamed.
async fn ids(ap: &Apiary, sql: &str) -> Vec<i64> {
    let mut stream = ap.sql_stream(sql).await.unwrap();
    let mut out = Vec::new();
    while let Some(batch) = stream.try_next().await.unwrap() {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let payloads = arrow_cast::cast(batch.column(1), &arrow_schema::DataType::Utf8).unwrap();
        let payloads = payloads.as_any().downcast_ref::<StringArray>().unwrap();
        for row in 0..batch.num_rows() {
            assert_eq!(payloads.value(row), format!("{:0>100}", ids.value(row)));
            assert!(!ids.is_null(row));
            out.push(ids.value(row));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stream_in_chunks_and_the_coordinators_share_spills() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageUri::parse(&dir.path().join("data").display().to_string()).unwrap();
    let backend = apiary_storage::open(&storage).await.unwrap();
    let mut options = ApiaryOptions::new(storage.clone());
    options.swarm = common::fast_swarm_config();
    // Results go out in chunks of 16 KiB: a task's rows make dozens.
    let transport = Arc::new(StorageShuffle::new(Arc::clone(&backend)).with_chunk_bytes(16 << 10));
    let mut nodes = Vec::new();
    for id in ["streams-0", "streams-1"] {
        let node = Apiary::builder(options.clone())
            .backend(Arc::clone(&backend))
            .transport(transport.clone())
            .build()
            .await
            .unwrap();
        node.start_with(NodeOptions {
            node_id: Some(id.into()),
            state_dir: dir.path().join(id),
            swarm: common::fast_swarm_config(),
            task_poll_interval: Duration::from_millis(10),
            // 4 MiB a bee: the coordinator's own share (about 12 MiB of rows) spills.
            memory_bytes: Some(8 << 20),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        nodes.push(node);
    }
    let coordinator = &nodes[0];
    for _ in 0..200 {
        if coordinator.swarm_status().await.unwrap().alive == 2 {
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
    coordinator.create_hive("h").await.unwrap();
    coordinator.create_box("h", "b").await.unwrap();
    coordinator
        .create_frame(
            "h",
            "b",
            "wide",
            &[("id", "int64"), ("payload", "utf8")],
            &[],
        )
        .await
        .unwrap();
    for cell in 0..CELLS {
        coordinator
            .write_to_frame("h", "b", "wide", [wide(cell * ROWS_PER_CELL)])
            .await
            .unwrap();
    }

    let query = "SELECT id, payload FROM h.b.wide";
    let got = ids(
        coordinator,
        &format!("SET apiary.distribute = 'always'; {query}"),
    )
    .await;
    let expected: Vec<i64> = (0..CELLS * ROWS_PER_CELL).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "every row once");
    let local = ids(
        coordinator,
        &format!("SET apiary.distribute = 'never'; {query}"),
    )
    .await;
    assert_eq!(local.len(), got.len());

    // Both nodes answered, and the coordinator's own rows went to disk past its pool.
    let mut session = coordinator.sql_session().unwrap();
    let plan = session
        .sql(&format!(
            "SET apiary.distribute = 'always'; EXPLAIN ANALYZE {query}"
        ))
        .await
        .unwrap();
    let text = common::canonical(plan.batches()).join("\n");
    let nodes_used: BTreeSet<&str> = ["streams-0", "streams-1"]
        .into_iter()
        .filter(|n| text.contains(&format!("node={n}")))
        .collect();
    assert_eq!(nodes_used.len(), 2, "{text}");
    let spills = text
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(spills > 0, "the coordinator's share spilled: {text}");
    // Nothing of the queries is left once they are answered.
    for node in &nodes {
        node.settle().await;
    }
    let left = backend
        .list(&apiary_storage::Path::from("_queries"))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
