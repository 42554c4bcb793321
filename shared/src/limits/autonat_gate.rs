//! AutoNAT service per source: the inbound connections of one IP (IPv6 /64) and of one
//! subnet (IPv4 /24, IPv6 /48) that may ask this node for dial-backs.
//!
//! The AutoNAT server throttles per peer and in total, and Sybil identities from one
//! machine would take the whole total. It has no hook per source address, so
//! [`AutonatGate`] decides per connection: an inbound connection beyond its source's
//! share gets no AutoNAT protocol at all (a dummy handler) and the server never learns
//! of it. Each served connection's peer is then held to the server's own per-peer
//! throttle, so one source gets at most `per_ip` times that many dial-backs per period.
//! The node's own connections (outbound) are always served: it probes through them.
//!
//! The gate also holds the client's answers to account: the library confirms whatever
//! address one server reports, and the gate instead counts the report as a vote in
//! [`AddressVotes`] and confirms an address only once servers in different subnets
//! agree on its IP.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    task::{Context, Poll},
    time::Instant,
};

use either::Either;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::{
    Multiaddr, PeerId, autonat,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
    },
};
use tracing::{debug, info};

use super::{
    IpKey, SlotCaps,
    address_votes::{AddressVotes, Verdict, Voter},
    count, release,
};
use crate::{metrics as m, scope::Subnet};

/// The most peers whose dialed address the gate remembers.
const MAX_DIALED: usize = 1024;

pub struct AutonatGate {
    inner: autonat::Behaviour,
    caps: SlotCaps,
    by_ip: HashMap<IpKey, u32>,
    by_subnet: HashMap<Subnet, u32>,
    served: HashMap<ConnectionId, (IpKey, Subnet)>,
    /// Inbound connections beyond their source's share: not shown to the server.
    gated: HashSet<ConnectionId>,
    /// The remote address of every connection and whether this node dialed it, by
    /// peer: how a server is grouped.
    remotes: HashMap<PeerId, HashMap<ConnectionId, (Multiaddr, bool)>>,
    /// The address this node last dialed each peer at (at most [`MAX_DIALED`] peers).
    dialed: HashMap<PeerId, Multiaddr>,
    votes: AddressVotes,
    /// Confirmations and expiries decided by the votes, for the swarm.
    verdicts: VecDeque<Verdict>,
}

impl AutonatGate {
    pub fn new(inner: autonat::Behaviour, caps: SlotCaps, votes: AddressVotes) -> Self {
        AutonatGate {
            inner,
            caps,
            by_ip: HashMap::new(),
            by_subnet: HashMap::new(),
            served: HashMap::new(),
            gated: HashSet::new(),
            remotes: HashMap::new(),
            dialed: HashMap::new(),
            votes,
            verdicts: VecDeque::new(),
        }
    }

    /// A server reported the address it reached this node at: a vote, counted by the
    /// server's group (see [`Voter::of`]).
    fn on_report(&mut self, server: PeerId, address: &Multiaddr) {
        // Where this node dialed the server says best where it is, even after that
        // connection closed (the answer may come while only the server's dial-back
        // connection is open); an inbound connection's source address may be another
        // of its addresses.
        let remotes = self.remotes.get(&server);
        let voter = self
            .dialed
            .get(&server)
            .into_iter()
            .chain(
                remotes
                    .into_iter()
                    .flat_map(HashMap::values)
                    .filter(|(_, outbound)| *outbound)
                    .map(|(a, _)| a),
            )
            .chain(
                remotes
                    .into_iter()
                    .flat_map(HashMap::values)
                    .map(|(a, _)| a),
            )
            .find_map(|remote| Voter::of(server, remote, self.caps.private));
        let Some(voter) = voter else {
            debug!(%server, %address, "AutoNAT report from a server without a direct connection; not counted");
            return;
        };
        let verdicts = self.votes.vote(voter, address.clone(), Instant::now());
        if verdicts.is_empty() {
            debug!(%server, %address, "AutoNAT report counted; the address awaits servers of other subnets");
            metrics::counter!(m::AUTONAT_ADDRESS_REPORTS, "result" => "pending").increment(1);
        } else {
            metrics::counter!(m::AUTONAT_ADDRESS_REPORTS, "result" => "agreed").increment(1);
        }
        self.verdicts.extend(verdicts);
    }

    /// Adds a server this node asks (configured infrastructure, its relays).
    pub fn add_server(&mut self, peer: PeerId, addr: Option<Multiaddr>) {
        self.inner.add_server(peer, addr);
    }

    /// Inbound connections that get no AutoNAT service now.
    pub fn gated(&self) -> usize {
        self.gated.len()
    }

