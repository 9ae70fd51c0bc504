//! The memory tier on its own: admission on the second read, a share of the node's memory
//! that gives way to the queries' pools, and off when its share is zero.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_cache::{Admission, AdmissionTicket, AdmissionWait, ColumnChunks, ColumnTier};
use arrow_array::{ArrayRef, Int64Array};

/// A column of `rows` int64 values in chunks of 1000 rows.
fn column(rows: usize) -> Arc<ColumnChunks> {
    let arrays: Vec<ArrayRef> = (0..rows.div_ceil(1000))
        .map(|c| {
            let n = (rows - c * 1000).min(1000);
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i * 3))) as ArrayRef
        })
        .collect();
    Arc::new(ColumnChunks::new(arrays))
}

#[test]
fn a_column_is_admitted_on_its_second_read() {
    let tier = ColumnTier::new(64 << 20, 1 << 30).unwrap();
    assert!(tier.get("cell-a", "x").is_none());
    assert!(
        !tier.read_again("cell-a", "x"),
        "a first read is not admitted"
    );
    assert!(tier.read_again("cell-a", "x"), "the second is");
    assert!(!tier.read_again("cell-a", "y"), "per column");

    let x = column(5000);
    assert_eq!(x.lengths().collect::<Vec<_>>(), vec![1000; 5]);
    tier.insert("cell-a", "x", Arc::clone(&x));
    let held = tier.get("cell-a", "x").unwrap();
    assert!(Arc::ptr_eq(&held, &x), "the same arrays, not a copy");
    let counts = tier.counts();
    assert_eq!((counts.hits, counts.misses), (1, 1));
    assert_eq!((counts.columns, counts.admitted), (1, 1));
    assert!(counts.bytes >= 5000 * 8, "{counts:?}");
    assert_eq!(counts.share_bytes, 64 << 20);
}

#[test]
fn the_tier_gives_way_to_the_queries_pools_and_comes_back() {
    // A share of 8 MiB of a 16 MiB node.
    let tier = ColumnTier::new(8 << 20, 16 << 20).unwrap();
    for i in 0..12 {
        // 12 columns of ~160 KB: under 2 MB held, whichever shards they land in.
        tier.insert(&format!("cell-{i}"), "x", column(20_000));
    }
    let full = tier.counts();
    assert_eq!(full.columns, 12, "{full:?}");
    assert_eq!(full.capacity_bytes, 8 << 20);

    // Queries reserve 15 MiB: 1 MiB is left for the tier, so it evicts down to that.
    tier.pools_grew(15 << 20);
    let pressed = tier.counts();
    assert_eq!(pressed.capacity_bytes, 1 << 20);
    assert!(pressed.bytes <= 1 << 20, "{pressed:?}");
    assert!(pressed.evicted >= 6, "{pressed:?}");

    // Everything reserved: nothing is held.
    tier.pools_grew(1 << 20);
    let exhausted = tier.counts();
    assert_eq!(
        (exhausted.capacity_bytes, exhausted.columns),
        (0, 0),
        "{exhausted:?}"
    );

    // The queries end: the tier may hold its share again.
    tier.pools_shrank(16 << 20);
    assert_eq!(tier.counts().capacity_bytes, 8 << 20);
    tier.insert("cell-0", "x", column(20_000));
    assert!(tier.get("cell-0", "x").is_some());
    // Releasing more than was reserved never wraps around.
    tier.pools_shrank(1 << 30);
    assert_eq!(tier.counts().capacity_bytes, 8 << 20);
}

#[test]
fn a_column_larger_than_the_tier_is_not_kept() {
    let tier = ColumnTier::new(1 << 20, 1 << 30).unwrap();
    tier.insert("big", "x", column(1_000_000));
    assert!(tier.get("big", "x").is_none());
    assert_eq!(tier.counts().columns, 0);
}

#[test]
fn a_share_of_zero_turns_the_tier_off() {
    let tier = ColumnTier::new(0, 1 << 30).unwrap();
    assert!(!tier.is_enabled());
    assert!(!tier.read_again("c", "x"));
    assert!(!tier.read_again("c", "x"), "never admitted");
    tier.insert("c", "x", column(10));
    assert!(tier.get("c", "x").is_none());

    // Turned on, then off again: what it held is dropped.
    tier.set_limits(1 << 20, 1 << 30);
    tier.insert("c", "x", column(10));
    assert!(tier.get("c", "x").is_some());
    tier.set_limits(0, 1 << 30);
    assert!(tier.get("c", "x").is_none());
    assert_eq!(tier.counts().columns, 0);
}

