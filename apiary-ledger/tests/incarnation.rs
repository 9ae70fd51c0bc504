//! A write in flight across a drop and re-create of its frame commits nothing into the new
//! frame: appends and overwrites carry the incarnation they were planned against.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::mpsc;

use apiary_ledger::{
    FrameDefinition, FrameLedger, FrameRef, FrameSchema, LedgerConfig, LedgerError, Operation,
    WriteMode, WriteOptions, write_batches,
};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

fn definition(x: &str) -> FrameDefinition {
    FrameDefinition::new(
        FrameSchema::parse_compact(&format!("x:{x}")).unwrap(),
        vec![],
    )
    .unwrap()
}

fn rows(n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let x: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
    RecordBatch::try_new(schema, vec![x]).unwrap()
}

async fn write_across_a_recreate(mode: WriteMode, schema_after: &str) {
    let backend = apiary_storage::memory();
    let frame = FrameRef::new("h", "b", "f").unwrap();
    let open = || FrameLedger::open(Arc::clone(&backend), frame.clone(), LedgerConfig::default());
    let writer = open().await.unwrap();
    let other = open().await.unwrap();
    writer
        .commit(&Operation::Create(definition("int64")))
        .await
        .unwrap();
    writer.commit(&Operation::Append(vec![])).await.unwrap();
    // The write's input: one batch (pulled once the write has read the frame), then it
    // waits on the write's blocking thread until the frame was dropped and created again.
    let (go, wait) = mpsc::channel::<()>();
    let (started, pulled) = tokio::sync::oneshot::channel::<()>();
    let mut started = Some(started);
    let input = std::iter::from_fn(move || match started.take() {
        Some(started) => {
            let _ = started.send(());
            Some(Ok(rows(10)))
        }
        None => {
            let _ = wait.recv();
            None
        }
    });
    let write = {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            let result = write_batches(
                &writer,
                backend.as_ref(),
                input,
                mode,
                &WriteOptions::default(),
            )
            .await;
            (writer, result)
        })
    };
    pulled.await.unwrap();
    other.refresh().await.unwrap();
    other.commit(&Operation::Drop).await.unwrap();
    other
        .commit(&Operation::Create(definition(schema_after)))
        .await
        .unwrap();
    go.send(()).unwrap();
    let (writer, result) = write.await.unwrap();
    match result {
        Err(LedgerError::Conflict { detail, .. }) => {
            assert!(detail.contains("dropped and created again"), "{detail}");
        }
        other => panic!("{mode:?} across a re-create: {other:?}"),
    }
    // The new frame is as it was created: no cell of the old one's write.
    let state = writer.refresh().await.unwrap().unwrap();
    let live = state.live.as_ref().unwrap();
    assert!(live.cells.is_empty(), "{:?}", live.cells.keys());
    assert_eq!(live.definition, definition(schema_after));
}

#[tokio::test]
async fn an_append_across_a_recreate_with_another_schema_commits_nothing() {
    write_across_a_recreate(WriteMode::Append, "utf8").await;
}

#[tokio::test]
async fn an_overwrite_across_a_recreate_with_the_same_schema_commits_nothing() {
    write_across_a_recreate(WriteMode::Overwrite, "int64").await;
}

#[tokio::test]
async fn a_write_to_the_frame_it_read_still_commits() {
    let backend = apiary_storage::memory();
    let frame = FrameRef::new("h", "b", "f").unwrap();
    let ledger = FrameLedger::open(Arc::clone(&backend), frame, LedgerConfig::default())
        .await
        .unwrap();
    ledger
        .commit(&Operation::Create(definition("int64")))
        .await
        .unwrap();
    let result = write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(rows(5))],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(result.version, 1);
}
