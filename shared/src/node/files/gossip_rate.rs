//! Per-sender gossip rates. Anyone can sign valid announcements and messages; a sender
//! over its rate has its messages ignored (not handled, not forwarded), and when it sent
//! them to us itself they are rejected, which costs it gossipsub score until it is
//! pruned from the mesh and graylisted. A forwarder of someone else's flood is not
//! penalized: it may have had the messages before the sender went over our rate.

use std::time::Instant;

use libp2p::PeerId;

use crate::{config::Rate, limits::KeyedRateLimiter};

/// What to do with a message, given its sender's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RateVerdict {
    Within,
    /// Over rate, forwarded by another peer: dropped without penalty.
    Ignore,
    /// Over rate, sent by the sender itself: dropped and counted against its score.
    Reject,
}

/// One token bucket per sender and topic.
pub(super) struct SenderRates {
    announcements: KeyedRateLimiter<PeerId>,
    messages: KeyedRateLimiter<PeerId>,
}

impl SenderRates {
    /// `limit` per `interval` for each sender: a burst of `limit`, refilled evenly.
    pub(super) fn new(announcements: Rate, messages: Rate) -> Self {
        let bucket = |r: Rate| KeyedRateLimiter::new(r.limit, r.interval / r.limit.get());
        SenderRates {
            announcements: bucket(announcements),
            messages: bucket(messages),
        }
    }

    /// Takes a token for `source` on the announcement topic (`announcement`) or the
    /// message topic.
    pub(super) fn check(
        &mut self,
        announcement: bool,
        source: PeerId,
        propagation_source: PeerId,
        now: Instant,
    ) -> RateVerdict {
        let bucket = if announcement {
            &mut self.announcements
        } else {
            &mut self.messages
        };
        if bucket.try_acquire(source, now) {
            RateVerdict::Within
        } else if source == propagation_source {
            RateVerdict::Reject
        } else {
            RateVerdict::Ignore
        }
    }

    /// Buckets held, over both topics.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.announcements.tracked_keys() + self.messages.tracked_keys()
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use super::*;

    fn rate(limit: u32, secs: u64) -> Rate {
        Rate {
            limit: NonZeroU32::new(limit).unwrap(),
            interval: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_sender_over_its_rate_is_rejected_and_its_forwarders_are_not() {
        let mut r = SenderRates::new(rate(3, 10), rate(2, 10));
        let (spammer, forwarder, honest) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t = Instant::now();
        for _ in 0..2 {
            assert_eq!(r.check(false, spammer, spammer, t), RateVerdict::Within);
        }
        assert_eq!(r.check(false, spammer, spammer, t), RateVerdict::Reject);
        assert_eq!(r.check(false, spammer, forwarder, t), RateVerdict::Ignore);
        // Topics are counted apart, and other senders are unaffected.
        assert_eq!(r.check(true, spammer, spammer, t), RateVerdict::Within);
        assert_eq!(r.check(false, honest, forwarder, t), RateVerdict::Within);
        // Refilled evenly: two messages per 10 s is one back every 5 s.
        let later = t + Duration::from_secs(5);
        assert_eq!(r.check(false, spammer, spammer, later), RateVerdict::Within);
        assert_eq!(r.check(false, spammer, spammer, later), RateVerdict::Reject);
        assert_eq!(r.tracked(), 3);
    }
}
