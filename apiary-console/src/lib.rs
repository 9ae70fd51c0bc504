//! Apiary's console: what an operator uses to look at a swarm from outside it.
//!
//! Every node can serve the console (`apiary node --http ADDR`): public probes
//! (`/healthz`, `/readyz`), Prometheus metrics (`/metrics`) and a JSON API (`/api/v1/…`),
//! each answered from the node's memory, so serving costs no storage request (see
//! [`server`]). Access is by bearer [`tokens`] with scopes (`read`, `admin`, `metrics`) and
//! an optional expiry, kept hashed in the shared storage, so that every node honours every
//! token with no per-node configuration.
//!
//! ```no_run
//! # async fn example(backend: std::sync::Arc<dyn apiary_storage::StorageBackend>) -> apiary_console::Result<()> {
//! use apiary_console::{Scope, TokenStore};
//! let store = TokenStore::new(backend);
//! let created = store.create(&[Scope::Read], None).await?;
//! println!("{}", created.text); // shown once; only its digest is stored
//! let tokens = store.load().await?;
//! let header = format!("Bearer {}", created.text);
//! assert!(tokens.check(Some(&header), Scope::Read, 0).is_ok());
//! # Ok(()) }
//! ```

pub mod api;
pub mod error;
mod handlers;
pub mod metrics;
pub mod server;
pub mod sql;
pub mod tokens;

pub use error::{ConsoleError, Result};
pub use metrics::{CacheFigures, NodeMetrics, QueryFigures};
pub use server::{Console, ConsoleConfig, ConsoleSource, serve};
pub use sql::{Rows, SqlFailure};
pub use tokens::{Denied, NewToken, Scope, Token, TokenList, TokenStore, Tokens};
