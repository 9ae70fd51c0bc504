//! The documentation cannot drift: every SQL block of the README and `docs/` runs against
//! the tutorial's frames, every `apiary …` command line they show parses with the real
//! binary, and every relative link points at a file that exists. (Rust blocks are doctests
//! of this crate; Python blocks run in `apiary-python/tests/test_docs.py`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The README and every page under `docs/`, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The fenced blocks of `text` whose language is `lang`, with the line each starts on.
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    // Inside a fence: whether it is a `lang` block, where it starts, what it holds.
    let mut open: Option<(bool, usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (open.as_mut(), fence) {
            (None, Some(info)) => {
                let language = info.split([',', ' ']).next().unwrap_or("");
                open = Some((language == lang, n + 1, String::new()));
            }
            (Some(_), Some(_)) => {
                if let Some((true, start, body)) = open.take() {
                    found.push((start, body));
                }
            }
            (Some((true, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            _ => {}
        }
    }
    found
}

/// One statement of a SQL block and the text its error must contain, if it must fail.
struct Statement {
    sql: String,
    error: Option<String>,
}

/// A block's statements: each ends with `;` at the end of a line; a `-- error: TEXT` line
/// says the next one must fail with TEXT.
fn statements(block: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let (mut sql, mut error) = (String::new(), None);
    for line in block.lines() {
        if let Some(expected) = line.trim().strip_prefix("-- error:") {
            error = Some(expected.trim().to_string());
            continue;
        }
        sql.push_str(line);
        sql.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(Statement {
                sql: std::mem::take(&mut sql),
                error: error.take(),
            });
        }
    }
    assert!(
        sql.trim().is_empty(),
        "a statement does not end with `;`: {sql}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_block_runs_as_documented() {
    let (_dir, _storage, ap) = common::nodes::loaded_folder().await;
    let mut ran = 0;
    for (path, text) in pages() {
        for (line, block) in blocks(&text, "sql") {
            let place = format!("{}:{line}", path.display());
            // One session per block: its USE and SET last to the block's end.
            let mut session = ap.sql_session().unwrap();
            for statement in statements(&block) {
                let result = session.sql(&statement.sql).await;
                match (&statement.error, result) {
                    (None, Ok(_)) => {}
                    (None, Err(e)) => panic!("{place}: {}fails: {e}", statement.sql),
                    (Some(expected), Ok(_)) => {
                        panic!("{place}: {}should fail with `{expected}`", statement.sql)
                    }
                    (Some(expected), Err(e)) => assert!(
                        e.to_string().contains(expected.as_str()),
                        "{place}: {}fails with `{e}`, not `{expected}`",
                        statement.sql
                    ),
                }
                ran += 1;
            }
        }
    }
    assert!(ran >= 15, "only {ran} documented statements ran");
}

/// The words of a shell line as the shell would split them (quotes, `\` continuations
/// joined before), up to a comment; `&` and redirections end it.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') if word.is_none() => break,
            (None, '&' | '|' | '>' | '<') => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The `apiary` arguments of a documented command line, if it runs `apiary`.
fn apiary_args(words: &[String]) -> Option<Vec<String>> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["apiary", rest @ ..] => Some(rest.iter().map(|w| w.to_string()).collect()),
        ["cargo", "run", "-p", "apiary-node", "--", rest @ ..] => {
            Some(rest.iter().map(|w| w.to_string()).collect())
        }
        _ => None,
    }
}

#[test]
fn every_documented_command_line_parses() {
    let mut checked = 0;
    for (path, text) in pages() {
        for (line, block) in blocks(&text, "sh") {
            let joined = block.replace("\\\n", " ");
            for command in joined.lines() {
                let Some(args) = apiary_args(&shell_words(command)) else {
                    continue;
                };
                // `--help` after the arguments: clap checks every argument given (names,
                // values, subcommands) and then prints help instead of running.
                let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
                    .args(&args)
                    .arg("--help")
                    .env_remove("APIARY_STORAGE")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}:{line}: `apiary {}` does not parse: {}",
                    path.display(),
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "only {checked} documented command lines");
}

#[test]
fn relative_links_point_at_files() {
    for (path, text) in pages() {
        let dir = path.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap()];
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            assert!(
                dir.join(file).exists(),
                "{}: the link `{target}` points at nothing",
                path.display()
            );
        }
    }
}

#[test]
fn the_helpers_read_blocks_and_lines_as_written() {
    let text = "a\n```sql\nSELECT 1;\n-- error: boom\nSELECT\n  2;\n```\n```rust\nx\n```\n";
    let sql = blocks(text, "sql");
    assert_eq!(sql.len(), 1);
    let all = statements(&sql[0].1);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].error.as_deref(), Some("boom"));
    assert!(blocks(text, "sh").is_empty());
    assert_eq!(
        shell_words("apiary sql \"SELECT 'a b'\" --format csv  # note"),
        ["apiary", "sql", "SELECT 'a b'", "--format", "csv"]
    );
    assert_eq!(shell_words("apiary node &"), ["apiary", "node"]);
}
