//! Warming a new node's query engine up, so that its first task does not pay for first
//! uses (code paged in, lazily built tables).

use std::sync::Arc;

use datafusion::prelude::SessionContext;

use super::QueryEngine;
use crate::error::Result;

impl QueryEngine {
    /// Runs a small query that touches no frame, so that a process's first real query does
    /// not pay for the planner's and executor's first use (code paged in, lazily built
    /// tables): a new node's first task plans in a few milliseconds instead of ten. It goes
    /// straight to DataFusion on the engine's state: no storage request, and it neither
    /// waits for a bee nor counts in the colony's admission. Then it reads a small Parquet
    /// file held in memory (in a context of its own), so that the first cell a node reads
    /// does not pay for the Parquet reader's first use either.
    pub async fn warm_up(&self) -> Result<()> {
        let context = SessionContext::new_with_state(self.state.clone());
        context
            .sql(
                "SELECT x % 2 AS k, COUNT(*), SUM(x), MIN(y), MAX(y) \
                 FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS t(x, y) \
                 WHERE x > 0 GROUP BY x % 2 ORDER BY k",
            )
            .await?
            .collect()
            .await?;
        Ok(warm_parquet().await?)
    }
}

/// Reads a three-row Parquet file from an in-memory store with a filter and an aggregate:
/// the decoding, pruning and scan code a task's first cell would page in.
async fn warm_parquet() -> datafusion::error::Result<()> {
    use apiary_storage::object_store::{ObjectStoreExt, memory::InMemory, path::Path};
    use datafusion::parquet::arrow::ArrowWriter;
    let batch = arrow_array::RecordBatch::try_from_iter([
        (
            "x",
            Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef,
        ),
        (
            "y",
            Arc::new(arrow_array::StringArray::from(vec!["a", "b", "c"])) as _,
        ),
    ])?;
    let mut file = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    let store = Arc::new(InMemory::new());
    store.put(&Path::from("warm.parquet"), file.into()).await?;
    let context = SessionContext::new();
    let url = url::Url::parse("memory://warm-up")
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    context.register_object_store(&url, store);
    context
        .register_parquet(
            "warm",
            "memory://warm-up/warm.parquet",
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await?;
    context
        .sql("SELECT COUNT(*), SUM(x), MAX(y) FROM warm WHERE x > 1")
        .await?
        .collect()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueryOptions;
    use apiary_ledger::Registry;

    #[tokio::test]
    async fn warming_up_touches_no_storage() {
        let uri = apiary_storage::StorageUri::parse("memory://").expect("uri");
        let (backend, counts) = apiary_storage::counted_backend(&uri).expect("backend");
        let registry = Arc::new(Registry::new(backend, Default::default()));
        let engine = QueryEngine::new(registry, QueryOptions::default()).expect("engine");
        engine.warm_up().await.expect("warm-up");
        assert_eq!(counts.snapshot().total(), 0, "{:?}", counts.snapshot());
    }
}
