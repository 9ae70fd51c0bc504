//! Bytes damaged on their way to S3 are refused by the server, never stored and acknowledged:
//! every upload carries its SHA-256 (`x-amz-checksum-sha256`), which the server checks,
//! also with payload signing turned off (`AWS_UNSIGNED_PAYLOAD=true`, where the signature
//! no longer covers the body). The `apiary` binary writes through a proxy that flips one bit
//! in the body of a cell's upload.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // real processes
#[path = "common/counting_proxy.rs"]
mod counting_proxy;

use std::path::Path;
use std::process::{Command, Output};

use apiary_storage::conformance::s3_test_uri;
use counting_proxy::{CountingProxy, s3_server};

/// `apiary ARGS` on `storage` through `proxy`, with `extra` environment.
fn apiary(
    dir: &Path,
    storage: &str,
    proxy: &CountingProxy,
    extra: &[(&str, &str)],
    args: &[&str],
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .args(["--storage", storage])
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL", format!("http://{}", proxy.address))
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Writes 100 rows while the first cell upload is damaged, then reads the frame: the write
/// either failed (nothing committed) or went through with good bytes (the damaged request
/// was refused and sent again); a read never meets a damaged cell.
async fn damaged_upload_is_never_stored(case: &str, extra: &[(&str, &str)]) {
    let storage = s3_test_uri(case).to_string();
    let proxy = CountingProxy::start(s3_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| apiary(dir.path(), &storage, &proxy, extra, args);
    for create in [
        vec!["create", "hive", "h"],
        vec!["create", "box", "h.b"],
        vec!["create", "frame", "h.b.t", "--schema", "id:int64,name:utf8"],
    ] {
        let out = run(&create);
        assert!(out.status.success(), "{create:?}: {}", stderr(&out));
    }
    let csv: String = std::iter::once("id,name\n".to_string())
        .chain((0..100).map(|i| format!("{i},name-{i}\n")))
        .collect();
    std::fs::write(dir.path().join("rows.csv"), csv).unwrap();

    let before = proxy.counts();
    proxy.damage_cell_uploads(1);
    let first = run(&["write", "h.b.t", "rows.csv"]);
    assert_eq!(proxy.damaged(), 1, "the proxy damaged no upload");
    assert!(
        (proxy.counts() - before).put >= 1,
        "the write went elsewhere"
    );
    let count = || {
        let out = run(&[
            "sql",
            "SELECT COUNT(*) AS n, SUM(id) AS s FROM h.b.t",
            "--format",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{case}: a read after a damaged upload failed: {}",
            stderr(&out)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (rows[0]["n"].as_i64().unwrap(), rows[0]["s"].as_i64())
    };
    if first.status.success() {
        // The server refused the damaged request and its retry carried good bytes.
        assert_eq!(count(), (100, Some(4950)), "{case}");
    } else {
        assert_eq!(count(), (0, None), "{case}: a failed write left rows");
        let out = run(&["write", "h.b.t", "rows.csv"]);
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        assert_eq!(count(), (100, Some(4950)), "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_damaged_on_its_way_to_s3_is_refused() {
    damaged_upload_is_never_stored("upload-damaged-signed", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_damaged_on_its_way_to_s3_is_refused_without_payload_signing() {
    damaged_upload_is_never_stored(
        "upload-damaged-unsigned",
        &[("AWS_UNSIGNED_PAYLOAD", "true")],
    )
    .await;
}
