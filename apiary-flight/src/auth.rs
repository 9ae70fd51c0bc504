//! Who may talk to a node's Flight port: processes that can read the shared storage.
//!
//! The first Flight node (or coordinator) creates a random 256-bit key at [`KEY_PATH`] with a
//! conditional put (create-if-absent), so every process of the swarm reads the same one.
//! A client proves it knows the key with an HMAC-SHA256 of a nonce of its own, sent in the
//! [`PROOF_HEADER`] of the handshake and of every call; a node checks it before serving
//! anything. No configuration: whoever can read the storage can already read every frame.

use std::sync::Arc;

use apiary_shuffle::{Result, ShuffleError};
use apiary_storage::{CreateOutcome, ErrorKind, Path, StorageBackend};
use bytes::Bytes;
use ring::hmac;

/// Where the swarm's Flight key is kept, under the storage root.
pub const KEY_PATH: &str = "_flight/key";

/// The gRPC metadata header carrying a client's proof of the key.
pub const PROOF_HEADER: &str = "x-apiary-flight-proof";

/// What the key file starts with (a later format changes it).
const KEY_MAGIC: &str = "apiary-flight-key-v1";

/// What every proof signs, before the nonce.
const PROOF_CONTEXT: &[u8] = b"apiary-flight-v1:";

/// The swarm's Flight key (see the module docs).
#[derive(Clone)]
pub struct FlightKey {
    key: Arc<hmac::Key>,
}

impl std::fmt::Debug for FlightKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlightKey(..)")
    }
}

/// The swarm's key as one process holds it: read (or made) in storage on first use, then
/// kept for the process's life.
#[derive(Debug)]
pub(crate) struct SwarmKey {
    backend: Arc<dyn StorageBackend>,
    key: tokio::sync::OnceCell<FlightKey>,
}

impl SwarmKey {
    /// The key of the swarm on `backend`, not read yet.
    pub(crate) fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self {
            backend,
            key: tokio::sync::OnceCell::new(),
        }
    }

    /// The key, read (or made) once.
    pub(crate) async fn get(&self) -> Result<&FlightKey> {
        self.key
            .get_or_try_init(|| FlightKey::load_or_create(self.backend.as_ref()))
            .await
    }
}

impl FlightKey {
    /// A key from secret bytes (tests; a node reads its key with [`FlightKey::load_or_create`]).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        }
    }

    /// Reads the swarm's key from `backend`, creating it if no process has yet. Two
    /// processes creating it at once agree on one: the conditional put lets one win and
    /// returns its key to the other.
    pub async fn load_or_create(backend: &dyn StorageBackend) -> Result<Self> {
        let path = Path::from(KEY_PATH);
        match backend.get(&path).await {
            Ok(object) => return Self::parse(&object.bytes),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(
            |_| {
                ShuffleError::failed(
                    "the system's random source failed while making the Flight key",
                    ErrorKind::Internal,
                    "ring::rand::SystemRandom",
                )
            },
        )?;
        let text = format!("{KEY_MAGIC}\n{}\n", hex::encode(secret));
        match backend.put_if_absent(&path, Bytes::from(text)).await? {
            CreateOutcome::Created(_) => Ok(Self::from_secret(&secret)),
            CreateOutcome::AlreadyExists(object) => Self::parse(&object.bytes),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Self> {
        let damaged = |why: &str| {
            ShuffleError::failed(
                format!(
                    "the Flight key at `{KEY_PATH}` is damaged ({why}); delete it and restart \
                     every node started with --flight, and a new one is made"
                ),
                ErrorKind::Corrupt,
                why.to_string(),
            )
        };
        let text = std::str::from_utf8(bytes).map_err(|_| damaged("not UTF-8"))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_MAGIC) {
            return Err(damaged("it does not start with the key format's name"));
        }
        let secret = lines
            .next()
            .and_then(|line| hex::decode(line).ok())
            .filter(|s| s.len() == 32)
            .ok_or_else(|| damaged("its second line is not 64 hex digits"))?;
        Ok(Self::from_secret(&secret))
    }

    /// A proof of the key over `nonce` (what a client sends in [`PROOF_HEADER`]).
    pub fn proof(&self, nonce: &str) -> String {
        let tag = hmac::sign(&self.key, &signed(nonce));
        format!("{nonce}.{}", hex::encode(tag.as_ref()))
    }

    /// Checks a proof a client sent; the error says why it is refused.
    pub fn verify(&self, proof: &str) -> std::result::Result<(), &'static str> {
        let (nonce, tag) = proof
            .split_once('.')
            .ok_or("the proof is not `nonce.signature`")?;
        if nonce.len() < 16 || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("the proof's nonce is not 16 to 64 letters and digits");
        }
        let tag = hex::decode(tag).map_err(|_| "the proof's signature is not hex")?;
        hmac::verify(&self.key, &signed(nonce), &tag)
            .map_err(|_| "the proof was not made with this swarm's key (another storage root?)")
    }
}

fn signed(nonce: &str) -> Vec<u8> {
    [PROOF_CONTEXT, nonce.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_key() {
        let key = FlightKey::from_secret(&[7; 32]);
        let proof = key.proof("abcdefgh12345678");
        assert_eq!(key.verify(&proof), Ok(()));
        let other = FlightKey::from_secret(&[8; 32]);
        assert!(
            other
                .verify(&proof)
                .unwrap_err()
                .contains("another storage root")
        );
        for bad in [
            "",
            "nonce",
            "short.00",
            "abcdefgh12345678.zz",
            "abcdefgh12345678.00",
        ] {
            assert!(key.verify(bad).is_err(), "{bad}");
        }
        // A signature over another nonce does not carry over.
        let (_, tag) = proof.split_once('.').unwrap();
        assert!(key.verify(&format!("abcdefgh12345679.{tag}")).is_err());
    }

    #[tokio::test]
    async fn one_key_per_storage_even_when_created_at_once() {
        let backend = apiary_storage::memory();
        let (a, b) = tokio::join!(
            FlightKey::load_or_create(backend.as_ref()),
            FlightKey::load_or_create(backend.as_ref())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(b.verify(&a.proof("0123456789abcdef")), Ok(()));
        let c = FlightKey::load_or_create(backend.as_ref()).await.unwrap();
        assert_eq!(c.verify(&a.proof("0123456789abcdef")), Ok(()));
    }

    #[tokio::test]
    async fn a_damaged_key_says_what_to_do() {
        let backend = apiary_storage::memory();
        backend
            .put(&Path::from(KEY_PATH), Bytes::from_static(b"garbage"))
            .await
            .unwrap();
        let e = FlightKey::load_or_create(backend.as_ref())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("delete it and restart"), "{e}");
    }
}
