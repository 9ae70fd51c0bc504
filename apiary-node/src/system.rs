//! The node's `apiary.system.*` tables: `nodes`, `queries` and `metrics`, the same figures
//! the console serves (see [`apiary_query::system`]), built from memory when a query names
//! them.

use std::sync::Arc;

use apiary_console::{ConsoleSource, api};
use apiary_query::system::SystemTables;
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::console::NodeConsole;

/// The system tables of a running node.
pub(crate) struct NodeSystem(pub(crate) NodeConsole);

impl std::fmt::Debug for NodeSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSystem")
    }
}

impl SystemTables for NodeSystem {
    fn names(&self) -> Vec<&'static str> {
        vec!["nodes", "queries", "metrics"]
    }

    fn table(&self, name: &str) -> Option<RecordBatch> {
        match name {
            "nodes" => Some(self.nodes()),
            "queries" => Some(self.queries()),
            "metrics" => Some(self.metrics()),
            _ => None,
        }
    }
}

/// Columns built side by side, then made one batch.
#[derive(Default)]
struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn text<'a>(mut self, name: &str, values: impl Iterator<Item = &'a str>) -> Self {
        let mut b = StringBuilder::new();
        values.for_each(|v| b.append_value(v));
        self.push(name, DataType::Utf8, false, Arc::new(b.finish()))
    }

    fn int(mut self, name: &str, values: impl Iterator<Item = i64>) -> Self {
        let mut b = Int64Builder::new();
        values.for_each(|v| b.append_value(v));
        self.push(name, DataType::Int64, false, Arc::new(b.finish()))
    }

    fn float(mut self, name: &str, values: impl Iterator<Item = Option<f64>>) -> Self {
        let mut b = Float64Builder::new();
        values.for_each(|v| b.append_option(v));
        self.push(name, DataType::Float64, true, Arc::new(b.finish()))
    }

    fn flag(mut self, name: &str, values: impl Iterator<Item = bool>) -> Self {
        let mut b = BooleanBuilder::new();
        values.for_each(|v| b.append_value(v));
        self.push(name, DataType::Boolean, false, Arc::new(b.finish()))
    }

    fn push(&mut self, name: &str, t: DataType, nullable: bool, a: ArrayRef) -> Self {
        self.fields.push(Field::new(name, t, nullable));
        self.arrays.push(a);
        std::mem::take(self)
    }

    fn batch(self) -> RecordBatch {
        let schema = Arc::new(Schema::new(self.fields));
        // Every column was built from the same rows.
        RecordBatch::try_new(Arc::clone(&schema), self.arrays)
            .unwrap_or_else(|_| RecordBatch::new_empty(schema))
    }
}

fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl NodeSystem {
    fn nodes(&self) -> RecordBatch {
        let nodes: Vec<api::Node> = self
            .0
            .view()
            .map(|v| v.nodes.iter().map(api::Node::of).collect())
            .unwrap_or_default();
        let n = || nodes.iter();
        Columns::default()
            .text("id", n().map(|n| n.id.as_str()))
            .text("host", n().map(|n| n.host.as_str()))
            .text("state", n().map(|n| n.state))
            .text("version", n().map(|n| n.version.as_str()))
            .int("started_ms", n().map(|n| n.started_ms))
            .float(
                "last_heartbeat_age_s",
                n().map(|n| Some(n.last_heartbeat_age_s)),
            )
            .flag("active", n().map(|n| n.active))
            .int("cores", n().map(|n| i64::from(n.cores)))
            .int("bees", n().map(|n| i64::from(n.bees)))
            .int("bees_busy", n().map(|n| i64::from(n.bees_busy)))
            .int("memory_bytes", n().map(|n| count(n.memory_bytes)))
            .float("temperature", n().map(|n| Some(n.temperature)))
            .text("regulation", n().map(|n| n.regulation.as_str()))
            .int("queue_depth", n().map(|n| i64::from(n.queue_depth)))
            .int("cache_bytes", n().map(|n| count(n.cache_bytes)))
            .float("requests_per_minute", n().map(|n| n.requests_per_minute))
            .float("requests_monthly_usd", n().map(|n| n.requests_monthly_usd))
            .batch()
    }

    fn queries(&self) -> RecordBatch {
        let queries = self.0.queries();
        let q = || queries.iter();
        Columns::default()
            .text("id", q().map(|q| q.id.as_str()))
            .text("sql", q().map(|q| q.sql.as_str()))
            .text("client", q().map(|q| q.client.as_str()))
            .int("started_ms", q().map(|q| q.started_ms))
            .float("elapsed_s", q().map(|q| Some(q.elapsed_s)))
            .flag("cancelling", q().map(|q| q.cancelling))
            .batch()
    }

    /// Every sample `/metrics` would serve now: one row per series.
    fn metrics(&self) -> RecordBatch {
        let view = self.0.view();
        let text = apiary_console::metrics::render(&self.0.metrics(), view.as_ref());
        let samples = apiary_console::metrics::samples(&text);
        let s = || samples.iter();
        Columns::default()
            .text("metric", s().map(|s| s.name.as_str()))
            .text("labels", s().map(|s| s.labels.as_str()))
            .float("value", s().map(|s| Some(s.value)))
            .text("description", s().map(|s| s.help.as_str()))
            .batch()
    }
}