    /// Whether an inbound connection from `remote` gets the service; counts it if so.
    fn admit(&mut self, id: ConnectionId, peer: PeerId, remote: &Multiaddr) -> bool {
        let Some(ip) = crate::scope::direct_ip(remote).filter(|ip| self.caps.counts(*ip)) else {
            return true;
        };
        let (key, subnet) = (IpKey::from_ip(ip), Subnet::of_ip(ip));
        let reason = if count(&self.by_ip, &key) >= self.caps.per_ip {
            Some("per_ip")
        } else if count(&self.by_subnet, &subnet) >= self.caps.per_subnet {
            Some("per_subnet")
        } else {
            None
        };
        if let Some(reason) = reason {
            debug!(%peer, %remote, reason, "no AutoNAT service on this connection");
            metrics::counter!(m::AUTONAT_GATED, "reason" => reason).increment(1);
            self.gated.insert(id);
            return false;
        }
        *self.by_ip.entry(key).or_default() += 1;
        *self.by_subnet.entry(subnet).or_default() += 1;
        self.served.insert(id, (key, subnet));
        true
    }

    /// Connections to `peer` the server sees, `except` one.
    fn visible(&self, peer: &PeerId, except: ConnectionId) -> usize {
        self.remotes.get(peer).map_or(0, |c| {
            c.keys()
                .filter(|id| **id != except && !self.gated.contains(id))
                .count()
        })
    }

    fn forget(&mut self, id: ConnectionId) {
        self.gated.remove(&id);
        if let Some((key, subnet)) = self.served.remove(&id) {
            release(&mut self.by_ip, &key);
            release(&mut self.by_subnet, &subnet);
        }
    }
}

impl NetworkBehaviour for AutonatGate {
    type ConnectionHandler = Either<THandler<autonat::Behaviour>, dummy::ConnectionHandler>;
    type ToSwarm = autonat::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.admit(connection_id, peer, remote_addr) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        match self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        ) {
            Ok(h) => Ok(Either::Left(h)),
            Err(e) => {
                self.forget(connection_id);
                Err(e)
            }
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // The server sees only the connections it serves, and its counts of a peer's
        // other connections must agree with that (request-response checks them).
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let other_established = self.visible(&e.peer_id, e.connection_id);
                if e.endpoint.is_dialer()
                    && crate::scope::direct_ip(e.endpoint.get_remote_address()).is_some()
                {
                    if self.dialed.len() >= MAX_DIALED && !self.dialed.contains_key(&e.peer_id) {
                        // Forget one: a server asked again is dialed again.
                        if let Some(old) = self.dialed.keys().next().copied() {
                            self.dialed.remove(&old);
                        }
                    }
                    self.dialed
                        .insert(e.peer_id, e.endpoint.get_remote_address().clone());
                }
                self.remotes.entry(e.peer_id).or_default().insert(
                    e.connection_id,
                    (
                        e.endpoint.get_remote_address().clone(),
                        e.endpoint.is_dialer(),
                    ),
                );
                if !self.gated.contains(&e.connection_id) {
                    self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                        ConnectionEstablished {
                            other_established,
                            ..e
                        },
                    ));
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                let hidden = self.gated.contains(&e.connection_id);
                let remaining_established = self.visible(&e.peer_id, e.connection_id);
                self.forget(e.connection_id);
                if let Some(c) = self.remotes.get_mut(&e.peer_id) {
                    c.remove(&e.connection_id);
                    if c.is_empty() {
                        self.remotes.remove(&e.peer_id);
                    }
                }
                if !hidden {
                    self.inner
                        .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                            remaining_established,
                            ..e
                        }));
                }
            }
            FromSwarm::AddressChange(e) => {
                if let Some(c) = self.remotes.get_mut(&e.peer_id) {
                    c.insert(
                        e.connection_id,
                        (e.new.get_remote_address().clone(), e.new.is_dialer()),
                    );
                }
                if !self.gated.contains(&e.connection_id) {
                    self.inner.on_swarm_event(event);
                }
            }
            FromSwarm::ListenFailure(e) => {
                self.forget(e.connection_id);
                self.inner.on_swarm_event(event);
            }
            FromSwarm::ExternalAddrExpired(e) => {
                self.votes.expired(e.addr);
                self.inner.on_swarm_event(event);
            }
            _ => self.inner.on_swarm_event(event),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(e) => self
                .inner
                .on_connection_handler_event(peer_id, connection_id, e),
            Either::Right(never) => libp2p::core::util::unreachable(never),
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(verdict) = self.verdicts.pop_front() {
                return Poll::Ready(match verdict {
                    Verdict::Confirm(a) => {
                        info!(address = %a, "servers in different subnets agree on this address");
                        ToSwarm::ExternalAddrConfirmed(a)
                    }
                    Verdict::Expire(a) => ToSwarm::ExternalAddrExpired(a),
                });
            }
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                // One server's word is a vote, not a confirmation (see `on_report`).
                Poll::Ready(ToSwarm::ExternalAddrConfirmed(_)) => continue,
                Poll::Ready(event) => {
                    if let ToSwarm::GenerateEvent(autonat::Event::OutboundProbe(
                        autonat::OutboundProbeEvent::Response { peer, address, .. },
                    )) = &event
                    {
                        self.on_report(*peer, address);
                    }
                    return Poll::Ready(event.map_in(Either::Left));
                }
            }
        }
    }
}
