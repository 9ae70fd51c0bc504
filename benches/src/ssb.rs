//! The Star Schema Benchmark: a deterministic data generator and the 13 queries.
//!
//! The generator follows the SSB specification's shapes and domains (O'Neil et al.): a
//! `lineorder` fact table of 6 000 000 x SF rows and the `customer` (30 000 x SF),
//! `supplier` (2 000 x SF), `part` (200 000 x (1 + log2 SF), at least 1 000) and date
//! (`dwdate`, 1992-1998) dimensions, with the 25 nations in 5 regions, cities as the first
//! nine characters of the nation plus a digit, and the MFGR/category/brand hierarchy. Values
//! come from a seeded generator, so a scale factor always yields the same data; text columns
//! the queries never read are short, which makes the data smaller than `dbgen`'s.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod queries;
pub use queries::QUERIES;

/// The five regions and their nations (the SSB/TPC-H lists).
const NATIONS: [(&str, &str); 25] = [
    ("ALGERIA", "AFRICA"),
    ("ARGENTINA", "AMERICA"),
    ("BRAZIL", "AMERICA"),
    ("CANADA", "AMERICA"),
    ("EGYPT", "MIDDLE EAST"),
    ("ETHIOPIA", "AFRICA"),
    ("FRANCE", "EUROPE"),
    ("GERMANY", "EUROPE"),
    ("INDIA", "ASIA"),
    ("INDONESIA", "ASIA"),
    ("IRAN", "MIDDLE EAST"),
    ("IRAQ", "MIDDLE EAST"),
    ("JAPAN", "ASIA"),
    ("JORDAN", "MIDDLE EAST"),
    ("KENYA", "AFRICA"),
    ("MOROCCO", "AFRICA"),
    ("MOZAMBIQUE", "AFRICA"),
    ("PERU", "AMERICA"),
    ("CHINA", "ASIA"),
    ("ROMANIA", "EUROPE"),
    ("SAUDI ARABIA", "MIDDLE EAST"),
    ("VIETNAM", "ASIA"),
    ("RUSSIA", "EUROPE"),
    ("UNITED KINGDOM", "EUROPE"),
    ("UNITED STATES", "AMERICA"),
];
const SEGMENTS: [&str; 5] = [
    "AUTOMOBILE",
    "BUILDING",
    "FURNITURE",
    "HOUSEHOLD",
    "MACHINERY",
];
const PRIORITIES: [&str; 5] = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECI", "5-LOW"];
const SHIPMODES: [&str; 7] = ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"];
const COLORS: [&str; 8] = [
    "almond",
    "antique",
    "aquamarine",
    "azure",
    "beige",
    "bisque",
    "black",
    "blanched",
];
const CONTAINERS: [&str; 8] = [
    "SM CASE",
    "SM BOX",
    "MED BAG",
    "MED PACK",
    "LG CASE",
    "LG BOX",
    "JUMBO JAR",
    "WRAP PKG",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// Rows per generated batch.
pub const BATCH_ROWS: usize = 65_536;

/// Row counts of each table at a scale factor.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// The scale factor.
    pub sf: f64,
    /// `lineorder` rows.
    pub lineorders: usize,
    /// `customer` rows.
    pub customers: usize,
    /// `supplier` rows.
    pub suppliers: usize,
    /// `part` rows.
    pub parts: usize,
}

impl Scale {
    /// Row counts at scale factor `sf`.
    pub fn new(sf: f64) -> Self {
        let parts = if sf >= 1.0 {
            200_000.0 * (1.0 + sf.log2())
        } else {
            200_000.0 * sf
        };
        Self {
            sf,
            lineorders: ((6_000_000.0 * sf) as usize).max(1),
            customers: ((30_000.0 * sf) as usize).max(25),
            suppliers: ((2_000.0 * sf) as usize).max(25),
            parts: (parts as usize).max(1_000),
        }
    }
}

