//! A task's result written over its exchange, in chunks of IPC streams.

use std::sync::Arc;

use apiary_shuffle::{Result, ResultWriter, ShuffleError, TaskReport};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;

use crate::wire::{ChunkEncoder, Ending, ToCoordinator, message};
use crate::worker::Session;

/// A result written over a task's exchange, in chunks of IPC streams.
pub(crate) struct FlightWriter {
    session: Arc<Session>,
    encoder: std::result::Result<ChunkEncoder, Option<ShuffleError>>,
    writer: u32,
}

impl FlightWriter {
    pub(crate) fn new(session: Arc<Session>, schema: SchemaRef, chunk_bytes: usize) -> Self {
        let writer = session.new_writer();
        let encoder = ChunkEncoder::new(schema, session.lz4, chunk_bytes).map_err(Some);
        Self {
            session,
            encoder,
            writer,
        }
    }

    async fn send(&self, sent: Vec<(u32, Bytes)>) -> Result<()> {
        for (chunk, bytes) in sent {
            self.session
                .send(message(
                    &ToCoordinator::Data {
                        writer: self.writer,
                        chunk,
                    },
                    bytes,
                ))
                .await?;
        }
        Ok(())
    }

    fn encoder(&mut self) -> Result<&mut ChunkEncoder> {
        match &mut self.encoder {
            Ok(e) => Ok(e),
            Err(e) => Err(e.take().unwrap_or_else(|| {
                ShuffleError::Invalid("the result's encoder failed before".into())
            })),
        }
    }
}

#[async_trait]
impl ResultWriter for FlightWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let sent = self.encoder()?.write(&batch)?;
        self.send(sent).await
    }

    async fn finish(mut self: Box<Self>, report: &TaskReport) -> Result<()> {
        let last = self.encoder()?.close_chunk()?;
        self.send(last.into_iter().collect()).await?;
        self.session.end(self.writer, Ending::Rows, report).await
    }
}
