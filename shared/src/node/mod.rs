//! The node: one task that owns the swarm, answers commands from the admin endpoint and
//! tests over a bounded channel, and shuts down within a grace period.
//!
//! The swarm's state is split into parts, each owning its own and taking the swarm (or
//! the behaviour it needs) as an argument; [`event_loop`] is the one place that routes
//! every swarm event, timer and command to them:
//!
//! | part | owns |
//! |------|------|
//! | [`connections`] | the connection table, listeners not bound yet, `POST /connect` dials, connection gauges |
//! | [`dht`] | bootstrap contact and retries, DHT servers seen, the provider records this node publishes, served-query counts |
//! | [`discovery`] | Jantar peers found through mDNS and the DHT, and dialing them |
//! | [`reachability`] | NAT status (AutoNAT), the DHT mode that follows it, hole punching (DCUtR), UPnP |
//! | [`relay_client`] | relays known, and which to hold reservations on while private ([`reservations`] keeps their state and backoff) |
//! | [`relay_server`] | what a relay carries: reservations, circuits, refusals |
//! | [`files`] | (peers) sharing, fetching, serving, gossip and replication |
//! | [`peering`] | the peer store and scores, trimming above the high watermark, dialing known peers below the low one |
//! | [`subscriptions`] | (peers) Jantar peers whose gossip subscriptions have not arrived, and reconnecting those overdue |
//! | [`updates`] | (peers that trust release keys) release manifests verified before they are forwarded, the newest kept, its artifact fetched and staged |
//!
//! [`command`] holds the requests the admin endpoint sends; the event loop's `report`
//! assembles `/status` and `/dht/stats` from the parts.

mod announce;
mod command;
mod connections;
mod dht;
mod discovery;
mod event_loop;
mod files;
mod peering;
mod reachability;
mod relay_client;
mod relay_server;
mod reservations;
mod subscriptions;
mod updates;

use std::{sync::Arc, time::Duration};

pub use command::{Command, FileCommand, Lookup};
use libp2p::{Multiaddr, PeerId, Swarm, identity::Keypair};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    behaviour::Behaviour,
    config::{Config, Role},
    error::ErrorChain,
    status::{ConnectionStatus, DhtStats, PeerScoreStatus, Status},
    transport::{TransportError, build_swarm},
};

/// How long start-up waits for every listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("listeners did not report their addresses within {0:?}")]
    ListenTimeout(Duration),
    #[error("the node stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] crate::files::store::StoreError),
    #[error(transparent)]
    Geo(#[from] crate::peering::geo::GeoError),
}

/// A handle to a running node: address getters, commands, shutdown.
#[derive(Debug)]
pub struct NodeHandle {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    commands: mpsc::Sender<Command>,
    ready: watch::Receiver<bool>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
    staged: watch::Receiver<Option<crate::release::install::Binary>>,
}

impl NodeHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Addresses the node was listening on once start-up finished.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    pub fn client(&self) -> NodeClient {
        NodeClient {
            commands: self.commands.clone(),
            ready: self.ready.clone(),
        }
    }

    /// Starts a graceful shutdown; `join` waits for it.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// A token that starts the graceful shutdown when cancelled (for a supervisor that
    /// owns the task through [`NodeHandle::into_task`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the node to stop. Returns false if connections were still open when the
    /// grace period ran out, or if the event loop died.
    pub async fn join(self) -> bool {
        self.task.await.unwrap_or(false)
    }

    /// A staged release the node wants run in its place (`auto_update: apply`); the
    /// process shuts the node down and hands over (see [`crate::release::install`]).
    pub fn staged_release(&self) -> watch::Receiver<Option<crate::release::install::Binary>> {
        self.staged.clone()
    }

    /// The event loop's task, for a supervisor: it ends with `true` after a clean
    /// shutdown, `false` when connections outlived the grace period, and with an error
    /// when the loop panicked.
    pub fn into_task(self) -> tokio::task::JoinHandle<bool> {
        self.task
    }
}

