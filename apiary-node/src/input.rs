//! Reading write inputs from files: Parquet, CSV with a header, Arrow IPC streams.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use apiary_ledger::{FrameDefinition, LedgerError};
use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Batches of an input, in order.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, LedgerError>> + Send>;

/// Rows per batch read from files.
const BATCH_ROWS: usize = 64 * 1024;

fn bad(path: &Path, what: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Invalid(format!(
        "{}: {what}: {e}; nothing was written",
        path.display()
    ))
}

/// Opens `path` (`-` for an Arrow IPC stream on stdin), recognising Parquet and Arrow IPC by
/// their magic bytes and CSV otherwise. CSV is parsed with the frame's column types, matched
/// by the header's names.
pub fn open(path: &Path, definition: &FrameDefinition) -> Result<Batches, LedgerError> {
    if path.as_os_str() == "-" {
        // Read by the write's encoding thread, not here: stdin may be slow to start.
        return Ok(Box::new(crate::ipc::deferred(BufReader::new(
            std::io::stdin(),
        ))));
    }
    let mut file = File::open(path).map_err(|e| bad(path, "cannot open", e))?;
    let mut magic = [0u8; 6];
    let n = file
        .read(&mut magic)
        .map_err(|e| bad(path, "cannot read", e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(path, "cannot read", e))?;
    if n >= 4 && &magic[..4] == b"PAR1" {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
            .map_err(|e| bad(path, "not a readable Parquet file", e))?;
        let shown = path.to_path_buf();
        return Ok(Box::new(reader.map(move |b| {
            b.map_err(|e| bad(&shown, "not a readable Parquet file", e))
        })));
    }
    if n == 6 && &magic == b"ARROW1" {
        // The IPC file format is "ARROW1", zero padding to the writer's alignment (a
        // multiple of 8), an IPC stream ending in its end-of-stream marker, then a footer and
        // "ARROW1" again. The stream part is read with the same framing checks as any
        // untrusted stream; the footer is not needed.
        let size = file
            .metadata()
            .map_err(|e| bad(path, "cannot read", e))?
            .len();
        let mut tail = [0u8; 6];
        let mut start = 8u64;
        let mut word = [0u8; 8];
        file.seek(SeekFrom::End(-6))
            .and_then(|_| file.read_exact(&mut tail))
            .map_err(|e| bad(path, "cannot read", e))?;
        loop {
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut word))
                .map_err(|e| bad(path, "not a complete Arrow IPC file (truncated?)", e))?;
            if word != [0; 8] {
                break;
            }
            start += 8;
        }
        file.seek(SeekFrom::Start(start))
            .map_err(|e| bad(path, "cannot read", e))?;
        if size < 16 || &tail != b"ARROW1" {
            return Err(bad(
                path,
                "not a complete Arrow IPC file",
                "it does not end with the ARROW1 magic (truncated?)",
            ));
        }
        let batches = crate::ipc::batches(BufReader::new(file))?;
        return Ok(Box::new(batches));
    }
    if n >= 4 && magic[..4] == [0xFF; 4] {
        let batches = crate::ipc::batches(BufReader::new(file))?;
        return Ok(Box::new(batches));
    }
    csv(path, file, definition)
}

fn csv(path: &Path, file: File, definition: &FrameDefinition) -> Result<Batches, LedgerError> {
    let mut reader = BufReader::new(file);
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .map_err(|e| bad(path, "cannot read the CSV header", e))?;
    let header = header.trim_end_matches(['\r', '\n']);
    let expected = || {
        definition
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    if header.trim().is_empty() {
        return Err(bad(
            path,
            "the CSV file is empty or starts with a blank line",
            format!(
                "its first line must name the columns, e.g. `{}`",
                expected()
            ),
        ));
    }
    let names: Vec<String> = header
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .collect();
    if let Some(position) = names.iter().position(String::is_empty) {
        return Err(bad(
            path,
            "the CSV header has an empty column name",
            format!(
                "column {} of `{header}`; the frame's columns are `{}`",
                position + 1,
                expected()
            ),
        ));
    }
    let frame = definition.schema.to_arrow()?;
    let mut fields = Vec::with_capacity(names.len());
    for name in &names {
        let Ok(field) = frame.field_with_name(name) else {
            return Err(bad(
                path,
                "the CSV header names a column the frame does not have",
                format!("`{name}`"),
            ));
        };
        fields.push(Field::new(name, field.data_type().clone(), true));
    }
    let schema = Arc::new(Schema::new(fields));
    let csv = arrow_csv::ReaderBuilder::new(schema)
        .with_header(false)
        .with_batch_size(BATCH_ROWS)
        .build(reader)
        .map_err(|e| bad(path, "not a readable CSV file", e))?;
    let shown = path.to_path_buf();
    Ok(Box::new(csv.map(move |b| {
        b.map_err(|e| bad(&shown, "a CSV row does not fit the frame's types", e))
    })))
}
