//! Storage URIs, parsed once into a typed value.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Result, StorageError};

/// The URI forms Apiary accepts, shown in every URI error.
pub const ACCEPTED_FORMS: &str = "a local folder (`/data/apiary`, `./apiary-data` or \
`file:///data/apiary`), `memory://`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, \
`az://container[/prefix]`";

/// Name of the environment variable that supplies the default storage URI.
pub const STORAGE_ENV: &str = "APIARY_STORAGE";

/// Where a swarm keeps its canonical state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUri {
    /// A folder on the local file system (created if missing).
    Local(PathBuf),
    /// A process-local in-memory store; for tests and experiments, gone when the process ends.
    Memory,
    /// Amazon S3 or an S3-compatible server.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
        prefix: String,
    },
    /// Google Cloud Storage.
    Gcs {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket.
        prefix: String,
    },
    /// Azure Blob Storage.
    Azure {
        /// Container name.
        container: String,
        /// Key prefix inside the container.
        prefix: String,
    },
}

/// The schemes a storage URI may have.
const SCHEMES: &[&str] = &[
    "file", "memory", "s3", "s3a", "gs", "gcs", "az", "azure", "abfs",
];

impl StorageUri {
    /// Parses a storage URI. Anything that looks like a URI but is not one of the accepted
    /// forms is an error; it is never taken for a local folder.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| StorageError::InvalidUri {
            uri: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        if trimmed != input {
            return Err(invalid("it has leading or trailing white space"));
        }
        let Some((scheme, rest)) = split_scheme(input) else {
            // A colon before any slash with no `://` looks like a mistyped URI (`s3:bucket`),
            // not a folder name.
            if let Some(colon) = input.find(':')
                && !input[..colon].contains(['/', '\\'])
                && colon > 1
            {
                return Err(invalid("it has a scheme but no `://`"));
            }
            // `s3//bucket` is `s3://bucket` with its colon lost, not a folder named `s3`: a
            // node started on it would form a swarm of its own, unseen by the others.
            if let Some((first, _)) = input.split_once("//")
                && SCHEMES.contains(&first.to_ascii_lowercase().as_str())
            {
                return Err(invalid(&format!(
                    "it looks like `{first}://…` with the colon missing"
                )));
            }
            return Ok(StorageUri::Local(PathBuf::from(input)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(
                        "a file URI needs an absolute path (`file:///path`)",
                    ));
                }
                Ok(StorageUri::Local(PathBuf::from(rest)))
            }
            "memory" => {
                if rest.is_empty() {
                    Ok(StorageUri::Memory)
                } else {
                    Err(invalid("`memory://` takes no path"))
                }
            }
            "s3" | "s3a" => {
                let (bucket, prefix) = bucket_and_prefix(rest).map_err(|r| invalid(&r))?;
                Ok(StorageUri::S3 { bucket, prefix })
            }
            "gs" | "gcs" => {
                let (bucket, prefix) = bucket_and_prefix(rest).map_err(|r| invalid(&r))?;
                Ok(StorageUri::Gcs { bucket, prefix })
            }
            "az" | "azure" | "abfs" => {
                let (container, prefix) = bucket_and_prefix(rest).map_err(|r| invalid(&r))?;
                Ok(StorageUri::Azure { container, prefix })
            }
            other => Err(invalid(&format!("the scheme `{other}` is not supported"))),
        }
    }

    /// The URI from `APIARY_STORAGE`, or `fallback` when it is unset.
    pub fn from_env_or(fallback: &str) -> Result<Self> {
        match std::env::var(STORAGE_ENV) {
            Ok(value) => Self::parse(&value),
            Err(_) => Self::parse(fallback),
        }
    }

    /// A short name for the kind of backend: `local`, `memory`, `s3`, `gcs` or `azure`.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageUri::Local(_) => "local",
            StorageUri::Memory => "memory",
            StorageUri::S3 { .. } => "s3",
            StorageUri::Gcs { .. } => "gcs",
            StorageUri::Azure { .. } => "azure",
        }
    }
}

impl fmt::Display for StorageUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_prefix = |f: &mut fmt::Formatter<'_>, scheme: &str, root: &str, prefix: &str| {
            if prefix.is_empty() {
                write!(f, "{scheme}://{root}")
            } else {
                write!(f, "{scheme}://{root}/{prefix}")
            }
        };
        match self {
            StorageUri::Local(path) => write!(f, "{}", path.display()),
            StorageUri::Memory => write!(f, "memory://"),
            StorageUri::S3 { bucket, prefix } => with_prefix(f, "s3", bucket, prefix),
            StorageUri::Gcs { bucket, prefix } => with_prefix(f, "gs", bucket, prefix),
            StorageUri::Azure { container, prefix } => with_prefix(f, "az", container, prefix),
        }
    }
}

fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = input.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

fn bucket_and_prefix(rest: &str) -> std::result::Result<(String, String), String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("the bucket (or container) name is missing".into());
    }
    let bucket_ok = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
    if !bucket_ok || bucket.len() > 63 {
        return Err(format!(
            "`{bucket}` is not a valid bucket name (lowercase letters, digits, `-`, `.`, at most 63)"
        ));
    }
    if rest.contains(['?', '#']) {
        return Err(
            "query strings and fragments are not accepted; use environment variables \
                    for credentials and endpoints"
                .into(),
        );
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
        && !prefix.is_empty()
    {
        return Err(format!(
            "the prefix `{prefix}` has an empty, `.` or `..` segment"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_forms() {
        assert_eq!(
            StorageUri::parse("./apiary-data").unwrap(),
            StorageUri::Local("./apiary-data".into())
        );
        assert_eq!(
            StorageUri::parse("/data/x").unwrap(),
            StorageUri::Local("/data/x".into())
        );
        assert_eq!(
            StorageUri::parse("file:///data/x").unwrap(),
            StorageUri::Local("/data/x".into())
        );
        assert_eq!(StorageUri::parse("memory://").unwrap(), StorageUri::Memory);
        assert_eq!(
            StorageUri::parse("s3://apiary-data/prod").unwrap(),
            StorageUri::S3 {
                bucket: "apiary-data".into(),
                prefix: "prod".into()
            }
        );
        assert_eq!(
            StorageUri::parse("s3://b").unwrap(),
            StorageUri::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            StorageUri::parse("s3://b/a/b/").unwrap(),
            StorageUri::S3 {
                bucket: "b".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(StorageUri::parse("gs://b/p").unwrap().kind(), "gcs");
        assert_eq!(StorageUri::parse("az://c").unwrap().kind(), "azure");
        assert_eq!(
            StorageUri::parse("s3://apiary-data/prod")
                .unwrap()
                .to_string(),
            "s3://apiary-data/prod"
        );
    }

    #[test]
    fn rejects_malformed_uris_with_the_accepted_forms() {
        for bad in [
            "",
            " ",
            "s3://",
            "s3:///prefix",
            "s3://Bad_Bucket!/x",
            "s3://b/a//b",
            "s3://b/../x",
            "s3://b/x?endpoint=y",
            "http://example.com/x",
            "ftp://x",
            "s3:bucket",
            "s3//bucket/prefix",
            "S3//bucket",
            "gs//bucket",
            "az//container",
            "memory://x",
            "file://relative",
        ] {
            let err = StorageUri::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("Accepted forms"), "{bad}: {err}");
        }
    }
}
