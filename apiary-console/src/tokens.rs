//! Access tokens: bearer tokens with scopes and an optional expiry, kept **hashed** in the
//! shared storage so that every node honours every token with no per-node configuration.
//!
//! ```text
//! _tokens/{id}.json    one token: its id, scopes, times and the SHA-256 of its secret
//! ```
//!
//! A token is presented as `Authorization: Bearer apiary_{id}_{secret}`: the id (12 hex
//! digits) names the stored record, the secret (256 random bits, 64 hex digits) is checked
//! against the record's digest. The secret is shown once, when the token is created, and is
//! stored nowhere. Secrets are random and long, so a plain SHA-256 is the right digest (a
//! slow password hash guards guessable secrets, which these are not).
//!
//! A token is created by a create-if-absent write (never overwriting another) and revoked
//! by deleting its record. Nodes check requests against a [`Tokens`] snapshot held in
//! memory (see [`TokenStore::load`]), so a check costs no storage request. Expiry is stamped
//! on the store's clock at creation and judged on the checking node's clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apiary_storage::{CreateOutcome, Path, Random, StorageBackend};
use serde::{Deserialize, Serialize};

use crate::error::{ConsoleError, Result};

/// Where token records live in the storage.
pub const TOKENS_DIR: &str = "_tokens";

/// What every token's text starts with (so a leaked one is recognisable in logs and by
/// secret scanners).
pub const TOKEN_PREFIX: &str = "apiary_";

/// The format of a stored token record.
const FORMAT: u32 = 1;

/// Hex digits of a token's id, and bytes of its secret.
const ID_HEX: usize = 12;
const SECRET_BYTES: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the swarm, nodes, colony, frames and queries.
    Read,
    /// Everything `read` may, and drain nodes, cancel queries, run SQL.
    Admin,
    /// Scrape `/metrics`.
    Metrics,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Admin, Scope::Metrics];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    /// Whether a token with this scope may do what `needed` guards (`admin` may do
    /// everything).
    pub fn allows(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = ConsoleError;

    fn from_str(text: &str) -> Result<Self> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                ConsoleError::InvalidInput(format!(
                    "unknown scope `{text}`: a token's scope is read, admin or metrics"
                ))
            })
    }
}

/// A stored token: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The record's format.
    pub format: u32,
    /// The token's id (12 hex digits): what `apiary token revoke` takes.
    pub id: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was created (ms since the epoch, the store's clock).
    pub created_ms: i64,
    /// When it stops being honoured, if ever (ms since the epoch).
    pub expires_ms: Option<i64>,
    /// The SHA-256 of its secret, in hex.
    pub secret_sha256: String,
}

impl Token {
    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms >= at)
    }

    /// Whether one of its scopes allows `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| s.allows(needed))
    }

    /// The record as stored (`_tokens/{id}.json`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// A token just created: its record and the text to present, shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The stored record.
    pub token: Token,
    /// `apiary_{id}_{secret}`: the bearer token. It is not stored anywhere.
    pub text: String,
}

/// The tokens in the storage, with the records that could not be read.
#[derive(Debug, Clone, Default)]
pub struct TokenList {
    /// Readable tokens, by id.
    pub tokens: Vec<Token>,
    /// Records skipped, and why.
    pub problems: Vec<String>,
}

/// Creates, lists and revokes the tokens kept in one storage.
#[derive(Debug, Clone)]
pub struct TokenStore {
    backend: Arc<dyn StorageBackend>,
    random: Random,
}

