//! Statement parsing and checks: unit tests, and hostile SQL that must never panic.

#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn expressions_as_deep_as_the_limit_parse_and_deeper_ones_are_refused() {
    let chain = |n: usize| format!("SELECT x{} FROM t", " + 1".repeat(n));
    assert!(parse(&chain(MAX_EXPRESSION_DEPTH - 1)).is_ok());
    let err = parse(&chain(MAX_EXPRESSION_DEPTH + 1)).unwrap_err();
    assert!(matches!(err, QueryError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("levels deep"), "{err}");
    // As a fragment writes it back: a parenthesis around every operation.
    let mut nested = "x".to_string();
    for _ in 0..MAX_EXPRESSION_DEPTH - 8 {
        nested = format!("({nested} + 1)");
    }
    assert!(parse(&format!("SELECT sum({nested}) AS c0 FROM t")).is_ok());
    // Far deeper than the limit (a generated query): refused, no stack overflow.
    assert!(parse(&chain(20_000)).is_err());
}

fn one(sql: &str) -> Result<Command> {
    let mut all = parse(sql)?;
    assert_eq!(all.len(), 1);
    Ok(all.remove(0))
}

#[test]
fn apiary_statements_parse() {
    assert!(matches!(one("SHOW HIVES").unwrap(), Command::ShowHives));
    assert!(matches!(
        one("show databases;").unwrap(),
        Command::ShowHives
    ));
    match one("SHOW BOXES IN analytics").unwrap() {
        Command::ShowBoxes(Some(p)) => assert_eq!(p, ["analytics"]),
        other => panic!("{other:?}"),
    }
    match one("SHOW FRAMES FROM Analytics.\"events\"").unwrap() {
        Command::ShowFrames(Some(p)) => assert_eq!(p, ["analytics", "events"]),
        other => panic!("{other:?}"),
    }
    match one("SHOW TABLES IN analytics.events").unwrap() {
        Command::ShowFrames(Some(p)) => assert_eq!(p, ["analytics", "events"]),
        other => panic!("{other:?}"),
    }
    match one("USE analytics.events").unwrap() {
        Command::Use(p) => assert_eq!(p, ["analytics", "events"]),
        other => panic!("{other:?}"),
    }
    match one("DESCRIBE analytics.events.\"values\"").unwrap() {
        Command::Describe(p) => assert_eq!(p, ["analytics", "events", "values"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn semicolons_inside_strings_do_not_split() {
    let all = parse("SELECT ';' AS a; -- comment; here\n SELECT 2;;").unwrap();
    assert_eq!(all.len(), 2);
}

#[test]
fn writes_and_file_access_are_rejected_with_the_api_to_use() {
    for (sql, needle) in [
        ("INSERT INTO a.b.c VALUES (1)", "write_to_frame"),
        ("DELETE FROM a.b.c", "overwrite_frame"),
        ("CREATE TABLE t (x int)", "create_frame"),
        ("DROP TABLE a.b.c", "drop_frame"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "cannot read files",
        ),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "cannot write files"),
        (
            "EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'",
            "cannot write files",
        ),
        ("SET datafusion.runtime.temp_directory = '/'", "operator"),
        ("CREATE VIEW v AS SELECT 1", "WITH"),
    ] {
        let err = one(sql).unwrap_err().to_string();
        assert!(err.contains(needle), "{sql}: {err}");
    }
}

#[test]
fn use_with_a_kind_says_what_to_write() {
    for (sql, says) in [
        ("USE HIVE analytics", "write `USE analytics`"),
        ("use box analytics.events", "write `USE analytics.events`"),
        ("USE FRAME", "write `USE name`"),
    ] {
        let err = parse(sql).unwrap_err().to_string();
        assert!(err.contains(says), "{sql}: {err}");
    }
    assert!(matches!(one("USE analytics").unwrap(), Command::Use(_)));
    assert!(
        parse("USE hive_data").is_ok(),
        "a hive may be named like a kind's prefix"
    );
}

#[test]
fn queries_pass_to_datafusion() {
    for sql in [
        "SELECT 1",
        "WITH t AS (SELECT 1 AS x) SELECT * FROM t",
        "EXPLAIN ANALYZE SELECT 1",
        "SET datafusion.execution.batch_size = 1024",
        "VALUES (1), (2)",
    ] {
        assert!(matches!(one(sql).unwrap(), Command::DataFusion(_)), "{sql}");
    }
}

#[test]
fn empty_and_malformed_input_are_errors() {
    assert!(parse("  ; -- nothing\n").is_err());
    assert!(parse("SELEC 1").is_err());
    assert!(parse("SELECT 'unterminated").is_err());
    assert!(parse("SHOW FRAMES IN a..b").is_err());
}

mod hostile {
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "SELECT", "FROM", "WHERE", "(", ")", ",", ";", "'", "\"", "USE", "SHOW", "FRAMES", "IN",
        "DESCRIBE", "EXPLAIN", "ANALYZE", "a.b.c", "1", "NULL", "*", "--", "/*", "*/", "SET",
        "COPY", "TO", "INSERT", "VALUES", "WITH", "AS", "JOIN", "ON", "=", "..", "\u{0}", "é",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any text, and any soup of SQL-ish tokens, is classified or refused: never a panic.
        #[test]
        fn parsing_never_panics(
            text in ".{0,80}",
            soup in proptest::collection::vec(proptest::sample::select(WORDS), 0..16),
        ) {
            let _ = super::super::parse(&text);
            let _ = super::super::parse(&soup.join(" "));
        }
    }
}

#[test]
fn a_statement_ends_at_a_semicolon_outside_strings_and_comments() {
    use super::ends_statement;
    for (text, ends) in [
        ("SELECT 1;", true),
        ("SELECT 1 ;  \n", true),
        ("SELECT 1", false),
        ("SELECT ';'", false),
        ("SELECT 'a;\n", false),
        ("SELECT 1 -- done;", false),
        ("SELECT 1; -- done", true),
        ("SELECT 1 /* ; */", false),
        ("SELECT * FROM f VERSION AS OF 3;", true),
        ("", false),
    ] {
        assert_eq!(ends_statement(text), ends, "{text:?}");
    }
}
