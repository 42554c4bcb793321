//! The file and message API of peers: what the `jantar-peer` client commands call.

use std::{path::PathBuf, time::Duration};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::app::{AppState, NODE_TIMEOUT, error};
use crate::{
    files::{
        FileId,
        id::hash_file,
        protocol::{MAX_FILE_SIZE, share_name},
    },
    node::FileCommand,
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
        Ok(list) => Json(list).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ProgressQuery {
    /// Milliseconds to wait for a running fetch to finish before answering.
    #[serde(default)]
    wait_ms: u64,
}

/// The longest `GET /files/{id}?wait_ms=` waits: below the client's own timeout.
pub(super) const MAX_PROGRESS_WAIT: Duration = Duration::from_secs(30);

/// `GET /files/{id}[?wait_ms=N]`: where the fetch of `id` stands. With `wait_ms`, a
/// running fetch answers as soon as it finishes, or after `N` ms (at most
/// [`MAX_PROGRESS_WAIT`]) with its progress: `get` learns of the end at once instead
/// of at its next poll.
pub(super) async fn progress(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ProgressQuery>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let wait = Duration::from_millis(q.wait_ms).min(MAX_PROGRESS_WAIT);
    let waited = if wait.is_zero() {
        None
    } else {
        let parked = s.node.files(|reply| FileCommand::Progress {
            id,
            wait: true,
            reply,
        });
        tokio::time::timeout(wait, parked)
            .await
            .ok()
            .and_then(Result::ok)
    };
    let answer = match waited {
        Some(p) => Ok(p),
        None => {
            ask(&s, |reply| FileCommand::Progress {
                id,
                wait: false,
                reply,
            })
            .await
        }
    };
    match answer {
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

/// `POST /files/{id}/get[?out=PATH]`: start fetching; poll `GET /files/{id}[?wait_ms=N]`.
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