impl TokenStore {
    /// The tokens of the storage behind `backend`.
    pub fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self {
            backend,
            random: Random::process(),
        }
    }

    /// Draws ids and secrets from `random` instead of the process's source.
    pub fn with_random(mut self, random: Random) -> Self {
        self.random = random;
        self
    }

    /// Creates a token with `scopes` (at least one), honoured until `expires_in` from now
    /// on the store's clock, or forever.
    pub async fn create(&self, scopes: &[Scope], expires_in: Option<Duration>) -> Result<NewToken> {
        if scopes.is_empty() {
            return Err(ConsoleError::InvalidInput(
                "a token needs at least one scope (read, admin or metrics)".into(),
            ));
        }
        if expires_in.is_some_and(|d| d.is_zero()) {
            return Err(ConsoleError::InvalidInput(
                "a token's expiry must be later than now (e.g. 30d, 12h)".into(),
            ));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let now = apiary_storage::store_now(self.backend.as_ref()).await?;
        let expires_ms = expires_in
            .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        loop {
            let id = self.hex(ID_HEX / 2);
            let secret = self.hex(SECRET_BYTES);
            let token = Token {
                format: FORMAT,
                id: id.clone(),
                scopes: scopes.clone(),
                created_ms: now,
                expires_ms,
                secret_sha256: digest(&secret),
            };
            let bytes = token.to_bytes();
            match self
                .backend
                .put_if_absent(&record_key(&id), bytes.into())
                .await?
            {
                CreateOutcome::Created(_) => {
                    return Ok(NewToken {
                        text: format!("{TOKEN_PREFIX}{id}_{secret}"),
                        token,
                    });
                }
                // Another token has this id (one chance in 2^48): draw again.
                CreateOutcome::AlreadyExists(_) => continue,
            }
        }
    }

    /// Every token, oldest first; records that cannot be read are skipped and named.
    pub async fn list(&self) -> Result<TokenList> {
        let listed = self.backend.list(&Path::from(TOKENS_DIR)).await?;
        let mut out = TokenList::default();
        for meta in listed {
            let Some(id) = id_of(&meta.key) else {
                out.problems
                    .push(format!("`{}` is not a token record: skipped", meta.key));
                continue;
            };
            match self.read_record(&meta.key, &id).await? {
                Some(Ok(token)) => out.tokens.push(token),
                Some(Err(problem)) => out
                    .problems
                    .push(format!("`{}`: {problem}: skipped", meta.key)),
                None => {}
            }
        }
        out.tokens
            .sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// The record at `key` (of token `id`): `None` when it was revoked meanwhile, the
    /// problem when it cannot be read as a token.
    async fn read_record(
        &self,
        key: &Path,
        id: &str,
    ) -> Result<Option<std::result::Result<Token, String>>> {
        match self.backend.get(key).await {
            Ok(object) => Ok(Some(parse_record(id, &object.bytes))),
            Err(e) if e.kind() == apiary_storage::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes the token `id`: from the next refresh of their tokens, no node honours it.
    pub async fn revoke(&self, id: &str) -> Result<Token> {
        let id = id.trim();
        if !valid_id(id) {
            return Err(ConsoleError::InvalidInput(format!(
                "`{id}` is not a token id: an id is the {ID_HEX} hex digits `apiary token \
                 list` shows"
            )));
        }
        let key = record_key(id);
        let object = match self.backend.get(&key).await {
            Ok(object) => object,
            Err(e) if e.kind() == apiary_storage::ErrorKind::NotFound => {
                return Err(ConsoleError::NotFound(format!(
                    "there is no token `{id}` (`apiary token list` shows the tokens)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let token = parse_record(id, &object.bytes).unwrap_or_else(|problem| {
            tracing::warn!(token = id, %problem, "revoking a token whose record is damaged");
            Token {
                format: FORMAT,
                id: id.to_string(),
                scopes: Vec::new(),
                created_ms: 0,
                expires_ms: None,
                secret_sha256: String::new(),
            }
        });
        self.backend.delete(&key).await?;
        Ok(token)
    }

    /// The tokens as a snapshot to check requests against (records that cannot be read
    /// are left out, with a warning).
    pub async fn load(&self) -> Result<Tokens> {
        self.refresh(&Tokens::default()).await
    }

    /// The tokens now, reading only the records `known` does not hold: records never
    /// change (a token is created once and revoked by deleting it), so a refresh costs one
    /// LIST, plus one GET per new token.
    pub async fn refresh(&self, known: &Tokens) -> Result<Tokens> {
        let listed = self.backend.list(&Path::from(TOKENS_DIR)).await?;
        let mut tokens = Vec::with_capacity(listed.len());
        for meta in listed {
            let Some(id) = id_of(&meta.key) else { continue };
            if let Some(token) = known.by_id.get(&id) {
                tokens.push(token.clone());
                continue;
            }
            match self.read_record(&meta.key, &id).await? {
                Some(Ok(token)) => tokens.push(token),
                Some(Err(problem)) => {
                    tracing::warn!(key = %meta.key, %problem, "a token record was skipped");
                }
                None => {}
            }
        }
        Ok(Tokens::from_list(tokens))
    }

    fn hex(&self, bytes: usize) -> String {
        let mut out = Vec::with_capacity(bytes);
        while out.len() < bytes {
            out.extend_from_slice(&self.random.next_u64().to_le_bytes());
        }
        out.truncate(bytes);
        hex::encode(out)
    }
}

/// The tokens a node honours, held in memory: checking a request costs no storage request.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_id: BTreeMap<String, Token>,
}

/// Why a request's token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization` header.
    #[error(
        "this needs a token: send `Authorization: Bearer apiary_…` (`apiary token create --scope {0}` makes one)"
    )]
    Missing(Scope),
    /// Not a bearer token of Apiary's form.
    #[error("the Authorization header is not `Bearer apiary_{{id}}_{{secret}}`")]
    Malformed,
    /// No such token, or a wrong secret (told apart for no one).
    #[error("the token is not known here (revoked, mistyped, or of another storage)")]
    Unknown,
    /// Past its expiry.
    #[error("token {0} has expired; create another with `apiary token create`")]
    Expired(String),
    /// Known and valid, but without the scope needed.
    #[error("token {id} may not do this: it needs the `{needed}` scope")]
    Scope {
        /// The token.
        id: String,
        /// The scope needed.
        needed: Scope,
    },
}

impl Denied {
    /// The HTTP status for it: 403 for a valid token without the scope, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Scope { .. } => 403,
            _ => 401,
        }
    }
}

