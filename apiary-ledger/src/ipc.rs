//! Reading untrusted Arrow IPC streams safely.
//!
//! arrow-ipc 59 (the version DataFusion 55 pins) trusts the sizes written in a stream: a
//! corrupt or hostile length makes it allocate petabytes, and a failed allocation aborts the
//! process; some malformed schemas make it panic (apache/arrow-rs#10575, fixed upstream in a
//! later release). So the stream's framing is checked here first, message by message, and
//! the decoder runs under `catch_unwind`: bad input is an error, never a crash.

use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::LedgerError;
use arrow_array::RecordBatch;

/// Largest message metadata accepted (a schema or batch header).
pub const MAX_METADATA_BYTES: usize = 16 << 20;
/// Largest message body accepted (one record batch).
pub const MAX_BODY_BYTES: u64 = 512 << 20;

const CONTINUATION: [u8; 4] = [0xFF; 4];

/// A reader that passes an IPC stream through while checking its framing: every message's
/// metadata must be a valid flatbuffer `Message` within [`MAX_METADATA_BYTES`], and its body
/// within [`MAX_BODY_BYTES`].
struct CheckedStream<R> {
    inner: R,
    /// Bytes of the current message already checked, waiting to be handed out.
    pending: Vec<u8>,
    pending_at: usize,
    /// Body bytes of the current message still to pass through unchecked.
    body_left: u64,
    ended: bool,
    /// Whether any header was read yet (the first one tells other formats apart).
    started: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> CheckedStream<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            pending_at: 0,
            body_left: 0,
            ended: false,
            started: false,
        }
    }

    /// Reads up to `buf.len()` bytes, or fewer at the end of input.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }

    /// Reads and checks the next message header into `pending`.
    fn next_header(&mut self) -> io::Result<()> {
        let mut word = [0u8; 4];
        let n = self.fill(&mut word)?;
        if n == 0 {
            self.ended = true;
            return Ok(());
        }
        if n < 4 {
            return Err(invalid("the stream ends inside a message header".into()));
        }
        if !std::mem::replace(&mut self.started, true)
            && let Some(format) = other_format(&word)
        {
            return Err(invalid(format!(
                "these bytes are {format}, not an IPC stream"
            )));
        }
        let mut header = word.to_vec();
        let length_word = if word == CONTINUATION {
            let mut len = [0u8; 4];
            if self.fill(&mut len)? < 4 {
                return Err(invalid("the stream ends inside a message header".into()));
            }
            header.extend_from_slice(&len);
            len
        } else {
            word
        };
        let length = i32::from_le_bytes(length_word);
        if length == 0 {
            // End-of-stream marker.
            self.pending = header;
            self.pending_at = 0;
            self.ended = true;
            return Ok(());
        }
        let length = usize::try_from(length)
            .ok()
            .filter(|l| *l <= MAX_METADATA_BYTES)
            .ok_or_else(|| invalid(format!("a message claims {length} bytes of metadata")))?;
        let mut metadata = vec![0u8; length];
        if self.fill(&mut metadata)? < length {
            return Err(invalid("the stream ends inside a message".into()));
        }
        let message = arrow_ipc::root_as_message(&metadata)
            .map_err(|e| invalid(format!("a message header is not valid: {e}")))?;
        let body = u64::try_from(message.bodyLength())
            .ok()
            .filter(|b| *b <= MAX_BODY_BYTES)
            .ok_or_else(|| {
                invalid(format!(
                    "a message claims a body of {} bytes (at most {MAX_BODY_BYTES} are accepted; \
                     write smaller batches)",
                    message.bodyLength()
                ))
            })?;
        header.extend_from_slice(&metadata);
        self.pending = header;
        self.pending_at = 0;
        self.body_left = body;
        Ok(())
    }
}

impl<R: Read> Read for CheckedStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.pending_at);
                buf[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
                self.pending_at += n;
                return Ok(n);
            }
            if self.body_left > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(invalid("the stream ends inside a message body".into()));
                }
                self.body_left -= n as u64;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            self.next_header()?;
        }
    }
}

/// The format whose file starts with `magic`, when it is one people pass by mistake.
fn other_format(magic: &[u8; 4]) -> Option<&'static str> {
    match magic {
        b"ARRO" => Some("an Arrow IPC file"),
        b"PAR1" => Some("a Parquet file"),
        _ => None,
    }
}

fn malformed(detail: &dyn std::fmt::Display) -> LedgerError {
    LedgerError::Invalid(format!(
        "the input is not an Arrow IPC stream ({detail}); pass IPC stream bytes (written \
         with pyarrow.ipc.new_stream or arrow's StreamWriter) or Arrow data itself (a \
         pyarrow Table, a RecordBatch reader, a DataFrame); files in any format (Parquet, \
         CSV, an IPC file) go through `apiary write HIVE.BOX.FRAME FILE`, or read them into \
         a table first; nothing was written"
    ))
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the decoder rejected it".into())
}

/// The batches of an untrusted Arrow IPC stream; malformed input is a clear error.
pub fn batches(
    ipc: impl Read,
) -> Result<impl Iterator<Item = Result<RecordBatch, LedgerError>>, LedgerError> {
    Ok(stream(ipc)?.1)
}

/// [`batches`], with the stream's schema (as written, metadata included): known even when
/// the stream holds no batch.
pub fn stream(
    ipc: impl Read,
) -> Result<
    (
        arrow_schema::SchemaRef,
        impl Iterator<Item = Result<RecordBatch, LedgerError>>,
    ),
    LedgerError,
> {
    let checked = CheckedStream::new(ipc);
    let reader = catch_unwind(AssertUnwindSafe(|| {
        arrow_ipc::reader::StreamReader::try_new(checked, None)
    }))
    .map_err(|p| malformed(&panic_text(p)))?
    .map_err(|e| malformed(&e))?;
    let schema = reader.schema();
    let mut reader = Some(reader);
    Ok((
        schema,
        std::iter::from_fn(move || {
            let current = reader.as_mut()?;
            match catch_unwind(AssertUnwindSafe(|| current.next())) {
                Ok(Some(Ok(batch))) => Some(Ok(batch)),
                Ok(Some(Err(e))) => {
                    reader = None;
                    Some(Err(malformed(&e)))
                }
                Ok(None) => None,
                Err(p) => {
                    reader = None;
                    Some(Err(malformed(&panic_text(p))))
                }
            }
        }),
    ))
}

/// [`batches`], opened on the first call to `next` instead of now: the schema message is read
/// by whoever pulls the batches (a write's encoding thread), so a slow or blocking reader
/// never holds up the caller. A malformed stream is the first item, as an error.
pub fn deferred(
    ipc: impl Read + Send + 'static,
) -> impl Iterator<Item = Result<RecordBatch, LedgerError>> + Send + 'static {
    let mut unopened = Some(ipc);
    let mut opened: Option<Box<dyn Iterator<Item = Result<RecordBatch, LedgerError>> + Send>> =
        None;
    std::iter::from_fn(move || {
        if let Some(ipc) = unopened.take() {
            match batches(ipc) {
                Ok(it) => opened = Some(Box::new(it)),
                Err(e) => return Some(Err(e)),
            }
        }
        opened.as_mut()?.next()
    })
}
