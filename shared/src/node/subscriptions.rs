//! Gossip subscriptions that never arrived, healed by reconnecting.
//!
//! Gossipsub tells a peer this node's subscriptions once, when the first connection to
//! it opens, and forgets the peer's when the last one closes. When two peers count their
//! connections differently for a moment, one takes a new connection for its first to the
//! other and the other for a second, and the second's subscriptions never reach the
//! first. That happens when one sees a connection close before it sees the next one open
//! (a hole punch that replaces a relayed connection; [`super::reachability`] waits for
//! the peer to settle on the direct connection, for at most a grace), or when a peer
//! restarts and connects again before the other has noticed the old connection died.
//! Nothing in gossipsub notices: for as long as the connection lasts, the peer without
//! them neither publishes to the other nor grafts it.
//!
//! Every Jantar peer subscribes to the files and messages topics from its start, so a
//! Jantar peer (identify's agent `jantar-peer/…`) that speaks gossipsub and has told no
//! subscription [`GRACE`] after it identified has lost them. The node closes its
//! connections to it and dials it again: on a fresh first connection both sides send
//! their subscriptions. That works once the other side holds no connection either; one
//! it holds to a peer that went silent lasts until its pings fail (about half a minute),
//! so the reconnect is tried again after twice and four times the grace: at most
//! [`MAX_RECONNECTS`] per peer in [`BACKOFF`]. While a transfer with the peer runs, the
//! reconnect waits for it to end.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::{PeerId, StreamProtocol, Swarm};
use tracing::{debug, info};

use crate::{behaviour::Behaviour, config::Role, metrics as m};

/// How long a Jantar peer has to tell its subscriptions after it identified. They are
/// its first message on a connection, so a round trip is enough; the rest is room for
/// a loaded machine.
pub(super) const GRACE: Duration = Duration::from_secs(10);
/// Reconnects to one peer: if the subscriptions come on none of them, the peer does not
/// send them, and more would only churn.
pub(super) const MAX_RECONNECTS: u32 = 3;
/// How long a peer's reconnects are remembered after the last.
pub(super) const BACKOFF: Duration = Duration::from_secs(600);

#[derive(Default)]
pub(super) struct Subscriptions {
    /// Jantar peers connected whose subscriptions have not been seen yet: since when.
    awaited: HashMap<PeerId, Instant>,
    /// Peers reconnected for this: when last, and how often (forgotten [`BACKOFF`] after
    /// the last).
    reconnected: HashMap<PeerId, (Instant, u32)>,
    /// Peers disconnected for this, to dial again once their last connection closed.
    redial: HashSet<PeerId>,
}

/// A Jantar peer that speaks gossipsub: one that subscribes from its start.
pub(super) fn subscribes(agent: &str, protocols: &[StreamProtocol]) -> bool {
    agent
        .strip_prefix(Role::Peer.binary())
        .is_some_and(|rest| rest.starts_with('/'))
        && protocols
            .iter()
            .any(|p| p.as_ref().starts_with("/meshsub/"))
}

impl Subscriptions {
    /// `peer` answered identify; its subscriptions are awaited if it is a Jantar peer
    /// that speaks gossipsub (from the first answer on: later ones keep the time).
    pub(super) fn identified(
        &mut self,
        peer: PeerId,
        agent: &str,
        protocols: &[StreamProtocol],
        now: Instant,
    ) {
        if subscribes(agent, protocols) {
            self.awaited.entry(peer).or_insert(now);
        }
    }

    /// The last connection to `peer` closed; true if it should be dialed again because
    /// this node closed it for its subscriptions.
    pub(super) fn disconnected(&mut self, peer: &PeerId) -> bool {
        self.awaited.remove(peer);
        self.redial.remove(peer)
    }

    /// Every second: the peers whose subscriptions are overdue, by `subscribed` (does
    /// gossipsub know a topic of the peer?) and `busy` (a transfer with it runs). Returns
    /// the peers to disconnect now.
    pub(super) fn overdue(
        &mut self,
        now: Instant,
        mut subscribed: impl FnMut(&PeerId) -> bool,
        busy: &HashSet<PeerId>,
    ) -> Vec<PeerId> {
        self.reconnected
            .retain(|_, (at, _)| now.duration_since(*at) < BACKOFF);
        let mut reconnect = Vec::new();
        let reconnected = &mut self.reconnected;
        let redial = &mut self.redial;
        self.awaited.retain(|peer, since| {
            let tries = reconnected.get(peer).map_or(0, |(_, n)| *n);
            if now.duration_since(*since) < GRACE * (1 << tries.min(MAX_RECONNECTS)) {
                return true;
            }
            if subscribed(peer) {
                return false;
            }
            if busy.contains(peer) {
                // Checked again next second.
                return true;
            }
            if tries >= MAX_RECONNECTS {
                debug!(%peer, tries, "gossip subscriptions still missing after reconnecting; leaving the peer be");
                return false;
            }
            reconnected.insert(*peer, (now, tries + 1));
            redial.insert(*peer);
            reconnect.push(*peer);
            false
        });
        reconnect
    }

