//! The console's request handlers: each reads the serving node's memory through its
//! [`ConsoleSource`](crate::ConsoleSource) after checking the request's token.

use std::sync::Arc;

use apiary_swarm::WorldView;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api;
use crate::metrics::render;
use crate::server::{Refusal, Shared, authorize, error};
use crate::tokens::Scope;

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.source.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// What a handler answers: its response, or why the request is not served.
type Answer = std::result::Result<Response, Refusal>;

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
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

pub(crate) async fn swarm(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    Ok(axum::Json(api::Swarm::of(&view, &shared.source.node_id())).into_response())
}

/// `?history=false` of `GET /api/v1/nodes`: leaves the nodes' histories out (a page that
/// refreshes its table often and its charts rarely).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct NodesParams {
    history: Option<bool>,
}

pub(crate) async fn nodes(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<NodesParams>,
    headers: HeaderMap,
) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    let mut nodes: Vec<api::Node> = view.nodes.iter().map(api::Node::of).collect();
    if params.history == Some(false) {
        nodes.iter_mut().for_each(|n| n.history.clear());
    }
    let nodes = api::Nodes {
        served_by: shared.source.node_id(),
        nodes,
    };
    Ok(axum::Json(nodes).into_response())
}

pub(crate) async fn node(
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

pub(crate) async fn colony(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    let view = view_for(&shared, &headers, Scope::Read)?;
    Ok(axum::Json(api::Colony::of(&view, &shared.source.node_id())).into_response())
}

pub(crate) async fn drain(
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

pub(crate) async fn frames(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    authorize(&shared, &headers, Scope::Read)?;
    let frames = api::Frames {
        served_by: shared.source.node_id(),
        frames: shared.source.frames(),
    };
    Ok(axum::Json(frames).into_response())
}

pub(crate) async fn queries(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    authorize(&shared, &headers, Scope::Read)?;
    let queries = api::Queries {
        served_by: shared.source.node_id(),
        queries: shared.source.queries(),
    };
    Ok(axum::Json(queries).into_response())
}

pub(crate) async fn cancel_query(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&shared, &headers, Scope::Admin)?;
    let by = format!("the console of {}", shared.source.node_id());
    if !shared.source.cancel_query(&id, &by) {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!(
                "no query `{id}` runs on this node (it may have ended; GET /api/v1/queries \
                 lists the running ones)"
            ),
        ));
    }
    let body = serde_json::json!({"id": id, "cancel_requested": true});
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// `?format=json|arrow` of `POST /api/v1/sql`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SqlParams {
    format: Option<String>,
}

pub(crate) async fn sql(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, Scope::Admin)?;
    let bad = |e: String| Refusal(StatusCode::BAD_REQUEST, e);
    let format = crate::sql::format(&headers, params.format.as_deref()).map_err(bad)?;
    let statement = crate::sql::statement(&headers, &body).map_err(bad)?;
    let rows = shared
        .source
        .sql(&statement)
        .await
        .map_err(|f| Refusal(f.status(), f.message))?;
    Ok(crate::sql::respond(rows, format))
}

/// The page, embedded in the binary.
const UI: &str = include_str!("ui/index.html");

/// `GET /ui`: the console's one page. It holds no data (its script fetches the API with
/// the token typed into it), so it is served without a token.
pub(crate) async fn ui() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self'; frame-ancestors 'none'",
            ),
        ],
        UI,
    )
        .into_response()
}

/// `GET /`: to the page.
pub(crate) async fn root() -> Response {
    axum::response::Redirect::to("/ui").into_response()
}

pub(crate) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route: the console serves /healthz, /readyz, /metrics and \
         /api/v1/{swarm,colony,nodes,nodes/ID,nodes/ID/drain,frames,queries,queries/ID,sql} \
         and the page /ui",
    )
}
