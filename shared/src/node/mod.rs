//! The node: one task that owns the swarm, answers commands from the admin endpoint and
//! tests over a bounded channel, and shuts down within a grace period.

mod discovery;
pub use discovery::{PEERS_KEY, RELAYS_KEY};
mod events;
mod files;
pub use files::{FileCommand, FileInfo, MessageRecord, share_name};

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::transport::ListenerId,
    identity::Keypair,
    kad,
    multiaddr::Protocol,
    swarm::{
        ConnectionId,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    behaviour::Behaviour,
    config::{Config, RelayReservations, Role},
    metrics as m,
    status::{
        BucketStatus, ConnectionKind, ConnectionStatus, DhtStats, NatStatus, RelayServerStatus,
        ReservationStatus, Status,
    },
    transport::{TransportError, build_swarm},
};

/// How long start-up waits for every listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait between attempts to reach the bootstrap nodes.
const BOOTSTRAP_RETRY_MIN: Duration = Duration::from_secs(1);
const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often timers (bootstrap retries, relay reservations) are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

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
}

/// Requests to the event loop; each carries the channel for its answer.
#[derive(Debug)]
pub enum Command {
    Status(oneshot::Sender<Status>),
    DhtStats(oneshot::Sender<DhtStats>),
    /// Dial an address and answer once the connection is up or has failed.
    Connect {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<ConnectionStatus, String>>,
    },
    /// Files and messages (peers only).
    Files(FileCommand),
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

    /// Waits for the node to stop. Returns false if connections were still open when the
    /// grace period ran out.
    pub async fn join(self) -> bool {
        self.task.await.unwrap_or(false)
    }
}

/// The cloneable part of a handle that the admin endpoint uses.
#[derive(Debug, Clone)]
pub struct NodeClient {
    commands: mpsc::Sender<Command>,
    ready: watch::Receiver<bool>,
}

impl NodeClient {
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
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

    /// Sends a file or message command and waits for its answer.
    pub async fn files<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> FileCommand,
    ) -> Result<T, NodeError> {
        self.ask(|tx| Command::Files(make(tx))).await
    }

    pub async fn connect(
        &self,
        addr: Multiaddr,
    ) -> Result<Result<ConnectionStatus, String>, NodeError> {
        self.ask(|reply| Command::Connect { addr, reply }).await
    }
}

#[derive(Debug, Clone)]
struct ConnInfo {
    peer: PeerId,
    addr: Multiaddr,
    outbound: bool,
    kind: ConnectionKind,
    since: Instant,
}

/// A relay reservation this peer holds or is working towards.
///
/// The relay is dialed first and the reservation requested on the established
/// connection. Letting the relay client dial by itself makes libp2p race the
/// configured address against the same address offered by other behaviours (with and
/// without `/p2p`); over QUIC both attempts share one UDP 4-tuple, and when the
/// losing attempt is closed the relay can end up keeping the other half-open
/// connection, so the reservation is held on a connection that carries nothing.
#[derive(Debug, Clone)]
struct Reservation {
    /// `None` while the relay is being dialed.
    listener: Option<ListenerId>,
    accepted: bool,
    addr: Option<Multiaddr>,
    /// When the dial or the request started.
    since: Instant,
}

#[derive(Debug, Default)]
struct RelayServerState {
    serving: bool,
    reservations: HashMap<PeerId, usize>,
    circuits: usize,
    reservations_denied: u64,
    circuits_denied: u64,
}

