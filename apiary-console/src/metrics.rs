//! `GET /metrics`: a node's figures in the Prometheus text format, through
//! `prometheus-client` (names prefixed `apiary_`, base units, counters ending in `_total`).
//! The figures are read from the node's memory at each scrape (see [`NodeMetrics`]).

use apiary_storage::{HistogramSnapshot, RequestStats};
use apiary_swarm::WorldView;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// What a node counts of itself, read at each scrape.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    /// Its storage requests so far, by operation and outcome, with their durations (none
    /// when its backend does not count).
    pub storage_requests: Option<RequestStats>,
    /// Its attempts to create ledger entries, by outcome (`committed`, `conflict`,
    /// `outcome_unknown`, `failed`).
    pub ledger_commits: Vec<(&'static str, u64)>,
    /// Bees working now, and bees in all.
    pub bees_busy: u64,
    /// Bees in all.
    pub bees: u64,
    /// Its colony temperature.
    pub temperature: f64,
    /// Its cell cache: bytes held, hits, misses (none without a cache).
    pub cache: Option<CacheFigures>,
    /// Its memory tier of decoded columns: bytes held, hits, misses.
    pub memory_tier: CacheFigures,
    /// Distributed fragments this node coordinated.
    pub fragments: u64,
    /// Task attempts its coordinator gave up.
    pub tasks_given_up: u64,
    /// Results its coordinator refused for holding a cell read already (0 while claims
    /// work).
    pub duplicate_reads: u64,
    /// Queries its coordinator split as it had split them before (no new optimization).
    pub splits_reused: u64,
    /// The SQL statements it ran.
    pub queries: QueryFigures,
    /// Tasks of distributed queries it ran as a worker, and how many of them failed.
    pub tasks: (u64, u64),
}

