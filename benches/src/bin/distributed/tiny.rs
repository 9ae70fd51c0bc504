//! The fixed cost of distributing a tiny query at the default task poll interval (1 s), on
//! idle nodes, active ones and as a script's next statement, and the coordinator's storage
//! requests for it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::Apiary;
use apiary::apiary_storage::CountsHandle as Counts;

use crate::processes::{Nodes, node, wait_alive};
use crate::{Args, session};

/// Measures and prints the tiny query's added time on fresh pairs of nodes.
pub(crate) async fn measure(ap: &Apiary, counts: &Counts, storage: &str, state: &Path, a: &Args) {
    // The fixed cost at the defaults (task poll 1 s): a query over one tiny frame.
    let _ = ap.drop_frame("ssb", "sf", "tiny").await;
    ap.create_frame("ssb", "sf", "tiny", &[("x", "int64")], &[])
        .await
        .expect("tiny");
    let batch = arrow_array::RecordBatch::try_from_iter([(
        "x",
        Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as _,
    )])
    .expect("batch");
    ap.write_to_frame("ssb", "sf", "tiny", [batch])
        .await
        .expect("write tiny");
    let tiny = "SELECT SUM(x) FROM tiny";
    let mut plain = session(ap, "never").await;
    let mut spread = session(ap, "always").await;
    // On idle nodes (fresh ones, never given a task: they look every second), on active
    // ones (given a task in the last minute: they look four times as often), and as a
    // script's next statement (published right after the last answer: the nodes finished a
    // task within 100 ms and look every millisecond).
    let mut idle = Vec::new();
    let mut active = Vec::new();
    let mut next = Vec::new();
    // The storage requests of the last distributed tiny query.
    let mut requests = Default::default();
    for i in 0..(a.runs * 3).max(5) {
        let ids = [format!("tiny-a{i}"), format!("tiny-b{i}")];
        let pair = Nodes(vec![
            node(storage, state, &ids[0], 0, "1s", a.memory_tier),
            node(storage, state, &ids[1], 1, "1s", a.memory_tier),
        ]);
        wait_alive(ap, &[&ids[0], &ids[1]]).await;
        // The coordinator's list of workers is at most two seconds old.
        apiary_storage::time::sleep(Duration::from_millis(2100)).await;
        // Idle once per pair; active and right after another `--tiny-per-pair` times each.
        let mut plan: Vec<(u8, bool, usize)> = vec![(0, true, 0)];
        for k in 0..a.tiny_per_pair {
            plan.push((1, true, k));
            plan.push((2, false, k));
        }
        for (which, wait, k) in plan {
            let added = match which {
                0 => &mut idle,
                1 => &mut active,
                _ => &mut next,
            };
            // Queries arrive at any point of the workers' poll cycle, not in step with it.
            if wait {
                let ms = 137 * (i * a.tiny_per_pair + k) as u64 % 1000;
                apiary_storage::time::sleep(Duration::from_millis(ms)).await;
            }
            let t = Instant::now();
            plain.sql(tiny).await.expect("local tiny");
            let base = t.elapsed().as_secs_f64();
            let before = counts.snapshot();
            let t = Instant::now();
            spread.sql(tiny).await.expect("distributed tiny");
            added.push(t.elapsed().as_secs_f64() - base);
            // The query's objects are removed after its answer: counted with it.
            ap.settle().await;
            requests = counts.snapshot() - before;
        }
        drop(pair);
    }
    for (what, mut added) in [
        ("idle nodes", idle),
        ("active nodes", active),
        ("active nodes, right after another", next),
    ] {
        added.sort_by(f64::total_cmp);
        let mean = added.iter().sum::<f64>() / added.len() as f64;
        println!(
            "tiny query on {what}, distributed at the default 1 s task poll{}: adds {:.1} ms mean, {:.1} ms median, {:.1} ms p99, {:.1} ms max over {} runs",
            if a.flight { " over Flight" } else { "" },
            mean * 1e3,
            added[added.len() / 2] * 1e3,
            added[(added.len() * 99 / 100).min(added.len() - 1)] * 1e3,
            added[added.len() - 1] * 1e3,
            added.len()
        );
    }
    println!(
        "coordinator storage requests per distributed tiny query: {} ({} GET, {} HEAD, {} PUT, {} LIST, {} DELETE)",
        requests.total(),
        requests.get,
        requests.head,
        requests.put + requests.conditional_put,
        requests.list,
        requests.delete
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int32Array;
    use arrow_schema::{DataType, Field, Schema};

    #[test]
    fn round_means_pair_the_runs_of_one_round_and_come_sorted() {
        let timed = |seconds: &[f64]| Timed {
            seconds: seconds.to_vec(),
            rows: Vec::new(),
        };
        // Round 0: speed-ups 2 and 8 (mean 4); round 1: 1 and 1; round 2: 3 and 3.
        let base = [timed(&[2.0, 1.0, 3.0]), timed(&[8.0, 5.0, 6.0])];
        let faster = [timed(&[1.0, 1.0, 1.0]), timed(&[1.0, 5.0, 2.0])];
        let means = round_geo_means(&base, &faster);
        let want = [1.0, 3.0, 4.0];
        assert_eq!(means.len(), want.len());
        for (got, want) in means.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{means:?}");
        }
        assert_eq!(range(&means), "1.00x to 4.00x over 3 rounds");
        assert_eq!(range(&[]), "no rounds");
    }

    #[test]
    fn a_link_copy_shares_the_files_and_keeps_them_apart_when_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("data/ssb");
        std::fs::create_dir_all(from.join("f")).unwrap();
        std::fs::write(from.join("f/cell.parquet"), b"rows").unwrap();
        let to = dir.path().join("solo/ssb");
        link_copy(&from, &to);
        let (a, b) = (from.join("f/cell.parquet"), to.join("f/cell.parquet"));
        assert_eq!(std::fs::read(&b).unwrap(), b"rows");
        // One file (one page cache) while neither side writes.
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
        // Storage replaces an object by renaming a new file over it: the other side keeps its own.
        std::fs::write(to.join("f/new"), b"other").unwrap();
        std::fs::rename(to.join("f/new"), &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"rows");
    }

    #[test]
    fn parts_are_equal_to_a_row_and_keep_every_row_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        let mut next = 0;
        let batches: Vec<RecordBatch> = [7, 64, 1, 30, 0, 5]
            .iter()
            .map(|&n| {
                let values: Vec<i32> = (next..next + n).collect();
                next += n;
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(values))])
                    .unwrap()
            })
            .collect();
        for parts in [1, 2, 3, 16, 107, 500] {
            let cut = equal_parts(&batches, parts);
            let sizes: Vec<usize> = cut
                .iter()
                .map(|p| p.iter().map(RecordBatch::num_rows).sum())
                .collect();
            assert_eq!(sizes.len(), parts.min(107), "{parts}");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{parts}: {sizes:?}");
            let values: Vec<i32> = cut
                .iter()
                .flatten()
                .flat_map(|b| {
                    let col = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
                    col.values().to_vec()
                })
                .collect();
            assert_eq!(values, (0..107).collect::<Vec<_>>(), "{parts}");
        }
    }
}
