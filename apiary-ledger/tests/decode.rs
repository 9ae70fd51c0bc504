//! The fuzz property in the normal test suite: any bytes under any ledger, checkpoint or
//! registry key decode or fail with an error naming the key, never a panic. Inputs are
//! random bytes and mutations (truncation, byte flips, splices) of real stored objects.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use apiary_ledger::{
    Cell, ColumnStats, FrameDefinition, FrameRef, FrameSchema, LedgerConfig, Operation, Registry,
    StatValue, decode_object,
};
use apiary_storage::Path;
use proptest::prelude::*;

/// Every object a small but complete history leaves in storage, by key.
fn real_objects() -> Vec<(String, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = apiary_storage::memory();
        let config = LedgerConfig {
            checkpoint_interval: 2,
            ..LedgerConfig::default()
        };
        let registry = Registry::new(backend.clone(), config);
        registry.create_hive("h").await.unwrap();
        registry.create_box("h", "b").await.unwrap();
        let frame = FrameRef::parse("h.b.f").unwrap();
        let definition = FrameDefinition::new(
            FrameSchema::parse_compact("id:int64,c:utf8,d:decimal128(10, 2)").unwrap(),
            vec!["c".into()],
        )
        .unwrap();
        registry.create_frame(&frame, definition).await.unwrap();
        let ledger = registry.ledger(&frame).await.unwrap();
        for i in 0..3 {
            let stats = BTreeMap::from([(
                "id".to_string(),
                ColumnStats {
                    min: Some(StatValue::Int(-i)),
                    max: Some(StatValue::Float(1.5)),
                    null_count: 2,
                },
            )]);
            let cell = Cell {
                path: format!("data/c=x/{i}.parquet"),
                rows: 3,
                bytes: 100,
                partition_values: BTreeMap::from([("c".to_string(), Some("x".to_string()))]),
                stats,
                crc32c: None,
            };
            ledger.commit(&Operation::Append(vec![cell])).await.unwrap();
        }
        registry.drop_box("h", "b", true).await.unwrap();
        let listed = backend.list(&Path::from("h")).await.unwrap();
        let mut out = Vec::new();
        for meta in listed {
            let bytes = backend.get(&meta.key).await.unwrap().bytes.to_vec();
            out.push((meta.key.to_string(), bytes));
        }
        out
    })
}

#[test]
fn real_objects_decode() {
    let objects = real_objects();
    assert!(objects.len() >= 10, "{objects:?}");
    for (key, bytes) in &objects {
        decode_object(key, bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

fn check(key: &str, bytes: &[u8]) {
    if let Err(e) = decode_object(key, bytes) {
        assert!(e.to_string().contains(key), "error must name the key: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_objects_never_panic(
        pick in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        splice in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        thread_local!(static OBJECTS: Vec<(String, Vec<u8>)> = real_objects());
        OBJECTS.with(|objects| {
            let (key, original) = &objects[pick.index(objects.len())];
            let mut bytes = original.clone();
            for (at, value) in &flips {
                let i = at.index(bytes.len().max(1));
                if i < bytes.len() {
                    bytes[i] = *value;
                }
            }
            let at = cut.index(bytes.len() + 1);
            bytes.splice(at..at, splice.iter().copied());
            check(key, &bytes);
            check(key, &bytes[..at]);
        });
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), kind in 0usize..6) {
        let key = [
            "h/b/f/_ledger/00000000000000000000.json",
            "h/b/f/_ledger/00000000000000000009.json",
            "h/b/f/_checkpoints/00000000000000000002.json",
            "h/b/f/_checkpoints/_last",
            "h/_hive/00000000000000000000.json",
            "h/b/_box/00000000000000000001.json",
        ][kind];
        check(key, &bytes);
    }
}
