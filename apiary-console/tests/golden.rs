//! The golden file of a stored token record. A change to the format fails here instead of
//! passing silently; if it is intended, bump the record's `format`, keep reading the old
//! one, and re-bless with `APIARY_BLESS=1 cargo test -p apiary-console --test golden`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use apiary_console::{Scope, Token, TokenStore};
use apiary_storage::{ObjectStoreBackend, Path, StorageBackend, StorageUri, object_store_for};

#[tokio::test]
async fn a_token_record_matches_the_golden_file_and_reads_back() {
    let token = Token {
        format: 1,
        id: "0123456789ab".into(),
        scopes: vec![Scope::Read, Scope::Metrics],
        created_ms: 1_764_633_600_000,
        expires_ms: Some(1_767_225_600_000),
        secret_sha256: "5e".repeat(32),
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/token.json");
    let actual = token.to_bytes();
    if std::env::var_os("APIARY_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&actual),
        String::from_utf8_lossy(&expected),
        "the stored format of a token changed: bump its format, keep reading the old one, \
         then re-bless (APIARY_BLESS=1)"
    );

    // The golden bytes, stored, read back as the same token.
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let backend: Arc<dyn StorageBackend> =
        Arc::new(ObjectStoreBackend::new(store, caps, "memory://"));
    backend
        .put(&Path::from("_tokens/0123456789ab.json"), expected.into())
        .await
        .unwrap();
    let listed = TokenStore::new(backend).list().await.unwrap();
    assert!(listed.problems.is_empty(), "{:?}", listed.problems);
    assert_eq!(listed.tokens, vec![token]);
}
