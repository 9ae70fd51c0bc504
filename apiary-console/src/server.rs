//! The console's HTTP server (axum): public probes, `/metrics` and the JSON API, each
//! answered from the serving node's memory (see [`ConsoleSource`]), behind the storage's
//! [`Tokens`].

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apiary_storage::Clock;
use apiary_swarm::WorldView;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::api;
use crate::error::{ConsoleError, Result};
use crate::handlers::*;
use crate::metrics::NodeMetrics;
use crate::sql::{Rows, SqlFailure};
use crate::tokens::{Scope, TokenStore, Tokens};

/// What the console serves, read from the node's memory: serving a request makes no
/// storage request (only an action does: a drain writes its request).
#[async_trait::async_trait]
pub trait ConsoleSource: Send + Sync + 'static {
    /// The serving node's id.
    fn node_id(&self) -> String;
    /// The swarm as the node sees it now; `None` while the node is not running.
    fn view(&self) -> Option<WorldView>;
    /// Whether the node is ready to serve (its storage reachable, its first heartbeat
    /// written), or why not.
    fn readiness(&self) -> std::result::Result<(), String>;
    /// The node's own figures, for `/metrics`.
    fn metrics(&self) -> NodeMetrics;
    /// Asks node `node_id` to drain and leave, on behalf of `by`; the error says why not.
    async fn drain(&self, node_id: &str, by: &str) -> std::result::Result<(), String>;
    /// The frames the node holds open in its ledger cache, by name.
    fn frames(&self) -> Vec<api::Frame>;
    /// The statements the node runs now, oldest first.
    fn queries(&self) -> Vec<api::Query>;
    /// Asks statement `id` to stop, on behalf of `by`; false when no such statement runs.
    fn cancel_query(&self, id: &str, by: &str) -> bool;
    /// Runs `sql` (read-only), listed among the running queries while its rows stream.
    async fn sql(&self, sql: &str) -> std::result::Result<Rows, SqlFailure>;
}

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Serves everything without tokens (a laptop, a machine only its owner reaches).
    pub insecure: bool,
    /// How often the tokens are read again from the storage: a token created or revoked
    /// takes effect within this (each refresh is one LIST, plus one GET per new token).
    pub token_refresh: Duration,
    /// The clock token expiry is judged on and refreshes wait on.
    pub clock: Arc<dyn Clock>,
}

impl ConsoleConfig {
    /// The defaults at `addr`: tokens required, read again every minute.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            insecure: false,
            token_refresh: Duration::from_secs(60),
            clock: apiary_storage::SystemClock::shared(),
        }
    }
}

/// A running console; stops when [`Console::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct Console {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Console {
    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) struct Shared {
    pub(crate) source: Arc<dyn ConsoleSource>,
    tokens: RwLock<Arc<Tokens>>,
    /// Whether the tokens were read once (until then, nothing but the probes is served).
    loaded: std::sync::atomic::AtomicBool,
    pub(crate) config: ConsoleConfig,
}

/// Starts the console on `config.addr`, checking requests against the tokens of `store`.
pub async fn serve(
    source: Arc<dyn ConsoleSource>,
    store: TokenStore,
    config: ConsoleConfig,
) -> Result<Console> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| {
            ConsoleError::InvalidInput(format!(
                "the console cannot listen on {}: {e} (choose another --http address)",
                config.addr
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConsoleError::Internal(format!("the console's address: {e}")))?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        source,
        tokens: RwLock::new(Arc::new(Tokens::default())),
        loaded: std::sync::atomic::AtomicBool::new(false),
        config,
    });
    if !shared.config.insecure {
        tokio::spawn(refresh_tokens(Arc::clone(&shared), store, stopped.clone()));
    }
    let app = router(Arc::clone(&shared));
    let mut until = stopped;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = until.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the console stopped");
        }
    });
    tracing::info!(%addr, insecure = shared.config.insecure, "console listening");
    Ok(Console { addr, stop })
}

/// Reads the tokens now and after every refresh interval, until stopped.
async fn refresh_tokens(shared: Arc<Shared>, store: TokenStore, mut stop: watch::Receiver<bool>) {
    let mut warned = false;
    loop {
        let known = Arc::clone(&shared.tokens.read().unwrap_or_else(|p| p.into_inner()));
        match store.refresh(&known).await {
            Ok(tokens) => {
                if tokens.is_empty() && !warned {
                    warned = true;
                    tracing::warn!(
                        "the console serves no API until an access token exists: create one \
                         with `apiary token create --scope read` (or start the node with \
                         --http-insecure on a machine only you can reach)"
                    );
                }
                *shared.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
                shared
                    .loaded
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "reading the access tokens failed; retrying"),
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = shared.config.clock.sleep(shared.config.token_refresh) => {}
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(ui))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/swarm", get(swarm))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{id}", get(node))
        .route("/api/v1/nodes/{id}/drain", axum::routing::post(drain))
        .route("/api/v1/colony", get(colony))
        .route("/api/v1/frames", get(frames))
        .route("/api/v1/queries", get(queries))
        .route("/api/v1/queries/{id}", axum::routing::delete(cancel_query))
        .route("/api/v1/sql", axum::routing::post(sql))
        .fallback(not_found)
        .with_state(shared)
}

/// An error response: JSON naming the problem and what to do.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = api::Error {
        status: status.as_u16(),
        error: message.into(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Why a request is not served: its status and what to do.
pub(crate) struct Refusal(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Lets the request through if it carries a token allowing `needed` (or the console is
/// insecure); the refusal otherwise.
pub(crate) fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    needed: Scope,
) -> std::result::Result<(), Refusal> {
    if shared.config.insecure {
        return Ok(());
    }
    let tokens = Arc::clone(&shared.tokens.read().unwrap_or_else(|p| p.into_inner()));
    if tokens.is_empty() {
        let why = if shared.loaded.load(std::sync::atomic::Ordering::Acquire) {
            "no access token exists yet: create one with `apiary token create --scope read` \
             (nodes honour it within a minute), or start the node with --http-insecure on a \
             machine only you can reach"
        } else {
            "the node has not read its access tokens yet; try again in a moment"
        };
        return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, why.into()));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let now = shared.config.clock.wall_ms();
    tokens
        .check(authorization, needed, now)
        .map(|_| ())
        .map_err(|denied| {
            let status = StatusCode::from_u16(denied.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            Refusal(status, denied.to_string())
        })
}
