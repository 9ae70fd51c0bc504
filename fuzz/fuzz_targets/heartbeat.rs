//! Arbitrary bytes as a heartbeat: decode or a clear error naming the key, never a panic; a
//! heartbeat that decodes survives a round trip.
#![no_main]

use apiary_swarm::{Heartbeat, NodeId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = NodeId::new("n1") else { return };
    let key = "_heartbeats/node_n1.json";
    match Heartbeat::decode(key, data, &id) {
        Ok(hb) => {
            let again = Heartbeat::decode(key, &hb.clone().sanitize().encode(), &id);
            assert!(again.is_ok(), "a decoded heartbeat must re-encode decodably");
        }
        Err(e) => assert!(e.to_string().contains(key)),
    }
});
