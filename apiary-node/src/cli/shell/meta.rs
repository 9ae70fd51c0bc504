//! The shell's own commands, in both habits: datafusion-cli's and psql's backslash (`\d`,
//! `\timing`, `\q`) and DuckDB's and SQLite's dot (`.tables`, `.schema`, `.mode`, `.exit`).
//! They take one line and no `;`.

use super::SqlFormat;

/// A shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Meta {
    /// Leave.
    Quit,
    /// Print the commands.
    Help,
    /// Run this SQL (listing and describing are SQL statements).
    Sql(String),
    /// Turn timing on or off (`None`: toggle).
    Timing(Option<bool>),
    /// Print rows in this mode from now on.
    Mode(SqlFormat),
}

/// Whether `line` is a shell command rather than SQL.
pub(super) fn is_meta(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('\\') || (line.starts_with('.') && line.len() > 1)
}

/// What the shell prints for `\?`.
pub(super) const HELP: &str = "\
SQL statements end with `;` and may span lines. Shell commands take one line:
  \\q  .quit  .exit           leave (Ctrl-D too)
  \\?  .help                  this help
  \\l  .databases             list hives
  \\dn [HIVE]                 list boxes (of HIVE, or of the hive in USE)
  \\d  \\dt [SCOPE]  .tables   list frames (of hive.box, or of USE)
  \\d NAME  .schema NAME      describe a frame
  \\history NAME  .history    a frame's commits (read one with VERSION AS OF n)
  \\timing [on|off]  .timer   show wall time, cells, bytes and nodes after each query
  \\mode MODE  .mode MODE     output: table, csv, json or line
Tab completes keywords, hives, boxes, frames and columns; Ctrl-C cancels a running query.";

/// Parses a shell command line.
pub(super) fn parse(line: &str) -> Result<Meta, String> {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let one = |what: &str| -> Result<&str, String> {
        match args.as_slice() {
            [arg] => Ok(arg),
            _ => Err(format!("{command} takes {what}")),
        }
    };
    let none = || -> Result<(), String> {
        match args.as_slice() {
            [] => Ok(()),
            _ => Err(format!("{command} takes no argument")),
        }
    };
    Ok(match command {
        "\\q" | "\\quit" | ".quit" | ".exit" | ".q" => {
            none()?;
            Meta::Quit
        }
        "\\?" | "\\h" | "\\help" | ".help" => Meta::Help,
        "\\l" | ".databases" => {
            none()?;
            Meta::Sql("SHOW HIVES".into())
        }
        "\\dn" | ".boxes" | ".schemas" => match args.as_slice() {
            [] => Meta::Sql("SHOW BOXES".into()),
            [hive] => Meta::Sql(format!("SHOW BOXES IN {hive}")),
            _ => return Err(format!("{command} takes an optional hive")),
        },
        "\\d" | "\\dt" | ".tables" | ".frames" => match (command, args.as_slice()) {
            (_, []) => Meta::Sql("SHOW FRAMES".into()),
            ("\\d", [name]) => Meta::Sql(format!("DESCRIBE {name}")),
            (_, [scope]) => Meta::Sql(format!("SHOW FRAMES IN {scope}")),
            _ => return Err(format!("{command} takes an optional name")),
        },
        ".schema" | ".describe" => Meta::Sql(format!("DESCRIBE {}", one("a frame's name")?)),
        "\\history" | ".history" => {
            let name = one("a frame's name")?;
            Meta::Sql(format!(
                "SELECT * FROM apiary.history('{}') ORDER BY version",
                name.replace('\'', "''")
            ))
        }
        "\\timing" | ".timer" => match args.as_slice() {
            [] => Meta::Timing(None),
            ["on"] => Meta::Timing(Some(true)),
            ["off"] => Meta::Timing(Some(false)),
            _ => return Err(format!("{command} takes on or off")),
        },
        "\\mode" | ".mode" | "\\pset" => {
            let mode = match (command, args.as_slice()) {
                ("\\pset", ["format", mode]) => *mode,
                ("\\pset", _) => return Err("\\pset takes `format MODE`".into()),
                _ => one("table, csv, json or line")?,
            };
            Meta::Mode(match mode {
                "table" | "box" | "aligned" => SqlFormat::Table,
                "csv" => SqlFormat::Csv,
                "json" => SqlFormat::Json,
                "line" | "lines" => SqlFormat::Line,
                other => {
                    return Err(format!(
                        "`{other}` is not an output mode: use table, csv, json or line"
                    ));
                }
            })
        }
        other => {
            return Err(format!(
                "`{other}` is not a shell command; \\? lists them (SQL statements end with `;`)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_habits_parse_to_the_same_commands() {
        for (a, b) in [
            ("\\q", ".exit"),
            ("\\l", ".databases"),
            ("\\dt", ".tables"),
            ("\\dt a.b", ".tables a.b"),
            ("\\d a.b.f", ".schema a.b.f"),
            ("\\timing on", ".timer on"),
            ("\\mode csv", ".mode csv"),
            ("\\pset format line", ".mode line"),
            ("\\history a.b.f", ".history a.b.f"),
        ] {
            assert_eq!(parse(a), parse(b), "{a} / {b}");
            assert!(parse(a).is_ok(), "{a}");
        }
        assert_eq!(
            parse("\\d a.b.f").unwrap(),
            Meta::Sql("DESCRIBE a.b.f".into())
        );
        assert_eq!(parse("\\timing").unwrap(), Meta::Timing(None));
        for bad in ["\\x", ".mode html", "\\q now", ".schema", "\\timing maybe"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(is_meta("\\d") && is_meta("  .tables") && !is_meta("SELECT 1;") && !is_meta("."));
    }
}