impl Tokens {
    /// The snapshot of `tokens`.
    pub fn from_list(tokens: impl IntoIterator<Item = Token>) -> Self {
        Self {
            by_id: tokens.into_iter().map(|t| (t.id.clone(), t)).collect(),
        }
    }

    /// Whether there is no token at all.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Checks an `Authorization` header (`None` when there is none) for a token allowing
    /// `needed`, at `now_ms` on the checking node's clock.
    pub fn check(
        &self,
        authorization: Option<&str>,
        needed: Scope,
        now_ms: i64,
    ) -> std::result::Result<&Token, Denied> {
        let header = authorization.ok_or(Denied::Missing(needed))?;
        let (scheme, text) = header.trim().split_once(' ').ok_or(Denied::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::Malformed);
        }
        let (id, secret) = parse_token(text.trim()).ok_or(Denied::Malformed)?;
        let token = self.by_id.get(id).ok_or(Denied::Unknown)?;
        if !same(&digest(secret), &token.secret_sha256) {
            return Err(Denied::Unknown);
        }
        if token.expired(now_ms) {
            return Err(Denied::Expired(token.id.clone()));
        }
        if !token.allows(needed) {
            return Err(Denied::Scope {
                id: token.id.clone(),
                needed,
            });
        }
        Ok(token)
    }
}

/// The id and secret of a token's text, if it has Apiary's form.
fn parse_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, ID_HEX) && hex(secret, SECRET_BYTES * 2)).then_some((id, secret))
}

fn valid_id(id: &str) -> bool {
    id.len() == ID_HEX && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn record_key(id: &str) -> Path {
    Path::from(TOKENS_DIR).join(format!("{id}.json"))
}

/// The id a record's key names, if it is a token record's.
fn id_of(key: &Path) -> Option<String> {
    let parts: Vec<_> = key.parts().collect();
    let [dir, name] = parts.as_slice() else {
        return None;
    };
    let id = name.as_ref().strip_suffix(".json")?;
    (dir.as_ref() == TOKENS_DIR && valid_id(id)).then(|| id.to_string())
}

/// A stored record, checked against the id its key names.
fn parse_record(id: &str, bytes: &[u8]) -> std::result::Result<Token, String> {
    let token: Token =
        serde_json::from_slice(bytes).map_err(|e| format!("not a token record ({e})"))?;
    if token.format != FORMAT {
        return Err(format!(
            "token format {} is not one this version reads ({FORMAT})",
            token.format
        ));
    }
    if token.id != id {
        return Err(format!("the record names token `{}`", token.id));
    }
    if token.scopes.is_empty() {
        return Err("the record has no scope".into());
    }
    if token.secret_sha256.len() != 64 || hex::decode(&token.secret_sha256).is_err() {
        return Err("the record's digest is not a SHA-256".into());
    }
    Ok(token)
}

fn digest(secret: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// Compares two digests in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_is_parsed_strictly() {
        let secret = "ab".repeat(32);
        let good = format!("apiary_0123456789ab_{secret}");
        assert_eq!(parse_token(&good), Some(("0123456789ab", secret.as_str())));
        for bad in [
            "",
            "apiary_",
            "apiary_0123456789ab",
            &format!("apiary_0123456789a_{secret}"),
            &format!("apiary_0123456789ab_{}", &secret[1..]),
            &format!("apiary_0123456789ag_{secret}"),
            &format!("other_0123456789ab_{secret}"),
            &format!("apiary_0123456789ab_{secret}x"),
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn admin_allows_every_scope_and_the_others_only_their_own() {
        for needed in Scope::ALL {
            assert!(Scope::Admin.allows(needed));
        }
        assert!(Scope::Read.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Admin));
        assert!(!Scope::Read.allows(Scope::Metrics));
        assert!(!Scope::Metrics.allows(Scope::Read));
        assert_eq!("ADMIN".parse::<Scope>().unwrap(), Scope::Admin);
        let e = "write".parse::<Scope>().unwrap_err().to_string();
        assert!(e.contains("read, admin or metrics"), "{e}");
    }

    #[test]
    fn digests_compare_whole() {
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abcd", "abc"));
    }
}
