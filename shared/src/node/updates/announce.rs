//! Announcing the newest release and the key rotations again when peers join their
//! topics (see [`Announcements`](crate::node::announce::Announcements)).

use super::Updates;
use crate::node::files::Net;

impl Updates {
    /// A peer joined the topic: the newest release is announced again (see
    /// [`Announcements`](crate::node::announce::Announcements)), so peers that were away
    /// learn of it.
    pub(in crate::node) fn on_subscribed(&mut self, net: &mut Net<'_>) {
        if self.newest.is_some() {
            self.announce.request();
        }
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
                .publish(g, self.topic.as_str(), bytes.unwrap_or_default());
        }
        if self.keys_announce.due() {
            let links = self
                .chain
                .roots
                .iter()
                .map(|r| r.to_json().into_bytes())
                .collect();
            self.keys_announce
                .publish(g, self.keys_topic.as_str(), links);
        }
    }
}
