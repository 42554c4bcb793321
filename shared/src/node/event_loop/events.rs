//! Routing: each swarm and behaviour event goes to the parts that care, in order.

use libp2p::{
    PeerId, identify, ping,
    swarm::{ConnectionError, ConnectionId, SwarmEvent},
};
use tracing::{debug, info, warn};

use super::EventLoop;
use crate::{
    behaviour::BehaviourEvent,
    error::ErrorChain,
    node::{
        connections::is_loopback, dht::DhtEvent, discovery::PEERS_KEY, relay_client::RELAYS_KEY,
    },
    status::ConnectionKind,
};

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { .. }
            | SwarmEvent::ListenerClosed { .. }
            | SwarmEvent::ListenerError { .. } => self.on_listener_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let info = self
                    .connections
                    .established(peer_id, connection_id, &endpoint)
                    .clone();
                let _span = info.span().entered();
                self.dht.connected(peer_id, &info.addr, info.outbound);
                self.peering.connected(&info);
                if let Some(rc) = self.relay_client.as_mut() {
                    rc.connected(&mut self.swarm, &info, self.reachability.nat());
                }
                self.update_connection_gauges();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => self.on_connection_closed(peer_id, connection_id, cause.as_ref()),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.connections.dial_failed(connection_id, peer_id, &error);
                if let Some(peer) = peer_id {
                    self.peering.dial_failed(peer, &error);
                }
                if let (Some(peer), Some(rc)) = (peer_id, self.relay_client.as_mut()) {
                    rc.dial_failed(&mut self.swarm, peer, self.reachability.nat());
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.connections.incoming_failed(&send_back_addr, &error),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                self.dht.records.invalidate();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                info!(%address, "external address expired");
                self.dht.records.invalidate();
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_listener_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let reservation = self
                    .relay_client
                    .as_mut()
                    .is_some_and(|rc| rc.listening(listener_id, &address));
                if !reservation {
                    info!(%address, "listening");
                }
                self.connections.listener_done(listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                self.connections.listener_done(listener_id);
                let nat = self.reachability.nat();
                let reservation = self.relay_client.as_mut().is_some_and(|rc| {
                    rc.listener_closed(&mut self.swarm, listener_id, &reason, nat)
                });
                if !reservation {
                    match reason {
                        Ok(()) => debug!(?addresses, "listener closed"),
                        Err(e) => warn!(?addresses, error = %ErrorChain(&e), "listener failed"),
                    }
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                warn!(?listener_id, error = %ErrorChain(&error), "listener error");
            }
            _ => {}
        }
    }

    fn on_connection_closed(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        cause: Option<&ConnectionError>,
    ) {
        let closed = self.connections.closed(id);
        let _span = closed.as_ref().map(|c| c.span().entered());
        debug!(%peer, cause = ?cause.map(|e| e.to_string()), "connection closed");
        let still_connected = self.swarm.is_connected(&peer);
        if !still_connected {
            self.dht.disconnected(&peer);
            if self
                .subscriptions
                .as_mut()
                .is_some_and(|s| s.disconnected(&peer))
                && !self.peering.dial_stored(&mut self.swarm, peer)
            {
                info!(%peer, "cannot dial the peer again: no address known; it may dial in");
            }
        }
        self.peering.disconnected(peer, still_connected);
        if closed.is_some_and(|c| c.kind == ConnectionKind::Relayed)
            && let Some((files, mut net)) = self.files()
        {
            files.relayed_connection_lost(&mut net, peer);
        }
        self.update_connection_gauges();
    }

    fn update_connection_gauges(&self) {
        self.connections
            .update_gauges(self.swarm.network_info().num_peers());
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(e) => self.on_identify(e),
            BehaviourEvent::Kad(e) => {
                for found in self.dht.on_event(&mut self.swarm, e) {
                    self.on_dht_event(found);
                }
            }
            BehaviourEvent::Autonat(e) => {
                if self.reachability.on_autonat(&mut self.swarm, e) {
                    self.manage_reservations();
                }
            }
            BehaviourEvent::Relay(e) => {
                if let Some(rs) = self.relay_server.as_mut()
                    && rs.on_event(e)
                {
                    self.dht.records.invalidate();
                }
            }
            BehaviourEvent::RelayClient(e) => {
                if let Some(rc) = self.relay_client.as_mut() {
                    rc.on_event(&mut self.swarm, e);
                }
            }
            BehaviourEvent::Dcutr(e) => {
                self.reachability
                    .on_dcutr(&mut self.swarm, &self.connections, e);
            }
            BehaviourEvent::Mdns(e) => self.discovery.on_mdns(&mut self.swarm, e),
            BehaviourEvent::Upnp(e) => self.reachability.on_upnp(e),
            BehaviourEvent::Gossipsub(e) => {
                use libp2p::gossipsub::Event;
                if matches!(e, Event::Subscribed { .. }) {
                    self.reachability
                        .close_replaced(&mut self.swarm, &self.connections);
                }
                if let Some((u, files, mut net)) = self.updates() {
                    match &e {
                        Event::Message {
                            propagation_source,
                            message_id,
                            message,
                        } if &message.topic == u.topic() => {
                            u.on_message(files, &mut net, *propagation_source, message_id, message);
                            return;
                        }
                        Event::Message {
                            propagation_source,
                            message_id,
                            message,
                        } if &message.topic == u.keys_topic() => {
                            u.on_root_message(&mut net, *propagation_source, message_id, message);
                            return;
                        }
                        Event::Subscribed { topic, .. } if topic == u.topic() => {
                            u.on_subscribed(&mut net);
                            return;
                        }
                        Event::Subscribed { topic, .. } if topic == u.keys_topic() => {
                            u.on_keys_subscribed(&mut net);
                            return;
                        }
                        _ => {}
                    }
                }
                if let Some((files, mut net)) = self.files() {
                    files.on_gossip(&mut net, e);
                }
            }
            BehaviourEvent::Files(e) => {
                if let Some((files, mut net)) = self.files() {
                    files.on_transfer(&mut net, e);
                }
                self.record_observations();
            }
            BehaviourEvent::Ping(e) => self.on_ping(e),
            BehaviourEvent::ConnectionLimits(_) | BehaviourEvent::PeerLimits(_) => {}
            BehaviourEvent::KeepAlive(never) => match never {},
        }
    }

    fn on_dht_event(&mut self, event: DhtEvent) {
        let nat = self.reachability.nat();
        match event {
            DhtEvent::Providers {
                query,
                key,
                providers,
            } => {
                if let Some((files, mut net)) = self.files()
                    && files.on_providers(&mut net, query, &providers)
                {
                    return;
                }
                if key.as_ref() == PEERS_KEY {
                    let wanted = self.peering.wanted();
                    self.discovery
                        .found_in_dht(&mut self.swarm, providers, wanted);
                } else if key.as_ref() == RELAYS_KEY
                    && let Some(rc) = self.relay_client.as_mut()
                {
                    rc.found_in_dht(&mut self.swarm, providers);
                }
            }
            DhtEvent::ClosestPeers(peers) => {
                if let Some(rc) = self.relay_client.as_mut() {
                    rc.closest_peers(&mut self.swarm, peers, nat);
                }
            }
            DhtEvent::QueryEnded(query) => {
                if let Some(files) = self.files.as_mut() {
                    files.query_ended(query);
                }
            }
        }
    }

    fn on_identify(&mut self, e: identify::Event) {
        let identify::Event::Received {
            peer_id,
            connection_id,
            mut info,
        } = e
        else {
            return;
        };
        let _span = self
            .connections
            .get(connection_id)
            .map(|c| c.span().entered());
        // A peer's loopback addresses are only worth keeping when we reach it over
        // loopback ourselves; otherwise dialing them reaches this host, not that peer.
        if !self.connections.via_loopback(&peer_id) {
            info.listen_addrs.retain(|a| !is_loopback(a));
        }
        self.connections.identified(connection_id);
        if let Some(s) = self.subscriptions.as_mut() {
            s.identified(
                peer_id,
                &info.agent_version,
                &info.protocols,
                std::time::Instant::now(),
            );
        }
        self.reachability
            .close_replaced(&mut self.swarm, &self.connections);
        if let Some(source) = self.connections.get(connection_id).map(|c| c.addr.clone()) {
            self.peering
                .identified(peer_id, &source, &info.protocols, &info.listen_addrs);
            self.dht.identified(
                &mut self.swarm,
                peer_id,
                &source,
                &info.protocols,
                &info.listen_addrs,
            );
        }
        if let Some(rc) = self.relay_client.as_mut() {
            rc.identified(
                &mut self.swarm,
                peer_id,
                &info.protocols,
                &info.listen_addrs,
                self.reachability.nat(),
            );
        }
    }

    fn on_ping(&mut self, e: ping::Event) {
        let ping::Event {
            peer,
            connection,
            result,
        } = e;
        let _span = self.connections.get(connection).map(|c| c.span().entered());
        match result {
            Ok(rtt) => self.peering.ping(peer, rtt),
            // Not a dead connection: a peer (or tool) that does not speak ping.
            Err(ping::Failure::Unsupported) => debug!(%peer, "peer does not support ping"),
            // A connection that no longer answers pings is dead (a NAT dropped its
            // mapping, a link went down): close it so reservations and routes recover.
            Err(e) => {
                info!(%peer, error = %e, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
        }
    }
}
