//! Writing and reading frames through the `Apiary` API, as the tutorial does: IPC bytes in,
//! Arrow out; and bad IPC input never panics and never commits.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use apiary::Apiary;
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use proptest::prelude::*;

const COUNTRIES: [&str; 8] = ["us", "uk", "de", "fr", "jp", "br", "au", "ca"];
const PAGES: [&str; 6] = ["/home", "/products", "/about", "/pricing", "/docs", "/blog"];

fn tutorial_rows(n: usize) -> RecordBatch {
    let schema = common::clicks_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("user_{}", 1 + i * 37 % 500)),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| PAGES[i * 11 % 6]),
        )),
        Arc::new(Int64Array::from_iter_values(
            (0..n).map(|i| 100 + (i as i64 * 7919) % 29_900),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| COUNTRIES[i * 13 % 8]),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    out
}

async fn tutorial_frame() -> (tempfile::TempDir, Apiary) {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("data").to_str().unwrap())
        .await
        .unwrap();
    common::create_clicks_frame(&ap).await;
    (dir, ap)
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test]
async fn the_tutorial_write_and_read() {
    let (_dir, ap) = tutorial_frame().await;
    let bytes = ipc(&tutorial_rows(10_000));
    let result = ap
        .write_ipc_to_frame(
            "analytics",
            "events",
            "clicks",
            std::io::Cursor::new(bytes.clone()),
        )
        .await
        .unwrap();
    assert_eq!((result.cells_written, result.rows_written), (8, 10_000));
    assert!(result.bytes_written > 0);
    let all = ap
        .read_from_frame("analytics", "events", "clicks", &[])
        .await
        .unwrap();
    assert_eq!(count(&all), 10_000);
    let us = ap
        .read_from_frame("analytics", "events", "clicks", &[("country", "us")])
        .await
        .unwrap();
    assert_eq!(count(&us), 1250);
    assert!(us.iter().all(|b| {
        b.column_by_name("country")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .all(|c| c == Some("us"))
    }));
    let err = ap
        .read_from_frame("analytics", "events", "clicks", &[("page", "/home")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a partition column"), "{err}");

    let replaced = ap
        .overwrite_frame("analytics", "events", "clicks", [tutorial_rows(16)])
        .await
        .unwrap();
    assert_eq!(replaced.version, 2);
    let all = ap
        .read_from_frame("analytics", "events", "clicks", &[])
        .await
        .unwrap();
    assert_eq!(count(&all), 16);
    let info = ap
        .describe_frame("analytics", "events", "clicks")
        .await
        .unwrap();
    assert_eq!((info.rows, info.version), (16, 2));
}

#[tokio::test]
async fn malformed_ipc_is_a_clear_error_and_commits_nothing() {
    let (_dir, ap) = tutorial_frame().await;
    let good = ipc(&tutorial_rows(100));
    let file_format = {
        let batch = tutorial_rows(5);
        let mut out = Vec::new();
        let mut w = arrow_ipc::writer::FileWriter::try_new(&mut out, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    };
    for (what, bytes, says) in [
        ("empty", Vec::new(), "not an Arrow IPC stream"),
        (
            "garbage",
            b"definitely not arrow".to_vec(),
            "not an Arrow IPC stream",
        ),
        (
            "parquet",
            b"PAR1 then pages".to_vec(),
            "these bytes are a Parquet file",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "not an Arrow IPC stream",
        ),
        ("ipc file", file_format, "these bytes are an Arrow IPC file"),
    ] {
        let err = ap
            .write_ipc_to_frame(
                "analytics",
                "events",
                "clicks",
                std::io::Cursor::new(bytes.clone()),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{what}: {err}");
        assert!(err.contains("apiary write"), "{what}: {err}");
        assert!(err.contains("nothing was written"), "{what}: {err}");
    }
    let info = ap
        .describe_frame("analytics", "events", "clicks")
        .await
        .unwrap();
    assert_eq!((info.version, info.rows), (0, 0));
}

/// Arbitrary bytes and mutated streams as write input: an error or a write, never a panic;
/// an error commits nothing. (One in-memory frame serves every case.)
#[test]
fn any_ipc_input_is_handled() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ap = rt.block_on(async {
        let ap = Apiary::open("memory://").await.unwrap();
        ap.create_hive("analytics").await.unwrap();
        ap.create_box("analytics", "events").await.unwrap();
        let columns = [
            ("event_id", "int64"),
            ("user_id", "utf8"),
            ("page", "utf8"),
            ("duration_ms", "int64"),
            ("country", "utf8"),
        ];
        ap.create_frame("analytics", "events", "clicks", &columns, &["country"])
            .await
            .unwrap();
        ap
    });
    let valid = ipc(&tutorial_rows(20));
    let strategy = (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(flips, cut, noise)| {
            let mut bytes = valid.clone();
            for (at, v) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *v;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            rt.block_on(async {
                for input in [bytes, noise] {
                    let before = ap
                        .describe_frame("analytics", "events", "clicks")
                        .await
                        .unwrap();
                    let result = ap
                        .write_ipc_to_frame(
                            "analytics",
                            "events",
                            "clicks",
                            std::io::Cursor::new(input.clone()),
                        )
                        .await;
                    let after = ap
                        .describe_frame("analytics", "events", "clicks")
                        .await
                        .unwrap();
                    match result {
                        Ok(r) => prop_assert!(r.rows_written <= 20),
                        Err(_) => prop_assert_eq!(after.version, before.version),
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}