fn city(nation: &str, digit: u32) -> String {
    let mut c: String = nation.chars().take(9).collect();
    while c.len() < 9 {
        c.push(' ');
    }
    c.push(char::from_digit(digit, 10).unwrap_or('0'));
    c
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}
fn i32f(name: &str) -> Field {
    Field::new(name, DataType::Int32, false)
}
fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn strings(values: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(values))
}
fn ints(values: Vec<i32>) -> ArrayRef {
    Arc::new(Int32Array::from(values))
}
fn longs(values: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(values))
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::clone(schema), columns).expect("generated columns fit the schema")
}

/// One table: its name, schema and batches.
#[derive(Debug, Clone)]
pub struct Table {
    /// Table (frame) name.
    pub name: &'static str,
    /// Schema.
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
}

impl Table {
    /// Rows over all batches.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Every table at `sf`, generated with `seed`.
pub fn generate(sf: f64, seed: u64) -> Vec<Table> {
    let scale = Scale::new(sf);
    vec![
        dwdate(),
        customer(&scale, seed),
        supplier(&scale, seed),
        part(&scale, seed),
        lineorder(&scale, seed),
    ]
}

/// A day: (datekey `yyyymmdd`, year, month 1-12, day of month, day number in year).
type Day = (i32, i32, u32, u32, u32);

/// The days of 1992-01-01 ..= 1998-12-31.
fn days() -> Vec<Day> {
    let mut out = Vec::new();
    for year in 1992..=1998 {
        let leap = year % 4 == 0;
        let lengths = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut day_of_year = 0;
        for (m, len) in lengths.iter().enumerate() {
            for d in 1..=*len {
                day_of_year += 1;
                let key = year * 10_000 + (m as i32 + 1) * 100 + d as i32;
                out.push((key, year, m as u32 + 1, d, day_of_year));
            }
        }
    }
    out
}

fn dwdate() -> Table {
    let schema = Arc::new(Schema::new(vec![
        i32f("d_datekey"),
        utf8("d_date"),
        utf8("d_dayofweek"),
        utf8("d_month"),
        i32f("d_year"),
        i32f("d_yearmonthnum"),
        utf8("d_yearmonth"),
        i32f("d_daynuminweek"),
        i32f("d_daynuminmonth"),
        i32f("d_daynuminyear"),
        i32f("d_monthnuminyear"),
        i32f("d_weeknuminyear"),
        utf8("d_sellingseason"),
    ]));
    let days = days();
    let n = days.len();
    let col = |f: &dyn Fn(usize, &Day) -> i32| -> ArrayRef {
        ints(days.iter().enumerate().map(|(i, d)| f(i, d)).collect())
    };
    let columns = vec![
        col(&|_, d| d.0),
        strings(
            days.iter()
                .map(|d| format!("{} {}, {}", MONTHS[d.2 as usize - 1], d.3, d.1))
                .collect(),
        ),
        strings((0..n).map(|i| DAYS[i % 7].to_string()).collect()),
        strings(
            days.iter()
                .map(|d| MONTHS[d.2 as usize - 1].to_string())
                .collect(),
        ),
        col(&|_, d| d.1),
        col(&|_, d| d.1 * 100 + d.2 as i32),
        strings(
            days.iter()
                .map(|d| format!("{}{}", &MONTHS[d.2 as usize - 1][..3], d.1))
                .collect(),
        ),
        col(&|i, _| (i % 7) as i32 + 1),
        col(&|_, d| d.3 as i32),
        col(&|_, d| d.4 as i32),
        col(&|_, d| d.2 as i32),
        col(&|_, d| (d.4 as i32 - 1) / 7 + 1),
        strings(
            days.iter()
                .map(|d| {
                    match d.2 {
                        12 | 1 | 2 => "Winter",
                        3..=5 => "Spring",
                        6..=8 => "Summer",
                        _ => "Fall",
                    }
                    .to_string()
                })
                .collect(),
        ),
    ];
    Table {
        name: "dwdate",
        batches: vec![batch(&schema, columns)],
        schema,
    }
}

/// Customers and suppliers share a shape: a key, a name, and a city in a nation in a region.
fn party_columns(count: usize, label: &str, rng: &mut StdRng) -> Vec<ArrayRef> {
    let mut rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for key in 1..=count {
        let (nation, region) = NATIONS[rng.random_range(0..25)];
        rows.0.push(key as i32);
        rows.1.push(format!("{label}#{key:09}"));
        rows.2.push(city(nation, rng.random_range(0..10)));
        rows.3.push(nation.to_string());
        rows.4.push(region.to_string());
    }
    vec![
        ints(rows.0),
        strings(rows.1),
        strings(rows.2),
        strings(rows.3),
        strings(rows.4),
    ]
}

fn party_schema(prefix: &str, key: &str) -> Vec<Field> {
    let mut fields = vec![i32f(&format!("{prefix}_{key}"))];
    for column in ["name", "city", "nation", "region"] {
        fields.push(utf8(&format!("{prefix}_{column}")));
    }
    fields
}

fn customer(scale: &Scale, seed: u64) -> Table {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC057);
    let mut fields = party_schema("c", "custkey");
    fields.push(utf8("c_mktsegment"));
    let schema = Arc::new(Schema::new(fields));
    let mut columns = party_columns(scale.customers, "Customer", &mut rng);
    columns.push(strings(
        (0..scale.customers)
            .map(|_| SEGMENTS[rng.random_range(0..5)].to_string())
            .collect(),
    ));
    Table {
        name: "customer",
        batches: vec![batch(&schema, columns)],
        schema,
    }
}

