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

/// Decodes an IPC stream (checked framing; malformed input is an error, never a crash).
pub fn decode(what: &str, ipc: &[u8]) -> Result<(Option<SchemaRef>, Vec<RecordBatch>)> {
    let batches = apiary_ledger::ipc::batches(std::io::Cursor::new(ipc)).map_err(|e| {
        ShuffleError::failed(
            format!("result `{what}` is damaged: {e}"),
            apiary_storage::ErrorKind::Corrupt,
            e,
        )
    })?;
    let batches: Vec<RecordBatch> =
        batches
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                ShuffleError::failed(
                    format!("result `{what}` is damaged: {e}"),
                    apiary_storage::ErrorKind::Corrupt,
                    e,
                )
            })?;
    Ok((batches.first().map(|b| b.schema()), batches))
}

/// `batches` as one IPC stream whose schema metadata carries `report`.
pub fn encode_with_report(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    report: &TaskReport,
) -> Result<Bytes> {
    let json = serde_json::to_string(report)
        .map_err(|e| ShuffleError::failed(e.to_string(), apiary_storage::ErrorKind::Internal, e))?;
    let metadata = HashMap::from([(REPORT_KEY.to_string(), json)]);
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

/// The report a decoded result's schema carries, if any.
pub fn report_of(schema: &Schema) -> Option<TaskReport> {
    serde_json::from_str(schema.metadata().get(REPORT_KEY)?).ok()
}
