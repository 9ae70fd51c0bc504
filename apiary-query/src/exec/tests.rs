//! Reading the units a claim queue hands out: runs as one scan, and cells on both sides of
//! a union (some cold, some from the memory tier) one scan per cell.

use super::*;
use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::SessionContext;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
}

/// A Parquet cell of `values` in `dir`.
fn cell(dir: &std::path::Path, name: &str, values: &[i64]) -> PartitionedFile {
    let file = dir.join(name);
    let batch =
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    PartitionedFile::new(Path::from_filesystem_path(&file).unwrap().to_string(), size)
}

/// A Parquet scan of `files` in one partition.
async fn scan(ctx: &SessionContext, files: &[&PartitionedFile]) -> Arc<dyn ExecutionPlan> {
    let format = ParquetFormat::default();
    let files = files.iter().map(|f| (*f).clone()).collect();
    let config = FileScanConfigBuilder::new(
        ObjectStoreUrl::local_filesystem(),
        format.file_source(TableSchema::builder(schema()).build()),
    )
    .with_file_groups(vec![FileGroup::new(files)])
    .build();
    format
        .create_physical_plan(&ctx.state(), config)
        .await
        .unwrap()
}

fn unit(file: &PartitionedFile, rows: Option<RowRanges>) -> Unit {
    Unit {
        location: file.object_meta.location.clone(),
        rows,
    }
}

/// The values `units` read through `plan`, in order.
async fn read(
    ctx: &SessionContext,
    plan: &Arc<dyn ExecutionPlan>,
    units: &[Unit],
) -> Result<Vec<i64>> {
    let batches: Vec<RecordBatch> = read_units(plan, units, ctx.task_ctx())?
        .try_collect()
        .await?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            let x = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..x.len()).map(|i| x.value(i)).collect::<Vec<_>>()
        })
        .collect())
}

#[tokio::test]
async fn a_run_is_one_scan_and_cells_across_a_union_are_read_one_by_one_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = SessionContext::new();
    let a = cell(dir.path(), "a.parquet", &[1, 2]);
    let b = cell(dir.path(), "b.parquet", &[3]);
    let c = cell(dir.path(), "c.parquet", &[4, 5]);
    let left = scan(&ctx, &[&a, &b]).await;
    let union = UnionExec::try_new(vec![left, scan(&ctx, &[&c]).await]).unwrap();

    // Both cells on one side: one scan of the two, in the order given; a part reads only
    // its rows.
    let run = [unit(&b, None), unit(&a, None)];
    assert!(cells(&union, &run).is_some());
    assert_eq!(read(&ctx, &union, &run).await.unwrap(), [3, 1, 2]);
    let second: std::ops::Range<u64> = 1..2;
    let part = RowRanges::new(vec![second], 2).unwrap();
    let run = [unit(&a, Some(part)), unit(&b, None)];
    assert_eq!(read(&ctx, &union, &run).await.unwrap(), [2, 3]);

    // Cells on both sides: no one scan reads them, so each is read alone, still in order.
    let across = [unit(&c, None), unit(&a, None), unit(&b, None)];
    assert!(cells(&union, &across).is_none());
    assert_eq!(read(&ctx, &union, &across).await.unwrap(), [4, 5, 1, 2, 3]);

    // A cell the scan does not plan to read is an error naming it, not a silent gap.
    let other = cell(dir.path(), "other.parquet", &[9]);
    let err = read(&ctx, &union, &[unit(&a, None), unit(&other, None)])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("other.parquet"), "{err}");
}
