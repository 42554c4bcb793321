//! A peer's relays: the ones it knows (configured, found in the DHT under
//! [`RELAYS_KEY`], or learned from identify), the reservations it holds on up to
//! `network.max_relays` of them while it wants them (private, or
//! `relay_reservations: always`), and the backoff of relays that failed.
//!
//! A relay is dialed first and the reservation requested on the established
//! connection. Letting the relay client dial by itself makes libp2p race the configured
//! address against the same address offered by other behaviours (with and without
//! `/p2p`); over QUIC both attempts share one UDP 4-tuple, and when the losing attempt
//! is closed the relay can end up keeping the other half-open connection, so the
//! reservation is held on a connection that carries nothing.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm,
    core::transport::ListenerId,
    kad,
    multiaddr::Protocol,
    relay,
    swarm::{
        DialError,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tracing::{debug, info, warn};

use super::{
    connections::{ConnInfo, is_relayed, without_peer_id},
    discovery::dial_known,
    reservations::Reservations,
};
use crate::{
    behaviour::Behaviour,
    config::{NetworkConfig, PeerAddr, RelayReservations},
    error::ErrorChain,
    metrics as m,
    status::{ConnectionKind, NatStatus, ReservationStatus},
};

/// Rendezvous key under which relays announce themselves.
pub(super) const RELAYS_KEY: &[u8] = b"/jantar/relays/v1";

/// How long a relay may take to answer the dial that precedes a reservation.
const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Relays found in the DHT that have not yet shown they are reachable relays (a
/// connection, and identify listing the relay protocol). Anyone can publish a relay
/// record: more are ignored until these are tried, and one whose dial fails is
/// forgotten, so records of relays that do not exist cannot fill the list.
const MAX_UNVERIFIED_RELAYS: usize = 32;

pub(super) struct RelayClient {
    me: PeerId,
    mode: RelayReservations,
    max_relays: usize,
    configured: Vec<PeerAddr>,
    /// Relays known by peer id, with addresses known to reach them.
    relays: HashMap<PeerId, Vec<Multiaddr>>,
    reservations: Reservations,
}

impl RelayClient {
    pub(super) fn new(me: PeerId, net: &NetworkConfig) -> Self {
        RelayClient {
            me,
            mode: net.relay_reservations,
            max_relays: net.max_relays,
            configured: net.relay_nodes.clone(),
            relays: HashMap::new(),
            reservations: Reservations::new(),
        }
    }

    fn wants_reservations(&self, nat: NatStatus) -> bool {
        match self.mode {
            RelayReservations::Always => true,
            RelayReservations::Never => false,
            RelayReservations::Auto => nat == NatStatus::Private,
        }
    }

    /// Relays known from before (the peer store), with addresses that reached them.
    pub(super) fn remember(&mut self, relays: Vec<(PeerId, Vec<Multiaddr>)>) {
        for (relay, addrs) in relays {
            if relay == self.me {
                continue;
            }
            let known = self.relays.entry(relay).or_default();
            for a in addrs {
                if !known.contains(&a) {
                    known.push(a);
                }
            }
        }
    }

    /// The relays this peer holds (or is requesting) reservations on.
    pub(super) fn relays_in_use(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.reservations.relays().copied()
    }

    /// First contact: the configured relays become known and are dialed.
    pub(super) fn join(&mut self, swarm: &mut Swarm<Behaviour>) {
        for r in &self.configured {
            let addrs = self.relays.entry(r.peer_id).or_default();
            if !r.addr.is_empty() && !addrs.contains(&r.addr) {
                addrs.push(r.addr.clone());
            }
        }
        for r in self
            .configured
            .iter()
            .filter(|r| !r.addr.is_empty() && r.peer_id != self.me)
        {
            let opts = DialOpts::peer_id(r.peer_id)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![r.addr.clone()])
                .build();
            if let Err(e) = swarm.dial(opts) {
                debug!(relay = %r.peer_id, error = %e, "cannot dial relay");
            }
        }
    }

    /// Each discovery round: while more reservations are wanted, look for relays in the
    /// DHT, and for the addresses of known relays that have none.
    pub(super) fn lookup(&self, swarm: &mut Swarm<Behaviour>, nat: NatStatus) {
        if !self.wants_reservations(nat) || self.reservations.len() >= self.max_relays {
            return;
        }
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        kad.get_providers(kad::RecordKey::new(&RELAYS_KEY));
        metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_providers").increment(1);
        for (relay, _) in self.relays.iter().filter(|(_, a)| a.is_empty()) {
            kad.get_closest_peers(*relay);
            metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_closest_peers").increment(1);
        }
    }

    /// Providers of [`RELAYS_KEY`]: relays to learn and dial.
    pub(super) fn found_in_dht(&mut self, swarm: &mut Swarm<Behaviour>, providers: Vec<PeerId>) {
        for p in providers.into_iter().filter(|p| *p != self.me) {
            if !self.relays.contains_key(&p) && self.unverified() >= MAX_UNVERIFIED_RELAYS {
                debug!(relay = %p, "relay record ignored: too many relays not yet tried");
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = self.relays.entry(p) {
                info!(relay = %p, "relay discovered through the DHT");
                e.insert(Vec::new());
                // Dial while the query still holds the provider's addresses; the
                // connection tells us an address that works.
                dial_known(swarm, p);
            }
        }
    }

    /// Peers close to a key: addresses for relays that had none.
    pub(super) fn closest_peers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peers: Vec<kad::PeerInfo>,
        nat: NatStatus,
    ) {
        for info in peers {
            if let Some(addrs) = self.relays.get_mut(&info.peer_id)
                && addrs.is_empty()
            {
                addrs.extend(
                    info.addrs
                        .iter()
                        .filter(|a| !is_relayed(a))
                        .map(without_peer_id),
                );
            }
        }
        self.manage(swarm, nat);
    }

    /// Identify told us `peer` runs a relay: its direct addresses are worth keeping.
    pub(super) fn identified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        protocols: &[StreamProtocol],
        listen_addrs: &[Multiaddr],
        nat: NatStatus,
    ) {
        if !protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            // Found in the DHT, but no relay: its record was a lie.
            if !self.is_configured(&peer) && self.relays.remove(&peer).is_some() {
                debug!(%peer, "peer with a relay record does not serve relay circuits; forgotten");
            }
            return;
        }
        let addrs = self.relays.entry(peer).or_default();
        for a in listen_addrs.iter().filter(|a| !is_relayed(a)) {
            let a = without_peer_id(a);
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        self.manage(swarm, nat);
    }

    /// A new connection. An outbound direct one to a relay gives its best address (and
    /// the relay answers AutoNAT probes); a reservation waiting for it can be requested.
    pub(super) fn connected(&mut self, swarm: &mut Swarm<Behaviour>, c: &ConnInfo, nat: NatStatus) {
        if c.outbound && c.kind == ConnectionKind::Direct && self.relays.contains_key(&c.peer) {
            let addr = without_peer_id(&c.addr);
            swarm
                .behaviour_mut()
                .autonat
                .add_server(c.peer, Some(addr.clone()));
            let addrs = self.relays.entry(c.peer).or_default();
            if !addrs.contains(&addr) {
                addrs.insert(0, addr);
            }
        }
        if self.reservations.is_dialing(&c.peer) {
            self.manage(swarm, nat);
        }
    }

    /// A dial failed: a reservation waiting for that relay's connection tries the
    /// relay's next address after the backoff.
    pub(super) fn dial_failed(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        relay: PeerId,
        nat: NatStatus,
    ) {
        if self.relays.get(&relay).is_some_and(Vec::is_empty)
            && !self.is_configured(&relay)
            && !swarm.is_connected(&relay)
        {
            debug!(%relay, "relay found in the DHT is not reachable; forgotten");
            self.relays.remove(&relay);
        }
        if self.reservations.is_dialing(&relay) && !swarm.is_connected(&relay) {
            debug!(%relay, "relay dial failed; trying another relay later");
            self.lost(swarm, relay, nat);
        }
    }

    /// A listener reported an address; returns false when it is not a reservation's.
    pub(super) fn listening(&mut self, listener: ListenerId, address: &Multiaddr) -> bool {
        self.reservations.listener_gone(listener);
        let Some(relay) = self.reservations.of_listener(listener) else {
            return false;
        };
        info!(%relay, %address, "reachable through relay");
        self.reservations.reachable_at(&relay, address.clone());
        true
    }

    /// A listener closed; returns false when it is not a reservation's.
    pub(super) fn listener_closed(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        listener: ListenerId,
        reason: &Result<(), std::io::Error>,
        nat: NatStatus,
    ) -> bool {
        self.reservations.listener_gone(listener);
        let Some(relay) = self.reservations.of_listener(listener) else {
            return false;
        };
        let why = match reason {
            Ok(()) => "closed".to_string(),
            Err(e) => ErrorChain(e).to_string(),
        };
        warn!(%relay, reason = %why, "relay reservation ended");
        if reason.is_ok() && self.reservations.connection_lost(relay, Instant::now()) {
            // It worked until its connection closed: ask again now, on the address
            // that worked.
            self.manage(swarm, nat);
        } else {
            self.lost(swarm, relay, nat);
        }
        true
    }

    pub(super) fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, e: relay::client::Event) {
        match e {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                limit,
            } => {
                if let Some(listener) = self.reservations.answered(&relay_peer_id) {
                    debug!(relay = %relay_peer_id, "relay reservation accepted after it was given up; dropping it");
                    swarm.remove_listener(listener);
                    return;
                }
                self.reservations.accepted(&relay_peer_id, Instant::now());
                if !renewal {
                    info!(relay = %relay_peer_id, ?limit, "relay reservation accepted");
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "outbound circuit established");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(src = %src_peer_id, "inbound circuit established");
            }
        }
    }

    fn lost(&mut self, swarm: &mut Swarm<Behaviour>, relay: PeerId, nat: NatStatus) {
        self.reservations.failed(relay, Instant::now());
        // Try the relay's next address next time.
        if let Some(addrs) = self.relays.get_mut(&relay)
            && addrs.len() > 1
        {
            addrs.rotate_left(1);
        }
        self.manage(swarm, nat);
    }

    /// Holds reservations on up to `network.max_relays` relays while the peer wants them,
    /// and drops them when it no longer does.
    pub(super) fn manage(&mut self, swarm: &mut Swarm<Behaviour>, nat: NatStatus) {
        if !self.wants_reservations(nat) {
            if !self.reservations.is_empty() {
                info!(
                    nat = nat.as_str(),
                    "dropping relay reservations: no longer needed"
                );
                self.remove_listeners(swarm);
            }
            return;
        }
        let now = Instant::now();
        self.reservations.expire_backoff(now);
        self.request_on_connected(swarm, now, nat);
        for relay in self.candidates() {
            if self.reservations.len() >= self.max_relays {
                break;
            }
            self.reservations.begin(relay, now);
            if swarm.is_connected(&relay) {
                self.request(swarm, relay, now);
                continue;
            }
            let opts = DialOpts::peer_id(relay)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(self.relays[&relay].clone())
                .build();
            match swarm.dial(opts) {
                Ok(()) => debug!(%relay, "dialing relay for a reservation"),
                // Already being dialed (for example as a configured relay at start).
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    warn!(%relay, error = %ErrorChain(&e), "cannot dial relay for a reservation");
                    self.reservations.failed(relay, now);
                }
            }
        }
    }

    /// Relays found in the DHT that have not shown an address that reaches them.
    fn unverified(&self) -> usize {
        self.relays
            .iter()
            .filter(|(p, addrs)| addrs.is_empty() && !self.is_configured(p))
            .count()
    }

    fn is_configured(&self, peer: &PeerId) -> bool {
        self.configured.iter().any(|c| c.peer_id == *peer)
    }

    /// Relays with addresses, no reservation and no backoff: configured ones first, in
    /// config order; then the others.
    fn candidates(&self) -> Vec<PeerId> {
        let mut candidates: Vec<PeerId> = self
            .relays
            .iter()
            .filter(|(p, addrs)| {
                !addrs.is_empty() && self.reservations.available(p) && **p != self.me
            })
            .map(|(p, _)| *p)
            .collect();
        candidates.sort_by_key(|p| {
            self.configured
                .iter()
                .position(|c| c.peer_id == *p)
                .unwrap_or(usize::MAX)
        });
        candidates
    }

    /// Requests the reservations whose relay is now connected, and gives up on relays
    /// that could not be reached within [`RELAY_DIAL_TIMEOUT`].
    fn request_on_connected(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, nat: NatStatus) {
        for (relay, since) in self.reservations.dialing() {
            if swarm.is_connected(&relay) {
                self.request(swarm, relay, now);
            } else if now.duration_since(since) >= RELAY_DIAL_TIMEOUT {
                warn!(%relay, "relay not reachable; trying another one later");
                self.lost(swarm, relay, nat);
            }
        }
    }

    /// Asks a connected relay for a reservation: the relay client uses the existing
    /// connection and does not dial.
    fn request(&mut self, swarm: &mut Swarm<Behaviour>, relay: PeerId, now: Instant) {
        let Some(base) = self.relays.get(&relay).and_then(|a| a.first()) else {
            self.reservations.forget(&relay);
            return;
        };
        let addr = base
            .clone()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        match swarm.listen_on(addr.clone()) {
            Ok(listener) => {
                info!(%relay, %addr, "requesting relay reservation");
                self.reservations.requested(&relay, listener, now);
            }
            Err(e) => {
                warn!(%relay, %addr, error = %ErrorChain(&e), "cannot request relay reservation");
                self.reservations.failed(relay, now);
            }
        }
    }

    /// Ends every reservation (no longer wanted, or shutting down).
    pub(super) fn remove_listeners(&mut self, swarm: &mut Swarm<Behaviour>) {
        for listener in self.reservations.clear() {
            swarm.remove_listener(listener);
        }
    }

    pub(super) fn reservation_statuses(&self) -> Vec<ReservationStatus> {
        self.reservations.statuses()
    }

    pub(super) fn known_relays(&self) -> Vec<String> {
        let mut v: Vec<String> = self.relays.keys().map(|p| p.to_string()).collect();
        v.sort();
        v
    }
}
