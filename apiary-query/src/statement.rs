//! What a statement asks for: Apiary's own statements (`SHOW HIVES`, `USE`, `DESCRIBE`, …),
//! a read-only statement for DataFusion, or something SQL may not do here.
//!
//! Input is split into statements on the tokenizer's semicolons (never inside strings or
//! comments) and each statement is parsed by DataFusion's parser; decisions are made on the
//! parsed statement, never on the SQL text.

use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Set, ShowStatementOptions, Statement, Use,
};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

use crate::error::{QueryError, Result};

/// Session settings a user may change with `SET`: how DataFusion executes and optimizes, and
/// how it prints. Catalog and runtime settings (temporary directories, memory pools) are the
/// operator's.
const SETTABLE: &[&str] = &[
    "datafusion.execution.",
    "datafusion.optimizer.",
    "datafusion.explain.",
    "datafusion.sql_parser.",
    "datafusion.format.",
];

/// A parsed statement, classified.
#[derive(Debug)]
pub(crate) enum Command {
    /// `SHOW HIVES` / `SHOW DATABASES`.
    ShowHives,
    /// `SHOW BOXES [IN hive]` / `SHOW SCHEMAS [IN hive]`.
    ShowBoxes(Option<Vec<String>>),
    /// `SHOW FRAMES [IN hive[.box]]` / `SHOW TABLES [IN …]`.
    ShowFrames(Option<Vec<String>>),
    /// `USE hive` or `USE hive.box`.
    Use(Vec<String>),
    /// `DESCRIBE [hive.box.]frame`.
    Describe(Vec<String>),
    /// `SET apiary.<key> = value`: one of Apiary's session settings.
    SetApiary {
        /// The key after `apiary.`.
        key: String,
        /// The value, unquoted.
        value: String,
    },
    /// A read-only statement DataFusion plans and runs.
    DataFusion(Box<DfStatement>),
}

impl Command {
    /// Whether this is a plain query (what a distributed task may run).
    pub(crate) fn is_query(&self) -> bool {
        matches!(self, Command::DataFusion(s)
            if matches!(s.as_ref(), DfStatement::Statement(q) if matches!(q.as_ref(), Statement::Query(_))))
    }
}

/// Whether `text` ends a statement: its last token (outside strings and comments) is a
/// `;`. An unterminated string or comment is not an end. What a shell reads until.
pub fn ends_statement(text: &str) -> bool {
    let dialect = dialect::ApiaryDialect;
    match Tokenizer::new(&dialect, text).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
            .is_some_and(|t| *t == Token::SemiColon),
        Err(_) => false,
    }
}

/// Splits `sql` into statements and classifies each. Empty statements are skipped.
pub(crate) fn parse(sql: &str) -> Result<Vec<Command>> {
    let dialect = dialect::ApiaryDialect;
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| QueryError::Invalid(format!("SQL syntax error: {e}")))?;
    let mut commands = Vec::new();
    for statement in tokens.split(|t| t.token == Token::SemiColon) {
        let meaningful: Vec<&Token> = statement
            .iter()
            .map(|t| &t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
            .collect();
        if meaningful.is_empty() {
            continue;
        }
        if let Some(command) = apiary_show(&meaningful)? {
            commands.push(command);
            continue;
        }
        check_use_spelling(&meaningful)?;
        commands.push(classify(parse_one(statement.to_vec())?)?);
    }
    if commands.is_empty() {
        return Err(QueryError::Invalid(
            "the SQL text holds no statement".into(),
        ));
    }
    Ok(commands)
}

