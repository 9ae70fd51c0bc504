//! Building a backend from a [`StorageUri`], and the preflight check every node runs.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::backend::{Capabilities, CreateOutcome, ObjectVersion, StorageBackend, SwapOutcome};
use crate::error::{Result, StorageError};
use crate::object::ObjectStoreBackend;
use crate::uri::StorageUri;

/// Prefix reserved for Apiary's own bookkeeping objects (preflight probes and the like).
pub const RESERVED_PREFIX: &str = "_apiary";

/// Builds the `object_store` for `uri`, rooted at its prefix, with the capabilities it has.
///
/// S3 takes `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` and
/// `AWS_ENDPOINT_URL` (an `http://` endpoint is allowed, for a local S3-compatible server).
/// GCS and Azure take their usual `GOOGLE_*` and `AZURE_*` variables.
pub fn object_store_for(uri: &StorageUri) -> Result<(Arc<dyn ObjectStore>, Capabilities)> {
    build_store(uri, None)
}

/// [`object_store_for`], with `retry` instead of `object_store`'s default retries for a
/// remote store.
fn build_store(
    uri: &StorageUri,
    retry: Option<object_store::RetryConfig>,
) -> Result<(Arc<dyn ObjectStore>, Capabilities)> {
    let cas = Capabilities {
        compare_and_swap: true,
    };
    let backend_err = |e: object_store::Error| StorageError::Backend {
        key: uri.to_string(),
        source: Box::new(e),
    };
    let prefixed = |store: Arc<dyn ObjectStore>, prefix: &str| -> Arc<dyn ObjectStore> {
        if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, Path::from(prefix)))
        }
    };
    match uri {
        StorageUri::Memory => Ok((Arc::new(object_store::memory::InMemory::new()), cas)),
        StorageUri::Local(path) => {
            std::fs::create_dir_all(path).map_err(|e| StorageError::InvalidUri {
                uri: uri.to_string(),
                reason: format!("the folder cannot be created: {e}"),
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(backend_err)?
                .with_automatic_cleanup(true);
            Ok((
                Arc::new(store),
                Capabilities {
                    compare_and_swap: false,
                },
            ))
        }
        StorageUri::S3 { bucket, prefix } => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            // Every upload carries its SHA-256 (`x-amz-checksum-sha256`): the server refuses
            // bytes damaged on the way and keeps the checksum with the object, also when
            // payload signing is turned off (`AWS_UNSIGNED_PAYLOAD`). `AWS_CHECKSUM_ALGORITHM`
            // still chooses.
            if std::env::var("AWS_CHECKSUM_ALGORITHM").is_err() {
                builder = builder.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                builder = builder.with_region("us-east-1");
            }
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                builder = builder
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            if let Some(retry) = retry {
                builder = builder.with_retry(retry);
            }
            let store = builder.build().map_err(backend_err)?;
            Ok((prefixed(Arc::new(store), prefix), cas))
        }
        StorageUri::Gcs { bucket, prefix } => {
            let mut builder =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            if let Some(retry) = retry {
                builder = builder.with_retry(retry);
            }
            let store = builder.build().map_err(backend_err)?;
            Ok((prefixed(Arc::new(store), prefix), cas))
        }
        StorageUri::Azure { container, prefix } => {
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container);
            if let Some(retry) = retry {
                builder = builder.with_retry(retry);
            }
            let store = builder.build().map_err(backend_err)?;
            Ok((prefixed(Arc::new(store), prefix), cas))
        }
    }
}

/// The variable that bounds how long opening a storage may wait for it to answer (a
/// duration such as `60s` or `500ms`; [`OPEN_TIMEOUT`] when unset).
pub const OPEN_TIMEOUT_ENV: &str = "APIARY_STORAGE_TIMEOUT";

/// How long opening a storage waits for its answers by default: an endpoint that accepts
/// connections and never answers would otherwise hold the caller for every retry of every
/// probe request (many minutes).
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the storage at `uri` and runs [`preflight`] on it, within [`OPEN_TIMEOUT`] (or
/// `APIARY_STORAGE_TIMEOUT`): a store that does not answer in time is an error that says so.
pub async fn open(uri: &StorageUri) -> Result<Arc<dyn StorageBackend>> {
    let deadline = open_timeout(uri)?;
    let (store, capabilities) = object_store_for(uri)?;
    let mut backend = ObjectStoreBackend::new(store, capabilities, uri.to_string()).counting();
    if let StorageUri::Local(path) = uri {
        backend = backend.with_local_root(path.clone());
    }
    let backend: Arc<dyn StorageBackend> = Arc::new(backend);
    let checks = async {
        reachable(uri).await?;
        preflight(backend.as_ref()).await
    };
    match crate::time::timeout(&crate::time::SystemClock::new(), deadline, checks).await {
        Ok(checked) => checked?,
        Err(_) => {
            return Err(StorageError::Backend {
                key: RESERVED_PREFIX.to_string(),
                source: Box::new(object_store::Error::Generic {
                    store: "apiary",
                    source: format!(
                        "`{uri}` did not answer within {deadline:?} ({OPEN_TIMEOUT_ENV}): check \
                         its address (AWS_ENDPOINT_URL for S3), the network and the credentials"
                    )
                    .into(),
                }),
            });
        }
    }
    Ok(backend)
}

/// Asks a remote store one question (a HEAD of a key that need not exist) with a single
/// retry, so that an endpoint that refuses connections, a wrong address or rejected
/// credentials fail the open at once with what to check, instead of after every retry of
/// every preflight request. Local and in-memory stores are always reachable.
async fn reachable(uri: &StorageUri) -> Result<()> {
    if matches!(uri, StorageUri::Memory | StorageUri::Local(_)) {
        return Ok(());
    }
    let once = object_store::RetryConfig {
        max_retries: 1,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    let (store, _) = build_store(uri, Some(once))?;
    match store
        .head(&Path::from(format!("{RESERVED_PREFIX}/reachable")))
        .await
    {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) if crate::object::credentials_unavailable(&e) => Err(StorageError::Preflight {
            store: uri.to_string(),
            problem: StorageError::from_object_store(RESERVED_PREFIX, e).to_string(),
        }),
        Err(e) => Err(StorageError::Preflight {
            store: uri.to_string(),
            problem: format!(
                "cannot reach it: {e}. Check its address (AWS_ENDPOINT_URL for S3), the \
                 network and the credentials"
            ),
        }),
    }
}

/// [`OPEN_TIMEOUT`], or the duration `APIARY_STORAGE_TIMEOUT` gives.
fn open_timeout(uri: &StorageUri) -> Result<std::time::Duration> {
    match std::env::var(OPEN_TIMEOUT_ENV) {
        Err(_) => Ok(OPEN_TIMEOUT),
        Ok(text) => match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err(StorageError::Preflight {
                store: uri.to_string(),
                problem: format!(
                    "{OPEN_TIMEOUT_ENV} is `{text}`; give a duration above zero, such as 60s"
                ),
            }),
        },
    }
}

