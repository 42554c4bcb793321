//! Announcing the newest release and the key rotations again when peers join their
//! topics.

use std::time::{Duration, Instant};

use libp2p::gossipsub;
use tracing::debug;

use super::Updates;
use crate::node::files::Net;

/// The newest release is announced again at most this often (when a peer joins the
/// topic).
const REANNOUNCE: Duration = Duration::from_secs(10);

/// Announcing what this node holds again when peers join a topic: at most every
/// [`REANNOUNCE`]; a join during the cool-down is announced when it ends; a publish that
/// reached no one starts no cool-down.
#[derive(Debug, Default)]
pub(super) struct Announcements {
    pub(super) pending: bool,
    pub(super) last: Option<Instant>,
}

impl Announcements {
    pub(super) fn due(&self) -> bool {
        self.pending && self.last.is_none_or(|t| t.elapsed() >= REANNOUNCE)
    }

    pub(super) fn publish(
        &mut self,
        g: &mut gossipsub::Behaviour,
        topic: &gossipsub::TopicHash,
        messages: Vec<Vec<u8>>,
    ) {
        self.pending = false;
        let topic = gossipsub::IdentTopic::new(topic.as_str());
        for m in messages {
            match g.publish(topic.clone(), m) {
                Ok(_) => self.last = Some(Instant::now()),
                Err(e) => debug!(topic = %topic, error = %e, "not announced"),
            }
        }
    }
}

impl Updates {
    /// A peer joined the topic: the newest release is announced again (see
    /// [`Announcements`]), so peers that were away learn of it.
    pub(in crate::node) fn on_subscribed(&mut self, net: &mut Net<'_>) {
        self.announce.pending = self.newest.is_some();
        self.announce_due(net);
    }
    /// Publishes what is pending and out of its cool-down (also from housekeeping).
    pub(super) fn announce_due(&mut self, net: &mut Net<'_>) {
        let Some(g) = net.swarm.behaviour_mut().gossipsub.as_mut() else {
            return;
        };
        if self.announce.due() {
            let bytes = self.newest.as_ref().map(|(_, b)| vec![b.clone()]);
            self.announce
                .publish(g, &self.topic, bytes.unwrap_or_default());
        }
        if self.keys_announce.due() {
            let links = self
                .chain
                .roots
                .iter()
                .map(|r| r.to_json().into_bytes())
                .collect();
            self.keys_announce.publish(g, &self.keys_topic, links);
        }
    }
}