/// `USE HIVE h` and `USE BOX h.b` read naturally but are not SQL: say what to write.
fn check_use_spelling(tokens: &[&Token]) -> Result<()> {
    let word = |t: &Token| match t {
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    let [first, second, rest @ ..] = tokens else {
        return Ok(());
    };
    if word(first).as_deref() != Some("USE") {
        return Ok(());
    }
    let Some(kind) = word(second).filter(|k| matches!(k.as_str(), "HIVE" | "BOX" | "FRAME")) else {
        return Ok(());
    };
    let name: String = rest.iter().map(|t| t.to_string()).collect();
    let name = if name.is_empty() {
        "name".to_string()
    } else {
        name
    };
    Err(QueryError::Invalid(format!(
        "`USE {kind} {name}` is not a statement: write `USE {name}` (`USE hive` or \
         `USE hive.box`, the kind is told by the dots)"
    )))
}

/// The deepest expression a statement may hold: a chain `a + b + …` nests one level per
/// operator, a parenthesis or a function call one more. Planning and optimizing walk
/// expressions recursively; past this depth some of those walks would need more stack than a
/// thread has, and a process must refuse such a query rather than abort.
pub const MAX_EXPRESSION_DEPTH: usize = 512;

/// How deeply the parser may recurse. A distributed task's fragment is SQL written back from
/// a plan, with a parenthesis around every operation: an expression `MAX_EXPRESSION_DEPTH`
/// deep must parse there too, inside the subqueries and calls around it.
const PARSER_RECURSION_LIMIT: usize = 2 * MAX_EXPRESSION_DEPTH + 64;

fn parse_one(mut tokens: Vec<TokenWithSpan>) -> Result<DfStatement> {
    tokens.push(TokenWithSpan::wrap(Token::EOF));
    let dialect = dialect::ApiaryDialect;
    let mut statements = DFParserBuilder::new(tokens)
        .with_dialect(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| QueryError::Invalid(e.strip_backtrace()))?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => statement,
        _ => {
            return Err(QueryError::Invalid(
                "expected one statement between semicolons".into(),
            ));
        }
    };
    if let DfStatement::Statement(inner) = &statement {
        check_depth(inner)?;
    }
    Ok(statement)
}

/// Refuses a statement with an expression deeper than [`MAX_EXPRESSION_DEPTH`].
fn check_depth(statement: &Statement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
    use std::ops::ControlFlow;

    #[derive(Default)]
    struct Depth {
        now: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        // Parentheses are not levels: they leave no trace in a plan, and a fragment written
        // back from one has them around every operation.
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Nested(_)) {
                return ControlFlow::Continue(());
            }
            self.now += 1;
            if self.now > MAX_EXPRESSION_DEPTH {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if !matches!(e, Expr::Nested(_)) {
                self.now -= 1;
            }
            ControlFlow::Continue(())
        }
    }
    match statement.visit(&mut Depth::default()) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(QueryError::Invalid(format!(
            "an expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep (each \
             operator of a chain such as `a + b + …` is a level); split it, for example into \
             a subquery's columns, or use a function such as `IN (…)` for long lists"
        ))),
    }
}

/// `SHOW HIVES`, `SHOW BOXES [IN|FROM name]`, `SHOW FRAMES [IN|FROM name]`: Apiary's words,
/// which SQL parsers do not know.
fn apiary_show(tokens: &[&Token]) -> Result<Option<Command>> {
    let word = |t: &Token| match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    if tokens.first().and_then(|t| word(t)).as_deref() != Some("SHOW") {
        return Ok(None);
    }
    let kind = match tokens.get(1).and_then(|t| word(t)).as_deref() {
        Some("HIVES") => "HIVES",
        Some("BOXES") => "BOXES",
        Some("FRAMES") => "FRAMES",
        _ => return Ok(None),
    };
    let rest = &tokens[2..];
    let scope = match rest.split_first() {
        None => None,
        Some((first, name)) if matches!(word(first).as_deref(), Some("IN" | "FROM")) => {
            Some(dotted_name(name).ok_or_else(|| {
                QueryError::Invalid(format!(
                    "SHOW {kind} IN expects a name such as `analytics` or `analytics.events`"
                ))
            })?)
        }
        Some(_) => {
            return Err(QueryError::Invalid(format!(
                "SHOW {kind} takes only an optional `IN name`"
            )));
        }
    };
    Ok(Some(match kind {
        "HIVES" if scope.is_some() => {
            return Err(QueryError::Invalid("SHOW HIVES takes no IN clause".into()));
        }
        "HIVES" => Command::ShowHives,
        "BOXES" => Command::ShowBoxes(scope),
        _ => Command::ShowFrames(scope),
    }))
}

/// `a`, `a.b`, `"a"."b"` as normalized name parts.
fn dotted_name(tokens: &[&Token]) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut expect_word = true;
    for token in tokens {
        match (expect_word, token) {
            (true, Token::Word(w)) => parts.push(normalize(&Ident {
                value: w.value.clone(),
                quote_style: w.quote_style,
                span: Span::empty(),
            })),
            (false, Token::Period) => {}
            _ => return None,
        }
        expect_word = !expect_word;
    }
    (!parts.is_empty() && !expect_word).then_some(parts)
}

