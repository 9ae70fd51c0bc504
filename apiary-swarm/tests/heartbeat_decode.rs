//! The heartbeat fuzz property in the normal test suite: random bytes and mutations of real
//! heartbeats decode or fail with an error naming the key, never panic.

#![allow(clippy::unwrap_used)]

use apiary_swarm::{Capacity, HEARTBEAT_FORMAT, Heartbeat, Lifecycle, Load, NodeId};
use proptest::prelude::*;

const KEY: &str = "_heartbeats/node_n1.json";

fn real() -> Vec<u8> {
    Heartbeat {
        format: HEARTBEAT_FORMAT,
        node_id: NodeId::new("n1").unwrap(),
        seq: 7,
        state: Lifecycle::Alive,
        software_version: "0.1.0".into(),
        hostname: "pi".into(),
        started_at_ms: 1,
        written_at_ms: 2,
        capacity: Capacity {
            cores: 4,
            bees: 4,
            memory_bytes: 1 << 33,
            memory_per_bee_bytes: 1 << 30,
            target_cell_bytes: 1 << 26,
        },
        load: Load {
            busy_bees: 1,
            idle_bees: 3,
            memory_pressure: 0.5,
            queue_depth: 2,
            temperature: 0.75,
            ..Load::default()
        },
        cache: Default::default(),
        attributes: Default::default(),
        beat: None,
        requests: None,
        history: Vec::new(),
    }
    .encode()
}

fn check(bytes: &[u8]) {
    let id = NodeId::new("n1").unwrap();
    match Heartbeat::decode(KEY, bytes, &id) {
        Ok(hb) => {
            let again = Heartbeat::decode(KEY, &hb.clone().sanitize().encode(), &id).unwrap();
            assert_eq!(again.seq, hb.seq);
        }
        Err(e) => assert!(e.to_string().contains(KEY), "{e}"),
    }
}

#[test]
fn the_real_heartbeat_decodes() {
    let id = NodeId::new("n1").unwrap();
    let hb = Heartbeat::decode(KEY, &real(), &id).unwrap();
    assert_eq!(hb.load.idle_bees, 3);
    let other = NodeId::new("n2").unwrap();
    assert!(Heartbeat::decode(KEY, &real(), &other).is_err());
    let big = vec![b' '; apiary_swarm::MAX_HEARTBEAT_BYTES + 1];
    assert!(
        Heartbeat::decode(KEY, &big, &id)
            .unwrap_err()
            .to_string()
            .contains("too large")
    );
}

#[test]
fn attributes_are_read_and_bounded() {
    let id = NodeId::new("n1").unwrap();
    let mut hb = Heartbeat::decode(KEY, &real(), &id).unwrap();
    assert!(
        hb.attributes.is_empty(),
        "absent from an older heartbeat: none"
    );
    hb.attributes
        .insert("flight".into(), "grpc://10.0.0.7:50051".into());
    let back = Heartbeat::decode(KEY, &hb.encode(), &id).unwrap();
    assert_eq!(back.attributes["flight"], "grpc://10.0.0.7:50051");
    for (name, attributes) in [
        (
            "too many",
            (0..=apiary_swarm::MAX_ATTRIBUTES)
                .map(|i| (format!("k{i}"), "v".to_string()))
                .collect(),
        ),
        ("unnamed", [(String::new(), "v".to_string())].into()),
        ("too long", [("k".to_string(), "v".repeat(2000))].into()),
    ] {
        hb.attributes = attributes;
        let err = Heartbeat::decode(KEY, &hb.encode(), &id).unwrap_err();
        assert!(err.to_string().contains("attribute"), "{name}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_heartbeats_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        splice in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut bytes = real();
        for (at, v) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        let at = cut.index(bytes.len() + 1);
        bytes.splice(at..at, splice.iter().copied());
        check(&bytes);
        check(&bytes[..at]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }
}
