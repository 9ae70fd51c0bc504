//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use apiary::Apiary;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// The tutorial's click columns, all nullable, in the frame's order.
pub fn clicks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("page", DataType::Utf8, true),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("country", DataType::Utf8, true),
    ]))
}

const COUNTRIES: [&str; 4] = ["us", "de", "fr", "jp"];

/// Click events `range` (ids), spread over four countries, five pages and 97 users.
pub fn clicks(range: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = range.collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("user_{}", i % 97)),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("/p{}", i % 5)),
        )),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i * 7 % 1000),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| COUNTRIES[(*i % 4) as usize]),
        )),
    ];
    RecordBatch::try_new(clicks_schema(), columns).unwrap()
}

/// Writes `writes` commits of 5 000 click events each (ids from 0; four cells a write).
pub async fn write_clicks(ap: &Apiary, writes: i64) {
    for w in 0..writes {
        ap.write_to_frame(
            "analytics",
            "events",
            "clicks",
            [clicks(w * 5000..(w + 1) * 5000)],
        )
        .await
        .unwrap();
    }
}

/// Creates the tutorial's `analytics.events.clicks`, partitioned by country.
pub async fn create_clicks_frame(ap: &Apiary) {
    ap.create_hive("analytics").await.unwrap();
    ap.create_box("analytics", "events").await.unwrap();
    ap.create_frame(
        "analytics",
        "events",
        "clicks",
        &[
            ("event_id", "int64"),
            ("user_id", "utf8"),
            ("page", "utf8"),
            ("duration_ms", "int64"),
            ("country", "utf8"),
        ],
        &["country"],
    )
    .await
    .unwrap();
}

/// `apiary node` on `storage` as node `id`, with its state folder and its log (stderr, at
/// `info`) in `dir`; callers add timing flags and spawn it.
pub fn node_command(storage: &str, dir: &Path, id: &str) -> Command {
    let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_apiary"));
    command
        .args(["node", "--storage", storage, "--node-id", id])
        .arg("--state-dir")
        .arg(dir.join(format!("{id}.state")))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    command
}
