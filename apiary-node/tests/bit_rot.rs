//! Bit rot in storage: one flipped byte in a stored cell fails every read of that cell,
//! with a message naming it, instead of answering wrongly; compaction refuses to copy it;
//! and once the object is restored, answers are right again.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use apiary::{Apiary, NodeOptions};

const QUERY: &str = "SELECT country, COUNT(*) AS n, SUM(duration_ms) AS d, \
                     COUNT(DISTINCT user_id) AS users FROM analytics.events.clicks \
                     GROUP BY country ORDER BY country";

async fn answer(ap: &Apiary) -> Result<Vec<String>, String> {
    match ap.sql(QUERY).await {
        Ok(result) => Ok(common::canonical(result.batches())),
        Err(e) => Err(e.to_string()),
    }
}

/// Every cell of the clicks frame, by path on disk.
fn cells(storage: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&storage.join("analytics/events/clicks/data"), &mut out);
    out.sort();
    out
}

/// Flips one bit in the middle of the cell at `path` (its column data, not its footer);
/// returns the original bytes.
fn rot(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut rotted = original.clone();
    let middle = rotted.len() / 2;
    rotted[middle] ^= 0x10;
    std::fs::write(path, &rotted).unwrap();
    original
}

#[tokio::test]
async fn a_rotted_cell_fails_its_reads_instead_of_answering_wrongly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    let ap = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    common::create_clicks_frame(&ap).await;
    common::write_clicks(&ap, 4).await;
    let good = answer(&ap).await.unwrap();

    let cells = cells(&storage);
    assert!(cells.len() >= 4, "{cells:?}");
    let victim = &cells[cells.len() / 2];
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let original = rot(victim);

    // Without a cache (a client that had not read it): every query reading the cell fails
    // and names it. (A process that decoded the cell before it rotted keeps answering from
    // its memory tier, rightly.)
    let reader = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    for _ in 0..5 {
        let err = answer(&reader).await.unwrap_err();
        assert!(
            err.contains(&name) && err.contains("damaged") && err.contains("checksum"),
            "{err}"
        );
    }

    // A node with a cell cache: the same, and the damaged bytes are not cached.
    let node = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    node.start_with(NodeOptions {
        node_id: Some("rot".into()),
        state_dir: dir.path().join("state"),
        cache_bytes: Some(64 << 20),
        memory_tier_bytes: Some(0),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    let err = answer(&node).await.unwrap_err();
    assert!(err.contains(&name) && err.contains("damaged"), "{err}");
    let cached = node.cell_cache().unwrap().keys(1000);
    assert!(
        !cached.iter().any(|k| k.ends_with(&name)),
        "the damaged cell was cached: {cached:?}"
    );

    // Compaction refuses to copy it into a new cell with a fresh checksum.
    let err = ap
        .compact("analytics", "events", "clicks")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum"), "{err}");

    // Restored from a backup: right answers again, on both, with nothing sticky.
    std::fs::write(victim, &original).unwrap();
    assert_eq!(answer(&reader).await.unwrap(), good);
    assert_eq!(answer(&node).await.unwrap(), good);
    node.shutdown().await.unwrap();
}
