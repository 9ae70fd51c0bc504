//! `POST /api/v1/sql`: a statement's rows streamed as they are produced, as JSON or as an
//! Arrow IPC stream.
//!
//! JSON is one document, `{"columns": [...], "rows": [{...}, ...], "row_count": n}`, written
//! batch by batch; an error after the first row (the status is sent by then) ends it with
//! `"error": "..."` instead. The Arrow IPC stream (`Accept:
//! application/vnd.apache.arrow.stream` or `?format=arrow`) is what `pyarrow.ipc.open_stream`
//! reads; an error after its first batch cuts the response short, so a reader sees a
//! broken stream rather than a short answer.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::Deserialize;

/// A statement's rows, for `POST /api/v1/sql`.
pub struct Rows {
    /// Their schema.
    pub schema: SchemaRef,
    /// The batches, as produced; an error ends them.
    pub batches: BoxStream<'static, Result<RecordBatch, String>>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("schema", &self.schema)
            .finish()
    }
}

/// Why a statement failed before its first row: its error kind (`invalid_input`,
/// `not_found`, …, as `apiary_storage::ErrorKind` names them) and what to do.
#[derive(Debug, Clone)]
pub struct SqlFailure {
    /// The error kind's name.
    pub kind: &'static str,
    /// What was wrong, and what to do.
    pub message: String,
}

impl SqlFailure {
    /// The HTTP status for the failure's kind.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            "invalid_input" => StatusCode::BAD_REQUEST,
            "not_found" => StatusCode::NOT_FOUND,
            "conflict" => StatusCode::CONFLICT,
            "unavailable" | "closed" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The JSON form of a request: `{"sql": "SELECT …"}`.
#[derive(Debug, Deserialize)]
struct Request {
    sql: String,
}

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// How the rows are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Arrow,
}

/// The statement of a request body: a JSON `{"sql": …}` when sent as `application/json`,
/// the body as it is otherwise.
pub(crate) fn statement(headers: &HeaderMap, body: &Bytes) -> Result<String, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if json {
        serde_json::from_slice::<Request>(body)
            .map_err(|e| format!("the body is not {{\"sql\": \"…\"}}: {e}"))?
            .sql
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| "the SQL text is not UTF-8".to_string())?
    };
    if sql.trim().is_empty() {
        return Err(
            "no SQL: send {\"sql\": \"SELECT …\"} as application/json, or the \
                    statement as text/plain"
                .into(),
        );
    }
    Ok(sql)
}

/// The format asked for, by `?format=` first, then the `Accept` header.
pub(crate) fn format(headers: &HeaderMap, query: Option<&str>) -> Result<Format, String> {
    match query {
        Some("arrow") => return Ok(Format::Arrow),
        Some("json") => return Ok(Format::Json),
        Some(other) => {
            return Err(format!(
                "unknown format `{other}`: use ?format=json or ?format=arrow"
            ));
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains(ARROW_STREAM) {
        Format::Arrow
    } else {
        Format::Json
    })
}

/// The response streaming `rows` in `format`.
pub(crate) fn respond(rows: Rows, format: Format) -> Response {
    match format {
        Format::Json => {
            let body = Body::from_stream(json_body(rows));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Format::Arrow => {
            let body = Body::from_stream(arrow_body(rows));
            ([(header::CONTENT_TYPE, ARROW_STREAM)], body).into_response()
        }
    }
}

/// A JSON string literal of `s`.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The JSON document, chunk by chunk.
fn json_body(rows: Rows) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let columns: Vec<serde_json::Value> = rows
        .schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
            })
        })
        .collect();
    let head = format!(
        "{{\"columns\":{},\"rows\":[",
        serde_json::Value::Array(columns)
    );
    struct State {
        batches: BoxStream<'static, Result<RecordBatch, String>>,
        rows: usize,
        done: bool,
    }
    let state = State {
        batches: rows.batches,
        rows: 0,
        done: false,
    };
    let body = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            let chunk = match state.batches.next().await {
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => match json_rows(&batch) {
                    Ok(objects) => {
                        let comma = if state.rows > 0 { "," } else { "" };
                        state.rows += batch.num_rows();
                        format!("{comma}{objects}")
                    }
                    Err(e) => {
                        state.done = true;
                        format!("],\"row_count\":{},\"error\":{}}}", state.rows, quoted(&e))
                    }
                },
                Some(Err(e)) => {
                    state.done = true;
                    format!("],\"row_count\":{},\"error\":{}}}", state.rows, quoted(&e))
                }
                None => {
                    state.done = true;
                    format!("],\"row_count\":{}}}", state.rows)
                }
            };
            return Some((Ok(Bytes::from(chunk)), state));
        }
    });
    futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(body)
}

/// The rows of `batch` as JSON objects separated by commas (no brackets).
fn json_rows(batch: &RecordBatch) -> Result<String, String> {
    let mut out = Vec::new();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(&mut out);
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|e| format!("a row cannot be written as JSON: {e}"))?;
    drop(writer);
    let text = String::from_utf8(out).map_err(|e| e.to_string())?;
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or("");
    Ok(inner.to_string())
}

