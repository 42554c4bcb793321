//! The admin HTTP endpoint, one per process: `/metrics`, `/livez`, `/readyz`,
//! `/status`, `/dht/stats`, `/peers`, `POST /connect`, and on peers the file and message API
//! that the `jantar-peer` subcommands use.
//!
//! It binds to loopback by default. Web pages in the user's browser are refused, and
//! every change needs a bearer token: `admin.token` (required on a non-loopback
//! address, and then needed for reads too), else the one the node keeps in
//! `<data_dir>/admin.token` ([`token`]). See [`auth`] for the rules. Bodies are capped
//! at 16 KiB. [`node`] serves what every role has, [`files`] the peer's file API;
//! [`client`] is the other end, as the command line uses it.

use std::net::SocketAddr;

mod app;
mod auth;
pub mod client;
mod files;
mod node;
pub mod token;

use app::AppState;
pub use auth::Access;
use axum::{
    Router,
    routing::{get, post},
};
pub use client::{AdminClient, ClientError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::NodeClient;

/// The largest request body read (`POST /messages` carries at most 4096 bytes of text).
const MAX_BODY: usize = 16 * 1024;

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
        access: Access,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        fail::fail_point!("admin::serve", |_| Err(std::io::Error::other(
            "injected fault"
        )));
        let app = router(AppState {
            node,
            metrics,
            access,
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
        .route("/peers", get(node::peers))
        .route("/connect", post(node::connect))
        .route("/files", get(files::list).post(files::share))
        .route("/files/{id}", get(files::progress).delete(files::remove))
        .route("/files/{id}/get", post(files::get))
        .route("/messages", get(files::messages).post(files::send))
        .route("/releases", post(node::publish_release))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/livez", get(node::livez))
        .route("/readyz", get(node::readyz))
        .merge(guarded)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::refuse_browsers,
        ))
        // Requests carry a message of at most 4096 bytes, or nothing: a larger body is
        // refused (413) before it is read, whether or not the handler reads one.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}
