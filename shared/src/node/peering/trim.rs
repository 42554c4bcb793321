//! Trimming above the high watermark: whom to close (chosen to resist takeover, see
//! [`crate::peering::eviction`]), releasing them on a peer so their requests finish,
//! and disconnecting released peers that linger.

use std::{collections::HashSet, time::Instant};

use libp2p::{PeerId, Swarm};
use tracing::{debug, info};

use super::Peering;
use crate::{
    behaviour::Behaviour,
    metrics as m,
    peering::{
        eviction::{Candidate, Protection, choose_evictions},
        group::NetGroup,
        store::PeerRecord,
    },
};

/// The most peers one trimming round closes: each eviction looks at every candidate,
/// so a node far above its high watermark (thousands of peers) trims over several
/// seconds instead of stalling its event loop.
const MAX_TRIM_PER_ROUND: usize = 64;
/// Grace periods a released peer may stay connected before it is disconnected. Its
/// connections do not go idle on their own: gossipsub keeps a stream open on every
/// connection between two peers, in the mesh or not (rust-libp2p issue 5190), so this
/// is in practice when a released peer goes. One grace period was tried and cut
/// lookups that were still using released peers (see `docs/scale.md`).
const LINGER_GRACES: u32 = 3;

impl Peering {
    /// Disconnects released peers that stayed connected past [`LINGER_GRACES`], or all
    /// of them while the node is at its hard cap, to make room for newcomers; never one
    /// protected since (a transfer it started, a reservation).
    fn close_lingering(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        busy: &HashSet<PeerId>,
        now: Instant,
    ) {
        if self.released.is_empty() {
            return;
        }
        let at_cap = self.at_cap();
        let linger = self.grace * LINGER_GRACES;
        for (peer, since) in &self.released {
            if self.is_protected(peer, busy) {
                continue;
            }
            if at_cap || now.duration_since(*since) >= linger {
                debug!(%peer, at_cap, "released peer still connected; disconnecting");
                let _ = swarm.disconnect_peer_id(*peer);
            }
        }
    }

    /// Whether the node holds `max_peers` peers (released ones included), so that it
    /// refuses strangers' next connections.
    fn at_cap(&self) -> bool {
        self.counted() + self.released.len() >= self.max_peers as usize
    }

    /// Above the high watermark: chooses, among every unprotected peer, whom to close
    /// to get down to the low watermark, and closes those past their grace period (the
    /// rest when theirs ends, if still chosen then). Choosing among the new ones too
    /// keeps a burst of fresh connections from pushing out older peers merely because
    /// the newcomers cannot be closed yet.
    ///
    /// At `max_peers` the grace period gives way: the chosen are closed at once, new
    /// or not. A full node refuses every newcomer, and in a network larger than
    /// `max_peers` each of the others' DHT requests is a newcomer: held for a grace
    /// period, they would keep the node full and its refusals would fail the others'
    /// lookups. Whom to close is still the eviction's choice, which keeps the peers
    /// that proved themselves (see [`crate::peering::eviction`]).
    pub(super) fn trim(&mut self, swarm: &mut Swarm<Behaviour>, busy: &HashSet<PeerId>) {
        let now = Instant::now();
        let full = self.at_cap();
        self.close_lingering(swarm, busy, now);
        let count = self.counted();
        if count <= self.high_water {
            return;
        }
        let groups = self.group_sizes();
        let candidates: Vec<Candidate<PeerId, NetGroup>> = self
            .live
            .iter()
            .filter(|(p, _)| {
                !self.is_protected(p, busy)
                    && !self.infrastructure.contains(p)
                    && !self.released.contains_key(p)
            })
            .map(|(p, l)| Candidate {
                peer: *p,
                group: l.group,
                connected_since: l.since,
                rtt: self.store.get(p).and_then(PeerRecord::rtt),
                last_useful: l.last_useful,
                score: self.score_of(p, &groups).total,
            })
            .collect();
        let excess = count - self.low_water;
        let keep = candidates.len().saturating_sub(excess);
        let chosen = choose_evictions(
            &candidates,
            excess.min(MAX_TRIM_PER_ROUND),
            &protection(keep),
            self.secret,
        );
        let (closable, waiting): (Vec<PeerId>, Vec<PeerId>) = chosen.into_iter().partition(|p| {
            self.live
                .get(p)
                .is_some_and(|l| full || now.duration_since(l.since) >= self.grace)
        });
        if closable.is_empty() {
            debug!(
                peers = count,
                high_water = self.high_water,
                in_grace = waiting.len(),
                "above the high watermark; the peers to close are still in their grace period"
            );
            return;
        }
        info!(
            peers = count,
            at_max_peers = full,
            releasing = closable.len(),
            in_grace = waiting.len(),
            low_water = self.low_water,
            "above the high watermark; releasing peers"
        );
        for peer in closable {
            if let Some(l) = self.live.get(&peer) {
                debug!(%peer, group = %l.group, remote = %l.remote, score = self.score_of(&peer, &groups).total, "trimmed");
            }
            match swarm.behaviour_mut().keep_alive.as_mut() {
                Some(keep_alive) => {
                    keep_alive.release(peer);
                    self.released.insert(peer, now);
                }
                // Nothing holds this node's connections: close the peer now.
                None => {
                    let _ = swarm.disconnect_peer_id(peer);
                }
            }
            self.trimmed += 1;
            metrics::counter!(m::PEERS_TRIMMED).increment(1);
        }
    }
}

/// What each eviction round sets aside when `keep` unprotected peers are to stay:
/// Bitcoin Core's counts (4 network groups, 8 lowest pings, 4 recently useful, half
/// the rest by uptime) are for 125 slots; here they scale with `keep` (an eighth each,
/// at least one group), so that trimming can always reach the low watermark.
fn protection(keep: usize) -> Protection {
    Protection {
        distinct_groups: (keep / 8).max(1),
        lowest_rtt: keep / 8,
        recently_useful: keep / 8,
        longest_uptime_share: 0.5,
    }
}
