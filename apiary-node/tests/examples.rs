//! The custom node binary example runs to the end: its transport passes the conformance
//! suite and a query distributed over its two nodes answers like one node.

#![allow(clippy::unwrap_used)]

#[test]
fn the_custom_transport_example_runs() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = profile_dir.join("examples").join("custom_transport");
    assert!(
        example.exists(),
        "{} is missing: cargo test builds examples",
        example.display()
    );
    let out = std::process::Command::new(&example).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passes the transport conformance suite"),
        "{stdout}"
    );
    assert!(stdout.contains("answered like one node"), "{stdout}");
}
