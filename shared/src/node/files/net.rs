//! What the file part works on besides its own state.

use libp2p::{Swarm, gossipsub};
use serde::Serialize;
use tracing::debug;

use crate::{
    behaviour::Behaviour,
    files::id::FileId,
    node::{connections::Connections, dht::ProviderRecords},
};

/// What the file part works on besides its own state: the swarm (gossip, transfers,
/// provider lookups), the connection table (which providers are direct), and the
/// provider records the node publishes.
pub(in crate::node) struct Net<'a> {
    pub(in crate::node) swarm: &'a mut Swarm<Behaviour>,
    pub(in crate::node) connections: &'a Connections,
    pub(in crate::node) records: &'a mut ProviderRecords,
}

impl Net<'_> {
    pub(super) fn provide(&mut self, id: FileId) {
        self.records.provide(self.swarm, id.dht_key());
    }

    pub(super) fn withdraw(&mut self, id: FileId) {
        self.records.withdraw(self.swarm, &id.dht_key());
    }

    /// Publishes `payload` as JSON on `topic`; not being able to (no peers yet) is normal.
    pub(super) fn publish<T: Serialize>(&mut self, topic: &str, payload: &T) {
        let Ok(data) = serde_json::to_vec(payload) else {
            return;
        };
        if let Some(g) = self.swarm.behaviour_mut().gossipsub.as_mut()
            && let Err(e) = g.publish(gossipsub::IdentTopic::new(topic), data)
        {
            debug!(topic, error = %e, "not published");
        }
    }
}
