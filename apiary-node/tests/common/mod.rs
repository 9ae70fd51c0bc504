//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, dead_code)]

pub mod board;
pub mod cli;
pub mod console;
pub mod nodes;
pub mod queries;

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

/// 12 cells of clicks (4 countries × 3 writes, some NULL pages and durations) and a small
/// `pages` frame to join with.
pub async fn load_clicks_and_pages(ap: &Apiary) {
    create_clicks_frame(ap).await;
    let countries = ["us", "de", "fr", "jp"];
    for round in 0..3i64 {
        for (ci, c) in countries.iter().enumerate() {
            let n = 200;
            let base = round * 10_000 + ci as i64 * 1000;
            let ids: Vec<i64> = (0..n).map(|i| base + i).collect();
            let users: Vec<String> = (0..n)
                .map(|i| format!("u{}", (i * 7 + round) % 37))
                .collect();
            let pages: Vec<Option<String>> = (0..n)
                .map(|i| (i % 11 != 0).then(|| format!("/p{}", (i + ci as i64) % 5)))
                .collect();
            let durations: Vec<Option<i64>> = (0..n)
                .map(|i| (i % 13 != 0).then_some((i * 37 + base) % 900))
                .collect();
            let batch = RecordBatch::try_new(
                clicks_schema(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(users)),
                    Arc::new(StringArray::from(pages)),
                    Arc::new(Int64Array::from(durations)),
                    Arc::new(StringArray::from(vec![*c; n as usize])),
                ],
            )
            .unwrap();
            ap.write_to_frame("analytics", "events", "clicks", [batch])
                .await
                .unwrap();
        }
    }
    ap.create_frame(
        "analytics",
        "events",
        "pages",
        &[("page", "utf8"), ("section", "utf8")],
        &[],
    )
    .await
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("page", DataType::Utf8, true),
        Field::new("section", DataType::Utf8, true),
    ]));
    let pages = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["/p0", "/p1", "/p2", "/p3"])),
            Arc::new(StringArray::from(vec!["home", "shop", "shop", "help"])),
        ],
    )
    .unwrap();
    ap.write_to_frame("analytics", "events", "pages", [pages])
        .await
        .unwrap();
}

/// Rows as sorted text, floats rounded (summation order differs between plans).
pub fn canonical(batches: &[RecordBatch]) -> Vec<String> {
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    let mut rows = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .zip(b.columns())
                .map(|(f, c)| {
                    let text = f.value(r).to_string();
                    match c.data_type() {
                        DataType::Float64 | DataType::Float32 => text
                            .parse::<f64>()
                            .map(|v| format!("{v:.6}"))
                            .unwrap_or(text),
                        _ => text,
                    }
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Nodes started in this process and a client (not a node) over one folder holding the
/// clicks and pages frames (see [`load_clicks_and_pages`]).
pub struct Swarm {
    /// Holds the storage and the nodes' state folders.
    pub dir: tempfile::TempDir,
    /// The started nodes.
    pub nodes: Vec<Apiary>,
    /// The client: it coordinates, so every task crosses the transport.
    pub client: Apiary,
}

/// Heartbeats every 100 ms, dead after 3 s.
pub fn fast_swarm_config() -> apiary::apiary_swarm::SwarmConfig {
    apiary::apiary_swarm::SwarmConfig {
        heartbeat_interval: std::time::Duration::from_millis(100),
        poll_interval: std::time::Duration::from_millis(100),
        dead_threshold: std::time::Duration::from_secs(3),
        ..Default::default()
    }
}

/// A [`Swarm`] of `nodes` (id, how often it looks for tasks), with the client's options
/// adjusted by `client`; returns once the client sees every node alive.
pub async fn in_process_swarm(
    nodes: &[(&str, std::time::Duration)],
    client: impl Fn(&mut apiary::ApiaryOptions),
) -> Swarm {
    use apiary::{ApiaryOptions, NodeOptions};
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let mut options = ApiaryOptions::new(apiary_storage::StorageUri::parse(&storage).unwrap());
    options.swarm = fast_swarm_config();
    let node_options = options.clone();
    client(&mut options);
    let client = Apiary::open_with(options).await.unwrap();
    load_clicks_and_pages(&client).await;
    let mut started = Vec::new();
    for (id, poll) in nodes {
        let node = Apiary::open_with(node_options.clone()).await.unwrap();
        node.start_with(NodeOptions {
            node_id: Some(id.to_string()),
            state_dir: dir.path().join(format!("{id}.state")),
            swarm: fast_swarm_config(),
            task_poll_interval: *poll,
            memory_bytes: Some(1 << 30),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        started.push(node);
    }
    for _ in 0..200 {
        if client
            .swarm_snapshot(&fast_swarm_config())
            .await
            .unwrap()
            .alive
            == nodes.len()
        {
            return Swarm {
                dir,
                nodes: started,
                client,
            };
        }
        apiary::apiary_storage::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the nodes did not join");
}

/// A query over the numbers frame ([`write_numbers`]) that runs about forty seconds in all
/// (a quarter of a second a cell): for each row, the edit distance of two 3 KB texts.
/// Operators yield between cells, where a cancelled task stops.
pub const LONG_QUERY: &str = "SELECT SUM(levenshtein(repeat(CAST(x AS VARCHAR), 800), \
     repeat(CAST(x + 1 AS VARCHAR), 800))) FROM analytics.events.numbers";

/// `analytics.events.numbers`: 160 cells of 25 numbers each (see [`LONG_QUERY`]).
pub async fn write_numbers(ap: &Apiary) {
    ap.create_frame("analytics", "events", "numbers", &[("x", "int64")], &[])
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    for cell in 0..160 {
        let numbers = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(
                cell * 25..(cell + 1) * 25,
            ))],
        )
        .unwrap();
        ap.write_to_frame("analytics", "events", "numbers", [numbers])
            .await
            .unwrap();
    }
}
