//! The engine's seam to distribution: how a session hands a query to the swarm. The engine
//! owns the trait and the session setting; the distributed layer implements it (over a
//! shuffle transport and a directory of workers), so the engine imports nothing above it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
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
    /// Whether the query is explained (`EXPLAIN [ANALYZE]`): a plan kept local then says
    /// why in full, even where that costs a look at the swarm.
    pub explaining: bool,
    /// The runtime (memory pool, spill files) the query executes in if it is split: a
    /// split that is not explained hands its tasks out at once, while the coordinator's
    /// plan is still being made, and keeps the rows of tasks it runs itself here.
    pub runtime: &'a Arc<RuntimeEnv>,
}

/// What a [`Distributor`] made of a query.
#[derive(Debug)]
pub enum Distribution {
    /// The plan to run in place of the query's, reading over the swarm.
    Split(LogicalPlan),
    /// The query runs here, for this reason (shown by `EXPLAIN`), e.g. `reads 97 KiB <
    /// 64 MiB; 4 nodes alive; SET apiary.distribute = 'always' to split it`.
    Local(String),
}

/// How the engine distributes a query (the distributed layer's `Cluster` implements it).
#[async_trait]
pub trait Distributor: Send + Sync + std::fmt::Debug {
    /// The plan to run in place of `request.plan`, reading over the swarm; or why the query
    /// runs locally (the setting, the data or the workers say so).
    async fn distribute(&self, request: DistributeRequest<'_>) -> Result<Distribution>;
}

/// `bytes` in binary units, as people read sizes (`97 KiB`, `64 MiB`, `1.5 GiB`).
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        for (bytes, text) in [
            (0, "0 B"),
            (1000, "1000 B"),
            (97 * 1024 + 300, "97 KiB"),
            (64 << 20, "64 MiB"),
            (3 << 29, "1.5 GiB"),
        ] {
            assert_eq!(super::size_text(bytes), text);
        }
    }
}
