//! What travels on a task's exchange: control messages as JSON in a `FlightData`'s
//! `app_metadata`, and a result's rows as raw Arrow IPC stream bytes in its `data_body`.
//!
//! One `DoExchange` call carries one task attempt. The coordinator's side sends
//! [`ToWorker::Task`] first, then answers claims and confirms ends; the worker's side sends
//! [`ToCoordinator::Accepted`] once the task is queued, [`ToCoordinator::Taken`] when its
//! worker polls it, the result's bytes, claims, and one end per writer.
//!
//! A result is cut into chunks, each a whole IPC stream (schema, dictionaries, batches,
//! end-of-stream) of about the chunk size, so the coordinator can keep a chunk in memory or
//! spill it to a file and decode it alone, one at a time, as the storage shuffle's chunks.
//! Writers are numbered within the exchange: a worker that runs an attempt twice sends two
//! results, and the coordinator keeps the first that ends, whole.

use apiary_shuffle::{ShuffleError, TaskFailure, TaskReport};
use apiary_storage::ErrorKind;
use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// From the coordinator to the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub(crate) enum ToWorker {
    /// The task, encoded as the manifest format in `data_body` (first message only).
    Task {
        /// Whether the task's claims go to the coordinator on this exchange (every task of
        /// its round is reachable) rather than through storage.
        claims_here: bool,
        /// Whether result chunks are LZ4-compressed (IPC buffer compression).
        lz4: bool,
    },
    /// The answer to claim `id`.
    Claimed { id: u64, held: bool },
    /// The end of `writer` was received and recorded.
    Received { writer: u32 },
}

/// From the worker to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub(crate) enum ToCoordinator {
    /// The task is queued for its node's worker.
    Accepted,
    /// The worker took the task.
    Taken,
    /// Bytes of chunk `chunk` of `writer`'s result (in `data_body`).
    Data { writer: u32, chunk: u32 },
    /// How `writer`'s run of the task ended.
    End {
        writer: u32,
        ending: Ending,
        report: Box<TaskReport>,
    },
    /// Asks whether the task may read `cell` (answered by [`ToWorker::Claimed`]).
    Claim { id: u64, cell: String },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Ending {
    /// Its rows are the chunks sent.
    Rows,
    /// No rows.
    Empty,
    /// Failed.
    Failed {
        error: String,
        retryable: bool,
        message: String,
    },
}

impl Ending {
    pub(crate) fn failed(f: &TaskFailure) -> Self {
        Ending::Failed {
            error: f.kind.as_str().to_string(),
            retryable: f.retryable,
            message: f.message.clone(),
        }
    }

    pub(crate) fn failure(error: &str, retryable: bool, message: &str) -> TaskFailure {
        TaskFailure {
            kind: ErrorKind::from_name(error).unwrap_or(ErrorKind::Internal),
            retryable,
            message: message.to_string(),
        }
    }
}

/// A control message, with `body` as its data.
pub(crate) fn message<T: Serialize>(m: &T, body: Bytes) -> FlightData {
    FlightData {
        // Serializing these enums of strings and numbers cannot fail.
        app_metadata: serde_json::to_vec(m).unwrap_or_default().into(),
        data_body: body,
        ..FlightData::default()
    }
}

/// The control message `data` carries; a peer speaking something else is refused.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(data: &FlightData) -> Result<T, ShuffleError> {
    serde_json::from_slice(&data.app_metadata).map_err(|e| {
        ShuffleError::Invalid(format!(
            "a Flight message of the Apiary shuffle could not be read ({e}): is the peer \
             another version of Apiary?"
        ))
    })
}

/// Largest gRPC message either side accepts.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Batches are cut so no encoded message comes near [`MAX_MESSAGE_BYTES`].
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Cuts a result into chunks of IPC streams (see the module docs).
pub(crate) struct ChunkEncoder {
    schema: SchemaRef,
    options: IpcWriteOptions,
    chunk_bytes: usize,
    writer: Option<StreamWriter<Vec<u8>>>,
    /// The current chunk's number and the bytes it has so far.
    chunk: u32,
    written: usize,
}

