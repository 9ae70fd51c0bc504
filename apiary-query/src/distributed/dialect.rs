//! The SQL dialect fragments are written in.
//!
//! DataFusion's `DefaultDialect` decides whether to quote an identifier by compiling a
//! regular expression on every call, which made writing one SSB fragment cost the
//! coordinator about half a millisecond, all of it before the tasks could be published.
//! This dialect quotes by the same rule with a byte check and a binary search of the
//! parser's keyword list.

use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use datafusion::sql::unparser::dialect::Dialect;

/// Writes fragments: DataFusion's defaults, identifiers quoted where the parser would not
/// read them back as they are.
pub(crate) struct FragmentDialect;

impl Dialect for FragmentDialect {
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        needs_quotes(identifier).then_some('"')
    }
}

/// Whether `identifier` must be quoted to be parsed back unchanged: anything but a
/// lowercase ASCII word (the parser folds unquoted names to lowercase), and keywords.
fn needs_quotes(identifier: &str) -> bool {
    let mut bytes = identifier.bytes();
    let plain_start = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let plain =
        plain_start && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    !plain || is_keyword(identifier)
}

/// Whether `word` is one of the parser's keywords (in any case).
fn is_keyword(word: &str) -> bool {
    let upper = word.to_ascii_uppercase();
    ALL_KEYWORDS.binary_search(&upper.as_str()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lowercase_names_are_left_bare() {
        for name in ["c_city", "lo_revenue", "_hidden", "d_year2", "c0"] {
            assert!(!needs_quotes(name), "{name}");
        }
    }

    #[test]
    fn names_the_parser_would_change_or_misread_are_quoted() {
        for name in [
            "Country", // folded to lowercase when bare
            "user id", // a space
            "2nd",     // starts with a digit
            "",        // empty
            "naïve",   // not ASCII
            "select",  // keywords, in any case
            "ORDER", "limit", "a-b",
        ] {
            assert!(needs_quotes(name), "{name}");
        }
    }

    #[test]
    fn the_keyword_list_is_sorted_for_the_binary_search() {
        assert!(ALL_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_keyword("from") && is_keyword("WHERE") && !is_keyword("c_city"));
    }
}

#[cfg(test)]
mod round_trip {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::{LogicalPlanBuilder, col, logical_plan::table_scan};
    use datafusion::prelude::SessionContext;
    use datafusion::sql::unparser::Unparser;

    use super::FragmentDialect;

    /// A fragment over columns whose names need quotes is read back by DataFusion as the
    /// same columns, and plain names stay bare (readable fragments).
    #[tokio::test]
    async fn a_fragment_with_awkward_names_parses_back_to_the_same_columns() {
        let names = ["c_city", "Country", "select", "user id", "2nd"];
        let schema = Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Int64, true))
                .collect::<Vec<_>>(),
        );
        let plan = table_scan(Some("t"), &schema, None)
            .and_then(|b| b.build())
            .and_then(|scan| {
                LogicalPlanBuilder::from(scan)
                    .project(names.iter().map(|n| col(format!("\"{n}\""))))?
                    .build()
            })
            .unwrap();
        let sql = Unparser::new(&FragmentDialect)
            .plan_to_sql(&plan)
            .unwrap()
            .to_string();
        for quoted in ["\"Country\"", "\"select\"", "\"user id\"", "\"2nd\""] {
            assert!(sql.contains(quoted), "{quoted} in {sql}");
        }
        assert!(sql.contains("t.c_city"), "{sql}");

        let ctx = SessionContext::new();
        let table = MemTable::try_new(Arc::new(schema), vec![vec![]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let back = ctx.sql(&sql).await.unwrap();
        let read: Vec<&str> = back
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(read, names);
    }
}
