//! What each subcommand does once the node is open.

use std::path::PathBuf;
use std::sync::Arc;

use apiary_ledger::{FrameDefinition, FrameRef, FrameSchema, WriteMode};
use apiary_swarm::SystemClock;
use serde_json::json;

use super::args::{Cli, Command, CreateCommand, DropCommand, SqlFormat};
use super::print::{
    Progress, describe, print_colony, print_history, print_stream, print_swarm, print_table,
    report_created, report_dropped, state,
};
use super::{CliResult, split_two};
use crate::{Apiary, NodeOptions, SwarmStatus};

/// Runs the parsed command on an opened node.
pub(super) async fn execute(ap: &Apiary, cli: Cli, command: Command) -> CliResult<()> {
    let json = cli.json;
    match command {
        Command::Shell { history, mode, .. } => {
            let history =
                history.unwrap_or_else(|| cli.node.options().state_dir.join("shell_history"));
            super::shell::run(ap, history, mode).await?;
        }
        Command::Node {
            drain_timeout,
            status_file,
            memory,
            cache_dir,
            cache_size,
            memory_tier,
            compact_interval,
            clock_offset,
            http,
            http_insecure,
            http_token_refresh,
        } => {
            let mut options = cli.node.options();
            options.http = http.map(|addr| apiary_console::ConsoleConfig {
                insecure: http_insecure,
                token_refresh: http_token_refresh,
                ..apiary_console::ConsoleConfig::new(addr)
            });
            options.drain_timeout = drain_timeout;
            options.memory_bytes = memory;
            options.cache_dir = cache_dir;
            options.cache_bytes = cache_size;
            options.memory_tier_bytes = memory_tier;
            options.compact_interval = compact_interval;
            if let Some((offset, ahead)) = clock_offset {
                options.clock = Arc::new(SystemClock::with_wall_offset(offset, ahead));
            }
            run_node(ap, options, status_file).await?;
        }
        Command::Write {
            frame,
            files,
            overwrite,
        } => {
            let f = FrameRef::parse(&frame)?;
            let info = ap.describe_frame(&f.hive, &f.r#box, &f.frame).await?;
            let mut inputs = Vec::with_capacity(files.len());
            for path in &files {
                inputs.push(crate::input::open(path, &info.definition)?);
            }
            let progress = Progress::new();
            let counter = progress.clone();
            let counted = inputs.into_iter().flatten().inspect(move |b| {
                if let Ok(batch) = b {
                    counter.add(batch.num_rows());
                }
            });
            let mode = if overwrite {
                WriteMode::Overwrite
            } else {
                WriteMode::Append
            };
            let result = ap.write_batches_to_frame(&f, counted, mode).await;
            progress.finish();
            let result = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "wrote {} rows in {} cells ({} bytes) to {frame}, version {}, in {} ms",
                    result.rows_written,
                    result.cells_written,
                    result.bytes_written,
                    result.version,
                    result.duration_ms
                );
            }
        }
        Command::Sql { query, format, .. } => {
            let format = format.unwrap_or(if json {
                SqlFormat::Json
            } else {
                SqlFormat::Table
            });
            let printed = tokio::select! {
                printed = async {
                    let stream = ap.sql_stream(&query).await?;
                    print_stream(stream, format).await
                } => printed,
                // Ctrl-C drops the query: its local tasks stop, and it is cancelled so that
                // the swarm stops its tasks too.
                _ = tokio::signal::ctrl_c() => Err("interrupted: the query was cancelled".into()),
            };
            // The query's objects are removed after its answer (or its cancellation); not
            // left to a sweep.
            ap.settle().await;
            printed?;
        }
        Command::Compact { frame } => {
            let f = FrameRef::parse(&frame)?;
            let result = ap.compact(&f.hive, &f.r#box, &f.frame).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else if result.lease_held_elsewhere {
                println!("{frame} is being compacted by another node; nothing done");
            } else {
                println!(
                    "compacted {frame}: {} small cells into {} in {} commits ({} rows){}",
                    result.cells_removed,
                    result.cells_added,
                    result.commits,
                    result.rows,
                    if result.conflicts > 0 {
                        format!("; {} groups lost to concurrent changes", result.conflicts)
                    } else {
                        String::new()
                    }
                );
            }
        }
        Command::Vacuum { frame, retention } => {
            let f = FrameRef::parse(&frame)?;
            let result = ap
                .vacuum(&f.hive, &f.r#box, &f.frame, Some(retention))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "deleted {} files ({} bytes), kept {}",
                    result.files_deleted, result.bytes_deleted, result.files_kept
                );
            }
        }
        Command::Swarm => {
            let status = ap.swarm_snapshot(&cli.node.swarm_config()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_swarm(&status);
            }
        }
        Command::Colony => {
            let status = ap.swarm_snapshot(&cli.node.swarm_config()).await?;
            if json {
                let nodes: Vec<_> = status
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node_id": n.node_id,
                            "state": n.state,
                            "temperature": n.temperature,
                            "regulation": n.regulation,
                            "setpoint": n.setpoint,
                            "abandoned_tasks": n.abandoned_tasks,
                            "bees": n.bees,
                            "idle_bees": n.idle_bees,
                            "queue_depth": n.queue_depth,
                            "memory_pressure": n.memory_pressure,
                            "cached_cells": n.cached_cells,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "nodes": nodes }))?
                );
            } else {
                print_colony(&status);
            }
        }
        Command::Status => {
            let mut status = ap.status(&cli.node.options());
            if let Some(id) = status.node_id.clone() {
                // The node runs in its own process: its heartbeat says how it fares.
                let swarm = ap.swarm_snapshot(&cli.node.swarm_config()).await?;
                if let Some(node) = swarm.nodes.into_iter().find(|n| n.node_id == id) {
                    status.running = node.state != apiary_swarm::NodeState::Dead;
                    status.requests = node.requests;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("name       {}", status.name);
                println!(
                    "node id    {}",
                    status.node_id.as_deref().unwrap_or("(not yet assigned)")
                );
                println!("cores      {}", status.cores);
                println!("memory     {:.1} GiB", status.memory_gb);
                println!("bees       {}", status.bees);
                println!("storage    {} ({})", status.storage, status.storage_uri);
                match &status.requests {
                    Some(r) => println!(
                        "requests   {:.1}/min ({:.1} PUT or LIST) over the last {} min: ${:.2} a \
                         month at S3 Standard prices",
                        r.per_minute,
                        r.writes_and_lists_per_minute,
                        r.window_s.div_ceil(60),
                        r.monthly_usd
                    ),
                    None if status.running => println!("requests   (not measured yet)"),
                    None => println!("requests   (the node is not running)"),
                }
            }
        }
        Command::Token(command) => super::tokens::run(ap, json, command).await?,
        Command::Drain { node_id } => {
            let by = format!("apiary drain (pid {})", std::process::id());
            ap.drain_node(&node_id, &by).await?;
            if json {
                println!("{}", json!({"node_id": node_id, "drain_requested": true}));
            } else {
                println!("asked node {node_id} to drain; it leaves on its next poll");
            }
        }
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
        Command::List { scope } => list(ap, json, scope.as_deref()).await?,
        Command::Describe { frame } => {
            let f = FrameRef::parse(&frame)?;
            let info = ap.describe_frame(&f.hive, &f.r#box, &f.frame).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                describe(&info);
            }
        }
        Command::History { frame } => {
            let f = FrameRef::parse(&frame)?;
            let commits = ap.frame_history(&f.hive, &f.r#box, &f.frame).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&commits)?);
            } else {
                print_history(&commits);
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

/// Runs a node until a signal or a drain request, then leaves.
async fn run_node(
    ap: &Apiary,
    mut options: NodeOptions,
    status_file: Option<PathBuf>,
) -> CliResult<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if let Some(path) = status_file {
        // The hook runs on the swarm's poll task: it only hands the newest view to a writer
        // task, which writes files on a blocking thread, one at a time, newest wins.
        let (tx, mut rx) = tokio::sync::watch::channel(None::<String>);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(body) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                let written = apiary_storage::blocking::run(move || {
                    write_atomically(&path, body.as_bytes()).map_err(|e| (path, e))
                })
                .await;
                if let Ok(Err((path, e))) = written {
                    tracing::warn!(path = %path.display(), error = %e, "status file not written");
                }
            }
        });
        options.on_view = Some(Arc::new(move |view| {
            let body = json!({"polls": view.polls, "swarm": SwarmStatus::from(view)});
            tx.send_replace(Some(body.to_string()));
        }));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    ap.start_with(options.clone()).await?;
    let me = ap.status(&options);
    tracing::info!(
        node = me.node_id.as_deref().unwrap_or("?"),
        storage = %me.storage_uri,
        cores = me.cores,
        bees = me.bees,
        memory_gib = format!("{:.1}", me.memory_gb),
        "joined the swarm"
    );
    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = ap.drain_requested() => "a drain request",
    };
    tracing::info!("leaving the swarm after {reason}");
    ap.shutdown().await?;
    tracing::info!("left the swarm");
    Ok(())
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

/// Writes a file whole or not at all (a reader never sees half of it).
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
