//! Arbitrary bytes under every kind of ledger and registry key must decode or fail with an
//! error, never panic. The first byte picks the key kind.
#![no_main]

use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 7] = [
    "h/b/f/_ledger/00000000000000000000.json",
    "h/b/f/_ledger/00000000000000000007.json",
    "h/b/f/_checkpoints/00000000000000000050.json",
    "h/b/f/_checkpoints/_last",
    "h/_hive/00000000000000000000.json",
    "h/b/_box/00000000000000000003.json",
    "h/b/f/_ledger/not-a-version.json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let key = KEYS[usize::from(selector) % KEYS.len()];
    if let Err(e) = apiary_ledger::decode_object(key, bytes) {
        // Errors must render (and name the key).
        assert!(e.to_string().contains(key));
    }
});
