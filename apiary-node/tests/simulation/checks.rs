//! What a simulated run writes and reads, and the checks made on its answers and views.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apiary::Apiary;
use apiary::apiary_query::datafusion::arrow::array::{Int64Array, RecordBatch};
use apiary::apiary_query::datafusion::arrow::datatypes::{DataType, Field, Schema};
use apiary_storage::FaultConfig;

use super::Violation;

/// The frame every run writes and reads: an id per row and the write it came in.
pub const FRAME: (&str, &str, &str) = ("sim", "b", "t");

/// A write's rows: the ids `ids`, each tagged with `write`.
pub fn batch(ids: std::ops::Range<i64>, write: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("write", DataType::Int64, false),
    ]));
    let n = ids.end - ids.start;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(Int64Array::from_iter_values((0..n).map(|_| write))),
        ],
    )
    .unwrap()
}

/// The one-row answer of `sql` on `ap`, as text.
pub async fn answer(ap: &Apiary, sql: &str) -> Result<Vec<String>, String> {
    match ap.sql(sql).await {
        Ok(result) => Ok(crate::common::canonical(result.batches())),
        Err(e) => Err(e.to_string()),
    }
}

/// Every id in the frame at its newest version, with how many times it is there.
pub async fn ids(ap: &Apiary) -> BTreeMap<i64, u64> {
    let result = ap
        .sql("SELECT id, COUNT(*) AS n FROM sim.b.t GROUP BY id")
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for batch in result.batches() {
        use apiary::apiary_query::datafusion::arrow::array::AsArray;
        use apiary::apiary_query::datafusion::arrow::datatypes::Int64Type;
        let id = batch.column(0).as_primitive::<Int64Type>();
        let n = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            out.insert(id.value(row), n.value(row) as u64);
        }
    }
    out
}

/// Runs the sum query at `version` on the client (distributed) and on the truth (local);
/// whether the client answered. A different answer is a violation.
pub async fn check_query(
    seed: u64,
    truth: &Apiary,
    client: &Apiary,
    version: u64,
    faults: &FaultConfig,
) -> Result<bool, Violation> {
    let sql = format!(
        "SELECT COUNT(*) AS n, SUM(id) AS s, SUM(write) AS w FROM sim.b.t VERSION AS OF {version}"
    );
    let local = answer(truth, &sql)
        .await
        .map_err(|e| format!("seed {seed}: the local read of version {version} failed: {e}"))?;
    let Ok(distributed) = answer(client, &sql).await else {
        return Ok(false);
    };
    if distributed != local {
        return Err(format!(
            "seed {seed}: at version {version} the distributed answer {distributed:?} differs \
             from the local one {local:?} (faults {faults:?})"
        ));
    }
    Ok(true)
}

/// Every node still running sees every other one alive, and all agree on the state of each
/// node (a killed one dead or gone), within a minute.
pub async fn converge(
    seed: u64,
    nodes: &[(String, Apiary)],
    within: Duration,
) -> Result<(), Violation> {
    let mut views = Vec::new();
    let checks = within.as_millis() / 100 + 1;
    for _ in 0..checks {
        views.clear();
        for (_, node) in nodes {
            let status = node.swarm_status().await.unwrap();
            let mut view: Vec<(String, String)> = status
                .nodes
                .iter()
                .filter(|n| n.state != apiary::apiary_swarm::NodeState::Dead)
                .map(|n| (n.node_id.clone(), n.state.as_str().to_string()))
                .collect();
            view.sort();
            views.push(view);
        }
        let mut running: Vec<(String, String)> = nodes
            .iter()
            .map(|(id, _)| (id.clone(), "alive".to_string()))
            .collect();
        running.sort();
        if views.iter().all(|v| *v == running) {
            return Ok(());
        }
        apiary_storage::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "seed {seed}: {within:?} after the run the nodes' views differ: {views:?}"
    ))
}
