use std::sync::{Arc, Mutex};

use apiary_ledger::{Column, FrameDefinition, FrameRef, FrameSchema, Registry};
use apiary_storage::{CountsHandle, StorageBackend, StorageUri, counted_backend};
use arrow_array::{Array, Int64Array, RecordBatch};
use async_trait::async_trait;

use super::*;
use crate::distributed::{
    Ended, ResultWriter, ShuffleTransport, StorageShuffle, TaskReport, TaskSpec, run_task_into,
};
use crate::{QueryEngine, QueryOptions};

/// A frame `h.b.f` (`x int64`) with one cell per batch in `batches`, on a counted
/// in-memory store; returns the store, its counts and the frame's pin and state.
async fn frame(
    batches: &[&[i64]],
) -> (
    Arc<dyn StorageBackend>,
    CountsHandle,
    FramePin,
    Arc<LiveFrame>,
) {
    let (backend, counts) = counted_backend(&StorageUri::parse("memory://").unwrap()).unwrap();
    let registry = Registry::new(Arc::clone(&backend), Default::default());
    let name = crate::test_frame::create(&registry).await;
    for values in batches {
        crate::test_frame::append(&registry, values).await;
    }
    let ledger = registry.ledger(&name).await.unwrap();
    let state = ledger.refresh().await.unwrap().unwrap();
    let live = Arc::new(state.live.clone().unwrap());
    (backend, counts, FramePin::new(&name, state.version), live)
}

/// A task summing `x` over `cells` of the frame at `pin`.
fn sum_task(pin: &FramePin, cells: &[String]) -> TaskSpec {
    let mut task = crate::distributed::conformance::task("q-1", 0, 1, "node-a");
    task.split = pin.clone();
    task.cells = cells.to_vec();
    task.sql = "SELECT sum(x) AS c0 FROM h.b.f".into();
    task.schema = vec![crate::distributed::ColumnSpec {
        name: "c0".into(),
        data_type: "Int64".into(),
        nullable: true,
    }];
    task
}

/// Keeps what a task writes.
struct Kept(Arc<Mutex<Vec<RecordBatch>>>);

#[async_trait]
impl ResultWriter for Kept {
    async fn write(&mut self, batch: RecordBatch) -> apiary_shuffle::Result<()> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }

    async fn finish(self: Box<Self>, _: &TaskReport) -> apiary_shuffle::Result<()> {
        Ok(())
    }
}

/// Runs `task` on a node that has never read the frame (a registry of its own over
/// `backend`); returns the sum it wrote.
async fn run_cold(backend: &Arc<dyn StorageBackend>, task: &TaskSpec) -> i64 {
    let registry = Arc::new(Registry::new(Arc::clone(backend), Default::default()));
    let engine = QueryEngine::new(registry, QueryOptions::default()).unwrap();
    let (elsewhere, _) = counted_backend(&StorageUri::parse("memory://").unwrap()).unwrap();
    let transport: Arc<dyn ShuffleTransport> = Arc::new(StorageShuffle::new(elsewhere));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (ended, report) = run_task_into(
        &engine,
        "node-a",
        task,
        &transport,
        Box::new(Kept(Arc::clone(&kept))),
    )
    .await;
    assert_eq!(ended, Ended::Written, "{report:?}");
    let batches = kept.lock().unwrap();
    let column = batches[0].column(0).as_any().downcast_ref::<Int64Array>();
    assert!(column.is_some_and(|c| !c.is_null(0)), "{batches:?}");
    column.unwrap().value(0)
}

