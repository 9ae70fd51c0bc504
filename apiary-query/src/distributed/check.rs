//! Planning a fragment as a worker will, before it is handed out.
//!
//! DataFusion's unparser writes most plans back as SQL that plans again, but not all: a
//! decorrelated subquery's internal alias, or filters pushed into a scan under a table alias,
//! can come out naming things that are not in scope where the text is read. A worker that
//! cannot plan its fragment fails its task on every node and in every round, so the
//! coordinator plans the text itself first, against the tables its own plan already
//! resolved (no storage request, no optimization: a fraction of a millisecond), and checks
//! that it yields the columns the coordinator will read.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ResolvedTableReference, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner};
use datafusion::logical_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::planner::SqlToRel;

use crate::statement::{self, Command};

/// Plans `sql` with the functions and settings of `state`, resolving table names to the
/// tables `plan` scans; `Err` says why it does not plan, or does not yield `schema`'s
/// columns (by count and type, as the coordinator reads them).
pub(crate) fn plans_like_a_worker(
    sql: &str,
    plan: &LogicalPlan,
    state: &SessionState,
    schema: &SchemaRef,
) -> Result<(), String> {
    let provider = PlanTables::new(plan, state);
    let mut commands = statement::parse(sql).map_err(|e| e.to_string())?;
    let statement = match (commands.pop(), commands.is_empty()) {
        (Some(Command::DataFusion(s)), true) => match *s {
            DfStatement::Statement(s) => s,
            other => return Err(format!("not a query: {other}")),
        },
        _ => return Err("not one query".into()),
    };
    let planned = SqlToRel::new(&provider)
        .sql_statement_to_plan(*statement)
        .map_err(|e| e.strip_backtrace())?;
    let fields = planned.schema().fields();
    if fields.len() != schema.fields().len() {
        return Err(format!(
            "it yields {} columns where {} are expected",
            fields.len(),
            schema.fields().len()
        ));
    }
    for (got, want) in fields.iter().zip(schema.fields()) {
        if !castable(got.data_type(), want.data_type()) {
            return Err(format!(
                "column `{}` is {} where {} is expected",
                want.name(),
                got.data_type(),
                want.data_type()
            ));
        }
    }
    Ok(())
}

/// Whether a worker's column of type `got` can stand for `want` (the worker casts where
/// only the representation differs).
fn castable(got: &DataType, want: &DataType) -> bool {
    got == want || arrow_cast::can_cast_types(got, want)
}

/// The tables a plan scans, by resolved name, with the session's functions and settings.
struct PlanTables<'a> {
    state: &'a SessionState,
    tables: HashMap<ResolvedTableReference, Arc<dyn TableSource>>,
}

impl<'a> PlanTables<'a> {
    fn new(plan: &LogicalPlan, state: &'a SessionState) -> Self {
        let mut tables = HashMap::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.insert(
                    resolve(state, scan.table_name.clone()),
                    Arc::clone(&scan.source),
                );
            }
            Ok(TreeNodeRecursion::Continue)
        });
        Self { state, tables }
    }
}

fn resolve(state: &SessionState, name: TableReference) -> ResolvedTableReference {
    let catalog = &state.config_options().catalog;
    name.resolve(&catalog.default_catalog, &catalog.default_schema)
}

impl ContextProvider for PlanTables<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let resolved = resolve(self.state, name.clone());
        self.tables.get(&resolved).cloned().ok_or_else(|| {
            datafusion::common::DataFusionError::Plan(format!(
                "table `{name}` is not one the query reads"
            ))
        })
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