fn supplier(scale: &Scale, seed: u64) -> Table {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5099);
    let schema = Arc::new(Schema::new(party_schema("s", "suppkey")));
    let columns = party_columns(scale.suppliers, "Supplier", &mut rng);
    Table {
        name: "supplier",
        batches: vec![batch(&schema, columns)],
        schema,
    }
}

fn part(scale: &Scale, seed: u64) -> Table {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9A27);
    let schema = Arc::new(Schema::new(vec![
        i32f("p_partkey"),
        utf8("p_name"),
        utf8("p_mfgr"),
        utf8("p_category"),
        utf8("p_brand1"),
        utf8("p_color"),
        i32f("p_size"),
        utf8("p_container"),
    ]));
    let mut rows = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for key in 1..=scale.parts {
        let m = rng.random_range(1..=5);
        let c = rng.random_range(1..=5);
        let b = rng.random_range(1..=40);
        let color = COLORS[rng.random_range(0..COLORS.len())];
        rows.0.push(key as i32);
        rows.1.push(format!("{color} part {key}"));
        rows.2.push(format!("MFGR#{m}"));
        rows.3.push(format!("MFGR#{m}{c}"));
        rows.4.push(format!("MFGR#{m}{c}{b:02}"));
        rows.5.push(color.to_string());
        rows.6.push(rng.random_range(1..=50));
        rows.7
            .push(CONTAINERS[rng.random_range(0..CONTAINERS.len())].to_string());
    }
    let columns = vec![
        ints(rows.0),
        strings(rows.1),
        strings(rows.2),
        strings(rows.3),
        strings(rows.4),
        strings(rows.5),
        ints(rows.6),
        strings(rows.7),
    ];
    Table {
        name: "part",
        batches: vec![batch(&schema, columns)],
        schema,
    }
}

/// The `lineorder` schema.
pub fn lineorder_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        i64f("lo_orderkey"),
        i32f("lo_linenumber"),
        i32f("lo_custkey"),
        i32f("lo_partkey"),
        i32f("lo_suppkey"),
        i32f("lo_orderdate"),
        utf8("lo_orderpriority"),
        i32f("lo_shippriority"),
        i32f("lo_quantity"),
        i64f("lo_extendedprice"),
        i64f("lo_ordtotalprice"),
        i32f("lo_discount"),
        i64f("lo_revenue"),
        i64f("lo_supplycost"),
        i32f("lo_tax"),
        i32f("lo_commitdate"),
        utf8("lo_shipmode"),
    ]))
}

