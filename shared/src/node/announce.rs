//! Announcing what a node holds again when peers join a gossipsub topic, shared by the
//! file part (shared files) and the release part (the newest release, the key chain).

use std::time::{Duration, Instant};

use libp2p::gossipsub;
use tracing::debug;

/// What is held is announced again at most this often per topic.
pub(in crate::node) const REANNOUNCE: Duration = Duration::from_secs(10);

/// Announcing again when peers join a topic: at most every [`REANNOUNCE`]; a join
/// during the cool-down is announced when it ends (the owner calls [`Self::due`] from
/// its housekeeping); a publish that reached no one starts no cool-down.
#[derive(Debug, Default)]
pub(in crate::node) struct Announcements {
    pending: bool,
    last: Option<Instant>,
}

impl Announcements {
    /// A peer joined: announce when the cool-down allows.
    pub(in crate::node) fn request(&mut self) {
        self.pending = true;
    }

    /// Something new to announce: now, whatever the cool-down.
    pub(in crate::node) fn request_now(&mut self) {
        self.pending = true;
        self.last = None;
    }

    /// An announcement is pending and out of its cool-down.
    pub(in crate::node) fn due(&self) -> bool {
        self.pending && self.last.is_none_or(|t| t.elapsed() >= REANNOUNCE)
    }

    /// Publishes `messages` on `topic`; the cool-down starts only if one was published.
    pub(in crate::node) fn publish(
        &mut self,
        g: &mut gossipsub::Behaviour,
        topic: &str,
        messages: Vec<Vec<u8>>,
    ) {
        self.pending = false;
        let topic = gossipsub::IdentTopic::new(topic);
        for m in messages {
            match g.publish(topic.clone(), m) {
                Ok(_) => self.last = Some(Instant::now()),
                Err(e) => debug!(topic = %topic, error = %e, "not announced"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    fn gossipsub() -> gossipsub::Behaviour {
        gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(Keypair::generate_ed25519()),
            gossipsub::Config::default(),
        )
        .expect("gossipsub")
    }

    #[test]
    fn a_join_in_the_cool_down_is_announced_when_it_ends() {
        let mut a = Announcements::default();
        assert!(!a.due(), "nothing requested");
        a.request();
        assert!(a.due());
        a.pending = false;
        a.last = Some(Instant::now());
        a.request();
        assert!(!a.due(), "inside the cool-down");
        a.last = Some(Instant::now() - REANNOUNCE);
        assert!(
            a.due(),
            "the join waits for the cool-down's end, not for the next join"
        );
        a.last = Some(Instant::now());
        a.request_now();
        assert!(a.due(), "something new is announced at once");
    }

    #[test]
    fn an_announcement_that_reaches_no_one_starts_no_cool_down() {
        let mut g = gossipsub();
        let mut a = Announcements::default();
        a.request();
        // No peer is subscribed, so the publish fails.
        a.publish(&mut g, "jantar/test", vec![b"hello".to_vec()]);
        assert!(!a.due(), "published (or tried): nothing pending");
        assert_eq!(
            a.last, None,
            "no cool-down after a publish that reached no one"
        );
        a.request();
        assert!(a.due(), "the next join is announced at once");
    }
}