/// The cloneable part of a handle that the admin endpoint uses.
#[derive(Debug, Clone)]
pub struct NodeClient {
    commands: mpsc::Sender<Command>,
    ready: watch::Receiver<bool>,
}

impl NodeClient {
    /// Ready, and the event loop still running: a dead loop is never ready, whatever
    /// it last reported.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow() && !self.commands.is_closed()
    }

    /// Waits until the node is ready.
    pub async fn wait_ready(&mut self) -> Result<(), NodeError> {
        self.ready
            .wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Stopped)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    pub async fn dht_stats(&self) -> Result<DhtStats, NodeError> {
        self.ask(Command::DhtStats).await
    }

    /// Every known peer with its score, best first.
    pub async fn peers(&self) -> Result<Vec<PeerScoreStatus>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Sends a file or message command and waits for its answer.
    pub async fn files<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> FileCommand,
    ) -> Result<T, NodeError> {
        self.ask(|tx| Command::Files(make(tx))).await
    }

    /// Looks up the peers closest to `key` through the DHT (an iterative FIND_NODE).
    pub async fn find_node(&self, key: PeerId) -> Result<Lookup, NodeError> {
        self.ask(|reply| Command::FindNode { key, reply }).await
    }

    /// Verifies a signed release manifest and announces it.
    pub async fn publish_release(
        &self,
        manifest: Vec<u8>,
    ) -> Result<Result<crate::status::ReleaseInfo, String>, NodeError> {
        self.ask(|reply| Command::PublishRelease { manifest, reply })
            .await
    }

    pub async fn connect(
        &self,
        addr: Multiaddr,
    ) -> Result<Result<ConnectionStatus, String>, NodeError> {
        self.ask(|reply| Command::Connect { addr, reply }).await
    }
}

/// Builds the swarm, binds every listener and spawns the event loop.
pub async fn start(config: Arc<Config>, key: Keypair) -> Result<NodeHandle, NodeError> {
    let tls = crate::tls::load(&config)?;
    let swarm = build_swarm(&config, key, tls)?;
    start_with_swarm(config, swarm).await
}

/// Like [`start`], with a swarm built by the caller (tests use the memory transport).
pub async fn start_with_swarm(
    config: Arc<Config>,
    mut swarm: Swarm<Behaviour>,
) -> Result<NodeHandle, NodeError> {
    let peer_id = *swarm.local_peer_id();
    let mut listeners = Vec::new();
    for addr in &config.network.listen_addresses {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.clone(),
                reason: ErrorChain(&e).to_string(),
            })?;
        listeners.push(id);
    }
    for addr in &config.network.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    let files = match config.role {
        Role::Peer => Some(files::FileService::new(
            peer_id,
            crate::files::store::Store::open(&config.data_dir, config.max_storage_size)?,
            files::Policy::from_config(&config),
        )),
        _ => None,
    };

    let (ready_tx, ready_rx) = watch::channel(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (listening_tx, listening_rx) = oneshot::channel();
    let cancel = CancellationToken::new();
    let span = tracing::info_span!("node", role = config.role.as_str(), peer = %peer_id);
    let peering = peering::Peering::new(&config, peer_id)?;
    let (staged_tx, staged_rx) = watch::channel(None);
    let updates = match config.role {
        Role::Peer => updates::Updates::new(peer_id, &config.update, &config.data_dir, staged_tx),
        _ => None,
    };
    let event_loop =
        event_loop::EventLoop::new(&config, swarm, listeners, files, peering, updates, ready_tx);
    let task = tokio::spawn(
        event_loop
            .run(cmd_rx, cancel.clone(), listening_tx)
            .instrument(span),
    );
    let listen_addrs = match tokio::time::timeout(LISTEN_TIMEOUT, listening_rx).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(_)) => return Err(NodeError::Stopped),
        Err(_) => {
            cancel.cancel();
            return Err(NodeError::ListenTimeout(LISTEN_TIMEOUT));
        }
    };
    Ok(NodeHandle {
        peer_id,
        listen_addrs,
        commands: cmd_tx,
        ready: ready_rx,
        cancel,
        task,
        staged: staged_rx,
    })
}
