//! The admin HTTP endpoint, one per process: `/metrics`, `/livez`, `/readyz`,
//! `/status`, `/dht/stats`, `POST /connect`, and on peers the file and message API
//! that the `jantar-peer` subcommands use.
//!
//! It binds to loopback by default. When `admin.token` is set, every request but
//! `/livez` and `/readyz` must carry `Authorization: Bearer <token>`; a non-loopback
//! address requires a token.

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
    token: Option<std::sync::Arc<str>>,
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
        token: Option<String>,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let app = router(AppState {
            node,
            metrics,
            token: token.map(Into::into),
        });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    }
}

fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/dht/stats", get(dht_stats))
        .route("/connect", post(connect))
        .route("/files", get(files::list).post(files::share))
        .route("/files/{id}", get(files::progress).delete(files::remove))
        .route("/files/{id}/get", post(files::get))
        .route("/messages", get(files::messages).post(files::send))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(state)
}

async fn require_token(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_none_or(|g| !constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (admin.token)",
            );
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({"error": msg.into()}))).into_response()
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

/// The file and message API of peers.
mod files {
    use std::path::PathBuf;

    use axum::{
        Json,
        extract::{Path, Query, State},
        http::StatusCode,
        response::{IntoResponse, Response},
    };
    use serde::Deserialize;

    use super::{AppState, NODE_TIMEOUT, error};
    use crate::{
        files::{FileId, id::hash_file, protocol::MAX_FILE_SIZE},
        node::{FileCommand, share_name},
    };

    /// An error answer: status and message.
    pub(super) struct ApiError(StatusCode, String);

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            error(self.0, self.1)
        }
    }

    fn parse_id(s: &str) -> Result<FileId, ApiError> {
        s.parse()
            .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e))
    }

    async fn ask<T>(
        s: &AppState,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> FileCommand,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(NODE_TIMEOUT, s.node.files(make)).await {
            Ok(Ok(v)) => Ok(v),
            // Only peers answer file commands; other roles drop them.
            Ok(Err(_)) => Err(ApiError(
                StatusCode::NOT_FOUND,
                "this node does not hold files (only jantar-peer does)".into(),
            )),
            Err(_) => Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "node not responding".into(),
            )),
        }
    }

    fn result<T: serde::Serialize>(r: Result<T, String>, err: StatusCode) -> Response {
        match r {
            Ok(v) => Json(v).into_response(),
            Err(e) => error(err, e),
        }
    }

    #[derive(Deserialize)]
    pub(super) struct ShareQuery {
        path: PathBuf,
    }

    /// `POST /files?path=ABSOLUTE_PATH`: hash the file (off the event loop) and share it.
    pub(super) async fn share(State(s): State<AppState>, Query(q): Query<ShareQuery>) -> Response {
        if !q.path.is_absolute() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{} is not an absolute path", q.path.display()),
            );
        }
        let name = match share_name(&q.path) {
            Ok(n) => n,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        let path = q.path.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!("{} is not a regular file", path.display()));
            }
            if meta.len() > MAX_FILE_SIZE {
                return Err(format!(
                    "{} is larger than the {MAX_FILE_SIZE}-byte limit",
                    path.display()
                ));
            }
            hash_file(&path).map_err(|e| format!("{}: {e}", path.display()))
        })
        .await;
        let manifest = match hashed {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        match ask(&s, |reply| FileCommand::Share {
            path: q.path,
            name,
            manifest,
            reply,
        })
        .await
        {
            Ok(r) => result(r, StatusCode::INTERNAL_SERVER_ERROR),
            Err(e) => e.into_response(),
        }
    }

    pub(super) async fn list(State(s): State<AppState>) -> Response {
        match ask(&s, FileCommand::List).await {
            Ok((held, fetching)) => {
                Json(serde_json::json!({"files": held, "fetching": fetching})).into_response()
            }
            Err(e) => e.into_response(),
        }
    }

    pub(super) async fn progress(State(s): State<AppState>, Path(id): Path<String>) -> Response {
        let id = match parse_id(&id) {
            Ok(id) => id,
            Err(r) => return r.into_response(),
        };
        match ask(&s, |reply| FileCommand::Progress { id, reply }).await {
            Ok(Some(p)) => Json(p).into_response(),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                format!("no fetch of {id} on this node"),
            ),
            Err(e) => e.into_response(),
        }
    }

    #[derive(Deserialize)]
    pub(super) struct GetQuery {
        out: Option<PathBuf>,
    }

    /// `POST /files/{id}/get[?out=PATH]`: start fetching; poll `GET /files/{id}`.
    pub(super) async fn get(
        State(s): State<AppState>,
        Path(id): Path<String>,
        Query(q): Query<GetQuery>,
    ) -> Response {
        let id = match parse_id(&id) {
            Ok(id) => id,
            Err(r) => return r.into_response(),
        };
        if let Some(out) = &q.out
            && !out.is_absolute()
        {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{} is not an absolute path", out.display()),
            );
        }
        match ask(&s, |reply| FileCommand::Get {
            id,
            out: q.out,
            reply,
        })
        .await
        {
            Ok(r) => result(r, StatusCode::CONFLICT),
            Err(e) => e.into_response(),
        }
    }

    pub(super) async fn remove(State(s): State<AppState>, Path(id): Path<String>) -> Response {
        let id = match parse_id(&id) {
            Ok(id) => id,
            Err(r) => return r.into_response(),
        };
        match ask(&s, |reply| FileCommand::Remove { id, reply }).await {
            Ok(r) => result(r, StatusCode::NOT_FOUND),
            Err(e) => e.into_response(),
        }
    }

    #[derive(Deserialize)]
    pub(super) struct SendBody {
        text: String,
    }

    pub(super) async fn send(State(s): State<AppState>, Json(b): Json<SendBody>) -> Response {
        match ask(&s, |reply| FileCommand::Send {
            text: b.text,
            reply,
        })
        .await
        {
            Ok(r) => result(r, StatusCode::BAD_REQUEST),
            Err(e) => e.into_response(),
        }
    }

    #[derive(Deserialize)]
    pub(super) struct MessagesQuery {
        #[serde(default)]
        after: u64,
    }

    pub(super) async fn messages(
        State(s): State<AppState>,
        Query(q): Query<MessagesQuery>,
    ) -> Response {
        match ask(&s, |reply| FileCommand::Messages {
            after: q.after,
            reply,
        })
        .await
        {
            Ok(m) => Json(m).into_response(),
            Err(e) => e.into_response(),
        }
    }
}