/// The Arrow IPC stream, message by message.
fn arrow_body(rows: Rows) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &rows.schema);
    let broken = |e: String| std::io::Error::other(e);
    futures::stream::unfold(
        (writer.map_err(|e| e.to_string()), rows.batches, false),
        move |(mut writer, mut batches, done)| async move {
            if done {
                return None;
            }
            let w = match writer.as_mut() {
                Ok(w) => w,
                Err(e) => {
                    let e = broken(format!("the Arrow stream cannot begin: {e}"));
                    return Some((Err(e), (writer, batches, true)));
                }
            };
            let (result, done) = match batches.next().await {
                Some(Ok(batch)) => (w.write(&batch).map_err(|e| e.to_string()), false),
                Some(Err(e)) => (Err(e), true),
                None => (w.finish().map_err(|e| e.to_string()), true),
            };
            let item = match result {
                Ok(()) => Ok(Bytes::from(std::mem::take(w.get_mut()))),
                Err(e) => Err(broken(format!("the query failed mid-stream: {e}"))),
            };
            let done = done || item.is_err();
            Some((item, (writer, batches, done)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn rows(batches: Vec<Result<RecordBatch, String>>) -> Rows {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        Rows {
            schema,
            batches: futures::stream::iter(batches).boxed(),
        }
    }

    fn batch(ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    async fn text(body: impl Stream<Item = Result<Bytes, std::io::Error>>) -> String {
        let chunks: Vec<_> = body.collect().await;
        chunks
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn json_is_one_document_over_many_batches_and_empty_ones() {
        let body = json_body(rows(vec![
            Ok(batch(&[1, 2], &[Some("a"), None])),
            Ok(batch(&[], &[])),
            Ok(batch(&[3], &[Some("c\"q")])),
        ]));
        let doc: serde_json::Value = serde_json::from_str(&text(body).await).unwrap();
        assert_eq!(doc["row_count"], 3);
        assert_eq!(doc["columns"][1]["nullable"], true);
        assert_eq!(
            doc["rows"],
            serde_json::json!([{"id":1,"name":"a"},{"id":2,"name":null},{"id":3,"name":"c\"q"}])
        );
        let empty = json_body(rows(vec![]));
        let doc: serde_json::Value = serde_json::from_str(&text(empty).await).unwrap();
        assert_eq!(doc["rows"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn an_error_mid_stream_ends_the_json_with_it_and_cuts_the_arrow_stream() {
        let failing = || {
            rows(vec![
                Ok(batch(&[1], &[Some("a")])),
                Err("the store went away".into()),
                Ok(batch(&[2], &[Some("b")])),
            ])
        };
        let doc: serde_json::Value =
            serde_json::from_str(&text(json_body(failing())).await).unwrap();
        assert_eq!(doc["row_count"], 1);
        assert_eq!(doc["error"], "the store went away");
        let chunks: Vec<_> = arrow_body(failing()).collect().await;
        assert!(chunks[0].is_ok(), "the first batch is sent");
        let last = chunks.last().unwrap().as_ref().unwrap_err();
        assert!(last.to_string().contains("the store went away"), "{last}");
        assert_eq!(chunks.len(), 2, "nothing after the error");
    }

    #[test]
    fn the_format_comes_from_the_query_then_the_accept_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(format(&headers, None), Ok(Format::Json));
        headers.insert(header::ACCEPT, ARROW_STREAM.parse().unwrap());
        assert_eq!(format(&headers, None), Ok(Format::Arrow));
        assert_eq!(format(&headers, Some("json")), Ok(Format::Json));
        assert!(format(&headers, Some("csv")).unwrap_err().contains("csv"));
        let json: HeaderMap = [(header::CONTENT_TYPE, "application/json".parse().unwrap())]
            .into_iter()
            .collect();
        assert_eq!(
            statement(&json, &Bytes::from_static(br#"{"sql": "SELECT 1"}"#)),
            Ok("SELECT 1".into())
        );
        assert!(statement(&json, &Bytes::from_static(b"SELECT 1")).is_err());
        assert!(statement(&HeaderMap::new(), &Bytes::from_static(b"  ")).is_err());
        assert!(statement(&HeaderMap::new(), &Bytes::from_static(&[0xff, 0xfe])).is_err());
    }
}

#[cfg(test)]
mod types {
    use super::*;
    use arrow_array::*;
    use std::sync::Arc;

    #[test]
    fn every_type_a_scan_yields_is_written_as_json() {
        let columns: Vec<(&str, ArrayRef, &str)> = vec![
            (
                "s",
                Arc::new(StringViewArray::from(vec![Some("a\"b"), None])),
                r#"{"s":"a\"b"},{"s":null}"#,
            ),
            (
                "b",
                Arc::new(BinaryViewArray::from(vec![Some(&b"ab"[..]), None])),
                r#"{"b":"6162"},{"b":null}"#,
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                r#"{"d":123.45},{"d":null}"#,
            ),
            (
                "t",
                Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None]).with_timezone("UTC")),
                r#"{"t":"1970-01-01T00:00:00.000001Z"},{"t":null}"#,
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![Some(1), None])),
                r#"{"day":"1970-01-02"},{"day":null}"#,
            ),
            (
                // JSON has no NaN or infinity: they are written null.
                "f",
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(1.5)])),
                r#"{"f":null},{"f":1.5}"#,
            ),
        ];
        for (name, array, expected) in columns {
            let batch = RecordBatch::try_from_iter(vec![(name, array)]).unwrap();
            assert_eq!(json_rows(&batch).unwrap(), expected, "{name}");
        }
    }
}
