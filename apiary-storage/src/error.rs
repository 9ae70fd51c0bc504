//! The storage error type, and the [`ErrorKind`]s every Apiary error is classified by.

/// What a caller can do about an error: the few kinds every Apiary error reports through its
/// `kind()`, whatever crate raised it. Branch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is wrong (a bad name, schema, SQL, URI or setting); retrying the
    /// same request fails the same way.
    InvalidInput,
    /// The hive, box, frame, node or object does not exist.
    NotFound,
    /// Someone else changed the same thing first (or it exists with another definition);
    /// re-read and decide, or retry.
    Conflict,
    /// A dependency is unavailable or overloaded (a storage request failed, a deadline
    /// passed); retrying later may succeed.
    Unavailable,
    /// A conditional write was sent but whether it landed is unknown; it is neither
    /// acknowledged nor refused. Read the state back before retrying.
    OutcomeUnknown,
    /// Stored data is damaged or of an unknown format.
    Corrupt,
    /// The handle or node is shut down (or not started) for this operation.
    Closed,
    /// A bug or an unexpected failure inside Apiary.
    Internal,
}

impl ErrorKind {
    /// True for the kinds where the same request may succeed if simply retried.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Conflict | ErrorKind::Unavailable)
    }

    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Unavailable,
        ErrorKind::OutcomeUnknown,
        ErrorKind::Corrupt,
        ErrorKind::Closed,
        ErrorKind::Internal,
    ];

    /// The kind's stable name in files and messages (`invalid_input`, `not_found`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::OutcomeUnknown => "outcome_unknown",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind named `name` (see [`as_str`](Self::as_str)); `None` for a name this version
    /// does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong talking to a storage backend.
///
/// The kinds are few on purpose: callers branch on "not there", "cannot be done here",
/// "outcome unknown" and "everything else". The message always names the object or store
/// involved and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object `{key}` not found")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },

    /// A storage URI could not be parsed or names a scheme Apiary does not support.
    #[error(
        "invalid storage URI `{uri}`: {reason}. Accepted forms: {}",
        crate::uri::ACCEPTED_FORMS
    )]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The backend cannot perform this operation (for example compare-and-swap on a local
    /// folder).
    #[error("{store} does not support {operation}: {hint}")]
    Unsupported {
        /// The store, as displayed.
        store: String,
        /// The operation that was attempted.
        operation: &'static str,
        /// What to do instead.
        hint: &'static str,
    },

    /// The store failed the preflight check and cannot be used safely.
    #[error("storage {store} failed the preflight check: {problem}")]
    Preflight {
        /// The store, as displayed.
        store: String,
        /// What the probe observed.
        problem: String,
    },

    /// A conditional write was sent but whether it took effect could not be established, even
    /// after reading the object back. It may still become visible later; it is neither
    /// acknowledged nor refused.
    #[error("outcome of {operation} on `{key}` is unknown after {attempts} attempts: {source}")]
    OutcomeUnknown {
        /// The operation (`put_if_absent` or `put_if_match`).
        operation: &'static str,
        /// The key written.
        key: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error seen.
        #[source]
        source: Box<object_store::Error>,
    },

    /// No credentials: none were configured and the cloud's instance metadata service gave
    /// none (the request was never sent).
    #[error(
        "no credentials to reach the store (for `{key}`): none were given (AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity token) and the instance \
         metadata service gave none ({source}). Set them, or run where an instance role is \
         attached"
    )]
    Credentials {
        /// The key (or prefix) involved.
        key: String,
        /// The metadata service's answer.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Any other failure reported by the underlying store.
    #[error("storage request on `{key}` failed: {source}")]
    Backend {
        /// The key (or prefix) involved.
        key: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
}

impl StorageError {
    /// Wraps an `object_store` error, mapping "not found" to [`StorageError::NotFound`].
    pub fn from_object_store(key: impl Into<String>, err: object_store::Error) -> Self {
        let key = key.into();
        match err {
            object_store::Error::NotFound { .. } => StorageError::NotFound { key },
            other if crate::object::credentials_unavailable(&other) => StorageError::Credentials {
                key,
                source: Box::new(other),
            },
            other => StorageError::Backend {
                key,
                source: Box::new(other),
            },
        }
    }

    /// True when the request never reached the store (its connection could not be made),
    /// so it certainly did not apply.
    pub fn never_sent(&self) -> bool {
        match self {
            StorageError::Backend { source, .. } => crate::object::never_sent(source.as_ref()),
            StorageError::Credentials { .. } => true,
            _ => false,
        }
    }

    /// True when the error means the object is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::NotFound { .. } => ErrorKind::NotFound,
            StorageError::InvalidUri { .. }
            | StorageError::Unsupported { .. }
            | StorageError::Preflight { .. }
            | StorageError::Credentials { .. } => ErrorKind::InvalidInput,
            StorageError::OutcomeUnknown { .. } => ErrorKind::OutcomeUnknown,
            StorageError::Backend { source, .. } => match source.as_ref() {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => ErrorKind::Conflict,
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => ErrorKind::InvalidInput,
                _ => ErrorKind::Unavailable,
            },
        }
    }
}

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod kind_tests {
    use super::ErrorKind;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(ErrorKind::from_name("gremlins"), None);
    }
}

#[cfg(test)]
mod credential_tests {
    use super::{ErrorKind, StorageError};

    /// What `object_store` reports when no credentials are configured and the instance
    /// metadata service refuses (as it does off a cloud machine, or behind a proxy).
    fn metadata_refusal() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT http://169.254.169.254/latest/api/token in 3ms - \
                     Server returned non-2xx status code: 403 Forbidden"
                .into(),
        }
    }

    #[test]
    fn missing_credentials_say_so_and_were_never_sent() {
        let e = StorageError::from_object_store("h/_registry/00001.json", metadata_refusal());
        assert!(matches!(e, StorageError::Credentials { .. }), "{e:?}");
        assert!(e.never_sent(), "signing failed before the request was sent");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let text = e.to_string();
        assert!(
            text.contains("no credentials") && text.contains("AWS_ACCESS_KEY_ID"),
            "{text}"
        );
        // Any other generic failure stays a backend error whose outcome may be unknown.
        let other = StorageError::from_object_store(
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: "connection reset by peer".into(),
            },
        );
        assert!(matches!(other, StorageError::Backend { .. }));
        assert!(!other.never_sent());
    }
}
