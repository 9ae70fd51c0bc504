//! Tokens kept hashed in the storage: created once, honoured by any process on the same
//! storage, refused with the right status for every way a request can be wrong, revoked,
//! and never stored in clear. Run on the in-memory store and on a local folder.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_console::{Denied, Scope, TokenStore, Tokens};
use apiary_storage::{ErrorKind, Path, Random, StorageBackend, StorageUri, counted_backend};

const HOUR_MS: i64 = 3_600_000;

fn bearer(text: &str) -> String {
    format!("Bearer {text}")
}

/// Every byte stored under the storage, concatenated.
async fn everything_stored(backend: &dyn StorageBackend) -> Vec<u8> {
    let mut out = Vec::new();
    for meta in backend.list(&Path::from("")).await.unwrap() {
        out.extend_from_slice(&backend.get(&meta.key).await.unwrap().bytes);
    }
    out
}

async fn tokens_are_honoured_refused_and_revoked(uri: StorageUri) {
    let (backend, counts) = counted_backend(&uri).unwrap();
    let store = TokenStore::new(Arc::clone(&backend)).with_random(Random::seeded(7));
    let read = store.create(&[Scope::Read], None).await.unwrap();
    let admin = store
        .create(&[Scope::Admin, Scope::Admin], None)
        .await
        .unwrap();
    let scrape = store
        .create(&[Scope::Metrics], Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(
        admin.token.scopes,
        vec![Scope::Admin],
        "scopes deduplicated"
    );
    assert!(read.text.starts_with("apiary_"), "{}", read.text);
    assert_ne!(read.token.id, admin.token.id);

    // Stored hashed: no secret appears anywhere in the storage.
    let stored = everything_stored(backend.as_ref()).await;
    for created in [&read, &admin, &scrape] {
        let secret = created.text.rsplit('_').next().unwrap();
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is stored in clear"
        );
    }

    // Another process on the same storage honours them: no per-node configuration.
    let other = TokenStore::new(Arc::clone(&backend));
    let tokens = other.load().await.unwrap();
    assert_eq!(tokens.len(), 3);
    let now = read.token.created_ms;

    // Checks cost no storage request.
    let before = counts.snapshot();
    let ok = |text: &str, needed| tokens.check(Some(&bearer(text)), needed, now).is_ok();
    assert!(ok(&read.text, Scope::Read));
    assert!(ok(&admin.text, Scope::Read), "admin may read");
    assert!(ok(&admin.text, Scope::Admin));
    assert!(ok(&admin.text, Scope::Metrics));
    assert!(ok(&scrape.text, Scope::Metrics));
    let denied = |header: Option<&str>, needed| tokens.check(header, needed, now).unwrap_err();
    assert_eq!(denied(None, Scope::Read), Denied::Missing(Scope::Read));
    assert_eq!(denied(None, Scope::Read).status(), 401);
    let wrong_scope = denied(Some(&bearer(&read.text)), Scope::Admin);
    assert_eq!(wrong_scope.status(), 403, "{wrong_scope}");
    assert!(
        wrong_scope.to_string().contains("`admin` scope"),
        "{wrong_scope}"
    );
    assert_eq!(
        denied(Some(&bearer(&scrape.text)), Scope::Read).status(),
        403
    );
    // A wrong secret for a known id is refused like an unknown token.
    let mut forged = read.text.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(denied(Some(&bearer(&forged)), Scope::Read), Denied::Unknown);
    for malformed in [
        "Basic dXNlcjpwYXNz".to_string(),
        "Bearer".to_string(),
        "Bearer not-a-token".to_string(),
        read.text.clone(),
    ] {
        let d = denied(Some(&malformed), Scope::Read);
        assert_eq!(
            (d.clone(), d.status()),
            (Denied::Malformed, 401),
            "{malformed}"
        );
    }
    // Expired on the checking node's clock.
    let later = now + 2 * HOUR_MS;
    let expired = tokens
        .check(Some(&bearer(&scrape.text)), Scope::Metrics, later)
        .unwrap_err();
    assert_eq!(expired, Denied::Expired(scrape.token.id.clone()));
    assert_eq!(expired.status(), 401);
    assert_eq!(
        counts.snapshot(),
        before,
        "checking a token made a storage request"
    );

    // Listed oldest first (created within one store-clock millisecond, then by id).
    let listed = store.list().await.unwrap();
    assert!(listed.problems.is_empty(), "{:?}", listed.problems);
    assert_eq!(listed.tokens.len(), 3);
    assert!(listed.tokens.iter().all(|t| t.secret_sha256.len() == 64));

    // Revoked: gone from every process's next snapshot; the snapshot in hand still has it
    // until then.
    let revoked = store.revoke(&read.token.id).await.unwrap();
    assert_eq!(revoked.id, read.token.id);
    let refreshed = other.load().await.unwrap();
    assert_eq!(
        refreshed.check(Some(&bearer(&read.text)), Scope::Read, now),
        Err(Denied::Unknown)
    );
    assert!(
        refreshed
            .check(Some(&bearer(&admin.text)), Scope::Read, now)
            .is_ok()
    );
    let again = store.revoke(&read.token.id).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");
}

#[tokio::test]
async fn tokens_in_memory() {
    tokens_are_honoured_refused_and_revoked(StorageUri::Memory).await;
}

#[tokio::test]
async fn tokens_in_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    tokens_are_honoured_refused_and_revoked(StorageUri::Local(dir.path().to_path_buf())).await;
}

#[tokio::test]
async fn bad_requests_and_damaged_records_are_named() {
    let (backend, _) = counted_backend(&StorageUri::Memory).unwrap();
    let store = TokenStore::new(Arc::clone(&backend));
    let e = store.create(&[], None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("at least one scope"), "{e}");
    let e = store
        .create(&[Scope::Read], Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    for bad in ["", "xyz", "0123456789AB", "0123456789abc", "../../etc"] {
        let e = store.revoke(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
    }

    let good = store.create(&[Scope::Read], None).await.unwrap();
    // A damaged record, one naming another id, and a stray object: skipped and named;
    // the good token still works.
    let put = |key: &str, bytes: &'static [u8]| {
        let backend = Arc::clone(&backend);
        let key = Path::from(key);
        async move { backend.put(&key, bytes.into()).await.unwrap() }
    };
    put("_tokens/aaaaaaaaaaaa.json", b"{not json").await;
    put(
        "_tokens/bbbbbbbbbbbb.json",
        br#"{"format":1,"id":"cccccccccccc","scopes":["admin"],"created_ms":0,"expires_ms":null,"secret_sha256":"00"}"#,
    )
    .await;
    put("_tokens/notes.txt", b"hello").await;
    let listed = store.list().await.unwrap();
    assert_eq!(listed.tokens.len(), 1, "{listed:?}");
    assert_eq!(listed.problems.len(), 3, "{:?}", listed.problems);
    assert!(
        listed
            .problems
            .iter()
            .any(|p| p.contains("aaaaaaaaaaaa") && p.contains("not a token record")),
        "{:?}",
        listed.problems
    );
    assert!(
        listed
            .problems
            .iter()
            .any(|p| p.contains("names token `cccccccccccc`")),
        "{:?}",
        listed.problems
    );
    let tokens: Tokens = store.load().await.unwrap();
    assert!(
        tokens
            .check(
                Some(&bearer(&good.text)),
                Scope::Read,
                good.token.created_ms
            )
            .is_ok()
    );
    // A damaged record can still be revoked.
    store.revoke("aaaaaaaaaaaa").await.unwrap();
    assert_eq!(store.list().await.unwrap().problems.len(), 2);
}
