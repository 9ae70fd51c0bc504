//! The frame unit tests plan and read: `h.b.f`, one `int64` column `x`.

use std::sync::Arc;

use apiary_ledger::{Column, FrameDefinition, FrameRef, FrameSchema, Registry, WriteMode};
use arrow_array::{Int64Array, RecordBatch};

/// `h.b.f`.
pub(crate) fn name() -> FrameRef {
    FrameRef::new("h", "b", "f").expect("a valid name")
}

/// Creates hive `h`, box `b` and frame `f` (`x int64`, not nullable) in `registry`.
pub(crate) async fn create(registry: &Registry) -> FrameRef {
    registry.create_hive("h").await.expect("hive");
    registry.create_box("h", "b").await.expect("box");
    let schema = FrameSchema::new(vec![Column {
        name: "x".into(),
        data_type: "int64".into(),
        nullable: false,
    }])
    .expect("schema");
    registry
        .create_frame(
            &name(),
            FrameDefinition::new(schema, vec![]).expect("definition"),
        )
        .await
        .expect("frame");
    name()
}

/// Appends one cell of `values` to the frame.
pub(crate) async fn append(registry: &Registry, values: &[i64]) {
    let ledger = registry.ledger(&name()).await.expect("ledger");
    let batch =
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(values.to_vec())) as _)])
            .expect("batch");
    apiary_ledger::write_batches(
        &ledger,
        registry.backend().as_ref(),
        vec![Ok(batch)],
        WriteMode::Append,
        &Default::default(),
    )
    .await
    .expect("write");
}
