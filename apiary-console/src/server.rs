//! The console's HTTP server (axum): public probes, `/metrics` and the JSON API, each
//! answered from the serving node's memory (see [`ConsoleSource`]), behind the storage's
//! [`Tokens`].

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apiary_storage::Clock;
use apiary_swarm::WorldView;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::api;
use crate::error::{ConsoleError, Result};
use crate::metrics::{NodeMetrics, render};
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

struct Shared {
    source: Arc<dyn ConsoleSource>,
    tokens: RwLock<Arc<Tokens>>,
    /// Whether the tokens were read once (until then, nothing but the probes is served).
    loaded: std::sync::atomic::AtomicBool,
    config: ConsoleConfig,
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
            _ = stop.wait_for(|s| *s) => return,
            () = shared.config.clock.sleep(shared.config.token_refresh) => {}
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/swarm", get(swarm))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{id}", get(node))
        .route("/api/v1/nodes/{id}/drain", axum::routing::post(drain))
        .route("/api/v1/colony", get(colony))
        .fallback(not_found)
        .with_state(shared)
}

/// An error response: JSON naming the problem and what to do.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
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
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Lets the request through if it carries a token allowing `needed` (or the console is
/// insecure); the refusal otherwise.
fn authorize(
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

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.source.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// What a handler answers: its response, or why the request is not served.
type Answer = std::result::Result<Response, Refusal>;

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    authorize(&shared, &headers, Scope::Metrics)?;
    let view = shared.source.view();
    let text = render(&shared.source.metrics(), view.as_ref());
    let content_type = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// The node's view, for a request carrying a token allowing `needed`; the refusal when it
/// does not, or when the node is not running.
fn view_for(
    shared: &Shared,
    headers: &HeaderMap,
    needed: Scope,
) -> std::result::Result<WorldView, Refusal> {
    authorize(shared, headers, needed)?;
    shared.source.view().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is not running (starting or stopped)".into(),
        )
    })
}

async fn swarm(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    Ok(axum::Json(api::Swarm::of(&view, &shared.source.node_id())).into_response())
}

async fn nodes(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    let nodes = api::Nodes {
        served_by: shared.source.node_id(),
        nodes: view.nodes.iter().map(api::Node::of).collect(),
    };
    Ok(axum::Json(nodes).into_response())
}

async fn node(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    let node = view
        .nodes
        .iter()
        .find(|n| n.node_id.as_str() == id)
        .ok_or_else(|| {
            Refusal(
                StatusCode::NOT_FOUND,
                format!(
                    "no node `{id}` in this node's view of the swarm (GET /api/v1/nodes lists them)"
                ),
            )
        })?;
    Ok(axum::Json(api::Node::of(node)).into_response())
}

async fn colony(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    Ok(axum::Json(api::Colony::of(&view, &shared.source.node_id())).into_response())
}

async fn drain(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Answer {
    let view = view_for(&shared, &headers, Scope::Admin)?;
    let known = view
        .nodes
        .iter()
        .any(|n| n.node_id.as_str() == id && n.state != apiary_swarm::NodeState::Dead);
    if !known {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no live node `{id}` in this node's view of the swarm"),
        ));
    }
    let by = format!("the console of {}", shared.source.node_id());
    shared.source.drain(&id, &by).await.map_err(|why| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the drain request for `{id}` was not written: {why}"),
        )
    })?;
    let body = serde_json::json!({"node_id": id, "drain_requested": true});
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route: the console serves /healthz, /readyz, /metrics and \
         /api/v1/{swarm,colony,nodes,nodes/ID,nodes/ID/drain}",
    )
}