impl ChunkEncoder {
    pub(crate) fn new(
        schema: SchemaRef,
        lz4: bool,
        chunk_bytes: usize,
    ) -> Result<Self, ShuffleError> {
        let options = if lz4 {
            IpcWriteOptions::default()
                .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
                .map_err(|e| encoding(&e))?
        } else {
            IpcWriteOptions::default()
        };
        Ok(Self {
            schema,
            options,
            chunk_bytes: chunk_bytes.max(1),
            writer: None,
            chunk: 0,
            written: 0,
        })
    }

    /// Encodes `batch`; returns the bytes to send now, each with its chunk number.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<Vec<(u32, Bytes)>, ShuffleError> {
        let mut out = Vec::new();
        let size = batch.get_array_memory_size();
        let pieces = size.div_ceil(MAX_BATCH_BYTES).max(1);
        let rows = batch.num_rows().div_ceil(pieces).max(1);
        let mut offset = 0;
        while offset < batch.num_rows() || (offset == 0 && batch.num_rows() == 0) {
            let len = rows.min(batch.num_rows() - offset);
            let piece = batch.slice(offset, len);
            if self.writer.is_none() {
                let w = StreamWriter::try_new_with_options(
                    Vec::new(),
                    &self.schema,
                    self.options.clone(),
                )
                .map_err(|e| encoding(&e))?;
                self.writer = Some(w);
            }
            if let Some(w) = self.writer.as_mut() {
                w.write(&piece).map_err(|e| encoding(&e))?;
                let bytes = std::mem::take(w.get_mut());
                self.written += bytes.len();
                out.push((self.chunk, Bytes::from(bytes)));
            }
            if self.written >= self.chunk_bytes {
                out.extend(self.close_chunk()?);
            }
            offset += len;
            if len == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Ends the chunk under way (its end-of-stream marker), if one is.
    pub(crate) fn close_chunk(&mut self) -> Result<Option<(u32, Bytes)>, ShuffleError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(None);
        };
        w.finish().map_err(|e| encoding(&e))?;
        let bytes = w.into_inner().map_err(|e| encoding(&e))?;
        let chunk = self.chunk;
        self.chunk += 1;
        self.written = 0;
        Ok(Some((chunk, Bytes::from(bytes))))
    }
}

fn encoding(e: &arrow_schema::ArrowError) -> ShuffleError {
    ShuffleError::failed(
        format!("encoding a result for Flight failed: {e}"),
        ErrorKind::Internal,
        e.to_string(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("c0", DataType::Int64, true)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
        )
        .unwrap()
    }

    /// Chunks cut at the chunk size each decode alone, and together give every row in order.
    #[test]
    fn chunks_are_whole_streams() {
        for lz4 in [false, true] {
            let mut enc = ChunkEncoder::new(batch(0, 0).schema(), lz4, 100_000).unwrap();
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            let mut sent = Vec::new();
            for i in 0..20 {
                sent.extend(enc.write(&batch(i * 10_000, 10_000)).unwrap());
            }
            sent.extend(enc.close_chunk().unwrap());
            for (chunk, bytes) in sent {
                if chunks.len() <= chunk as usize {
                    chunks.push(Vec::new());
                }
                chunks[chunk as usize].extend_from_slice(&bytes);
            }
            assert!(chunks.len() > 3, "{} chunks", chunks.len());
            let mut values = Vec::new();
            for c in &chunks {
                let (_, batches) = apiary_shuffle::result::decode("chunk", c).unwrap();
                for b in batches {
                    let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    values.extend(col.values().iter().copied());
                }
            }
            assert_eq!(values, (0..200_000).collect::<Vec<i64>>(), "lz4={lz4}");
        }
    }

    #[test]
    fn control_messages_round_trip_and_garbage_is_refused() {
        let m = message(
            &ToCoordinator::Claim {
                id: 3,
                cell: "c".into(),
            },
            Bytes::new(),
        );
        assert!(matches!(
            parse::<ToCoordinator>(&m).unwrap(),
            ToCoordinator::Claim { id: 3, .. }
        ));
        let junk = FlightData {
            app_metadata: Bytes::from_static(b"{\"m\":\"launch\"}"),
            ..FlightData::default()
        };
        let e = parse::<ToCoordinator>(&junk).unwrap_err();
        assert!(e.to_string().contains("another version of Apiary"), "{e}");
    }
}
