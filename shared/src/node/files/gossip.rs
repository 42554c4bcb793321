//! Gossip: file announcements on [`FILES_TOPIC`] (remembered, and replicated by
//! policy) and messages on [`MESSAGES_TOPIC`], both validated before gossipsub forwards
//! them; shared files are announced again when a peer joins the topic.

use std::time::{Duration, Instant};

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

/// Shared files are announced again at most this often.
const REANNOUNCE: Duration = Duration::from_secs(10);

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
                self.reannounce(net);
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

    /// Re-announces shared files when a new peer joins the topic (at most every
    /// [`REANNOUNCE`]).
    pub(super) fn reannounce(&mut self, net: &mut Net<'_>) {
        if self
            .gossip
            .last_reannounce
            .is_some_and(|t| t.elapsed() < REANNOUNCE)
        {
            return;
        }
        self.gossip.last_reannounce = Some(Instant::now());
        let mine: Vec<Announcement> = self
            .store
            .entries()
            .filter(|e| e.origin == Origin::Shared)
            .map(|e| Announcement {
                id: e.id,
                name: e.name.clone(),
                size: e.size,
            })
            .collect();
        for a in mine {
            net.publish(FILES_TOPIC, &a);
        }
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