/// SQL statements run: by outcome, and a histogram of their durations.
#[derive(Debug, Clone, Default)]
pub struct QueryFigures {
    /// Statements by outcome (`ok`, `cancelled`, or an error kind).
    pub outcomes: Vec<(&'static str, u64)>,
    /// How long they took.
    pub durations: HistogramSnapshot,
}

/// A snapshot as a Prometheus histogram.
#[derive(Debug, Clone)]
struct Histogram(HistogramSnapshot);

impl prometheus_client::encoding::EncodeMetric for Histogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        // The encoder sums per-bucket counts itself.
        let mut below = 0;
        let per_bucket: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let n = cumulative.saturating_sub(below);
                below = cumulative;
                (bound, n)
            })
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &per_bucket,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Histograms, one per label set (a `Family` whose members are built from figures read at
/// the scrape rather than updated in place).
#[derive(Debug)]
struct Labelled<L>(Vec<(L, Histogram)>);

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static>
    prometheus_client::encoding::EncodeMetric for Labelled<L>
{
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        for (labels, histogram) in &self.0 {
            histogram.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// A cache's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheFigures {
    /// Bytes held now.
    pub bytes: u64,
    /// Reads served from it.
    pub hits: u64,
    /// Reads it could not serve.
    pub misses: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Renders `metrics` and the swarm `view` in the Prometheus text format.
pub fn render(metrics: &NodeMetrics, view: Option<&WorldView>) -> String {
    let mut registry = Registry::with_prefix("apiary");
    registry.register(
        "build",
        "The Apiary version this node runs",
        Info::new(VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        }),
    );
    if let Some(stats) = &metrics.storage_requests {
        // A fresh registry each scrape: each counter starts at 0 and is set to the count.
        let requests = Family::<RequestLabel, Counter>::default();
        let mut durations = Vec::new();
        for op in &stats.operations {
            let operation = op.operation.as_str();
            for &(outcome, n) in &op.outcomes {
                let label = RequestLabel {
                    operation,
                    outcome: outcome.as_str(),
                };
                requests.get_or_create(&label).inc_by(n);
            }
            durations.push((
                OperationLabel { operation },
                Histogram(op.durations.clone()),
            ));
        }
        registry.register(
            "storage_requests",
            "Storage requests this node made since it started, by operation and outcome",
            requests,
        );
        registry.register_with_unit(
            "storage_request_duration",
            "How long storage requests took to be answered, by operation",
            Unit::Seconds,
            Labelled(durations),
        );
    }
    let commits = Family::<OutcomeLabel, Counter>::default();
    for &(outcome, n) in &metrics.ledger_commits {
        commits.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
    }
    registry.register(
        "ledger_commits",
        "Attempts to create a ledger entry (a frame version, a registry change), by outcome: \
         committed, conflict (another writer won that version), outcome_unknown, failed",
        commits,
    );
    let bees = Family::<StateLabel, Gauge<u64, AtomicU64>>::default();
    bees.get_or_create(&StateLabel { state: "busy" })
        .set(metrics.bees_busy);
    bees.get_or_create(&StateLabel { state: "idle" })
        .set(metrics.bees.saturating_sub(metrics.bees_busy));
    registry.register("bees", "This node's bees, by state", bees);
    registry.register(
        "colony_temperature",
        "Colony temperature: 0 idle, 1 every bee busy, 2 as much work waiting as running",
        ConstGauge::new(metrics.temperature),
    );
    if let Some(view) = view {
        let nodes = Family::<StateLabel, Gauge<u64, AtomicU64>>::default();
        for state in ["joining", "alive", "suspect", "dead", "leaving"] {
            let n = view
                .nodes
                .iter()
                .filter(|n| n.state.as_str() == state)
                .count();
            nodes.get_or_create(&StateLabel { state }).set(n as u64);
        }
        registry.register(
            "nodes",
            "Nodes with a heartbeat, by state, as this node sees the swarm",
            nodes,
        );
    }
    for (name, what, figures) in [
        ("cache", "cell cache", metrics.cache),
        (
            "memory_tier",
            "memory tier of decoded columns",
            Some(metrics.memory_tier),
        ),
    ] {
        let Some(f) = figures else { continue };
        let sub = registry.sub_registry_with_prefix(name);
        sub.register_with_unit(
            "size",
            format!("Bytes the {what} holds"),
            Unit::Bytes,
            ConstGauge::new(f.bytes as i64),
        );
        sub.register(
            "hits",
            format!("Reads the {what} served"),
            ConstCounter::new(f.hits),
        );
        sub.register(
            "misses",
            format!("Reads the {what} could not serve"),
            ConstCounter::new(f.misses),
        );
    }
    let queries = Family::<OutcomeLabel, Counter>::default();
    for &(outcome, n) in &metrics.queries.outcomes {
        queries.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
    }
    registry.register(
        "queries",
        "SQL statements this node ran, by outcome (ok, cancelled, or the error's kind)",
        queries,
    );
    registry.register_with_unit(
        "query_duration",
        "How long SQL statements took, from planning to their last row",
        Unit::Seconds,
        Histogram(metrics.queries.durations.clone()),
    );
    let tasks = Family::<OutcomeLabel, Counter>::default();
    let (ran, failed) = metrics.tasks;
    tasks
        .get_or_create(&OutcomeLabel { outcome: "ok" })
        .inc_by(ran.saturating_sub(failed));
    tasks
        .get_or_create(&OutcomeLabel { outcome: "failed" })
        .inc_by(failed);
    registry.register(
        "tasks",
        "Tasks of distributed queries this node ran as a worker, by outcome",
        tasks,
    );
    let distributed = registry.sub_registry_with_prefix("distributed");
    distributed.register(
        "fragments",
        "Distributed fragments this node coordinated",
        ConstCounter::new(metrics.fragments),
    );
    distributed.register(
        "tasks_given_up",
        "Task attempts this node's coordinator gave up (their cells went to a later round)",
        ConstCounter::new(metrics.tasks_given_up),
    );
    distributed.register(
        "duplicate_reads",
        "Results refused for holding a cell another result delivered (0 while claims work)",
        ConstCounter::new(metrics.duplicate_reads),
    );
    distributed.register(
        "splits_reused",
        "Queries split as this node's coordinator had split them before: the same query over \
         the same frame versions, not optimized again",
        ConstCounter::new(metrics.splits_reused),
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// One sample of the Prometheus text format: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' name (`apiary_queries_total`, `apiary_query_duration_seconds_bucket`).
    pub name: String,
    /// Its labels as written, without braces (`outcome="ok"`), or empty.
    pub labels: String,
    /// Its value.
    pub value: f64,
    /// The `# HELP` text of its metric family.
    pub help: String,
}

/// The samples of a text in the Prometheus text format (what [`render`] writes), in order,
/// each with its family's help. Lines that are not samples are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut help: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (family, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.push((family.to_string(), text.to_string()));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        // The longest family name that prefixes the series (`_bucket`, `_total`, … added).
        let help = help
            .iter()
            .filter(|(family, _)| name.starts_with(family.as_str()))
            .max_by_key(|(family, _)| family.len())
            .map(|(_, text)| text.clone())
            .unwrap_or_default();
        out.push(Sample {
            name: name.to_string(),
            labels: labels.to_string(),
            value,
            help,
        });
    }
    out
}
