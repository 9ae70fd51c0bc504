use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{col, lit};
use datafusion::optimizer::OptimizerContext;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

use super::*;

/// A frame of `columns`, the first an integer key and the others strings or integers.
fn table(columns: &[(&str, Vec<Option<i64>>)], names: &[(&str, Vec<&str>)]) -> Arc<MemTable> {
    let mut fields = Vec::new();
    let mut arrays: Vec<arrow_array::ArrayRef> = Vec::new();
    for (name, values) in columns {
        fields.push(Field::new(*name, DataType::Int64, true));
        arrays.push(Arc::new(Int64Array::from(values.clone())));
    }
    for (name, values) in names {
        fields.push(Field::new(*name, DataType::Utf8, false));
        arrays.push(Arc::new(StringArray::from(values.clone())));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).unwrap();
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
}

/// A star: `fact` ties to `da`, `db` and `dc` by `f_a`, `f_b`, `f_c`.
fn star(ctx: &SessionContext, fact: &[[Option<i64>; 4]], dims: [&[(i64, &str)]; 3]) {
    let column = |i: usize| fact.iter().map(|r| r[i]).collect::<Vec<_>>();
    ctx.register_table(
        "fact",
        table(
            &[
                ("f_a", column(0)),
                ("f_b", column(1)),
                ("f_c", column(2)),
                ("v", column(3)),
            ],
            &[],
        ),
    )
    .unwrap();
    for (name, rows) in ["da", "db", "dc"].into_iter().zip(dims) {
        let p = &name[1..];
        let key = format!("{p}_key");
        let cat = format!("{p}_cat");
        ctx.register_table(
            name,
            table(
                &[(&key, rows.iter().map(|r| Some(r.0)).collect())],
                &[(&cat, rows.iter().map(|r| r.1).collect())],
            ),
        )
        .unwrap();
    }
}

fn context(with_rule: bool) -> SessionContext {
    let mut builder = SessionStateBuilder::new().with_default_features();
    if with_rule {
        builder = builder.with_optimizer_rule(rule());
    }
    SessionContext::new_with_state(builder.build())
}

const DIM: &[(i64, &str)] = &[(1, "x"), (2, "y"), (3, "x"), (4, "z")];

async fn optimized(ctx: &SessionContext, sql: &str) -> LogicalPlan {
    ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap()
}

/// The frames in the order the plan reads them.
fn scans(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            names.push(scan.table_name.to_string());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .unwrap();
    names
}

const STAR: &str = "SELECT da.a_cat, SUM(v) AS s FROM fact, da, db, dc \
    WHERE f_a = a_key AND f_b = b_key AND f_c = c_key AND c_cat = 'x' AND b_cat IN ('x', 'y') \
    GROUP BY da.a_cat ORDER BY da.a_cat";

#[tokio::test]
async fn the_most_selective_dimension_is_joined_first() {
    let fact = [[Some(1), Some(2), Some(3), Some(10)]];
    let ctx = context(true);
    star(&ctx, &fact, [DIM, DIM, DIM]);
    // dc (an equality) before db (a list of two) before da (no filter).
    assert_eq!(
        scans(&optimized(&ctx, STAR).await),
        ["fact", "dc", "db", "da"]
    );

    let plain = context(false);
    star(&plain, &fact, [DIM, DIM, DIM]);
    assert_eq!(
        scans(&optimized(&plain, STAR).await),
        ["fact", "da", "db", "dc"]
    );
}

#[tokio::test]
async fn the_centre_goes_first_wherever_it_was_written() {
    let ctx = context(true);
    star(&ctx, &[], [DIM, DIM, DIM]);
    let sql = "SELECT v FROM da, db, fact WHERE f_a = a_key AND f_b = b_key AND a_cat = 'x'";
    assert_eq!(scans(&optimized(&ctx, sql).await), ["fact", "da", "db"]);
    // The columns come out as written.
    let sql = "SELECT * FROM db, fact, da WHERE f_a = a_key AND f_b = b_key AND a_cat = 'x'";
    let plan = optimized(&ctx, sql).await;
    let names: Vec<_> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["b_key", "b_cat", "f_a", "f_b", "f_c", "v", "a_key", "a_cat"]
    );
}