#[test]
fn buffers_shared_by_several_arrays_are_counted_once() {
    use apiary_cache::MemoryCount;
    use arrow_array::{Array, StringViewArray};
    let texts: StringViewArray = (0..4000).map(|i| Some(format!("{i:040}"))).collect();
    let whole = texts.get_array_memory_size() as u64;
    // Two halves of one decoded page share its data buffer, as a Parquet reader's batches do.
    let halves: Vec<ArrayRef> = vec![
        Arc::new(texts.slice(0, 2000)),
        Arc::new(texts.slice(2000, 2000)),
    ];
    let naive: u64 = halves
        .iter()
        .map(|a| a.get_array_memory_size() as u64)
        .sum();
    let chunks = ColumnChunks::new(halves);
    assert!(chunks.bytes() <= whole, "{} > {whole}", chunks.bytes());
    assert!(
        naive > whole,
        "slices report their parent's buffers: {naive}"
    );

    let mut count = MemoryCount::default();
    let ints = Int64Array::from_iter_values(0..1000);
    let added = count.add(&ints);
    assert!(added >= 8000, "{added}");
    assert_eq!(count.add(&ints), 0, "already counted");
    assert_eq!(count.bytes(), added);
}

fn lead(admission: Admission) -> AdmissionTicket {
    match admission {
        Admission::Lead(ticket) => ticket,
        Admission::Follow(_) => panic!("expected to lead the admission"),
    }
}

fn follow(admission: Admission) -> AdmissionWait {
    match admission {
        Admission::Follow(wait) => wait,
        Admission::Lead(_) => panic!("expected to follow another admission"),
    }
}

#[test]
fn admissions_in_progress_hold_at_most_the_tier_and_one_per_cell() {
    let tier = ColumnTier::new(1000, 10_000).unwrap();
    let mut a = lead(tier.begin_admission("cell-a"));
    // The same cell is admitted by one scan at a time; another waits for it.
    follow(tier.begin_admission("cell-a"));
    let mut b = lead(tier.begin_admission("cell-b"));
    assert!(a.reserve(600));
    // Together they may buffer what the tier holds, no more.
    assert!(!b.reserve(500), "two admissions would buffer 1100 of 1000");
    assert!(b.reserve(400));
    assert_eq!(tier.admitting_bytes(), 1000);
    // A ticket given back (admitted, or given up) frees its bytes and its cell.
    drop(a);
    assert_eq!(tier.admitting_bytes(), 400);
    assert!(b.reserve(500));
    lead(tier.begin_admission("cell-a"));
    drop(b);
    assert_eq!(tier.admitting_bytes(), 0);
}

#[tokio::test]
async fn followers_learn_whether_the_lead_admitted_the_cell() {
    let tier = ColumnTier::new(1000, 10_000).unwrap();
    // Admitted: every follower hears so, also one that began waiting after.
    let mut ticket = lead(tier.begin_admission("cell-a"));
    let early = follow(tier.begin_admission("cell-a"));
    let waiting = tokio::spawn(early.admitted());
    tokio::task::yield_now().await;
    let late = follow(tier.begin_admission("cell-a"));
    ticket.admitted();
    assert!(waiting.await.unwrap());
    assert!(late.admitted().await);
    // Once told, the cell is free for another admission, though the ticket lives on.
    lead(tier.begin_admission("cell-a"));
    drop(ticket);

    // Given up (too large), or dropped (an error, a cancelled scan): followers decode it
    // themselves, and the bytes stay reserved until the ticket goes.
    let mut ticket = lead(tier.begin_admission("cell-b"));
    let wait = follow(tier.begin_admission("cell-b"));
    assert!(ticket.reserve(300));
    ticket.give_up();
    assert!(!wait.admitted().await);
    assert_eq!(tier.admitting_bytes(), 300);
    drop(lead(tier.begin_admission("cell-b")));
    drop(ticket);
    assert_eq!(tier.admitting_bytes(), 0);
    let ticket = lead(tier.begin_admission("cell-d"));
    let wait = follow(tier.begin_admission("cell-d"));
    drop(ticket);
    assert!(!wait.admitted().await);
}
