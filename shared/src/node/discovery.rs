//! Joining the network, finding peers and relays in the DHT, and holding relay
//! reservations while private.
//!
//! Peers publish a provider record under [`PEERS_KEY`] and relays under [`RELAYS_KEY`].
//! Provider records carry the publisher's addresses (for a private peer: its circuit
//! addresses), and only the publisher itself can add one, so a stranger cannot announce
//! someone else. Bootstrap nodes store none of them; relays and public peers do.

use std::time::{Duration, Instant};

use libp2p::{
    PeerId,
    core::transport::ListenerId,
    kad,
    multiaddr::Protocol,
    swarm::{
        DialError,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tracing::{debug, info, warn};

use super::{Node, Reservation, events::error_chain};
use crate::{config::Role, metrics as m};

/// Rendezvous key under which every Jantar peer announces itself.
pub const PEERS_KEY: &[u8] = b"/jantar/peers/v1";
/// Rendezvous key under which relays announce themselves.
pub const RELAYS_KEY: &[u8] = b"/jantar/relays/v1";

/// How long a relay that refused or dropped a reservation is left alone.
const RELAY_BACKOFF: Duration = Duration::from_secs(30);
/// How long a relay may take to answer the dial that precedes a reservation.
const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    /// First contact: dial the bootstrap nodes, learn the configured relays.
    pub(super) fn join_network(&mut self) {
        let net = self.config.network.clone();
        for r in &net.relay_nodes {
            let addrs = self.relays.entry(r.peer_id).or_default();
            if !r.addr.is_empty() && !addrs.contains(&r.addr) {
                addrs.push(r.addr.clone());
            }
        }
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            for b in net
                .bootstrap_nodes
                .iter()
                .filter(|b| b.peer_id != self.peer_id)
            {
                kad.add_address(&b.peer_id, b.addr.clone());
            }
        }
        // Configured infrastructure answers AutoNAT probes, and a peer whose only way
        // out is its relay (a strict firewall) learns from the relay that it is private.
        for n in net.bootstrap_nodes.iter().chain(&net.relay_nodes) {
            if n.peer_id != self.peer_id && !n.addr.is_empty() {
                self.swarm
                    .behaviour_mut()
                    .autonat
                    .add_server(n.peer_id, Some(n.addr.clone()));
            }
        }
        let me = self.peer_id;
        for r in net
            .relay_nodes
            .iter()
            .filter(|r| !r.addr.is_empty() && r.peer_id != me)
        {
            let opts = DialOpts::peer_id(r.peer_id)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![r.addr.clone()])
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(relay = %r.peer_id, error = %e, "cannot dial relay");
            }
        }
        self.bootstrap_retry.due(Instant::now());
        self.dial_bootstrap_nodes();
        self.manage_reservations();
    }

    /// Runs every second: retries the bootstrap nodes with backoff while the routing
    /// table is empty, and retries relay reservations whose backoff ran out.
    pub(super) fn housekeeping(&mut self) {
        let others = self
            .config
            .network
            .bootstrap_nodes
            .iter()
            .any(|b| b.peer_id != self.peer_id);
        if others && self.swarm.behaviour().kad.is_enabled() {
            if self.joined() {
                self.bootstrap_retry.reset();
            } else if self.bootstrap_retry.due(Instant::now()) {
                info!(
                    next_retry = ?self.bootstrap_retry.current_delay(),
                    "not connected to the network; dialing the bootstrap nodes"
                );
                self.dial_bootstrap_nodes();
            }
        }
        self.manage_reservations();
        self.files_housekeeping();
    }

    fn dial_bootstrap_nodes(&mut self) {
        let me = self.peer_id;
        for b in self
            .config
            .network
            .bootstrap_nodes
            .clone()
            .iter()
            .filter(|b| b.peer_id != me)
        {
            let opts = DialOpts::peer_id(b.peer_id)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![b.addr.clone()])
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %b.peer_id, error = %e, "cannot dial bootstrap node");
            }
        }
    }

    /// Runs every `network.dht.discovery_interval`.
    pub(super) fn discover(&mut self) {
        let role = self.config.role;
        if !self.swarm.behaviour().kad.is_enabled() {
            self.manage_reservations();
            return;
        }
        if !self.joined() {
            // Not in touch with the network; `housekeeping` retries the bootstrap nodes.
            self.manage_reservations();
            return;
        }
        match role {
            Role::Peer => {
                self.provided
                    .entry(kad::RecordKey::new(&PEERS_KEY))
                    .or_insert(false);
            }
            Role::Relay if self.relay_server.serving => {
                self.provided
                    .entry(kad::RecordKey::new(&RELAYS_KEY))
                    .or_insert(false);
            }
            _ => {}
        }
        let stale: Vec<kad::RecordKey> = self
            .provided
            .iter()
            .filter(|(_, current)| !**current)
            .map(|(k, _)| k.clone())
            .collect();
        let wants_relays =
            self.wants_reservations() && self.reservations.len() < self.config.network.max_relays;
        let unresolved: Vec<PeerId> = self
            .relays
            .iter()
            .filter(|(_, a)| a.is_empty())
            .map(|(p, _)| *p)
            .collect();
        let kad = self
            .swarm
            .behaviour_mut()
            .kad
            .as_mut()
            .expect("checked above");
        for key in stale {
            if let Err(e) = kad.start_providing(key) {
                warn!(error = %e, "cannot publish provider record");
            }
            metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "start_providing").increment(1);
        }
        if role == Role::Peer {
            kad.get_providers(kad::RecordKey::new(&PEERS_KEY));
            metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_providers").increment(1);
            if wants_relays {
                kad.get_providers(kad::RecordKey::new(&RELAYS_KEY));
                metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_providers").increment(1);
                for relay in unresolved {
                    kad.get_closest_peers(relay);
                    metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_closest_peers")
                        .increment(1);
                }
            }
        }
        self.manage_reservations();
    }

    /// Our addresses changed: provider records must be published again with the new ones.
    pub(super) fn addresses_changed(&mut self) {
        for current in self.provided.values_mut() {
            *current = false;
        }
    }

    pub(super) fn on_query_result(
        &mut self,
        query: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
    ) {
        if last {
            self.file_query_finished(&query);
        }
        let (kind, ok) = match &result {
            kad::QueryResult::Bootstrap(r) => ("bootstrap", r.is_ok()),
            kad::QueryResult::GetClosestPeers(r) => ("get_closest_peers", r.is_ok()),
            kad::QueryResult::GetProviders(r) => ("get_providers", r.is_ok()),
            kad::QueryResult::StartProviding(r) => ("start_providing", r.is_ok()),
            kad::QueryResult::RepublishProvider(r) => ("republish_provider", r.is_ok()),
            kad::QueryResult::GetRecord(r) => ("get_record", r.is_ok()),
            kad::QueryResult::PutRecord(r) => ("put_record", r.is_ok()),
            kad::QueryResult::RepublishRecord(r) => ("republish_record", r.is_ok()),
        };
        if last {
            let result = if ok { "ok" } else { "error" };
            metrics::counter!(m::DHT_QUERIES_FINISHED, "kind" => kind, "result" => result)
                .increment(1);
        }
        match result {
            kad::QueryResult::Bootstrap(Ok(r)) => {
                // Kademlia reports a bootstrap as done even when every peer it asked
                // was unreachable (the configured bootstrap nodes sit in the routing
                // table from the start): joined means a DHT server answered.
                if !self.bootstrapped && r.num_remaining == 0 {
                    if self.joined() {
                        self.bootstrapped = true;
                        info!(
                            routing_table = self.routing_table_size(),
                            dht_servers = self.dht_servers.len(),
                            "joined the DHT"
                        );
                    } else {
                        debug!("DHT bootstrap ended without reaching a DHT server");
                    }
                }
                self.update_routing_gauges();
            }
            kad::QueryResult::Bootstrap(Err(e)) => debug!(error = %e, "DHT bootstrap query failed"),
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                key,
                providers,
            })) => {
                if self.on_file_providers(query, providers.iter().copied().collect()) {
                    return;
                }
                let me = self.peer_id;
                for p in providers.into_iter().filter(|p| *p != me) {
                    if key.as_ref() == PEERS_KEY {
                        self.peer_found(p);
                    } else if key.as_ref() == RELAYS_KEY && !self.relays.contains_key(&p) {
                        info!(relay = %p, "relay discovered through the DHT");
                        self.relays.insert(p, Vec::new());
                        // Dial while the query still holds the provider's addresses; the
                        // connection tells us an address that works.
                        self.dial_known(p);
                    }
                }
            }
            kad::QueryResult::StartProviding(Ok(ok)) => {
                debug!(key = %String::from_utf8_lossy(ok.key.as_ref()), "provider record published");
                self.provided.insert(ok.key, true);
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                debug!(error = %e, "publishing provider record failed; retrying later");
            }
            kad::QueryResult::GetClosestPeers(Ok(ok)) => {
                for info in ok.peers {
                    if let Some(addrs) = self.relays.get_mut(&info.peer_id)
                        && addrs.is_empty()
                    {
                        addrs.extend(
                            info.addrs
                                .iter()
                                .filter(|a| !super::is_relayed(a))
                                .map(super::without_peer_id),
                        );
                    }
                }
                self.manage_reservations();
            }
            _ => {}
        }
    }

    fn peer_found(&mut self, peer: PeerId) {
        if self.discovered.insert(peer) {
            metrics::counter!(m::DISCOVERED_PEERS, "source" => "dht").increment(1);
            info!(%peer, "peer discovered through the DHT");
        }
        self.dial_known(peer);
    }

    /// Dials `peer` with the addresses the behaviours know (DHT queries, routing table).
    fn dial_known(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "cannot dial discovered peer");
        }
    }

    pub(super) fn reservation_of(&self, listener: ListenerId) -> Option<PeerId> {
        self.reservations
            .iter()
            .find(|(_, r)| r.listener == Some(listener))
            .map(|(p, _)| *p)
    }

    pub(super) fn reservation_lost(&mut self, relay: PeerId) {
        self.reservations.remove(&relay);
        self.relay_backoff
            .insert(relay, Instant::now() + RELAY_BACKOFF);
        // Try the relay's next address next time.
        if let Some(addrs) = self.relays.get_mut(&relay)
            && addrs.len() > 1
        {
            addrs.rotate_left(1);
        }
        self.update_reservation_gauge();
        self.manage_reservations();
    }

    /// Holds reservations on up to `network.max_relays` relays while the peer wants them
    /// (private, or `relay_reservations: always`), and drops them when it no longer does.
    pub(super) fn manage_reservations(&mut self) {
        if self.config.role != Role::Peer {
            return;
        }
        if !self.wants_reservations() {
            if !self.reservations.is_empty() {
                info!(
                    nat = self.nat.as_str(),
                    "dropping relay reservations: no longer needed"
                );
                for (_, r) in self.reservations.drain() {
                    if let Some(listener) = r.listener {
                        self.swarm.remove_listener(listener);
                    }
                }
                self.update_reservation_gauge();
            }
            return;
        }
        let now = Instant::now();
        self.relay_backoff.retain(|_, until| *until > now);
        self.request_reservations_on_connected_relays(now);
        let configured: Vec<PeerId> = self
            .config
            .network
            .relay_nodes
            .iter()
            .map(|r| r.peer_id)
            .collect();
        let mut candidates: Vec<PeerId> = self
            .relays
            .iter()
            .filter(|(p, addrs)| {
                !addrs.is_empty()
                    && !self.reservations.contains_key(*p)
                    && !self.relay_backoff.contains_key(*p)
                    && **p != self.peer_id
            })
            .map(|(p, _)| *p)
            .collect();
        // Configured relays first, in config order; then the others.
        candidates.sort_by_key(|p| configured.iter().position(|c| c == p).unwrap_or(usize::MAX));
        for relay in candidates {
            if self.reservations.len() >= self.config.network.max_relays {
                break;
            }
            self.reservations.insert(
                relay,
                Reservation {
                    listener: None,
                    accepted: false,
                    addr: None,
                    since: now,
                },
            );
            if self.swarm.is_connected(&relay) {
                self.request_reservation(relay, now);
                continue;
            }
            let opts = DialOpts::peer_id(relay)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(self.relays[&relay].clone())
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => debug!(%relay, "dialing relay for a reservation"),
                // Already being dialed (for example as a configured relay at start).
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    warn!(%relay, error = %error_chain(&e), "cannot dial relay for a reservation");
                    self.reservations.remove(&relay);
                    self.relay_backoff.insert(relay, now + RELAY_BACKOFF);
                }
            }
        }
    }

    /// Requests the reservations whose relay is now connected, and gives up on relays
    /// that could not be reached within [`RELAY_DIAL_TIMEOUT`].
    fn request_reservations_on_connected_relays(&mut self, now: Instant) {
        let waiting: Vec<(PeerId, Instant)> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.listener.is_none())
            .map(|(p, r)| (*p, r.since))
            .collect();
        for (relay, since) in waiting {
            if self.swarm.is_connected(&relay) {
                self.request_reservation(relay, now);
            } else if now.duration_since(since) >= RELAY_DIAL_TIMEOUT {
                warn!(%relay, "relay not reachable; trying another one later");
                self.reservation_lost(relay);
            }
        }
    }

    /// Asks a connected relay for a reservation: the relay client uses the existing
    /// connection and does not dial.
    fn request_reservation(&mut self, relay: PeerId, now: Instant) {
        let Some(base) = self.relays.get(&relay).and_then(|a| a.first()) else {
            self.reservations.remove(&relay);
            return;
        };
        let addr = base
            .clone()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(addr.clone()) {
            Ok(listener) => {
                info!(%relay, %addr, "requesting relay reservation");
                if let Some(r) = self.reservations.get_mut(&relay) {
                    r.listener = Some(listener);
                    r.since = now;
                }
            }
            Err(e) => {
                warn!(%relay, %addr, error = %e, "cannot request relay reservation");
                self.reservations.remove(&relay);
                self.relay_backoff.insert(relay, now + RELAY_BACKOFF);
            }
        }
    }

    /// A dial failed: a reservation waiting for that relay's connection tries the
    /// relay's next address after the backoff.
    pub(super) fn relay_dial_failed(&mut self, relay: PeerId) {
        let waiting = self
            .reservations
            .get(&relay)
            .is_some_and(|r| r.listener.is_none());
        if waiting && !self.swarm.is_connected(&relay) {
            debug!(%relay, "relay dial failed; trying another relay later");
            self.reservation_lost(relay);
        }
    }
}
