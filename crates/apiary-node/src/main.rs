//! The `apiary` command.

use std::process::ExitCode;

use apiary::apiary_ledger::{Created, FrameDefinition, FrameInfo, FrameRef, FrameSchema};
use apiary::apiary_storage::StorageUri;
use apiary::{Apiary, ApiaryOptions, DEFAULT_STORAGE};
use clap::{Parser, Subcommand};
use serde_json::json;

/// Apiary: a lakehouse for small compute, coordinated through object storage.
#[derive(Debug, Parser)]
#[command(name = "apiary", version, about)]
struct Cli {
    /// Storage URI: a folder, file:///path, memory://, s3://bucket/prefix, gs://…, az://…
    #[arg(long, global = true, env = "APIARY_STORAGE", default_value = DEFAULT_STORAGE)]
    storage: String,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a hive, box or frame (creating an identical one again is a no-op).
    #[command(subcommand)]
    Create(CreateCommand),
    /// List hives; the boxes of HIVE; or the frames of HIVE.BOX.
    List {
        /// Nothing, HIVE, or HIVE.BOX.
        scope: Option<String>,
    },
    /// Show a frame's schema, partitioning, version and size.
    Describe {
        /// HIVE.BOX.FRAME
        frame: String,
    },
    /// Drop a hive, box or frame.
    #[command(subcommand)]
    Drop(DropCommand),
}

#[derive(Debug, Subcommand)]
enum CreateCommand {
    /// Create a hive (database).
    Hive {
        /// Hive name.
        name: String,
    },
    /// Create a box (schema): HIVE.BOX.
    Box {
        /// HIVE.BOX
        name: String,
    },
    /// Create a frame (table): HIVE.BOX.FRAME.
    Frame {
        /// HIVE.BOX.FRAME
        name: String,
        /// Columns as `name:type[ NOT NULL],…`, e.g. `event_id:int64,page:utf8,country:utf8`.
        #[arg(long)]
        schema: String,
        /// Partition columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DropCommand {
    /// Drop a hive.
    Hive {
        /// Hive name.
        name: String,
        /// Also drop everything in it.
        #[arg(long)]
        cascade: bool,
    },
    /// Drop a box: HIVE.BOX.
    Box {
        /// HIVE.BOX
        name: String,
        /// Also drop its frames.
        #[arg(long)]
        cascade: bool,
    },
    /// Drop a frame: HIVE.BOX.FRAME.
    Frame {
        /// HIVE.BOX.FRAME
        name: String,
    },
}

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn split_two(text: &str) -> CliResult<(&str, &str)> {
    match text.split_once('.') {
        Some((a, b)) if !b.contains('.') => Ok((a, b)),
        _ => Err(format!("expected HIVE.BOX, got `{text}`").into()),
    }
}

async fn run(cli: Cli) -> CliResult<()> {
    let storage = StorageUri::parse(&cli.storage)?;
    let ap = Apiary::open_with(ApiaryOptions::new(storage)).await?;
    let json = cli.json;
    match cli.command {
        Command::Create(CreateCommand::Hive { name }) => {
            let created = ap.create_hive(&name).await?;
            report_created(json, "hive", &name, created);
        }
        Command::Create(CreateCommand::Box { name }) => {
            let (hive, b) = split_two(&name)?;
            let created = ap.create_box(hive, b).await?;
            report_created(json, "box", &name, created);
        }
        Command::Create(CreateCommand::Frame {
            name,
            schema,
            partition_by,
        }) => {
            let frame = FrameRef::parse(&name)?;
            let definition =
                FrameDefinition::new(FrameSchema::parse_compact(&schema)?, partition_by)?;
            let created = ap.create_frame_with(&frame, definition).await?;
            report_created(json, "frame", &name, created);
        }
        Command::List { scope } => list(&ap, json, scope.as_deref()).await?,
        Command::Describe { frame } => {
            let f = FrameRef::parse(&frame)?;
            let info = ap.describe_frame(&f.hive, &f.r#box, &f.frame).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                describe(&info);
            }
        }
        Command::Drop(DropCommand::Hive { name, cascade }) => {
            ap.drop_hive(&name, cascade).await?;
            report_dropped(json, "hive", &name);
        }
        Command::Drop(DropCommand::Box { name, cascade }) => {
            let (hive, b) = split_two(&name)?;
            ap.drop_box(hive, b, cascade).await?;
            report_dropped(json, "box", &name);
        }
        Command::Drop(DropCommand::Frame { name }) => {
            let f = FrameRef::parse(&name)?;
            ap.drop_frame(&f.hive, &f.r#box, &f.frame).await?;
            report_dropped(json, "frame", &name);
        }
    }
    Ok(())
}

fn report_created(json: bool, kind: &str, name: &str, created: Created) {
    let new = created == Created::New;
    if json {
        println!("{}", json!({"kind": kind, "name": name, "created": new}));
    } else if new {
        println!("created {kind} {name}");
    } else {
        println!("{kind} {name} already exists");
    }
}

fn report_dropped(json: bool, kind: &str, name: &str) {
    if json {
        println!("{}", json!({"kind": kind, "name": name, "dropped": true}));
    } else {
        println!("dropped {kind} {name}");
    }
}

async fn list(ap: &Apiary, json: bool, scope: Option<&str>) -> CliResult<()> {
    let parts: Vec<&str> = scope.map(|s| s.split('.').collect()).unwrap_or_default();
    match parts.as_slice() {
        [] => {
            let hives = ap.list_hives().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hives)?);
            } else {
                print_table(
                    &["hive", "state"],
                    hives.iter().map(|h| vec![h.name.clone(), state(&h.state)]),
                );
            }
        }
        [hive] => {
            let boxes = ap.list_boxes(hive).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&boxes)?);
            } else {
                print_table(
                    &["box", "state"],
                    boxes
                        .iter()
                        .map(|b| vec![format!("{}.{}", b.hive, b.name), state(&b.state)]),
                );
            }
        }
        [hive, b] => {
            let frames = ap.list_frames(hive, b).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&frames)?);
            } else {
                print_table(
                    &[
                        "frame",
                        "columns",
                        "partition_by",
                        "version",
                        "cells",
                        "rows",
                    ],
                    frames.iter().map(|f| {
                        vec![
                            f.name.clone(),
                            f.definition.schema.columns.len().to_string(),
                            f.definition.partition_by.join(","),
                            f.version.to_string(),
                            f.cells.to_string(),
                            f.rows.to_string(),
                        ]
                    }),
                );
            }
        }
        _ => {
            return Err(format!("expected HIVE or HIVE.BOX, got `{}`", scope.unwrap_or("")).into());
        }
    }
    Ok(())
}

fn state(s: &apiary::apiary_ledger::Lifecycle) -> String {
    match s {
        apiary::apiary_ledger::Lifecycle::Live => "live".into(),
        apiary::apiary_ledger::Lifecycle::Dropping => "dropping".into(),
    }
}

fn describe(info: &FrameInfo) {
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

fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
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
