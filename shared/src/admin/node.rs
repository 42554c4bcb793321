//! The endpoints every role serves: metrics, liveness, readiness, status, DHT
//! statistics, known peers and `POST /connect`.

use std::time::Duration;

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::app::{AppState, NODE_TIMEOUT, unavailable};

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
        .into_response()
}

/// 200 while the event loop answers, 503 when it is stuck or gone.
pub(super) async fn livez(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.status()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "event loop not responding\n",
        )
            .into_response(),
    }
}

pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    if s.node.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

pub(super) async fn status(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.status()).await {
        Ok(Ok(st)) => Json(st).into_response(),
        _ => unavailable(),
    }
}

pub(super) async fn dht_stats(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.dht_stats()).await {
        Ok(Ok(st)) => Json(st).into_response(),
        _ => unavailable(),
    }
}

/// Every peer the node knows (the peer store), connected ones first, best first.
pub(super) async fn peers(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.peers()).await {
        Ok(Ok(p)) => Json(p).into_response(),
        _ => unavailable(),
    }
}

#[derive(Deserialize)]
pub(super) struct ConnectQuery {
    addr: String,
}

/// `POST /connect?addr=<multiaddr>`: dial and report the connection (direct or relayed).
pub(super) async fn connect(State(s): State<AppState>, Query(q): Query<ConnectQuery>) -> Response {
    let addr = match q.addr.parse() {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": format!("{:?} is not a multiaddr: {e}", q.addr)})),
            )
                .into_response();
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), s.node.connect(addr)).await {
        Ok(Ok(Ok(conn))) => Json(conn).into_response(),
        Ok(Ok(Err(e))) => (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({"error": e})),
        )
            .into_response(),
        Ok(Err(_)) => unavailable(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(serde_json::json!({"error": "dial timed out after 30s"})),
        )
            .into_response(),
    }
}

/// `POST /releases` with a signed release manifest as the body: verified as a received
/// one is, and announced; this node must hold every artifact it names.
pub(super) async fn publish_release(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    match tokio::time::timeout(
        Duration::from_secs(10),
        s.node.publish_release(body.to_vec()),
    )
    .await
    {
        Ok(Ok(Ok(info))) => Json(info).into_response(),
        Ok(Ok(Err(e))) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e})),
        )
            .into_response(),
        Ok(Err(_)) => unavailable(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "node not responding"})),
        )
            .into_response(),
    }
}
