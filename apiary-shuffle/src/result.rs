//! Task results as Arrow IPC streams: encoding, the report in the schema metadata, and
//! decoding with the same framing checks as untrusted input.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;

use crate::error::{Result, ShuffleError};
use crate::transport::TaskReport;

/// Schema metadata key under which a result stream carries the worker's [`TaskReport`].
pub const REPORT_KEY: &str = "apiary.task_report";

/// Decodes an IPC stream (checked framing; malformed input is an error, never a crash):
/// its schema as written (with its metadata, even without batches) and its batches.
pub fn decode(what: &str, ipc: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let damaged = |e: apiary_ledger::LedgerError| {
        ShuffleError::failed(
            format!("result `{what}` is damaged: {e}"),
            apiary_storage::ErrorKind::Corrupt,
            e,
        )
    };
    let (schema, batches) =
        apiary_ledger::ipc::stream(std::io::Cursor::new(ipc)).map_err(damaged)?;
    let batches = batches
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(damaged)?;
    Ok((schema, batches))
}

/// Schema metadata key under which a result's end carries the names of its earlier chunks
/// (a JSON list), when it has any.
pub const CHUNKS_KEY: &str = "apiary.result_chunks";

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| ShuffleError::failed(e.to_string(), apiary_storage::ErrorKind::Internal, e))
}

/// `batches` as one IPC stream whose schema metadata carries `report`.
pub fn encode_with_report(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    report: &TaskReport,
) -> Result<Bytes> {
    encode_end(schema, batches, report, &[])
}

/// The end of a result: its last `batches` as one IPC stream whose schema metadata carries
/// `report` and the names of the result's earlier `chunks`.
pub fn encode_end(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    report: &TaskReport,
    chunks: &[String],
) -> Result<Bytes> {
    let mut metadata = HashMap::from([(REPORT_KEY.to_string(), json(report)?)]);
    if !chunks.is_empty() {
        metadata.insert(CHUNKS_KEY.to_string(), json(&chunks)?);
    }
    encode(schema, batches, metadata)
}

/// `batches` as one IPC stream, with `metadata` on its schema.
pub fn encode(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    metadata: HashMap<String, String>,
) -> Result<Bytes> {
    let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
    let mut out = Vec::new();
    let fail = |e: arrow_schema::ArrowError| {
        ShuffleError::failed(
            format!("result encoding: {e}"),
            apiary_storage::ErrorKind::Internal,
            e,
        )
    };
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(fail)?;
    for batch in batches {
        let batch = batch
            .clone()
            .with_schema(Arc::clone(&schema))
            .map_err(fail)?;
        writer.write(&batch).map_err(fail)?;
    }
    writer.finish().map_err(fail)?;
    drop(writer);
    Ok(Bytes::from(out))
}

/// The earlier chunks a result's end names (none when it names none); an unreadable list is
/// a damaged result.
pub fn chunks_of(schema: &Schema) -> Result<Vec<String>> {
    match schema.metadata().get(CHUNKS_KEY) {
        None => Ok(Vec::new()),
        Some(list) => serde_json::from_str(list).map_err(|e| {
            ShuffleError::failed(
                format!("a result's list of chunks is damaged: {e}"),
                apiary_storage::ErrorKind::Corrupt,
                e,
            )
        }),
    }
}

/// The report a decoded result's schema carries, if any.
pub fn report_of(schema: &Schema) -> Option<TaskReport> {
    serde_json::from_str(schema.metadata().get(REPORT_KEY)?).ok()
}
