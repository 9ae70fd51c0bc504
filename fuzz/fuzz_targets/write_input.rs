//! Arbitrary bytes as an Arrow IPC write input: batches or a clear error, never a panic or
//! an abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match apiary::ipc::batches(data) {
        Ok(batches) => {
            for batch in batches {
                if let Err(e) = batch {
                    assert!(e.to_string().contains("not a valid Arrow IPC stream"));
                    break;
                }
            }
        }
        Err(e) => assert!(e.to_string().contains("not a valid Arrow IPC stream")),
    }
});
