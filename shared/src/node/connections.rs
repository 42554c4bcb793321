//! The connection table: every open connection with its peer, address, direction and
//! kind; the listeners that have not reported an address yet; the dials that
//! `POST /connect` waits on; and the connection gauges.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::{ConnectedPoint, transport::ListenerId},
    multiaddr::Protocol,
    swarm::{
        ConnectionId, DialError, ListenError,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::oneshot;
use tracing::debug;

use crate::{
    behaviour::Behaviour,
    error::ErrorChain,
    metrics as m,
    status::{ConnectionKind, ConnectionStatus},
};

type ConnectReply = oneshot::Sender<Result<ConnectionStatus, String>>;

#[derive(Debug, Clone)]
pub(super) struct ConnInfo {
    pub(super) peer: PeerId,
    pub(super) addr: Multiaddr,
    pub(super) outbound: bool,
    pub(super) kind: ConnectionKind,
    since: Instant,
    /// The peer answered identify on this connection: its swarm has the connection.
    identified: bool,
}

impl ConnInfo {
    fn direction(&self) -> &'static str {
        if self.outbound { "outbound" } else { "inbound" }
    }

    fn status(&self, now: Instant) -> ConnectionStatus {
        ConnectionStatus {
            peer_id: self.peer.to_string(),
            address: self.addr.to_string(),
            direction: self.direction().into(),
            kind: self.kind,
            age_secs: now.duration_since(self.since).as_secs(),
        }
    }

    /// The span that ties log lines to this connection.
    pub(super) fn span(&self) -> tracing::Span {
        tracing::info_span!("conn", peer = %self.peer, remote = %self.addr)
    }
}

pub(super) struct Connections {
    table: HashMap<ConnectionId, ConnInfo>,
    /// The configured listeners, closed first on shutdown.
    listeners: Vec<ListenerId>,
    /// Listeners that have not reported an address yet.
    pending_listeners: HashSet<ListenerId>,
    pending_connects: HashMap<ConnectionId, ConnectReply>,
}

impl Connections {
    pub(super) fn new(listeners: impl IntoIterator<Item = ListenerId>) -> Self {
        let listeners: Vec<ListenerId> = listeners.into_iter().collect();
        let c = Connections {
            table: HashMap::new(),
            pending_listeners: listeners.iter().copied().collect(),
            listeners,
            pending_connects: HashMap::new(),
        };
        // Every gauge exists from the start, at zero, so dashboards and alerts see it.
        c.update_gauges(0);
        c
    }

    /// Every listener has reported its address (or failed).
    pub(super) fn all_listening(&self) -> bool {
        self.pending_listeners.is_empty()
    }

    /// The configured listeners.
    pub(super) fn listeners(&self) -> &[ListenerId] {
        &self.listeners
    }

