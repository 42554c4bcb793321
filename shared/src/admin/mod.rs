//! The admin HTTP endpoint, one per process: `/metrics`, `/livez`, `/readyz`,
//! `/status`, `/dht/stats`, `POST /connect`, and on peers the file and message API
//! that the `jantar-peer` subcommands use.
//!
//! It binds to loopback by default. When `admin.token` is set, every request but
//! `/livez` and `/readyz` must carry `Authorization: Bearer <token>` ([`auth`]); a
//! non-loopback address requires a token. [`node`] serves what every role has,
//! [`files`] the peer's file API; [`client`] is the other end, as the command line
//! uses it.

use std::net::SocketAddr;

mod app;
mod auth;
pub mod client;
mod files;
mod node;

use app::AppState;
use axum::{
    Router,
    routing::{get, post},
};
pub use client::{AdminClient, ClientError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::NodeClient;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind the admin endpoint to {addr}: {source}")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
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
        fail::fail_point!("admin::serve", |_| Err(std::io::Error::other(
            "injected fault"
        )));
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
        .route("/metrics", get(node::metrics))
        .route("/status", get(node::status))
        .route("/dht/stats", get(node::dht_stats))
        .route("/connect", post(node::connect))
        .route("/files", get(files::list).post(files::share))
        .route("/files/{id}", get(files::progress).delete(files::remove))
        .route("/files/{id}/get", post(files::get))
        .route("/messages", get(files::messages).post(files::send))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/livez", get(node::livez))
        .route("/readyz", get(node::readyz))
        .merge(guarded)
        .with_state(state)
}
