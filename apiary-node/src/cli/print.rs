//! How the command line prints: tables, query results in every format, progress.

use apiary_ledger::{Created, FrameInfo};
use serde_json::json;

use super::CliResult;
use super::args::SqlFormat;
use crate::SwarmStatus;

/// A row counter on stderr while writing, shown only on a terminal.
#[derive(Clone)]
pub(super) struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub(super) fn new() -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message("rows read");
        Self(Some(bar))
    }

    pub(super) fn add(&self, rows: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(rows as u64);
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Prints a query's rows: CSV, JSON and Arrow IPC batch by batch as they arrive; a table
/// once all rows are in (its column widths depend on every row).
pub(super) async fn print_stream(
    mut stream: crate::SendableRecordBatchStream,
    format: SqlFormat,
) -> CliResult<()> {
    use crate::apiary_query::datafusion::arrow;
    use std::io::Write;
    let schema = stream.schema();
    match format {
        SqlFormat::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = next_batch(&mut stream).await? {
                batches.push(batch);
            }
            print_table_result(&crate::QueryResult::new(schema, batches))?;
        }
        SqlFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::stdout());
            while let Some(batch) = next_batch(&mut stream).await? {
                writer.write(&batch)?;
                std::io::stdout().flush()?;
            }
        }
        SqlFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(std::io::stdout());
            while let Some(batch) = next_batch(&mut stream).await? {
                writer.write(&batch)?;
                std::io::stdout().flush()?;
            }
            // arrow-json writes `[]` for a result without rows.
            writer.finish()?;
            println!();
        }
        SqlFormat::Line => {
            let mut first = true;
            while let Some(batch) = next_batch(&mut stream).await? {
                print_lines(&batch, &mut first)?;
            }
        }
        SqlFormat::Arrow => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(std::io::stdout(), &schema)?;
            while let Some(batch) = next_batch(&mut stream).await? {
                writer.write(&batch)?;
                writer.flush()?;
            }
            writer.finish()?;
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// Rows as `column = value` lines (names right-aligned), a blank line between rows.
fn print_lines(batch: &arrow_array::RecordBatch, first: &mut bool) -> CliResult<()> {
    use crate::apiary_query::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::io::Write;
    let schema = batch.schema();
    let width = schema
        .fields()
        .iter()
        .map(|f| f.name().chars().count())
        .max()
        .unwrap_or(0);
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = std::io::stdout().lock();
    for row in 0..batch.num_rows() {
        if !*first {
            writeln!(out)?;
        }
        *first = false;
        for (field, formatter) in schema.fields().iter().zip(&formatters) {
            writeln!(out, "{:>width$} = {}", field.name(), formatter.value(row))?;
        }
    }
    Ok(())
}

/// The next batch of a query's stream, its error as the query's.
async fn next_batch(
    stream: &mut crate::SendableRecordBatchStream,
) -> Result<Option<arrow_array::RecordBatch>, crate::ApiaryError> {
    use futures::TryStreamExt;
    Ok(stream
        .try_next()
        .await
        .map_err(crate::apiary_query::QueryError::from)?)
}

fn print_table_result(result: &crate::QueryResult) -> CliResult<()> {
    use crate::apiary_query::datafusion::arrow;
    use arrow::array::AsArray;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let schema = result.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names.is_empty() {
        writeln!(out, "OK")?;
    } else if names == ["plan_type", "plan"] {
        // EXPLAIN: plans are multi-line text, unreadable inside table borders.
        for batch in result.batches() {
            let kinds = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
            let plans = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)?;
            let (kinds, plans) = (kinds.as_string::<i32>(), plans.as_string::<i32>());
            for row in 0..batch.num_rows() {
                writeln!(
                    out,
                    "{}:\n{}",
                    kinds.value(row),
                    plans.value(row).trim_end()
                )?;
            }
        }
    } else {
        let text = arrow::util::pretty::pretty_format_batches(result.batches())?;
        writeln!(out, "{text}")?;
        writeln!(out, "({} rows)", result.num_rows())?;
    }
    out.flush()?;
    Ok(())
}

pub(super) fn print_swarm(status: &SwarmStatus) {
    println!("{} alive, {} bees", status.alive, status.total_bees);
    print_table(
        &[
            "node",
            "state",
            "cores",
            "memory",
            "bees",
            "idle",
            "temperature",
            "last seen",
        ],
        status.nodes.iter().map(|n| {
            vec![
                n.node_id.clone(),
                n.state.as_str().to_string(),
                n.cores.to_string(),
                format!("{:.1} GiB", n.memory_gb),
                n.bees.to_string(),
                n.idle_bees.to_string(),
                format!("{:.2}", n.temperature),
                format!("{:.1}s ago", n.last_seen_secs),
            ]
        }),
    );
    for problem in &status.problems {
        println!("warning: {problem}");
    }
}

pub(super) fn print_colony(status: &SwarmStatus) {
    print_table(
        &[
            "node",
            "state",
            "temperature",
            "regulation",
            "busy",
            "idle",
            "waiting",
            "memory",
            "cached",
        ],
        status.nodes.iter().map(|n| {
            vec![
                n.node_id.clone(),
                n.state.as_str().to_string(),
                format!("{:.2}", n.temperature),
                n.regulation.as_str().to_string(),
                (n.bees - n.idle_bees.min(n.bees)).to_string(),
                n.idle_bees.to_string(),
                n.queue_depth.to_string(),
                format!("{:.0}%", n.memory_pressure * 100.0),
                n.cached_cells.to_string(),
            ]
        }),
    );
}

pub(super) fn report_created(json: bool, kind: &str, name: &str, created: Created) {
    let new = created == Created::New;
    if json {
        println!("{}", json!({"kind": kind, "name": name, "created": new}));
    } else if new {
        println!("created {kind} {name}");
    } else {
        println!("{kind} {name} already exists");
    }
}

pub(super) fn report_dropped(json: bool, kind: &str, name: &str) {
    if json {
        println!("{}", json!({"kind": kind, "name": name, "dropped": true}));
    } else {
        println!("dropped {kind} {name}");
    }
}

pub(super) fn state(s: &crate::apiary_ledger::Lifecycle) -> String {
    match s {
        crate::apiary_ledger::Lifecycle::Live => "live".into(),
        crate::apiary_ledger::Lifecycle::Dropping => "dropping".into(),
    }
}

pub(super) fn describe(info: &FrameInfo) {
    println!(
        "frame {} (version {}, {} cells, {} rows, {} bytes)",
        info.name, info.version, info.cells, info.rows, info.bytes
    );
    print_table(
        &["column", "type", "nullable", "partition"],
        info.definition.schema.columns.iter().map(|c| {
            vec![
                c.name.clone(),
                c.data_type.clone(),
                c.nullable.to_string(),
                info.definition.partition_by.contains(&c.name).to_string(),
            ]
        }),
    );
}

/// `apiary history`: one line per commit.
pub(super) fn print_history(commits: &[crate::apiary_ledger::Commit]) {
    print_table(
        &[
            "VERSION",
            "COMMITTED_AT",
            "OPERATION",
            "CELLS+",
            "CELLS-",
            "ROWS+",
            "ROWS-",
            "WRITER",
        ],
        commits.iter().map(|c| {
            vec![
                c.version.to_string(),
                crate::apiary_ledger::travel::format_ms(c.committed_at_ms),
                c.operation.clone(),
                c.cells_added.to_string(),
                c.cells_removed.to_string(),
                c.rows_added.to_string(),
                c.rows_removed.to_string(),
                c.writer.clone().unwrap_or_else(|| "-".into()),
            ]
        }),
    );
}

pub(super) fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
