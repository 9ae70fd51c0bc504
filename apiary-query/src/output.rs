//! Query results, and the result tables of Apiary's own statements (`SHOW …`, `DESCRIBE`).

use std::sync::Arc;

use apiary_ledger::{FrameInfo, FrameRef, Registry, format_type};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Field, Schema, SchemaRef};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use crate::error::{QueryError, Result};
use crate::table::FrameTable;

/// The rows a statement returned, as Arrow record batches of one schema.
#[derive(Debug, Clone)]
pub struct QueryResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// A result of `batches`, which all have `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self { schema, batches }
    }

    /// The result of a statement that returns no rows (`USE`, `SET`).
    pub fn empty() -> Self {
        Self::new(Arc::new(Schema::empty()), Vec::new())
    }

    /// The schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The batches, by value.
    pub fn into_batches(self) -> Vec<RecordBatch> {
        self.batches
    }

    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The result as one Arrow IPC stream (what `pyarrow.ipc.open_stream` reads).
    pub fn to_ipc_stream(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut writer = StreamWriter::try_new(&mut out, &self.schema).map_err(|e| {
            QueryError::failed(
                format!("cannot encode the result: {e}"),
                apiary_storage::ErrorKind::Internal,
                e,
            )
        })?;
        for batch in &self.batches {
            writer.write(batch).map_err(|e| {
                QueryError::failed(
                    format!("cannot encode the result: {e}"),
                    apiary_storage::ErrorKind::Internal,
                    e,
                )
            })?;
        }
        writer.finish().map_err(|e| {
            QueryError::failed(
                format!("cannot encode the result: {e}"),
                apiary_storage::ErrorKind::Internal,
                e,
            )
        })?;
        drop(writer);
        Ok(out)
    }

    /// The result as a DataFusion stream.
    pub fn into_stream(self) -> SendableRecordBatchStream {
        let batches = self.batches.into_iter().map(Ok);
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema,
            futures::stream::iter(batches),
        ))
    }
}

/// An `EXPLAIN [ANALYZE]` output `stream` with one more row at its end: `plan_type`
/// `kind`, `plan` `text` (what Apiary decided beside DataFusion's plans). A stream of
/// another shape passes unchanged.
pub(crate) fn with_explain_row(
    stream: SendableRecordBatchStream,
    kind: &str,
    text: &str,
) -> SendableRecordBatchStream {
    use arrow_schema::DataType;
    use futures::StreamExt;
    let schema = stream.schema();
    let is_text = |i: usize| schema.fields().get(i).map(|f| f.data_type()) == Some(&DataType::Utf8);
    if schema.fields().len() != 2 || !is_text(0) || !is_text(1) {
        return stream;
    }
    let row = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![kind])),
            Arc::new(StringArray::from(vec![text])),
        ],
    )
    .map_err(datafusion::error::DataFusionError::from);
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.chain(futures::stream::once(async move { row })),
    ))
}

fn table(columns: Vec<(&str, ArrayRef)>) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|e| QueryError::failed(e.to_string(), apiary_storage::ErrorKind::Internal, e))?;
    Ok(QueryResult::new(schema, vec![batch]))
}

fn strings<I: IntoIterator<Item = S>, S: AsRef<str>>(values: I) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn counts<I: IntoIterator<Item = u64>>(values: I) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(values))
}

/// `SHOW HIVES`: one row per hive.
pub(crate) async fn show_hives(registry: &Registry) -> Result<QueryResult> {
    let hives = registry.list_hives().await?;
    table(vec![("hive", strings(hives.iter().map(|h| &h.name)))])
}

/// `SHOW BOXES [IN hive]`: one row per box (of every hive without a scope).
pub(crate) async fn show_boxes(registry: &Registry, hive: Option<&str>) -> Result<QueryResult> {
    let hives = match hive {
        Some(h) => vec![h.to_string()],
        None => registry
            .list_hives()
            .await?
            .into_iter()
            .map(|h| h.name)
            .collect(),
    };
    let mut rows = Vec::new();
    for hive in hives {
        for b in registry.list_boxes(&hive).await? {
            rows.push((b.hive, b.name));
        }
    }
    table(vec![
        ("hive", strings(rows.iter().map(|r| &r.0))),
        ("box", strings(rows.iter().map(|r| &r.1))),
    ])
}

/// `SHOW FRAMES [IN hive[.box]]`: one row per frame with its size.
pub(crate) async fn show_frames(registry: &Registry, scope: &[String]) -> Result<QueryResult> {
    let boxes: Vec<(String, String)> = match scope {
        [hive, r#box] => vec![(hive.clone(), r#box.clone())],
        [hive] => registry
            .list_boxes(hive)
            .await?
            .into_iter()
            .map(|b| (b.hive, b.name))
            .collect(),
        _ => {
            let mut all = Vec::new();
            for hive in registry.list_hives().await? {
                for b in registry.list_boxes(&hive.name).await? {
                    all.push((b.hive, b.name));
                }
            }
            all
        }
    };
    let mut frames: Vec<FrameInfo> = Vec::new();
    for (hive, r#box) in boxes {
        frames.extend(registry.list_frames(&hive, &r#box).await?);
    }
    let names = frames
        .iter()
        .map(|f| FrameRef::parse(&f.name))
        .collect::<Result<Vec<_>, _>>()?;
    table(vec![
        ("hive", strings(names.iter().map(|n| &n.hive))),
        ("box", strings(names.iter().map(|n| &n.r#box))),
        ("frame", strings(names.iter().map(|n| &n.frame))),
        ("version", counts(frames.iter().map(|f| f.version))),
        ("cells", counts(frames.iter().map(|f| f.cells as u64))),
        ("rows", counts(frames.iter().map(|f| f.rows))),
        ("bytes", counts(frames.iter().map(|f| f.bytes))),
        (
            "partition_by",
            strings(frames.iter().map(|f| f.definition.partition_by.join(","))),
        ),
    ])
}

/// `DESCRIBE frame`: one row per column (name, type, nullability, partition flag), each with
/// the frame's version, cells, rows and bytes.
pub(crate) fn describe(frame: &FrameTable) -> Result<QueryResult> {
    let index = frame.index();
    let schema = index.declared_schema();
    let partition_by = index.partition_by();
    let n = schema.fields().len();
    let types = schema
        .fields()
        .iter()
        .map(|f| format_type(f.data_type()).unwrap_or_else(|_| f.data_type().to_string()))
        .collect::<Vec<_>>();
    table(vec![
        (
            "column_name",
            strings(schema.fields().iter().map(|f| f.name())),
        ),
        ("data_type", strings(types)),
        (
            "is_nullable",
            Arc::new(BooleanArray::from_iter(
                schema.fields().iter().map(|f| Some(f.is_nullable())),
            )),
        ),
        (
            "is_partition",
            Arc::new(BooleanArray::from_iter(
                schema
                    .fields()
                    .iter()
                    .map(|f| Some(partition_by.contains(f.name()))),
            )),
        ),
        ("version", counts(std::iter::repeat_n(index.version(), n))),
        (
            "cells",
            counts(std::iter::repeat_n(index.cells() as u64, n)),
        ),
        ("rows", counts(std::iter::repeat_n(index.rows(), n))),
        ("bytes", counts(std::iter::repeat_n(index.bytes(), n))),
    ])
}