    pub(super) fn listener_done(&mut self, id: ListenerId) {
        self.pending_listeners.remove(&id);
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn get(&self, id: ConnectionId) -> Option<&ConnInfo> {
        self.table.get(&id)
    }

    /// `POST /connect`: dials `addr` and answers `reply` once the connection is up or
    /// has failed. An address with a peer id is dialed even when that peer is already
    /// connected another way.
    pub(super) fn connect(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        addr: Multiaddr,
        reply: ConnectReply,
    ) {
        let opts = match addr.iter().last() {
            Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                .condition(PeerCondition::Always)
                .addresses(vec![addr.clone()])
                .build(),
            _ => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match swarm.dial(opts) {
            Ok(()) => {
                self.pending_connects.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(format!("cannot dial {addr}: {}", ErrorChain(&e))));
            }
        }
    }

    /// Records a new connection and answers the `POST /connect` waiting for it.
    pub(super) fn established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) -> &ConnInfo {
        let (addr, outbound) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
            ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr.clone(), false),
        };
        let kind = if endpoint.is_relayed() || is_relayed(&addr) {
            ConnectionKind::Relayed
        } else {
            ConnectionKind::Direct
        };
        let info = ConnInfo {
            peer,
            addr,
            outbound,
            kind,
            since: Instant::now(),
            identified: false,
        };
        let dir = info.direction();
        debug!(peer = %peer, remote = %info.addr, kind = kind.as_str(), direction = dir, "connection established");
        metrics::counter!(m::CONNECTIONS_OPENED, "kind" => kind.as_str(), "direction" => dir)
            .increment(1);
        if let Some(reply) = self.pending_connects.remove(&id) {
            let _ = reply.send(Ok(info.status(info.since)));
        }
        self.table.entry(id).insert_entry(info).into_mut()
    }

    /// The peer answered identify on connection `id`. An answer comes from the peer's
    /// handler for the connection, which its swarm creates as it reports the connection
    /// to its behaviours: the peer has the connection from then on.
    pub(super) fn identified(&mut self, id: ConnectionId) {
        if let Some(c) = self.table.get_mut(&id) {
            c.identified = true;
        }
    }

    /// The peer has answered identify on connection `id` (false once it closed).
    pub(super) fn is_identified(&self, id: ConnectionId) -> bool {
        self.table.get(&id).is_some_and(|c| c.identified)
    }

    /// Forgets a closed connection; returns what it was.
    pub(super) fn closed(&mut self, id: ConnectionId) -> Option<ConnInfo> {
        let c = self.table.remove(&id)?;
        metrics::counter!(m::CONNECTIONS_CLOSED, "kind" => c.kind.as_str()).increment(1);
        Some(c)
    }

    /// A dial failed: the `POST /connect` waiting for it gets the reason.
    pub(super) fn dial_failed(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        error: &DialError,
    ) {
        let msg = ErrorChain(error).to_string();
        if let DialError::Denied { cause } = error {
            let reason = crate::limits::denial_reason(cause);
            metrics::counter!(m::CONNECTIONS_DENIED, "reason" => reason, "direction" => "outbound")
                .increment(1);
        }
        debug!(peer = ?peer, error = %msg, "dial failed");
        if let Some(reply) = self.pending_connects.remove(&id) {
            let _ = reply.send(Err(msg));
        }
    }

    pub(super) fn incoming_failed(&self, send_back_addr: &Multiaddr, error: &ListenError) {
        let reason = match error {
            ListenError::Denied { cause } => crate::limits::denial_reason(cause),
            _ => "error",
        };
        metrics::counter!(m::CONNECTIONS_DENIED, "reason" => reason, "direction" => "inbound")
            .increment(1);
        debug!(remote = %send_back_addr, error = %ErrorChain(error), "inbound connection failed");
    }

    /// Whether `peer` is connected to over loopback (its loopback addresses then reach
    /// it, not this host).
    pub(super) fn via_loopback(&self, peer: &PeerId) -> bool {
        self.table
            .values()
            .any(|c| c.peer == *peer && is_loopback(&c.addr))
    }

    /// Peers with at least one direct (not relayed) connection.
    pub(super) fn direct_peers(&self) -> HashSet<PeerId> {
        self.table
            .values()
            .filter(|c| c.kind == ConnectionKind::Direct)
            .map(|c| c.peer)
            .collect()
    }

    /// `peer`'s relayed connections other than `except`.
    pub(super) fn relayed_to(&self, peer: &PeerId, except: ConnectionId) -> Vec<ConnectionId> {
        self.table
            .iter()
            .filter(|(id, c)| {
                c.peer == *peer && c.kind == ConnectionKind::Relayed && **id != except
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every connection, sorted by peer and address.
    pub(super) fn statuses(&self) -> Vec<ConnectionStatus> {
        let now = Instant::now();
        let mut v: Vec<ConnectionStatus> = self.table.values().map(|c| c.status(now)).collect();
        v.sort_by(|a, b| a.peer_id.cmp(&b.peer_id).then(a.address.cmp(&b.address)));
        v
    }

    /// `jantar_connections{kind,direction}` and `jantar_peers`.
    pub(super) fn update_gauges(&self, peers: usize) {
        let mut counts = [[0u32; 2]; 2];
        for c in self.table.values() {
            counts[usize::from(c.kind == ConnectionKind::Relayed)][usize::from(c.outbound)] += 1;
        }
        for (k, kind) in ["direct", "relayed"].into_iter().enumerate() {
            for (d, dir) in ["inbound", "outbound"].into_iter().enumerate() {
                metrics::gauge!(m::CONNECTIONS, "kind" => kind, "direction" => dir)
                    .set(f64::from(counts[k][d]));
            }
        }
        metrics::gauge!(m::PEERS).set(peers as f64);
    }
}

pub(super) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

pub(super) fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// `addr` without a trailing `/p2p/<peer id>`.
pub(super) fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if let Some(Protocol::P2p(_)) = a.iter().last() {
        a.pop();
    }
    a
}
