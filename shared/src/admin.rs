//! The admin HTTP endpoint, one per process: `/metrics`, `/livez`, `/readyz`,
//! `/status`, `/dht/stats`, and `POST /connect`.
//!
//! It binds to loopback by default. It has no authentication: anyone who can reach it
//! can read the node's status and make it dial an address, so keep it on loopback or
//! behind a firewall.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::NodeClient;

/// How long a request waits for the event loop before the node counts as stuck.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot bind the admin endpoint to {addr}: {source}")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

#[derive(Clone)]
struct AppState {
    node: NodeClient,
    metrics: PrometheusHandle,
}

/// A bound admin listener; [`Admin::serve`] runs it until `cancel` fires.
pub struct Admin {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Admin {
    /// Binds before anything else starts, so a busy port fails start-up early.
    pub async fn bind(addr: SocketAddr) -> Result<Self, AdminBindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminBindError { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AdminBindError { addr, source })?;
        Ok(Admin { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn serve(
        self,
        node: NodeClient,
        metrics: PrometheusHandle,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let app = router(AppState { node, metrics });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/dht/stats", get(dht_stats))
        .route("/connect", post(connect))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
        .into_response()
}

/// 200 while the event loop answers, 503 when it is stuck or gone.
async fn livez(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.status()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "event loop not responding\n",
        )
            .into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.node.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": "node not responding"})),
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.status()).await {
        Ok(Ok(st)) => Json(st).into_response(),
        _ => unavailable(),
    }
}

async fn dht_stats(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(NODE_TIMEOUT, s.node.dht_stats()).await {
        Ok(Ok(st)) => Json(st).into_response(),
        _ => unavailable(),
    }
}

#[derive(Deserialize)]
struct ConnectQuery {
    addr: String,
}

/// `POST /connect?addr=<multiaddr>`: dial and report the connection (direct or relayed).
async fn connect(State(s): State<AppState>, Query(q): Query<ConnectQuery>) -> Response {
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

/// Asks a running node's `/readyz`; returns the HTTP status code. A wildcard address
/// (`0.0.0.0`, `::`) is asked on loopback.
pub async fn probe_ready(addr: SocketAddr) -> Result<u16, String> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let ask = async {
        let stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("no node answering at {target}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/readyz")
            .header("host", target.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .map_err(|_| format!("{target} did not answer within 3s"))?
}
