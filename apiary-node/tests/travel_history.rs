//! Time travel over generated histories: random writes, overwrites, compactions and vacuums;
//! for every retained version `v`, `VERSION AS OF v` answers the snapshot taken right after
//! commit `v`, a time between two commits reads the earlier one, and a version vacuum may
//! have emptied is refused by name. Locally over hundreds of histories, and distributed
//! over `apiary node` processes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use apiary::Apiary;
use apiary_ledger::FrameRef;
use apiary_ledger::travel::format_ms;
use common::nodes::{Node, client, start, wait_alive};
use common::queries::{answer, explain_analyze, task_fields};
use proptest::prelude::*;

const F: &str = "analytics.events.clicks";

#[derive(Debug, Clone)]
enum Op {
    Append(i64),
    Overwrite(i64),
    Compact,
    Vacuum,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1i64..40).prop_map(Op::Append),
        2 => (1i64..30).prop_map(Op::Overwrite),
        2 => Just(Op::Compact),
        1 => Just(Op::Vacuum),
    ]
}

/// What a history left: the rows after every version, and the newest version any vacuum
/// saw (versions before it may be refused).
struct Recorded {
    snapshots: Vec<Vec<String>>,
    vacuumed_at: Option<u64>,
}

async fn rows(ap: &Apiary, sql: &str) -> Result<Vec<String>, String> {
    ap.sql(sql)
        .await
        .map(|r| common::canonical(r.batches()))
        .map_err(|e| e.to_string())
}

async fn head(ap: &Apiary) -> u64 {
    ap.frame_history("analytics", "events", "clicks")
        .await
        .unwrap()
        .len() as u64
        - 1
}

/// Runs `ops` on a new clicks frame, recording the rows after each version.
async fn run_history(ap: &Apiary, ops: &[Op]) -> Recorded {
    common::create_clicks_frame(ap).await;
    let mut recorded = Recorded {
        snapshots: vec![Vec::new()],
        vacuumed_at: None,
    };
    let mut next_id = 0i64;
    for op in ops {
        match op {
            Op::Append(n) | Op::Overwrite(n) => {
                let batch = common::clicks(next_id..next_id + n);
                next_id += n;
                if matches!(op, Op::Append(_)) {
                    ap.write_to_frame("analytics", "events", "clicks", [batch])
                        .await
                        .unwrap();
                } else {
                    ap.overwrite_frame("analytics", "events", "clicks", [batch])
                        .await
                        .unwrap();
                }
            }
            Op::Compact => {
                ap.compact("analytics", "events", "clicks").await.unwrap();
            }
            Op::Vacuum => {
                // Retention zero (the ledger's own call; the API refuses so short a one):
                // everything removed before now may go.
                apiary_storage::time::sleep(Duration::from_millis(2)).await;
                let frame = FrameRef::new("analytics", "events", "clicks").unwrap();
                let ledger = ap.registry().ledger(&frame).await.unwrap();
                apiary_ledger::vacuum(&ledger, ap.registry().backend().as_ref(), Duration::ZERO)
                    .await
                    .unwrap();
                recorded.vacuumed_at = Some(recorded.snapshots.len() as u64 - 1);
                continue;
            }
        }
        let now = rows(ap, &format!("SELECT * FROM {F}")).await.unwrap();
        let version = head(ap).await;
        while (recorded.snapshots.len() as u64) <= version {
            recorded.snapshots.push(now.clone());
        }
    }
    recorded
}

/// Checks every version of the history through `answer` (local or distributed).
async fn check_versions<Fut>(ap: &Apiary, recorded: &Recorded, answer: impl Fn(String) -> Fut)
where
    Fut: std::future::Future<Output = Result<Vec<String>, String>>,
{
    let stamps: Vec<i64> = ap
        .frame_history("analytics", "events", "clicks")
        .await
        .unwrap()
        .iter()
        .map(|c| c.committed_at_ms)
        .collect();
    assert_eq!(stamps.len(), recorded.snapshots.len());
    let retained = |v: u64| match recorded.vacuumed_at {
        Some(at) => v >= at,
        None => true,
    };
    for (v, snapshot) in recorded.snapshots.iter().enumerate() {
        let v = v as u64;
        match answer(format!("SELECT * FROM {F} VERSION AS OF {v}")).await {
            Ok(got) => assert_eq!(&got, snapshot, "version {v}"),
            Err(e) => {
                assert!(!retained(v), "version {v} is retained but failed: {e}");
                assert!(e.contains("past vacuum's retention"), "version {v}: {e}");
            }
        }
        // A time just before commit v reads version v - 1.
        if v > 0 && stamps[v as usize] > stamps[v as usize - 1] && retained(v - 1) {
            let at = format_ms(stamps[v as usize] - 1);
            let got = answer(format!("SELECT * FROM {F} TIMESTAMP AS OF '{at}'"))
                .await
                .unwrap_or_else(|e| panic!("at {at}: {e}"));
            assert_eq!(&got, &recorded.snapshots[v as usize - 1], "at {at}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 100,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_retained_version_reads_its_snapshot(ops in proptest::collection::vec(op(), 1..10)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let ap = Apiary::open(dir.path().join("data").to_str().unwrap()).await.unwrap();
            let recorded = run_history(&ap, &ops).await;
            check_versions(&ap, &recorded, |sql| {
                let ap = &ap;
                async move { rows(ap, &sql).await }
            })
            .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_versions_read_the_same_distributed_over_node_processes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let ap = client(&storage).await;
    let ops = [
        Op::Append(30),
        Op::Append(25),
        Op::Overwrite(12),
        Op::Append(40),
        Op::Append(9),
        Op::Append(33),
        Op::Compact,
        Op::Append(7),
        Op::Overwrite(21),
        Op::Append(18),
    ];
    let recorded = run_history(&ap, &ops).await;
    let _nodes: Vec<Node> = (0..2)
        .map(|i| start(&storage, dir.path(), &format!("node-t{i}"), "100ms"))
        .collect();
    wait_alive(&ap, 2).await;
    check_versions(&ap, &recorded, |sql| {
        let ap = &ap;
        async move { Ok(answer(ap, "always", &sql).await) }
    })
    .await;
    // The past version was split into tasks, and a frame joined with itself at two
    // versions answers as it does locally.
    let plan = explain_analyze(&ap, &format!("SELECT COUNT(*) FROM {F} VERSION AS OF 4")).await;
    assert!(!task_fields(&plan, "attempt").is_empty(), "{plan}");
    assert!(plan.contains("clicks@4"), "{plan}");
    let join = format!(
        "SELECT old.country, COUNT(*) FROM {F} VERSION AS OF 5 AS old JOIN {F} VERSION AS OF 4 \
         AS new ON old.event_id = new.event_id GROUP BY old.country"
    );
    assert_eq!(
        answer(&ap, "always", &join).await,
        answer(&ap, "never", &join).await
    );
    let plan = explain_analyze(&ap, &join).await;
    assert!(!task_fields(&plan, "attempt").is_empty(), "{plan}");
}
