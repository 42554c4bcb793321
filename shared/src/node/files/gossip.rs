//! Gossip: file announcements on [`FILES_TOPIC`] (remembered, and replicated by
//! policy) and messages on [`MESSAGES_TOPIC`], both validated before gossipsub forwards
//! them; shared files are announced again when a peer joins the topic.

use std::time::Instant;

use libp2p::{PeerId, gossipsub};
use tracing::{debug, warn};

use super::{gossip_rate::RateVerdict, net::Net, service::FileService};
use crate::{
    files::{
        protocol::{Announcement, FILES_TOPIC, MESSAGES_TOPIC, parse_announcement, parse_message},
        store::Origin,
    },
    metrics as m,
};

impl FileService {
    pub(in crate::node) fn on_gossip(&mut self, net: &mut Net<'_>, e: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = e
        else {
            if let gossipsub::Event::Subscribed { topic, .. } = e
                && topic == gossipsub::IdentTopic::new(FILES_TOPIC).hash()
            {
                self.gossip.announce.request();
                self.announce_due(net);
            }
            return;
        };
        let topic = if message.topic == gossipsub::IdentTopic::new(FILES_TOPIC).hash() {
            FILES_TOPIC
        } else {
            MESSAGES_TOPIC
        };
        let source = message.source;
        let rate = source.map_or(RateVerdict::Within, |src| {
            self.rates.check(
                topic == FILES_TOPIC,
                src,
                propagation_source,
                Instant::now(),
            )
        });
        let (acceptance, result) = match (rate, source) {
            (RateVerdict::Ignore, _) => (gossipsub::MessageAcceptance::Ignore, "over_rate"),
            (RateVerdict::Reject, _) => {
                debug!(peer = %propagation_source, topic, "rejected gossip message over the sender's rate");
                (gossipsub::MessageAcceptance::Reject, "over_rate")
            }
            (RateVerdict::Within, src) => {
                let verdict = match (topic, src) {
                    (_, None) => Err("unsigned message".to_string()),
                    (FILES_TOPIC, Some(src)) => {
                        parse_announcement(&message.data).map(|a| self.on_announcement(net, src, a))
                    }
                    (_, Some(src)) => parse_message(&message.data).map(|msg| {
                        self.gossip.push_message(src, msg);
                    }),
                };
                match verdict {
                    Ok(()) => (gossipsub::MessageAcceptance::Accept, "accepted"),
                    Err(why) => {
                        warn!(peer = %propagation_source, source = ?source, topic, reason = %why, "rejected gossip message");
                        (gossipsub::MessageAcceptance::Reject, "rejected")
                    }
                }
            }
        };
        metrics::counter!(m::GOSSIP_MESSAGES, "topic" => topic, "result" => result).increment(1);
        if let Some(g) = net.swarm.behaviour_mut().gossipsub.as_mut() {
            g.report_message_validation_result(&message_id, &propagation_source, acceptance);
        }
    }

    /// Announces the shared files again if a peer joined the topic and the cool-down
    /// allows (see [`Announcements`](crate::node::announce::Announcements)); also from
    /// housekeeping, so a join during the cool-down is announced when it ends.
    pub(super) fn announce_due(&mut self, net: &mut Net<'_>) {
        if !self.gossip.announce.due() {
            return;
        }
        let Some(g) = net.swarm.behaviour_mut().gossipsub.as_mut() else {
            return;
        };
        let mine = self
            .store
            .entries()
            .filter(|e| e.origin == Origin::Shared)
            .filter_map(|e| {
                serde_json::to_vec(&Announcement {
                    id: e.id,
                    name: e.name.clone(),
                    size: e.size,
                })
                .ok()
            })
            .collect();
        self.gossip.announce.publish(g, FILES_TOPIC, mine);
    }

    /// A valid announcement: remembered; a running fetch gains the publisher as a
    /// provider; a file the replication policy wants is fetched.
    pub(super) fn on_announcement(
        &mut self,
        net: &mut Net<'_>,
        publisher: PeerId,
        a: Announcement,
    ) {
        debug!(id = %a.id, name = %a.name, size = a.size, %publisher, "file announced");
        self.gossip.remember(publisher, a.clone());
        // A running fetch gains the publisher as a provider, unless it sent bad data
        // recently.
        if self.fetches.contains_key(&a.id) {
            if !self.penalized(&publisher) {
                if let Some(f) = self.fetches.get_mut(&a.id) {
                    f.add_provider(publisher);
                }
                self.pump(net, a.id);
            }
            return;
        }
        self.replicate(net, publisher, &a);
    }
}