fn lineorder(scale: &Scale, seed: u64) -> Table {
    let schema = lineorder_schema();
    let days = days();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1170);
    let mut batches = Vec::new();
    let mut order = 0i64;
    let mut line = 7; // start a new order on the first row
    let mut lines_in_order = 0;
    let mut order_fields = (0i32, 0usize, String::new(), 0i64);
    let mut produced = 0;
    while produced < scale.lineorders {
        let n = BATCH_ROWS.min(scale.lineorders - produced);
        let mut c = LineorderColumns::with_capacity(n);
        for _ in 0..n {
            if line >= lines_in_order {
                order += 1;
                line = 0;
                lines_in_order = rng.random_range(1..=7);
                order_fields = (
                    rng.random_range(1..=scale.customers as i32),
                    rng.random_range(0..days.len() - 151),
                    PRIORITIES[rng.random_range(0..5)].to_string(),
                    rng.random_range(100_000..50_000_000),
                );
            }
            line += 1;
            let quantity = rng.random_range(1..=50);
            let part = rng.random_range(1..=scale.parts as i32);
            let price = i64::from(90_000 + (part / 10) % 20_001 + 100 * (part % 1_000)) / 100;
            let extended = price * i64::from(quantity);
            let discount = rng.random_range(0..=10);
            let date = order_fields.1;
            c.orderkey.push(order);
            c.linenumber.push(line);
            c.custkey.push(order_fields.0);
            c.partkey.push(part);
            c.suppkey.push(rng.random_range(1..=scale.suppliers as i32));
            c.orderdate.push(days[date].0);
            c.orderpriority.push(order_fields.2.clone());
            c.shippriority.push(0);
            c.quantity.push(quantity);
            c.extendedprice.push(extended);
            c.ordtotalprice.push(order_fields.3);
            c.discount.push(discount);
            c.revenue.push(extended * (100 - i64::from(discount)) / 100);
            c.supplycost.push(6 * price / 10);
            c.tax.push(rng.random_range(0..=8));
            c.commitdate.push(days[date + rng.random_range(30..=90)].0);
            c.shipmode
                .push(SHIPMODES[rng.random_range(0..SHIPMODES.len())].to_string());
        }
        batches.push(c.finish(&schema));
        produced += n;
    }
    Table {
        name: "lineorder",
        schema,
        batches,
    }
}

#[derive(Default)]
struct LineorderColumns {
    orderkey: Vec<i64>,
    linenumber: Vec<i32>,
    custkey: Vec<i32>,
    partkey: Vec<i32>,
    suppkey: Vec<i32>,
    orderdate: Vec<i32>,
    orderpriority: Vec<String>,
    shippriority: Vec<i32>,
    quantity: Vec<i32>,
    extendedprice: Vec<i64>,
    ordtotalprice: Vec<i64>,
    discount: Vec<i32>,
    revenue: Vec<i64>,
    supplycost: Vec<i64>,
    tax: Vec<i32>,
    commitdate: Vec<i32>,
    shipmode: Vec<String>,
}

impl LineorderColumns {
    fn with_capacity(n: usize) -> Self {
        let mut c = Self::default();
        c.orderkey.reserve(n);
        c
    }

    fn finish(self, schema: &SchemaRef) -> RecordBatch {
        batch(
            schema,
            vec![
                longs(self.orderkey),
                ints(self.linenumber),
                ints(self.custkey),
                ints(self.partkey),
                ints(self.suppkey),
                ints(self.orderdate),
                strings(self.orderpriority),
                ints(self.shippriority),
                ints(self.quantity),
                longs(self.extendedprice),
                longs(self.ordtotalprice),
                ints(self.discount),
                longs(self.revenue),
                longs(self.supplycost),
                ints(self.tax),
                ints(self.commitdate),
                strings(self.shipmode),
            ],
        )
    }
}