    /// Every second: closes the connections to the peers whose subscriptions are
    /// overdue ([`Self::overdue`]); they are dialed again once closed
    /// ([`Self::disconnected`]).
    pub(super) fn housekeeping(&mut self, swarm: &mut Swarm<Behaviour>, busy: &HashSet<PeerId>) {
        let Some(gossip) = swarm.behaviour().gossipsub.as_ref() else {
            return;
        };
        // Who gossipsub knows a topic of, gathered only once a peer is due.
        let mut heard: Option<HashSet<PeerId>> = None;
        let subscribed = |p: &PeerId| {
            heard
                .get_or_insert_with(|| {
                    gossip
                        .all_peers()
                        .filter(|(_, topics)| !topics.is_empty())
                        .map(|(p, _)| *p)
                        .collect()
                })
                .contains(p)
        };
        for peer in self.overdue(Instant::now(), subscribed, busy) {
            info!(%peer, "gossip subscriptions of a connected peer never arrived; reconnecting to it");
            metrics::counter!(m::GOSSIP_RECONNECTS).increment(1);
            if swarm.disconnect_peer_id(peer).is_err() {
                self.redial.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meshsub() -> Vec<StreamProtocol> {
        vec![
            StreamProtocol::new("/ipfs/id/1.0.0"),
            StreamProtocol::new("/meshsub/1.2.0"),
        ]
    }

    #[test]
    fn only_jantar_peers_that_speak_gossipsub_are_awaited() {
        assert!(subscribes("jantar-peer/0.1.0", &meshsub()));
        assert!(!subscribes("jantar-relay/0.1.0", &meshsub()));
        assert!(!subscribes("jantar-peerx/0.1.0", &meshsub()));
        assert!(!subscribes("rust-libp2p/0.57", &meshsub()));
        assert!(!subscribes(
            "jantar-peer/0.1.0",
            &[StreamProtocol::new("/ipfs/id/1.0.0")]
        ));
    }

    /// `p` identified at `t` as a Jantar peer that speaks gossipsub.
    fn jantar_peer(s: &mut Subscriptions, p: PeerId, t: Instant) {
        s.identified(p, "jantar-peer/0.1.0", &meshsub(), t);
    }

    /// One Jantar peer awaited since now.
    fn one_awaited() -> (Subscriptions, PeerId, Instant) {
        let mut s = Subscriptions::default();
        let (p, t0) = (PeerId::random(), Instant::now());
        jantar_peer(&mut s, p, t0);
        (s, p, t0)
    }

    #[test]
    fn a_peer_without_subscriptions_is_reconnected_after_the_grace_and_twice_more() {
        let (mut s, quiet, t0) = one_awaited();
        let heard = PeerId::random();
        jantar_peer(&mut s, heard, t0);
        let none = HashSet::new();
        let knows = |p: &PeerId| *p == heard;
        // Within the grace nothing happens, even for the peer not heard from.
        assert!(s.overdue(t0 + GRACE / 2, knows, &none).is_empty());
        // A later identify keeps the first time.
        jantar_peer(&mut s, quiet, t0 + GRACE / 2);
        assert_eq!(s.overdue(t0 + GRACE, knows, &none), vec![quiet]);
        assert!(s.awaited.is_empty(), "the heard peer is no longer awaited");
        // Its last connection closes: dial it again, once.
        assert!(s.disconnected(&quiet));
        assert!(!s.disconnected(&quiet));
        // Still silent on each new connection: tried again after twice, then four times
        // the grace; then left be.
        let mut t = t0 + GRACE;
        for wait in [GRACE * 2, GRACE * 4] {
            jantar_peer(&mut s, quiet, t);
            assert!(s.overdue(t + wait - GRACE / 10, knows, &none).is_empty());
            assert_eq!(s.overdue(t + wait, knows, &none), vec![quiet]);
            assert!(s.disconnected(&quiet));
            t += wait;
        }
        jantar_peer(&mut s, quiet, t);
        assert!(s.overdue(t + GRACE * 10, knows, &none).is_empty());
        assert!(s.awaited.is_empty());
        // Long after the last reconnect, it may be reconnected again.
        let later = t + BACKOFF + GRACE * 100;
        jantar_peer(&mut s, quiet, later);
        assert_eq!(s.overdue(later + GRACE, knows, &none), vec![quiet]);
    }

    #[test]
    fn a_peer_in_a_transfer_is_reconnected_after_it() {
        let (mut s, p, t0) = one_awaited();
        let busy: HashSet<PeerId> = [p].into();
        assert!(s.overdue(t0 + GRACE, |_| false, &busy).is_empty());
        assert_eq!(
            s.overdue(t0 + GRACE * 2, |_| false, &HashSet::new()),
            vec![p]
        );
    }

    #[test]
    fn a_peer_that_left_is_no_longer_awaited() {
        let (mut s, p, t0) = one_awaited();
        assert!(!s.disconnected(&p), "not closed by this node: no dial");
        assert!(s.overdue(t0 + GRACE, |_| false, &HashSet::new()).is_empty());
    }
}
