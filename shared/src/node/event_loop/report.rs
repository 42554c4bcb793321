//! `/status` and `/dht/stats`, assembled from the parts.

use super::EventLoop;
use crate::status::{DhtStats, Status};

impl EventLoop {
    pub(super) fn status(&mut self) -> Status {
        let ready = self.is_ready();
        let swarm = &self.swarm;
        Status {
            name: self.name.clone(),
            role: self.role.as_str().into(),
            version: crate::version::version().into(),
            peer_id: swarm.local_peer_id().to_string(),
            ready,
            listen_addresses: swarm.listeners().map(|a| a.to_string()).collect(),
            external_addresses: swarm.external_addresses().map(|a| a.to_string()).collect(),
            nat_status: self.reachability.nat(),
            dht_mode: swarm.behaviour().kad.as_ref().map(|k| k.mode().to_string()),
            connected_peers: swarm.network_info().num_peers(),
            connections: self.connections.statuses(),
            reservations: self
                .relay_client
                .as_ref()
                .map(|r| r.reservation_statuses())
                .unwrap_or_default(),
            known_relays: self
                .relay_client
                .as_ref()
                .map(|r| r.known_relays())
                .unwrap_or_default(),
            discovered_peers: self.discovery.discovered(),
            relay: self.relay_server.as_ref().map(|r| r.status()),
            peers: self.peering.status_peers(&self.busy_peers()),
            peer_management: self.peering.management(),
            update: self.updates.as_ref().map(|u| u.status()),
        }
    }

    pub(super) fn dht_stats(&mut self) -> DhtStats {
        self.dht.stats(&mut self.swarm)
    }
}