/// Proves, with a probe key under [`RESERVED_PREFIX`], that the store enforces
/// create-if-absent (and compare-and-swap, where it claims to). A store that accepts a
/// conditional write it should refuse would let two nodes commit the same ledger version, so
/// it is refused.
pub async fn preflight(backend: &dyn StorageBackend) -> Result<()> {
    let fail = |problem: String| StorageError::Preflight {
        store: backend.to_string(),
        problem,
    };
    let probe_id = crate::Random::process().id();
    let key = Path::from(format!("{RESERVED_PREFIX}/preflight/{probe_id}"));
    let payload = |n: u32| Bytes::from(format!("{{\"probe\":\"{probe_id}\",\"write\":{n}}}"));

    let first = match backend.put_if_absent(&key, payload(1)).await {
        Ok(outcome) => outcome,
        // A write that finds nothing to write into: no such bucket or container.
        Err(e) if e.is_not_found() => {
            return Err(fail(
                "writing a probe object answered \"not found\": the bucket (or container) \
                 does not exist; create it, or check the name in the storage URI"
                    .into(),
            ));
        }
        Err(e) => return Err(e),
    };
    match first {
        CreateOutcome::Created(_) => {}
        CreateOutcome::AlreadyExists(_) => {
            return Err(fail(format!(
                "a fresh probe key `{key}` was reported as existing"
            )));
        }
    }
    let result = check_probe(backend, &key, &payload).await;
    // Best effort: a leftover probe is harmless, it lives under the reserved prefix.
    let _ = backend.delete(&key).await;
    result.map_err(fail)
}

async fn check_probe(
    backend: &dyn StorageBackend,
    key: &Path,
    payload: &(dyn Fn(u32) -> Bytes + Sync),
) -> std::result::Result<(), String> {
    let storage = |e: StorageError| e.to_string();
    match backend
        .put_if_absent(key, payload(2))
        .await
        .map_err(storage)?
    {
        CreateOutcome::AlreadyExists(existing) if existing.bytes == payload(1) => {}
        CreateOutcome::AlreadyExists(_) => {
            return Err("create-if-absent returned a different object than was created".into());
        }
        CreateOutcome::Created(_) => {
            return Err(
                "a create-if-absent over an existing object succeeded: the store \
                        ignores `If-None-Match: *`, so commits cannot be serialized on it. \
                        Use a store that enforces conditional writes (S3, MinIO, GCS, \
                        Azure, a local folder)"
                    .into(),
            );
        }
    }
    let current = backend.get(key).await.map_err(storage)?;
    if current.bytes != payload(1) {
        return Err("the probe object was overwritten by a refused create-if-absent".into());
    }
    if !backend.capabilities().compare_and_swap {
        return Ok(());
    }
    let stale = ObjectVersion {
        e_tag: Some("\"apiary-preflight-stale\"".into()),
        version: None,
    };
    match backend
        .put_if_match(key, payload(3), &stale)
        .await
        .map_err(storage)?
    {
        SwapOutcome::Mismatch(_) => {}
        SwapOutcome::Swapped(_) => {
            return Err(
                "a compare-and-swap against a wrong ETag succeeded: the store ignores \
                        `If-Match`"
                    .into(),
            );
        }
    }
    match backend
        .put_if_match(key, payload(4), &current.meta.version)
        .await
        .map_err(storage)?
    {
        SwapOutcome::Swapped(_) => {}
        SwapOutcome::Mismatch(_) => {
            return Err("a compare-and-swap against the current ETag was refused".into());
        }
    }
    let after = backend.get(key).await.map_err(storage)?;
    if after.bytes != payload(4) {
        return Err("a compare-and-swap reported success but the object did not change".into());
    }
    Ok(())
}

/// The store's own clock, now, in milliseconds since the epoch: the modification stamp of
/// a probe object written under [`RESERVED_PREFIX`] (and deleted again). Ages of objects are
/// judged against this, never against a node's clock, which may be off.
pub async fn store_now(backend: &dyn StorageBackend) -> Result<i64> {
    let probe = Path::from(format!(
        "{RESERVED_PREFIX}/clock/{}",
        crate::Random::process().id()
    ));
    backend.put(&probe, Bytes::from_static(b"{}")).await?;
    let now = backend.head(&probe).await;
    let _ = backend.delete(&probe).await;
    Ok(now?.last_modified_ms)
}