/// DataFusion's identifier rule: unquoted identifiers are lowercased, quoted ones kept.
pub(crate) fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The parts of a plain name, normalized as DataFusion does.
pub(crate) fn name_parts(name: &ObjectName) -> Result<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(normalize(ident)),
            ObjectNamePart::Function(_) => {
                Err(QueryError::Invalid(format!("`{name}` is not a plain name")))
            }
        })
        .collect()
}

fn show_scope(options: &ShowStatementOptions) -> Result<Option<Vec<String>>> {
    if options.starts_with.is_some() || options.limit.is_some() || options.filter_position.is_some()
    {
        return Err(QueryError::Invalid(
            "SHOW takes only an optional `IN name` here (no LIKE, STARTS WITH or LIMIT)".into(),
        ));
    }
    options
        .show_in
        .as_ref()
        .and_then(|s| s.parent_name.as_ref())
        .map(name_parts)
        .transpose()
}

fn reject(statement: &str, instead: &str) -> QueryError {
    QueryError::Rejected {
        statement: statement.to_string(),
        instead: instead.to_string(),
    }
}

fn classify(statement: DfStatement) -> Result<Command> {
    let sql = match statement {
        DfStatement::Statement(sql) => sql,
        DfStatement::CreateExternalTable(_) => {
            return Err(reject(
                "CREATE EXTERNAL TABLE",
                "SQL cannot read files on the node; create a frame (`create_frame` in Rust and Python, \
                 `apiary create frame`) and write the files into it (`apiary write`)",
            ));
        }
        DfStatement::CopyTo(_) => {
            return Err(reject(
                "COPY",
                "SQL cannot write files on the node; read results as Arrow (`sql` in Rust and Python, \
                 `apiary sql --format arrow|csv|json`)",
            ));
        }
        DfStatement::Explain(explain) => {
            // EXPLAIN of anything but a query would plan a rejected statement.
            check_explained(&explain.statement)?;
            return Ok(Command::DataFusion(Box::new(DfStatement::Explain(explain))));
        }
        DfStatement::Reset(reset) => {
            return Ok(Command::DataFusion(Box::new(DfStatement::Reset(reset))));
        }
    };
    Ok(match *sql {
        Statement::Query(_)
        | Statement::Prepare { .. }
        | Statement::Execute { .. }
        | Statement::Deallocate { .. } => {
            Command::DataFusion(Box::new(DfStatement::Statement(sql)))
        }
        Statement::Set(Set::SingleAssignment {
            ref variable,
            ref values,
            ..
        }) if variable
            .to_string()
            .to_ascii_lowercase()
            .starts_with("apiary.") =>
        {
            let key = variable.to_string().to_ascii_lowercase()["apiary.".len()..].to_string();
            let [value] = values.as_slice() else {
                return Err(QueryError::Invalid(format!(
                    "SET apiary.{key} takes one value"
                )));
            };
            let value = value.to_string();
            let value = value.trim_matches(|c| c == '\'' || c == '"').to_string();
            Command::SetApiary { key, value }
        }
        // DataFusion plans `SET TIME ZONE` as the option it stands for.
        Statement::Set(Set::SetTimeZone { value, .. }) => Command::DataFusion(Box::new(
            DfStatement::Statement(Box::new(Statement::Set(Set::SingleAssignment {
                scope: None,
                hivevar: false,
                variable: ObjectName::from(
                    ["datafusion", "execution", "time_zone"]
                        .map(Ident::new)
                        .to_vec(),
                ),
                values: vec![value],
            }))),
        )),
        Statement::Set(ref set) => {
            check_set(set)?;
            Command::DataFusion(Box::new(DfStatement::Statement(sql)))
        }
        Statement::ShowVariable { .. } => {
            return Err(QueryError::Invalid(
                "SHOW is available as SHOW HIVES, SHOW BOXES [IN hive] and SHOW FRAMES [IN hive.box]"
                    .into(),
            ));
        }
        Statement::ShowDatabases {
            ref show_options, ..
        }
        | Statement::ShowCatalogs {
            ref show_options, ..
        } => {
            if show_scope(show_options)?.is_some() {
                return Err(QueryError::Invalid("SHOW HIVES takes no IN clause".into()));
            }
            Command::ShowHives
        }
        Statement::ShowSchemas {
            ref show_options, ..
        } => Command::ShowBoxes(show_scope(show_options)?),
        Statement::ShowTables {
            ref show_options, ..
        } => Command::ShowFrames(show_scope(show_options)?),
        Statement::Use(ref what) => match what {
            Use::Object(name) | Use::Database(name) | Use::Catalog(name) | Use::Schema(name) => {
                Command::Use(name_parts(name)?)
            }
            _ => {
                return Err(QueryError::Invalid(format!(
                    "`{what}`: USE takes `hive` or `hive.box`"
                )));
            }
        },
        Statement::ExplainTable { ref table_name, .. } => {
            Command::Describe(name_parts(table_name)?)
        }
        Statement::Insert(_) => {
            return Err(reject(
                "INSERT",
                "write with `write_to_frame` (Rust, Python) or `apiary write HIVE.BOX.FRAME FILE`",
            ));
        }
        Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_) => {
            return Err(reject(
                "UPDATE, DELETE, MERGE and TRUNCATE",
                "rewrite a frame with `overwrite_frame` (Rust, Python) or `apiary write --overwrite`",
            ));
        }
        Statement::CreateTable(_) => {
            return Err(reject(
                "CREATE TABLE",
                "create frames with `create_frame` (Rust, Python) or `apiary create frame`",
            ));
        }
        Statement::CreateSchema { .. } => {
            return Err(reject(
                "CREATE SCHEMA",
                "create boxes with `create_box` (Rust, Python) or `apiary create box`",
            ));
        }
        Statement::CreateDatabase { .. } => {
            return Err(reject(
                "CREATE DATABASE",
                "create hives with `create_hive` (Rust, Python) or `apiary create hive`",
            ));
        }
        Statement::Drop { .. } => {
            return Err(reject(
                "DROP",
                "drop with `drop_frame`/`drop_box`/`drop_hive` (Rust, Python) or `apiary drop`",
            ));
        }
        Statement::AlterTable(_) => {
            return Err(reject(
                "ALTER TABLE",
                "frames gain columns through writes with a widened schema; see `apiary describe`",
            ));
        }
        Statement::CreateView(_) => {
            return Err(reject(
                "CREATE VIEW",
                "name subqueries with WITH in the query itself",
            ));
        }
        Statement::Copy { .. } => {
            return Err(reject(
                "COPY",
                "write with `apiary write`; read results with `apiary sql --format`",
            ));
        }
        other => {
            let text = other.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            return Err(QueryError::Rejected {
                statement: format!("`{head} …`"),
                instead: "SQL here runs queries (SELECT, WITH, VALUES, EXPLAIN), SHOW, DESCRIBE, \
                          USE and SET; data and frames change through the Apiary API and CLI"
                    .into(),
            });
        }
    })
}

fn check_explained(statement: &DfStatement) -> Result<()> {
    match classify(statement.clone())? {
        Command::DataFusion(_) => Ok(()),
        _ => Err(QueryError::Invalid(
            "EXPLAIN takes a query; SHOW, USE and DESCRIBE are not planned by DataFusion".into(),
        )),
    }
}

/// Whether a session may set option `key` (lowercase).
pub(crate) fn settable(key: &str) -> bool {
    SETTABLE.iter().any(|p| key.starts_with(p))
}

fn check_set(set: &Set) -> Result<()> {
    match set {
        Set::SingleAssignment { variable, .. } => {
            let key = variable.to_string().to_ascii_lowercase();
            if settable(&key) {
                Ok(())
            } else {
                Err(QueryError::Rejected {
                    statement: format!("SET {key}"),
                    instead: format!(
                        "a session may set options under {}; the rest are the operator's",
                        SETTABLE.join(", ")
                    ),
                })
            }
        }
        Set::SetTimeZone { .. } => Ok(()),
        other => Err(QueryError::Invalid(format!(
            "`{other}`: only `SET datafusion.… = value` and `SET TIME ZONE` are supported"
        ))),
    }
}

mod dialect;

#[cfg(test)]
mod tests;
