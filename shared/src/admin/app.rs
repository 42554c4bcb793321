//! What every handler shares: the node, the metrics handle and the access rules, and how an
//! error is answered.

use std::time::Duration;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::PrometheusHandle;

use super::auth::Access;
use crate::node::NodeClient;

/// How long a request waits for the event loop before the node counts as stuck.
pub(super) const NODE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) node: NodeClient,
    pub(super) metrics: PrometheusHandle,
    pub(super) access: Access,
}

pub(super) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({"error": msg.into()}))).into_response()
}

pub(super) fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": "node not responding"})),
    )
        .into_response()
}
