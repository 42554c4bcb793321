//! Connections strangers can make a node hold: distinct peers, inbound connections per
//! source IP, and inbound connections still in their handshake per source IP and
//! subnet.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

use super::{IpKey, SlotCaps, count, release};
use crate::{config::ConnectionLimits, scope::Subnet};

/// Why [`PeerLimits`] refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum LimitExceeded {
    #[error("already connected to the maximum of {max} peers")]
    Peers { max: u32 },
    #[error("{max} inbound connections from {key:?} already")]
    PerIp { max: u32, key: IpKey },
    #[error("{max} connections from {key:?} still in their handshake")]
    PendingPerIp { max: u32, key: IpKey },
    #[error("{max} connections from {subnet:?} still in their handshake")]
    PendingPerSubnet { max: u32, subnet: Subnet },
}

impl LimitExceeded {
    /// The `reason` label of `jantar_connections_denied_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitExceeded::Peers { .. } => "max_peers",
            LimitExceeded::PerIp { .. } => "per_ip",
            LimitExceeded::PendingPerIp { .. } => "pending_per_ip",
            LimitExceeded::PendingPerSubnet { .. } => "pending_per_subnet",
        }
    }
}

/// The reserve of peer slots above `max_peers` that only the node's own dials may use:
/// a tenth of `max_peers`, at least 4.
pub fn own_dial_reserve(max_peers: u32) -> u32 {
    (max_peers / 10).max(4)
}

/// Caps the number of distinct connected peers, the inbound connections per source IP
/// (IPv6 per /64), and the inbound connections still in their handshake per source IP
/// and per subnet (IPv4 /24, IPv6 /48). A peer that is already connected may always add
/// a connection (per-peer connection counts are capped by `libp2p::connection_limits`).
///
/// `max_peers` bounds what strangers can make the node hold; the node's own dials may
/// go [`own_dial_reserve`] beyond it, so a node whose slots strangers filled can still
/// reach the peers it chose. Configured infrastructure never counts.
pub struct PeerLimits {
    max_peers: u32,
    max_per_ip: u32,
    pending_caps: SlotCaps,
    peers: HashMap<PeerId, usize>,
    inbound_by_ip: HashMap<IpKey, u32>,
    inbound_key: HashMap<ConnectionId, IpKey>,
    pending_by_ip: HashMap<IpKey, u32>,
    pending_by_subnet: HashMap<Subnet, u32>,
    pending: HashMap<ConnectionId, (IpKey, Subnet)>,
    /// Peers that never count against `max_peers`.
    exempt: HashSet<PeerId>,
}

impl PeerLimits {
    pub fn new(l: &ConnectionLimits) -> Self {
        PeerLimits {
            max_peers: l.max_peers,
            max_per_ip: l.max_connections_per_ip,
            pending_caps: SlotCaps {
                per_ip: l.max_pending_per_ip as usize,
                per_subnet: l.max_pending_per_subnet as usize,
                private: l.limit_private_sources,
            },
            peers: HashMap::new(),
            inbound_by_ip: HashMap::new(),
            inbound_key: HashMap::new(),
            pending_by_ip: HashMap::new(),
            pending_by_subnet: HashMap::new(),
            pending: HashMap::new(),
            exempt: HashSet::new(),
        }
    }

    /// Peers that never count against `max_peers` (configured bootstrap nodes and relays).
    pub fn exempt(&mut self, peer: PeerId) {
        self.exempt.insert(peer);
    }

    pub fn connected_peers(&self) -> usize {
        self.peers.len()
    }

    /// Inbound connections in their handshake now, of the sources the caps count.
    pub fn pending_inbound(&self) -> usize {
        self.pending.len()
    }

    fn check_peer(&self, peer: PeerId, own_dial: bool) -> Result<(), ConnectionDenied> {
        if self.peers.contains_key(&peer) || self.exempt.contains(&peer) {
            return Ok(());
        }
        let counted = self
            .peers
            .keys()
            .filter(|p| !self.exempt.contains(p))
            .count();
        let max = if own_dial {
            self.max_peers + own_dial_reserve(self.max_peers)
        } else {
            self.max_peers
        };
        if counted >= max as usize {
            return Err(denied(LimitExceeded::Peers { max }));
        }
        Ok(())
    }

    fn release_ip(&mut self, id: ConnectionId) {
        if let Some(key) = self.inbound_key.remove(&id) {
            release(&mut self.inbound_by_ip, &key);
        }
        self.release_pending(id);
    }

    fn release_pending(&mut self, id: ConnectionId) {
        if let Some((key, subnet)) = self.pending.remove(&id) {
            release(&mut self.pending_by_ip, &key);
            release(&mut self.pending_by_subnet, &subnet);
        }
    }
}

fn denied(e: LimitExceeded) -> ConnectionDenied {
    ConnectionDenied::new(e)
}

/// The `reason` label of a refused connection: which of Jantar's limits refused it,
/// or `limit` for the library's (pending, per-peer and memory limits).
pub fn denial_reason(cause: &ConnectionDenied) -> &'static str {
    cause
        .downcast_ref::<LimitExceeded>()
        .map_or("limit", LimitExceeded::reason)
}

impl NetworkBehaviour for PeerLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = crate::scope::direct_ip(remote_addr) else {
            return Ok(());
        };
        let (key, subnet) = (IpKey::from_ip(ip), Subnet::of_ip(ip));
        if count(&self.inbound_by_ip, &key) >= self.max_per_ip as usize {
            return Err(denied(LimitExceeded::PerIp {
                max: self.max_per_ip,
                key,
            }));
        }
        let caps = self.pending_caps;
        let capped = caps.counts(ip);
        if capped && count(&self.pending_by_ip, &key) >= caps.per_ip {
            return Err(denied(LimitExceeded::PendingPerIp {
                max: caps.per_ip as u32,
                key,
            }));
        }
        if capped && count(&self.pending_by_subnet, &subnet) >= caps.per_subnet {
            return Err(denied(LimitExceeded::PendingPerSubnet {
                max: caps.per_subnet as u32,
                subnet,
            }));
        }
        *self.inbound_by_ip.entry(key).or_default() += 1;
        self.inbound_key.insert(connection_id, key);
        if capped {
            *self.pending_by_ip.entry(key).or_default() += 1;
            *self.pending_by_subnet.entry(subnet).or_default() += 1;
            self.pending.insert(connection_id, (key, subnet));
        }
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release_pending(connection_id);
        self.check_peer(peer, false)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(peer, true)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.release_pending(e.connection_id);
                *self.peers.entry(e.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(e) => {
                self.release_ip(e.connection_id);
                if e.remaining_established == 0 {
                    self.peers.remove(&e.peer_id);
                } else if let Some(n) = self.peers.get_mut(&e.peer_id) {
                    *n = n.saturating_sub(1);
                }
            }
            FromSwarm::ListenFailure(e) => self.release_ip(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
