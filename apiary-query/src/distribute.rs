//! The engine's seam to distribution: how a session hands a query to the swarm. The engine
//! owns the trait and the session setting; the distributed layer implements it (over a
//! shuffle transport and a directory of workers), so the engine imports nothing above it.

use async_trait::async_trait;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;

use crate::error::Result;
use crate::session::QueryEngine;

/// Whether a query is split over the swarm (`SET apiary.distribute = '…'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DistributeMode {
    /// When the data to read is large enough and another node is available.
    #[default]
    Auto,
    /// Whenever a frame can be split and any worker is available (tests and demos).
    Always,
    /// Never: the query runs where it was asked.
    Never,
}

impl DistributeMode {
    /// Parses `auto`, `always` or `never`.
    pub fn parse(value: &str) -> crate::Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "always" | "true" | "on" => Ok(Self::Always),
            "never" | "false" | "off" => Ok(Self::Never),
            other => Err(crate::QueryError::Invalid(format!(
                "apiary.distribute is `auto`, `always` or `never`, not `{other}`"
            ))),
        }
    }

    /// The lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// One query a session asks to distribute.
#[derive(Debug)]
pub struct DistributeRequest<'a> {
    /// The query's logical plan, as planned (not yet optimized).
    pub plan: &'a LogicalPlan,
    /// The session's state (its options and functions).
    pub state: &'a SessionState,
    /// The session's `apiary.distribute`.
    pub mode: DistributeMode,
    /// The session's `USE` (`[hive]` or `[hive, box]`).
    pub scope: &'a [String],
    /// The session's `apiary.min_part_rows`, when set.
    pub min_part_rows: Option<u64>,
    /// The engine (the coordinator's own tasks run in it).
    pub engine: QueryEngine,
}

/// How the engine distributes a query (the distributed layer's `Cluster` implements it).
#[async_trait]
pub trait Distributor: Send + Sync + std::fmt::Debug {
    /// The plan to run in place of `request.plan`, reading over the swarm; `None` to run
    /// the query locally (the setting, the data or the workers say so).
    async fn distribute(&self, request: DistributeRequest<'_>) -> Result<Option<LogicalPlan>>;
}
