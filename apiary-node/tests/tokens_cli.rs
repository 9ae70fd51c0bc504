//! `apiary token create|list|revoke`, run as a user would, on the default local folder.

#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli_helpers;

use std::path::Path;
use std::process::Output;

use cli_helpers::{apiary, err, ok};

/// The stderr of a command refused before it ran (clap's usage errors run over lines).
fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn tokens_are_created_once_listed_without_secrets_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Plain output: the token alone on stdout (for `TOKEN=$(apiary token create …)`).
    let text = ok(&apiary(d, &["token", "create", "--scope", "read"]));
    let token = text.trim();
    assert!(token.starts_with("apiary_"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");

    let out = ok(&apiary(
        d,
        &[
            "token",
            "create",
            "--scope",
            "admin",
            "--scope",
            "metrics",
            "--expires",
            "30d",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let admin_id = v["record"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["record"]["scopes"],
        serde_json::json!(["admin", "metrics"])
    );
    let days = (v["record"]["expires_ms"].as_i64().unwrap()
        - v["record"]["created_ms"].as_i64().unwrap())
        / 86_400_000;
    assert_eq!(days, 30);

    // Listed without secrets.
    let listed = ok(&apiary(d, &["token", "list", "--json"]));
    let tokens: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    let secret = token.rsplit('_').next().unwrap();
    assert!(!listed.contains(secret), "a secret is listed");
    let table = ok(&apiary(d, &["token", "list"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&admin_id) && table.contains("never"),
        "{table}"
    );
    // Nor stored anywhere under the storage folder.
    fn walk(dir: &Path, secret: &str) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, secret);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
    }
    walk(&d.join("apiary-data"), secret);

    // Revoked, then gone; revoking again names the problem.
    let out = ok(&apiary(d, &["token", "revoke", &admin_id]));
    assert!(out.contains("revoked"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&apiary(d, &["token", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let e = err(&apiary(d, &["token", "revoke", &admin_id]));
    assert!(e.contains("there is no token"), "{e}");

    // Bad input: named, nothing created.
    let e = stderr(&apiary(d, &["token", "create", "--scope", "write"]));
    assert!(e.contains("read, admin or metrics"), "{e}");
    let e = stderr(&apiary(d, &["token", "create"]));
    assert!(e.contains("--scope"), "{e}");
    let e = stderr(&apiary(
        d,
        &["token", "create", "--scope", "read", "--expires", "soon"],
    ));
    assert!(e.contains("not a duration"), "{e}");
    let e = err(&apiary(d, &["token", "revoke", "../x"]));
    assert!(e.contains("is not a token id"), "{e}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&apiary(d, &["token", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}
