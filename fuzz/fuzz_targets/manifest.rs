//! Arbitrary bytes as a distributed task manifest: decode or a clear error naming the
//! object, never a panic; a task that decodes re-encodes to an equal task.
#![no_main]

use apiary_query::distributed::TaskSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match TaskSpec::decode("fuzz", data) {
        Ok(task) => {
            let bytes = task.encode().expect("a decoded task encodes");
            let again = TaskSpec::decode("fuzz", &bytes).expect("and decodes again");
            assert_eq!(again, task);
        }
        Err(e) => assert!(e.to_string().contains("task `fuzz`")),
    }
});
