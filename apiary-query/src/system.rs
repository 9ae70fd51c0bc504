//! System tables: `apiary.system.{name}` answers what the node knows of itself and its
//! swarm in SQL (`SELECT * FROM apiary.system.nodes`), the way ClickHouse exposes its
//! `system` database. The node provides the tables ([`SystemTables`]); each is built from
//! its memory when a query names it, so reading one makes no storage request.

use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};

/// The hive name under which the system tables live.
pub const SYSTEM_HIVE: &str = "apiary";
/// The box name of the system tables.
pub const SYSTEM_BOX: &str = "system";

/// What a node answers as `apiary.system.*` tables.
pub trait SystemTables: Send + Sync + std::fmt::Debug + 'static {
    /// The tables' names (`nodes`, `queries`, `metrics`, …).
    fn names(&self) -> Vec<&'static str>;
    /// The rows of table `name` now; `None` when there is no such table.
    fn table(&self, name: &str) -> Option<RecordBatch>;
}

/// The `apiary` hive: its `system` box holds the system tables; any other box is the
/// user's hive of that name.
#[derive(Debug)]
pub(crate) struct SystemCatalog {
    /// The node's tables; `None` in a process that is not a running node.
    pub(crate) tables: Option<Arc<dyn SystemTables>>,
    pub(crate) hive: Arc<dyn CatalogProvider>,
}

impl CatalogProvider for SystemCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![SYSTEM_BOX.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_BOX {
            Some(Arc::new(SystemSchema(self.tables.clone())))
        } else {
            self.hive.schema(name)
        }
    }
}

/// The `apiary.system` box.
#[derive(Debug)]
struct SystemSchema(Option<Arc<dyn SystemTables>>);

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|t| t.names())
            .map(String::from)
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(tables) = &self.0 else {
            return Err(DataFusionError::Plan(format!(
                "`{SYSTEM_HIVE}.{SYSTEM_BOX}.{name}` is served by a running node, and this \
                 process is not one: query it through a node's console (POST /api/v1/sql), \
                 or from a program that started its node"
            )));
        };
        let Some(batch) = tables.table(name) else {
            return Err(DataFusionError::Plan(format!(
                "no system table `{SYSTEM_HIVE}.{SYSTEM_BOX}.{name}`: there are {}",
                tables
                    .names()
                    .iter()
                    .map(|n| format!("{SYSTEM_HIVE}.{SYSTEM_BOX}.{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.as_ref().is_some_and(|t| t.names().contains(&name))
    }
}