/// The event loop's state besides the swarm.
struct Node {
    config: Arc<Config>,
    swarm: Swarm<Behaviour>,
    peer_id: PeerId,
    ready_tx: watch::Sender<bool>,
    /// Listeners that have not reported an address yet.
    pending_listeners: HashSet<ListenerId>,
    connections: HashMap<ConnectionId, ConnInfo>,
    nat: NatStatus,
    /// Relays known by peer id, with addresses known to reach them.
    relays: HashMap<PeerId, Vec<Multiaddr>>,
    reservations: HashMap<PeerId, Reservation>,
    /// Relays to leave alone until the given time after a failed reservation.
    relay_backoff: HashMap<PeerId, Instant>,
    discovered: HashSet<PeerId>,
    pending_connects: HashMap<ConnectionId, oneshot::Sender<Result<ConnectionStatus, String>>>,
    queries_served: BTreeMap<&'static str, u64>,
    relay_server: RelayServerState,
    /// Provider records this node publishes, and whether they are current.
    provided: HashMap<kad::RecordKey, bool>,
    bootstrapped: bool,
    /// Connected peers that serve the DHT (per identify).
    dht_servers: HashSet<PeerId>,
    /// Files and messages (peers only).
    files: Option<files::FileState>,
    /// Retries the bootstrap nodes while not joined.
    bootstrap_retry: crate::backoff::Backoff,
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
    let mut pending_listeners = HashSet::new();
    for addr in &config.network.listen_addresses {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.clone(),
                reason: events::error_chain(&e),
            })?;
        pending_listeners.insert(id);
    }
    for addr in &config.network.external_addresses {
        swarm.add_external_address(addr.clone());
    }

    let (ready_tx, ready_rx) = watch::channel(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (listening_tx, listening_rx) = oneshot::channel();
    let cancel = CancellationToken::new();

    let mut node = Node {
        config: config.clone(),
        swarm,
        peer_id,
        ready_tx,
        pending_listeners,
        connections: HashMap::new(),
        nat: NatStatus::Unknown,
        relays: HashMap::new(),
        reservations: HashMap::new(),
        relay_backoff: HashMap::new(),
        discovered: HashSet::new(),
        pending_connects: HashMap::new(),
        queries_served: BTreeMap::new(),
        relay_server: RelayServerState::default(),
        provided: HashMap::new(),
        bootstrapped: false,
        dht_servers: HashSet::new(),
        files: None,
        bootstrap_retry: crate::backoff::Backoff::new(BOOTSTRAP_RETRY_MIN, BOOTSTRAP_RETRY_MAX),
    };
    if config.role == Role::Peer {
        let store = crate::files::store::Store::open(&config.data_dir, config.max_storage_size)?;
        let state = files::FileState::new(
            store,
            config.download_dir.clone(),
            config.min_file_size,
            config.upload_rate_limit,
        );
        for id in state.held_ids() {
            node.provided.insert(id.dht_key(), false);
        }
        node.files = Some(state);
    }
    metrics::gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => config.role.as_str())
        .set(1.0);
    node.set_nat(NatStatus::Unknown);
    // Every gauge exists from the start, at zero, so dashboards and alerts see it.
    node.update_connection_gauges();
    node.update_routing_gauges();
    node.update_reservation_gauge();
    if config.role == Role::Relay {
        metrics::gauge!(m::RELAY_RESERVATIONS).set(0.0);
        metrics::gauge!(m::RELAY_CIRCUITS).set(0.0);
    }

    let task = tokio::spawn(node.run(cmd_rx, cancel.clone(), listening_tx));
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
    })
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
        listening: oneshot::Sender<Vec<Multiaddr>>,
    ) -> bool {
        let mut listening = Some(listening);
        let mut discovery = tokio::time::interval(self.config.network.dht.discovery_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Sent from the event loop itself, so a stuck loop stops the heartbeats.
        let mut watchdog = crate::systemd::watchdog_interval().map(tokio::time::interval);
        loop {
            if self.pending_listeners.is_empty()
                && let Some(tx) = listening.take()
            {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
                // Dial out only once every listener is bound, so that TCP dials reuse
                // the listening port (what the other side observes, and what hole
                // punching needs) instead of an ephemeral one.
                self.join_network();
            }
            let joined = listening.is_none();
            tokio::select! {
                _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                    crate::systemd::watchdog();
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(cmd) = commands.recv() => self.on_command(cmd),
                _ = discovery.tick(), if joined => self.discover(),
                _ = housekeeping.tick(), if joined => self.housekeeping(),
                _ = cancel.cancelled() => break,
            }
            self.update_ready();
        }
        self.drain().await
    }

    /// Closes every connection and keeps driving the swarm until they are gone or the
    /// grace period is over.
    async fn drain(mut self) -> bool {
        let grace = self.config.shutdown_grace_period;
        info!(
            connections = self.connections.len(),
            ?grace,
            "shutting down"
        );
        let ids: Vec<ListenerId> = self
            .reservations
            .values()
            .filter_map(|r| r.listener)
            .collect();
        for id in ids {
            self.swarm.remove_listener(id);
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in peers {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.swarm.network_info().num_peers() > 0 {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.on_swarm_event(event),
                Err(_) => {
                    warn!(
                        open = self.swarm.network_info().num_peers(),
                        ?grace,
                        "connections still open when the shutdown grace period ran out"
                    );
                    return false;
                }
            }
        }
        true
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::DhtStats(tx) => {
                let _ = tx.send(self.dht_stats());
            }
            Command::Files(cmd) => self.on_file_command(cmd),
            Command::Connect { addr, reply } => {
                let opts = match peer_of(&addr) {
                    // Asked for explicitly: dial even if already connected another way.
                    Some(peer) => DialOpts::peer_id(peer)
                        .condition(PeerCondition::Always)
                        .addresses(vec![addr.clone()])
                        .build(),
                    None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_connects.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!(
                            "cannot dial {addr}: {}",
                            events::error_chain(&e)
                        )));
                    }
                }
            }
        }
    }

    fn is_ready(&mut self) -> bool {
        if !self.pending_listeners.is_empty() {
            return false;
        }
        let net = &self.config.network;
        let others = net
            .bootstrap_nodes
            .iter()
            .any(|b| b.peer_id != self.peer_id);
        match self.config.role {
            Role::Bootstrap => !others || self.joined(),
            Role::Relay => self.relay_server.serving,
            Role::Peer => !net.dht.enabled || !others || self.joined(),
        }
    }

    fn update_ready(&mut self) {
        let ready = self.is_ready();
        self.ready_tx.send_if_modified(|r| {
            if *r != ready {
                *r = ready;
                true
            } else {
                false
            }
        });
    }

    /// Connected to at least one DHT server: in touch with the network. (The routing
    /// table alone does not tell: configured bootstrap nodes are in it from the start.)
    fn joined(&self) -> bool {
        !self.dht_servers.is_empty()
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .as_mut()
            .map_or(0, |k| k.kbuckets().map(|b| b.num_entries()).sum())
    }

    fn status(&mut self) -> Status {
        let now = Instant::now();
        let mut connections: Vec<ConnectionStatus> = self
            .connections
            .values()
            .map(|c| ConnectionStatus {
                peer_id: c.peer.to_string(),
                address: c.addr.to_string(),
                direction: if c.outbound { "outbound" } else { "inbound" }.into(),
                kind: c.kind,
                age_secs: now.duration_since(c.since).as_secs(),
            })
            .collect();
        connections.sort_by(|a, b| a.peer_id.cmp(&b.peer_id).then(a.address.cmp(&b.address)));
        let mut reservations: Vec<ReservationStatus> = self
            .reservations
            .iter()
            .map(|(relay, r)| ReservationStatus {
                relay: relay.to_string(),
                state: if r.accepted { "active" } else { "pending" }.into(),
                address: r.addr.as_ref().map(|a| a.to_string()),
            })
            .collect();
        reservations.sort_by(|a, b| a.relay.cmp(&b.relay));
        let mut known_relays: Vec<String> = self.relays.keys().map(|p| p.to_string()).collect();
        known_relays.sort();
        let mut discovered_peers: Vec<String> =
            self.discovered.iter().map(|p| p.to_string()).collect();
        discovered_peers.sort();
        let ready = self.is_ready();
        Status {
            name: self.config.name.clone(),
            role: self.config.role.as_str().into(),
            version: env!("CARGO_PKG_VERSION").into(),
            peer_id: self.peer_id.to_string(),
            ready,
            listen_addresses: self.swarm.listeners().map(|a| a.to_string()).collect(),
            external_addresses: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            nat_status: self.nat,
            dht_mode: self
                .swarm
                .behaviour()
                .kad
                .as_ref()
                .map(|k| k.mode().to_string()),
            connected_peers: self.swarm.network_info().num_peers(),
            connections,
            reservations,
            known_relays,
            discovered_peers,
            relay: (self.config.role == Role::Relay).then(|| RelayServerStatus {
                serving: self.relay_server.serving,
                reservations: self.relay_server.reservations.values().sum(),
                circuits: self.relay_server.circuits,
                reservations_denied: self.relay_server.reservations_denied,
                circuits_denied: self.relay_server.circuits_denied,
            }),
        }
    }

    fn dht_stats(&mut self) -> DhtStats {
        let queries_served: BTreeMap<String, u64> = self
            .queries_served
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let total = queries_served.values().sum();
        let bootstrapped = self.bootstrapped;
        match self.swarm.behaviour_mut().kad.as_mut() {
            None => DhtStats {
                enabled: false,
                mode: None,
                routing_table_size: 0,
                buckets: vec![],
                queries_served,
                queries_served_total: total,
                records_stored: 0,
                provided_keys: 0,
                bootstrapped,
            },
            Some(kad) => {
                let buckets: Vec<BucketStatus> = kad
                    .kbuckets()
                    .filter(|b| b.num_entries() > 0)
                    .map(|b| BucketStatus {
                        distance: b.range().0.ilog2().unwrap_or(0),
                        peers: b.num_entries(),
                    })
                    .collect();
                let mode = kad.mode().to_string();
                use kad::store::RecordStore;
                let store = kad.store_mut();
                let records_stored = store.records().count();
                let provided_keys = store.provided().count();
                DhtStats {
                    enabled: true,
                    mode: Some(mode),
                    routing_table_size: buckets.iter().map(|b| b.peers).sum(),
                    buckets,
                    queries_served,
                    queries_served_total: total,
                    records_stored,
                    provided_keys,
                    bootstrapped,
                }
            }
        }
    }

    fn set_nat(&mut self, nat: NatStatus) {
        self.nat = nat;
        for s in [NatStatus::Unknown, NatStatus::Public, NatStatus::Private] {
            metrics::gauge!(m::NAT_STATUS, "status" => s.as_str()).set(if s == nat {
                1.0
            } else {
                0.0
            });
        }
    }

    fn wants_reservations(&self) -> bool {
        self.config.role == Role::Peer
            && match self.config.network.relay_reservations {
                RelayReservations::Always => true,
                RelayReservations::Never => false,
                RelayReservations::Auto => self.nat == NatStatus::Private,
            }
    }
}

/// The peer id at the end of an address, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Some(p),
        _ => None,
    }
}

/// `addr` without a trailing `/p2p/<peer id>`.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if let Some(Protocol::P2p(_)) = a.iter().last() {
        a.pop();
    }
    a
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}
