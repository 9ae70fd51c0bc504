//! Whether a session's query runs here or over the swarm, and for an `EXPLAIN` of one kept
//! here, why.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Analyze, Explain, LogicalPlan};

use super::SqlSession;
use crate::distribute::{DistributeMode, DistributeRequest, Distribution};
use crate::error::Result;

impl SqlSession {
    /// `plan`, split over the swarm when the setting, the data and the workers say so;
    /// whether it was; and, for an `EXPLAIN` of a query kept local, why.
    ///
    /// A split query's tasks may start now: the rows of those the coordinator runs itself
    /// are kept in `runtime`'s pool, the one the query must then execute in.
    pub(super) async fn maybe_distribute(
        &self,
        plan: LogicalPlan,
        runtime: &Arc<RuntimeEnv>,
    ) -> Result<Distributed> {
        let kept = |plan, why: Option<String>| Distributed {
            plan,
            split: false,
            local_because: why,
        };
        if self.engine.distributor.is_none() {
            return Ok(kept(plan, None));
        }
        Ok(match plan {
            LogicalPlan::Explain(explain) => match self
                .distribute_query(&explain.plan, true, runtime)
                .await?
            {
                Distribution::Split(inner) => Distributed::split(LogicalPlan::Explain(Explain {
                    plan: Arc::new(inner),
                    ..explain
                })),
                Distribution::Local(why) => kept(LogicalPlan::Explain(explain), Some(why)),
            },
            LogicalPlan::Analyze(analyze) => {
                match self.distribute_query(&analyze.input, true, runtime).await? {
                    Distribution::Split(inner) => {
                        Distributed::split(LogicalPlan::Analyze(Analyze {
                            input: Arc::new(inner),
                            ..analyze
                        }))
                    }
                    Distribution::Local(why) => kept(LogicalPlan::Analyze(analyze), Some(why)),
                }
            }
            LogicalPlan::Statement(_) | LogicalPlan::DescribeTable(_) => kept(plan, None),
            query => match self.distribute_query(&query, false, runtime).await? {
                Distribution::Split(distributed) => Distributed::split(distributed),
                Distribution::Local(_) => kept(query, None),
            },
        })
    }

    async fn distribute_query(
        &self,
        plan: &LogicalPlan,
        explaining: bool,
        runtime: &Arc<RuntimeEnv>,
    ) -> Result<Distribution> {
        if self.distribute == DistributeMode::Never {
            return Ok(Distribution::Local("apiary.distribute = 'never'".into()));
        }
        let Some(distributor) = &self.engine.distributor else {
            return Ok(Distribution::Local("this engine has no swarm".into()));
        };
        let state = self.ctx.state();
        distributor
            .distribute(DistributeRequest {
                plan,
                state: &state,
                mode: self.distribute,
                scope: &self.current,
                min_part_rows: self.min_part_rows,
                engine: self.engine.clone(),
                explaining,
                runtime,
            })
            .await
    }
}

/// A query's plan after [`SqlSession::maybe_distribute`].
pub(super) struct Distributed {
    pub(super) plan: LogicalPlan,
    /// Whether it reads over the swarm.
    pub(super) split: bool,
    /// For an `EXPLAIN` of a query kept local: why.
    pub(super) local_because: Option<String>,
}

impl Distributed {
    fn split(plan: LogicalPlan) -> Self {
        Self {
            plan,
            split: true,
            local_because: None,
        }
    }
}
