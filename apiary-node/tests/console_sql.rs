//! The console's SQL side, against a real `apiary node` process: `POST /api/v1/sql` streamed
//! as JSON and as Arrow IPC, the running queries listed and cancelled
//! (`GET /api/v1/queries`, `DELETE /api/v1/queries/{id}`), the frames the node knows
//! (`GET /api/v1/frames`), the system tables, and the page at `/ui`.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // real processes and real time

mod common;

use std::time::{Duration, Instant};

use common::console::{Client, cli, free_addr, token};
use common::nodes::{DEADLINE, start_with};
use reqwest::Method;
use serde_json::Value;

/// A query that runs until it is cancelled (a hundred billion steps of a recursive query,
/// one row each).
const ENDLESS: &str = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r \
                       WHERE n < 100000000000) SELECT count(*) FROM r";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_streams_and_running_queries_are_listed_and_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let addr = free_addr();
    let _node = start_with(
        &storage,
        dir.path(),
        "sql-0",
        "100ms",
        &["--http", &addr.to_string(), "--http-token-refresh", "200ms"],
    );
    let cli = |args: &[&str]| cli(dir.path(), &storage, args);
    cli(&["create", "hive", "h"]);
    cli(&["create", "box", "h.b"]);
    cli(&["create", "frame", "h.b.t", "--schema", "id:int64,name:utf8"]);
    std::fs::write(dir.path().join("t.csv"), "id,name\n1,a\n2,\n3,c\n").unwrap();
    cli(&["write", "h.b.t", "t.csv"]);
    // (Read last: once the node honours it, it read the others too.)
    let metrics = token(dir.path(), &storage, "metrics");
    let admin = token(dir.path(), &storage, "admin");
    let read = token(dir.path(), &storage, "read");
    let client = Client::new();
    let run = |sql: &'static str| client.send(Method::POST, addr, "/api/v1/sql", &admin, Some(sql));
    client
        .until(addr, "/api/v1/nodes", &read, |v| {
            v["nodes"].as_array().is_some_and(|n| !n.is_empty())
        })
        .await;

    // The page is served without a token (it holds no data).
    let (status, page) = client.get(addr, "/ui", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Apiary console</title>"), "{page}");

    // JSON: columns, then the rows as objects (nulls written), then the count.
    let sql = "SELECT id, name FROM h.b.t ORDER BY id";
    let (status, body) = client
        .send(Method::POST, addr, "/api/v1/sql", &admin, Some(sql))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["columns"][0]["name"], "id", "{answer}");
    assert_eq!(answer["columns"][0]["type"], "Int64", "{answer}");
    assert_eq!(answer["row_count"], 3, "{answer}");
    assert_eq!(
        answer["rows"][1],
        serde_json::json!({"id": 2, "name": null})
    );
    assert!(answer.get("error").is_none(), "{answer}");
    // The same as `{"sql": …}`, and as an Arrow IPC stream.
    let response = client
        .http
        .post(format!("http://{addr}/api/v1/sql"))
        .bearer_auth(&admin)
        .header("Accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);
    // Bad input: a clear 400; the read scope may not run SQL; an unknown format.
    let (status, body) = run("SELEC 1").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("SELEC"), "{body}");
    let (status, body) = run("").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = client
        .send(Method::POST, addr, "/api/v1/sql", &read, Some(sql))
        .await;
    assert_eq!(status, 403);
    let (status, body) = client
        .send(
            Method::POST,
            addr,
            "/api/v1/sql?format=xml",
            &admin,
            Some(sql),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The frame the node read is listed, from its ledger cache.
    let frames = client.json(addr, "/api/v1/frames", &read).await;
    let t = &frames["frames"][0];
    assert_eq!(t["name"], "h.b.t", "{frames}");
    assert_eq!(t["rows"], 3, "{frames}");
    assert_eq!(t["columns"][1]["type"], "utf8", "{frames}");

    // A query that would run for hours, listed while it runs, cancelled by id.
    let endless = {
        let request = client
            .http
            .post(format!("http://{addr}/api/v1/sql"))
            .bearer_auth(&admin)
            .timeout(DEADLINE)
            .body(ENDLESS);
        tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
    };
    let listed = client
        .until(addr, "/api/v1/queries", &read, |v| {
            v["queries"].as_array().is_some_and(|q| !q.is_empty())
        })
        .await;
    let running = &listed["queries"][0];
    assert_eq!(running["sql"], ENDLESS, "{listed}");
    assert_eq!(running["client"], "api", "{listed}");
    let id = running["id"].as_str().unwrap().to_string();
    // The system tables answer the same in SQL.
    let (status, body) =
        run("SELECT id, client FROM apiary.system.queries WHERE sql LIKE '%RECURSIVE%'").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&id), "{body}");
    let (status, body) = run("SELECT state FROM apiary.system.nodes WHERE id = 'sql-0'").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\":\"alive\""), "{body}");
    let (status, body) = client
        .send(
            Method::POST,
            addr,
            "/api/v1/sql",
            &admin,
            Some(
                "SELECT value FROM apiary.system.metrics \
                 WHERE metric = 'apiary_bees' AND labels = 'state=\"busy\"'",
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"row_count\":1"), "{body}");
    let (status, body) = run("SELECT * FROM apiary.system.nope").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("apiary.system.nodes"), "{body}");

    // Cancel: admin only; the query ends with an error naming who cancelled it.
    let path = format!("/api/v1/queries/{id}");
    assert_eq!(
        client
            .send(Method::DELETE, addr, &path, &read, None)
            .await
            .0,
        403
    );
    let (status, body) = client.send(Method::DELETE, addr, &path, &admin, None).await;
    assert_eq!(status, 202, "{body}");
    let cancelled = tokio::time::timeout(DEADLINE, endless)
        .await
        .expect("the cancelled query kept running")
        .unwrap();
    let cancelled: Value = serde_json::from_str(&cancelled).unwrap();
    let error = cancelled["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cancelled by the console of sql-0"),
        "{cancelled}"
    );
    let started = Instant::now();
    loop {
        let list = client.json(addr, "/api/v1/queries", &read).await;
        if list["queries"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "still listed: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = client.send(Method::DELETE, addr, &path, &admin, None).await;
    assert_eq!(status, 404, "{body}");
    let (_, text) = client.get(addr, "/metrics", Some(&metrics)).await;
    assert!(
        text.contains("apiary_queries_total{outcome=\"cancelled\"} 1"),
        "{text}"
    );

    // The node's heartbeat carries its history: the queries above, and the bytes of the
    // cells they scanned, show in a sample (one about every ten seconds).
    let nodes = client
        .until(addr, "/api/v1/nodes", &read, |v| {
            v["nodes"][0]["history"].as_array().is_some_and(|h| {
                h.iter().any(|s| {
                    s["queries_per_s"].as_f64() > Some(0.0)
                        && s["bytes_scanned_per_s"].as_f64() > Some(0.0)
                })
            })
        })
        .await;
    let sample = &nodes["nodes"][0]["history"][0];
    let bare = client
        .json(addr, "/api/v1/nodes?history=false", &read)
        .await;
    assert_eq!(bare["nodes"][0]["history"], serde_json::json!([]), "{bare}");
    assert_eq!(bare["nodes"][0]["id"], "sql-0", "{bare}");
    assert!(sample["at_ms"].as_i64().unwrap() > 0, "{sample}");
    let ratio = sample["cache_hit_ratio"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ratio), "{sample}");
}