#[tokio::test]
async fn a_task_that_ships_its_frame_reads_only_cells() {
    // Each cell's row count tells which batch it holds, and so its sum.
    let (backend, counts, pin, live) = frame(&[&[1], &[10, 20], &[100, 200, 300]]).await;
    let sum_of = |rows: u64| [0, 1, 30, 600][rows as usize];
    let cells: Vec<String> = live.cells.keys().cloned().collect();
    let mine = &cells[..2];
    let mut task = sum_task(&pin, mine);
    let index = FrameIndex::build(&pin.frame_ref().unwrap(), pin.version, &live).unwrap();
    task.frames = Shipping::new(Arc::new(index), &[]).ships(&pin, mine.iter().map(String::as_str));
    assert_eq!(task.frames.len(), 1);
    assert_eq!(
        task.frames[0].cells.len(),
        2,
        "only the task's cells are shipped"
    );
    // What a worker decodes is what the coordinator shipped.
    let task = TaskSpec::decode("t", &task.encode().unwrap()).unwrap();

    let before = counts.snapshot();
    let sum = run_cold(&backend, &task).await;
    let used = counts.snapshot() - before;
    let expected: i64 = mine.iter().map(|c| sum_of(live.cells[c].rows)).sum();
    assert_eq!(sum, expected);
    assert_eq!(
        (used.list, used.metadata_get(), used.head),
        (0, 0, 0),
        "a shipped frame is read without its ledger: {used:?}"
    );
    assert!(used.cell_get > 0, "{used:?}");

    // The same task without shipping replays the ledger, and answers the same.
    let mut unshipped = task.clone();
    unshipped.frames.clear();
    let before = counts.snapshot();
    assert_eq!(run_cold(&backend, &unshipped).await, sum);
    let used = counts.snapshot() - before;
    assert!(used.list + used.metadata_get() > 0, "{used:?}");
}

/// A frame state with `n` cells whose paths are `len` bytes long.
fn state(n: usize, len: usize) -> Arc<LiveFrame> {
    let schema = FrameSchema::new(vec![Column {
        name: "x".into(),
        data_type: "int64".into(),
        nullable: false,
    }])
    .unwrap();
    let cells = (0..n)
        .map(|i| {
            let path = format!("data/{i:0>len$}.parquet");
            let cell = Cell {
                path: path.clone(),
                rows: 10,
                bytes: 100,
                partition_values: Default::default(),
                stats: Default::default(),
                crc32c: None,
            };
            (path, cell)
        })
        .collect();
    Arc::new(LiveFrame {
        incarnation: 0,
        definition: FrameDefinition::new(schema, vec![]).unwrap(),
        cells,
    })
}

fn pin(frame: &str) -> FramePin {
    FramePin::new(&FrameRef::new("h", "b", frame).unwrap(), 4)
}

/// The index of frame `frame` at version 4 over `live`.
fn index(frame: &str, live: &LiveFrame) -> Arc<FrameIndex> {
    Arc::new(FrameIndex::build(&FrameRef::new("h", "b", frame).unwrap(), 4, live).unwrap())
}

#[test]
fn shipping_stays_within_its_bytes_and_ships_parts_as_their_cell() {
    // 1 000 cells of about 1 KiB: the whole frame is more than a task ships.
    let split = state(1000, 1000);
    let names: Vec<&str> = split.cells.keys().map(String::as_str).collect();
    let small = state(3, 10);
    let big = state(1000, 1000);
    let shipping = Shipping::new(
        index("f", &split),
        &[
            (pin("big"), index("big", &big)),
            (pin("small"), index("small", &small)),
        ],
    );
    let shipped = |names: &[&str]| -> Vec<(String, usize)> {
        shipping
            .ships(&pin("f"), names.iter().copied())
            .into_iter()
            .map(|s| (s.pin.frame, s.cells.len()))
            .collect()
    };
    // A pin too big is never shipped; the small one always is.
    assert_eq!(
        shipped(&names[..10]),
        [("f".into(), 10), ("small".into(), 3)]
    );
    assert_eq!(shipped(&names), [("small".to_string(), 3)]);
    // Two parts of one cell ship the cell once.
    let a = format!("{}#0-5", names[0]);
    let b = format!("{}#5-10", names[0]);
    assert_eq!(shipped(&[&a, &b]), [("f".into(), 1), ("small".into(), 3)]);
    // A name that is no cell of the frame: the worker reads the ledger and says so.
    assert_eq!(shipped(&["data/nope.parquet"]), [("small".to_string(), 3)]);
    let encoded = sum_task(&pin("f"), &[]).encode().unwrap().len();
    let mut task = sum_task(
        &pin("f"),
        &names[..400]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    );
    task.pins = vec![pin("big"), pin("small")];
    task.frames = shipping.ships(&pin("f"), names[..400].iter().copied());
    assert!(task.encode().unwrap().len() < encoded + SHIP_BYTES + 400 * 1100);
    assert!(TaskSpec::decode("t", &task.encode().unwrap()).is_ok());
    assert_eq!(
        Shipping::nothing().ships(&pin("f"), names[..1].iter().copied()),
        []
    );
}
