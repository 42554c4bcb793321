//! Swarm and behaviour events: bookkeeping, metrics and logs.

use std::time::Instant;

use libp2p::{
    autonat,
    core::ConnectedPoint,
    dcutr, identify, kad, mdns, relay,
    swarm::{
        SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
    upnp,
};
use tracing::{debug, info, warn};

use super::{ConnInfo, Node, is_relayed};
use crate::{
    behaviour::{BehaviourEvent, KAD_PROTOCOL},
    metrics as m,
    status::{ConnectionKind, ConnectionStatus, NatStatus},
};

fn is_loopback(addr: &libp2p::Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback(),
        libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// An error with its sources, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

impl Node {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(relay) = self.reservation_of(listener_id) {
                    info!(%relay, %address, "reachable through relay");
                    if let Some(r) = self.reservations.get_mut(&relay) {
                        r.addr = Some(address);
                    }
                } else {
                    info!(%address, "listening");
                }
                self.pending_listeners.remove(&listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                self.pending_listeners.remove(&listener_id);
                if let Some(relay) = self.reservation_of(listener_id) {
                    let why = match &reason {
                        Ok(()) => "closed".to_string(),
                        Err(e) => error_chain(e),
                    };
                    warn!(%relay, reason = %why, "relay reservation ended");
                    self.reservation_lost(relay);
                } else {
                    match reason {
                        Ok(()) => debug!(?addresses, "listener closed"),
                        Err(e) => warn!(?addresses, error = %error_chain(&e), "listener failed"),
                    }
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                warn!(?listener_id, error = %error_chain(&error), "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let (addr, outbound) = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        (send_back_addr.clone(), false)
                    }
                };
                let kind = if endpoint.is_relayed() || is_relayed(&addr) {
                    ConnectionKind::Relayed
                } else {
                    ConnectionKind::Direct
                };
                let dir = if outbound { "outbound" } else { "inbound" };
                debug!(%peer_id, %addr, kind = kind.as_str(), direction = dir, "connection established");
                metrics::counter!(m::CONNECTIONS_OPENED, "kind" => kind.as_str(), "direction" => dir).increment(1);
                let info = ConnInfo {
                    peer: peer_id,
                    addr,
                    outbound,
                    kind,
                    since: Instant::now(),
                };
                if let Some(reply) = self.pending_connects.remove(&connection_id) {
                    let _ = reply.send(Ok(ConnectionStatus {
                        peer_id: peer_id.to_string(),
                        address: info.addr.to_string(),
                        direction: dir.into(),
                        kind,
                        age_secs: 0,
                    }));
                }
                if outbound && kind == ConnectionKind::Direct && self.relays.contains_key(&peer_id)
                {
                    // An address that just worked is the best one to reach the relay at,
                    // and the relay answers AutoNAT probes.
                    let addr = super::without_peer_id(&info.addr);
                    self.swarm
                        .behaviour_mut()
                        .autonat
                        .add_server(peer_id, Some(addr.clone()));
                    let addrs = self.relays.entry(peer_id).or_default();
                    if !addrs.contains(&addr) {
                        addrs.insert(0, addr);
                    }
                }
                self.connections.insert(connection_id, info);
                self.update_connection_gauges();
                if self
                    .reservations
                    .get(&peer_id)
                    .is_some_and(|r| r.listener.is_none())
                {
                    self.manage_reservations();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                let relayed = if let Some(c) = self.connections.remove(&connection_id) {
                    metrics::counter!(m::CONNECTIONS_CLOSED, "kind" => c.kind.as_str())
                        .increment(1);
                    c.kind == ConnectionKind::Relayed
                } else {
                    false
                };
                debug!(%peer_id, cause = ?cause.as_ref().map(|e| e.to_string()), "connection closed");
                if !self.swarm.is_connected(&peer_id) {
                    // Only connected DHT servers count as being in touch with the
                    // network: without any, the bootstrap nodes are dialed again.
                    self.dht_servers.remove(&peer_id);
                }
                if relayed {
                    self.relayed_connection_lost(peer_id);
                }
                self.update_connection_gauges();
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let msg = error_chain(&error);
                if let Some(reply) = self.pending_connects.remove(&connection_id) {
                    let _ = reply.send(Err(msg.clone()));
                }
                if let libp2p::swarm::DialError::Denied { .. } = error {
                    metrics::counter!(m::CONNECTIONS_DENIED, "reason" => "limit", "direction" => "outbound").increment(1);
                }
                debug!(peer = ?peer_id, error = %msg, "dial failed");
                if let Some(peer) = peer_id {
                    self.relay_dial_failed(peer);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let reason = match error {
                    libp2p::swarm::ListenError::Denied { .. } => "limit",
                    _ => "error",
                };
                metrics::counter!(m::CONNECTIONS_DENIED, "reason" => reason, "direction" => "inbound").increment(1);
                debug!(%send_back_addr, error = %error_chain(&error), "inbound connection failed");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                self.addresses_changed();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                info!(%address, "external address expired");
                self.addresses_changed();
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    pub(super) fn update_connection_gauges(&self) {
        let mut counts = [[0u32; 2]; 2];
        for c in self.connections.values() {
            counts[(c.kind == ConnectionKind::Relayed) as usize][c.outbound as usize] += 1;
        }
        for (k, kind) in ["direct", "relayed"].into_iter().enumerate() {
            for (d, dir) in ["inbound", "outbound"].into_iter().enumerate() {
                metrics::gauge!(m::CONNECTIONS, "kind" => kind, "direction" => dir)
                    .set(f64::from(counts[k][d]));
            }
        }
        metrics::gauge!(m::PEERS).set(self.swarm.network_info().num_peers() as f64);
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(e) => self.on_identify(e),
            BehaviourEvent::Kad(e) => self.on_kad(e),
            BehaviourEvent::Autonat(e) => self.on_autonat(e),
            BehaviourEvent::Relay(e) => self.on_relay(e),
            BehaviourEvent::RelayClient(e) => self.on_relay_client(e),
            BehaviourEvent::Dcutr(e) => self.on_dcutr(e),
            BehaviourEvent::Mdns(e) => self.on_mdns(e),
            BehaviourEvent::Upnp(e) => self.on_upnp(e),
            BehaviourEvent::Gossipsub(e) => self.on_gossip(e),
            BehaviourEvent::Files(e) => self.on_transfer(e),
            BehaviourEvent::Ping(libp2p::ping::Event {
                result: Err(libp2p::ping::Failure::Unsupported),
                peer,
                ..
            }) => {
                // Not a dead connection: a peer (or tool) that does not speak ping.
                debug!(%peer, "peer does not support ping");
            }
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(e),
            }) => {
                // A connection that no longer answers pings is dead (a NAT dropped its
                // mapping, a link went down): close it so reservations and routes recover.
                info!(%peer, error = %e, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Ping(_)
            | BehaviourEvent::ConnectionLimits(_)
            | BehaviourEvent::PeerLimits(_) => {}
        }
    }

    fn on_identify(&mut self, e: identify::Event) {
        let identify::Event::Received {
            peer_id, mut info, ..
        } = e
        else {
            return;
        };
        // A peer's loopback addresses are only worth keeping when we reach it over
        // loopback ourselves; otherwise dialing them reaches this host, not that peer.
        let via_loopback = self
            .connections
            .values()
            .any(|c| c.peer == peer_id && is_loopback(&c.addr));
        if !via_loopback {
            info.listen_addrs.retain(|a| !is_loopback(a));
        }
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            if info.protocols.contains(&KAD_PROTOCOL) {
                for addr in &info.listen_addrs {
                    kad.add_address(&peer_id, addr.clone());
                }
                self.dht_servers.insert(peer_id);
            } else {
                // A peer that switched to DHT client mode.
                self.dht_servers.remove(&peer_id);
            }
        }
        if self.config.role == crate::config::Role::Peer
            && info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
        {
            let addrs = self.relays.entry(peer_id).or_default();
            for a in info.listen_addrs.iter().filter(|a| !is_relayed(a)) {
                let a = super::without_peer_id(a);
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            self.manage_reservations();
        }
    }

    fn on_kad(&mut self, e: kad::Event) {
        match e {
            kad::Event::InboundRequest { request } => {
                let kind = match &request {
                    kad::InboundRequest::FindNode { .. } => "find_node",
                    kad::InboundRequest::GetProvider { .. } => "get_providers",
                    kad::InboundRequest::AddProvider { .. } => "add_provider",
                    kad::InboundRequest::GetRecord { .. } => "get_record",
                    kad::InboundRequest::PutRecord { .. } => "put_record",
                };
                *self.queries_served.entry(kind).or_default() += 1;
                metrics::counter!(m::DHT_QUERIES_SERVED, "kind" => kind).increment(1);
                // With filtering on (bootstrap nodes), records arrive here to be stored by
                // us; a stateless node drops them.
                match request {
                    kad::InboundRequest::AddProvider { record: Some(_) } => {
                        metrics::counter!(m::DHT_INSERTS_REFUSED, "kind" => "provider")
                            .increment(1);
                    }
                    kad::InboundRequest::PutRecord {
                        record: Some(_), ..
                    } => {
                        metrics::counter!(m::DHT_INSERTS_REFUSED, "kind" => "record").increment(1);
                    }
                    _ => {}
                }
            }
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if is_new_peer {
                    debug!(%peer, "added to routing table");
                }
                self.update_routing_gauges();
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query_result(id, result, step.last),
            _ => {}
        }
    }

    pub(super) fn update_routing_gauges(&mut self) {
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            let (mut peers, mut buckets) = (0usize, 0usize);
            for b in kad.kbuckets() {
                if b.num_entries() > 0 {
                    buckets += 1;
                    peers += b.num_entries();
                }
            }
            metrics::gauge!(m::DHT_ROUTING_TABLE_PEERS).set(peers as f64);
            metrics::gauge!(m::DHT_BUCKETS).set(buckets as f64);
        }
    }

    fn on_autonat(&mut self, e: autonat::Event) {
        match e {
            autonat::Event::StatusChanged { old, new } => {
                let nat = match &new {
                    autonat::NatStatus::Public(_) => NatStatus::Public,
                    autonat::NatStatus::Private => NatStatus::Private,
                    autonat::NatStatus::Unknown => NatStatus::Unknown,
                };
                match &new {
                    autonat::NatStatus::Public(addr) => info!(%addr, "NAT status: public"),
                    _ => info!(from = ?old, "NAT status: {}", nat.as_str()),
                }
                self.set_nat(nat);
                if self.config.role == crate::config::Role::Peer
                    && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                {
                    let mode = if nat == NatStatus::Public {
                        kad::Mode::Server
                    } else {
                        kad::Mode::Client
                    };
                    if kad.mode() != mode {
                        info!(%mode, "DHT mode changed");
                        kad.set_mode(Some(mode));
                    }
                }
                self.manage_reservations();
            }
            autonat::Event::InboundProbe(p) => {
                let result = match p {
                    autonat::InboundProbeEvent::Request { .. } => return,
                    autonat::InboundProbeEvent::Response { .. } => "reachable",
                    autonat::InboundProbeEvent::Error { .. } => "unreachable_or_refused",
                };
                metrics::counter!(m::AUTONAT_PROBES_SERVED, "result" => result).increment(1);
            }
            autonat::Event::OutboundProbe(_) => {}
        }
    }

    fn on_relay(&mut self, e: relay::Event) {
        #[allow(deprecated)]
        match e {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                let result = if renewed { "renewed" } else { "accepted" };
                metrics::counter!(m::RELAY_RESERVATION_REQUESTS, "result" => result, "reason" => "ok").increment(1);
                if !renewed {
                    *self
                        .relay_server
                        .reservations
                        .entry(src_peer_id)
                        .or_default() += 1;
                    info!(peer = %src_peer_id, "relay reservation accepted");
                }
            }
            relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                let reason = status_reason(status);
                self.relay_server.reservations_denied += 1;
                metrics::counter!(m::RELAY_RESERVATION_REQUESTS, "result" => "denied", "reason" => reason).increment(1);
                info!(peer = %src_peer_id, reason, "relay reservation denied");
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                if let Some(n) = self.relay_server.reservations.get_mut(&src_peer_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.relay_server.reservations.remove(&src_peer_id);
                    }
                }
                debug!(peer = %src_peer_id, "relay reservation ended");
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                self.relay_server.circuits += 1;
                metrics::counter!(m::RELAY_CIRCUIT_REQUESTS, "result" => "accepted", "reason" => "ok").increment(1);
                info!(src = %src_peer_id, dst = %dst_peer_id, "circuit opened");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                let reason = status_reason(status);
                self.relay_server.circuits_denied += 1;
                metrics::counter!(m::RELAY_CIRCUIT_REQUESTS, "result" => "denied", "reason" => reason).increment(1);
                info!(src = %src_peer_id, dst = %dst_peer_id, reason, "circuit denied");
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                self.relay_server.circuits = self.relay_server.circuits.saturating_sub(1);
                debug!(src = %src_peer_id, dst = %dst_peer_id, error = ?error.map(|e| e.to_string()), "circuit closed");
            }
            relay::Event::StatusChanged { status } => {
                self.relay_server.serving = status == relay::Status::Enable;
                info!(
                    serving = self.relay_server.serving,
                    "relay service status changed"
                );
                self.addresses_changed();
            }
            _ => {}
        }
        metrics::gauge!(m::RELAY_RESERVATIONS)
            .set(self.relay_server.reservations.values().sum::<usize>() as f64);
        metrics::gauge!(m::RELAY_CIRCUITS).set(self.relay_server.circuits as f64);
    }

    fn on_relay_client(&mut self, e: relay::client::Event) {
        match e {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                limit,
            } => {
                if let Some(r) = self.reservations.get_mut(&relay_peer_id) {
                    r.accepted = true;
                }
                if !renewal {
                    info!(relay = %relay_peer_id, ?limit, "relay reservation accepted");
                }
                self.relay_backoff.remove(&relay_peer_id);
                self.update_reservation_gauge();
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "outbound circuit established");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(src = %src_peer_id, "inbound circuit established");
            }
        }
    }

    pub(super) fn update_reservation_gauge(&self) {
        let active = self.reservations.values().filter(|r| r.accepted).count();
        metrics::gauge!(m::RELAY_CLIENT_RESERVATIONS).set(active as f64);
    }

    fn on_dcutr(&mut self, e: dcutr::Event) {
        match e.result {
            Ok(direct) => {
                metrics::counter!(m::HOLEPUNCH, "result" => "success").increment(1);
                info!(peer = %e.remote_peer_id, "hole punch succeeded; direct connection");
                // The direct connection replaces the relayed ones.
                let relayed: Vec<_> = self
                    .connections
                    .iter()
                    .filter(|(id, c)| {
                        c.peer == e.remote_peer_id
                            && c.kind == ConnectionKind::Relayed
                            && **id != direct
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in relayed {
                    self.swarm.close_connection(id);
                }
            }
            Err(err) => {
                metrics::counter!(m::HOLEPUNCH, "result" => "failure").increment(1);
                info!(peer = %e.remote_peer_id, error = %error_chain(&err), "hole punch failed; staying relayed");
            }
        }
    }

    fn on_mdns(&mut self, e: mdns::Event) {
        if let mdns::Event::Discovered(list) = e {
            for (peer, addr) in list {
                if peer == self.peer_id {
                    continue;
                }
                if self.discovered.insert(peer) {
                    metrics::counter!(m::DISCOVERED_PEERS, "source" => "mdns").increment(1);
                    info!(%peer, %addr, "peer discovered on the local network");
                }
                let opts = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(vec![addr])
                    .build();
                let _ = self.swarm.dial(opts);
            }
        }
    }

    fn on_upnp(&mut self, e: upnp::Event) {
        match e {
            upnp::Event::NewExternalAddr { external_addr, .. } => {
                info!(addr = %external_addr, "UPnP mapped a port")
            }
            upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                info!(addr = %external_addr, "UPnP mapping expired")
            }
            upnp::Event::GatewayNotFound => debug!("no UPnP gateway"),
            upnp::Event::NonRoutableGateway => debug!("UPnP gateway is not routable"),
        }
    }
}

fn status_reason(s: relay::StatusCode) -> &'static str {
    match s {
        relay::StatusCode::OK => "ok",
        relay::StatusCode::ReservationRefused => "reservation_refused",
        relay::StatusCode::ResourceLimitExceeded => "resource_limit_exceeded",
        relay::StatusCode::PermissionDenied => "permission_denied",
        relay::StatusCode::ConnectionFailed => "connection_failed",
        relay::StatusCode::NoReservation => "no_reservation",
        relay::StatusCode::MalformedMessage => "malformed_message",
        relay::StatusCode::UnexpectedMessage => "unexpected_message",
    }
}
