//! Running the `apiary` binary as a user would, on the default local folder of `dir`.

use std::path::Path;
use std::process::{Command, Output};

/// `apiary ARGS` in `dir`, with no `APIARY_STORAGE` from the environment.
pub fn apiary(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .current_dir(dir)
        .env_remove("APIARY_STORAGE")
        .output()
        .unwrap()
}

/// The stdout of a command that must succeed.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one-line `error: …` of a command that must fail.
pub fn err(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}