#[tokio::test]
async fn a_chain_that_is_no_star_is_left_alone() {
    let ctx = context(true);
    star(&ctx, &[], [DIM, DIM, DIM]);
    // da – fact – db – dc: db ties to both fact and dc, so no frame is in every tie.
    let sql = "SELECT v FROM fact, da, db, dc \
        WHERE f_a = a_key AND f_b = b_key AND b_key = c_key AND c_cat = 'x'";
    let plain = context(false);
    star(&plain, &[], [DIM, DIM, DIM]);
    assert_eq!(
        optimized(&ctx, sql).await.display_indent().to_string(),
        optimized(&plain, sql).await.display_indent().to_string()
    );
}

#[tokio::test]
async fn the_rule_changes_nothing_the_second_time() {
    let ctx = context(true);
    star(&ctx, &[], [DIM, DIM, DIM]);
    let plan = optimized(&ctx, STAR).await;
    let again = StarJoinOrder
        .rewrite(plan.clone(), &OptimizerContext::new())
        .unwrap();
    assert!(!again.transformed);
    assert_eq!(again.data, plan);
}

#[test]
fn guesses_rank_filters_by_how_much_they_keep() {
    let eq = col("a").eq(lit("x"));
    let list = col("a").in_list(vec![lit("x"), lit("y"), lit("z")], false);
    let both_ends = [col("y").gt_eq(lit(1992)), col("y").lt_eq(lit(1997))];
    let one_end = col("y").gt_eq(lit(1992));
    let either = col("a").eq(lit("x")).or(col("a").eq(lit("y")));
    let s = |c: &[Expr]| selectivity(c);
    assert!(s(std::slice::from_ref(&eq)) < s(&both_ends));
    assert!(s(&both_ends) < s(std::slice::from_ref(&one_end)));
    assert!(s(std::slice::from_ref(&eq)) < s(std::slice::from_ref(&either)));
    assert!(s(std::slice::from_ref(&either)) < s(std::slice::from_ref(&list)));
    assert_eq!(s(&[]), 1.0);
    assert!(s(&[eq.clone(), one_end]) < s(&[eq]));
}

/// Rows as sorted text, so that two plans' answers compare whatever their order.
async fn answer(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = text.lines().skip(3).map(str::to_string).collect();
    rows.sort();
    rows
}

fn cats() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["x", "y", "z"])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any star query, its frames written in any order, answers the same with and without
    /// the rule.
    #[test]
    fn reordered_stars_answer_as_written(
        fact in prop::collection::vec(prop::array::uniform4(prop::option::weighted(0.9, 0i64..6)), 0..40),
        dims in prop::array::uniform3(prop::collection::vec((0i64..6, cats()), 0..8)),
        filters in prop::array::uniform3(prop::option::of(cats())),
        order in Just(vec!["fact", "da", "db", "dc"]).prop_shuffle(),
        select_all in any::<bool>(),
    ) {
        let mut conditions = vec![
            "f_a = a_key".to_string(),
            "f_b = b_key".to_string(),
            "f_c = c_key".to_string(),
        ];
        for (p, f) in ["a", "b", "c"].iter().zip(filters) {
            if let Some(cat) = f {
                conditions.push(format!("{p}_cat = '{cat}'"));
            }
        }
        let what = if select_all { "*" } else { "a_cat, c_cat, SUM(v) AS s, COUNT(*) AS n" };
        let group = if select_all { "" } else { " GROUP BY a_cat, c_cat" };
        let sql = format!(
            "SELECT {what} FROM {} WHERE {}{group}",
            order.join(", "),
            conditions.join(" AND ")
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (with, without) = runtime.block_on(async {
            let ctx = context(true);
            star(&ctx, &fact, [dims[0].as_slice(), dims[1].as_slice(), dims[2].as_slice()]);
            let plain = context(false);
            star(&plain, &fact, [dims[0].as_slice(), dims[1].as_slice(), dims[2].as_slice()]);
            (answer(&ctx, &sql).await, answer(&plain, &sql).await)
        });
        prop_assert_eq!(with, without, "{}", sql);
    }
}
