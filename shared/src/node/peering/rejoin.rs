//! Dials of a node out of touch with the network (no DHT server it dialed itself is
//! connected) while its bootstrap nodes do not answer, on each bootstrap retry.
//!
//! Without them, a node whose first dials found the peers it knew down stayed out of
//! touch for good once they were back, even while they dialed it: a connection from
//! another peer does not count as joined (or strangers could fake it), and the store
//! was dialed again only while joined.

use std::collections::HashSet;

use libp2p::{PeerId, Swarm, swarm::dial_opts::PeerCondition};
use tracing::info;

use super::{Peering, REJOIN_DIALS, dial_with, direct};
use crate::{
    behaviour::Behaviour,
    peering::store::{PeerRecord, PeerStore, unix_now},
};

/// DHT servers known at start that a node out of touch may dial again.
const AT_START: usize = 64;

impl Peering {
    /// Dials up to [`REJOIN_DIALS`] of [`candidates`]. A candidate connected inbound
    /// only is dialed too, for a connection of the node's own; one whose last dial
    /// failed waits out its backoff. `dialed_itself` tells the connections this node
    /// dialed.
    pub(in crate::node) fn rejoin(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        dialed_itself: impl Fn(&PeerId) -> bool,
    ) {
        let now = unix_now();
        let mut dialed = 0;
        for peer in candidates(&self.rejoin_through, &self.store, &self.infrastructure) {
            if dialed == REJOIN_DIALS {
                break;
            }
            let Some(r) = self.store.get(&peer) else {
                continue;
            };
            let connected = swarm.is_connected(&peer);
            if dialed_itself(&peer) || (!connected && !r.dialable_at(now)) {
                continue;
            }
            let addrs = direct(&r.addresses);
            if addrs.is_empty() {
                continue;
            }
            let condition = if connected {
                PeerCondition::NotDialing
            } else {
                PeerCondition::DisconnectedAndNotDialing
            };
            if dial_with(swarm, peer, addrs, condition) {
                dialed += 1;
            }
        }
        if dialed > 0 {
            info!(
                dialed,
                "out of touch; dialing DHT servers known from before"
            );
        }
    }
}

/// The DHT servers among `known` (the store's records, best first), at most
/// [`AT_START`]: taken at start, before strangers can connect.
pub(super) fn known_at_start(
    known: &[(PeerId, &PeerRecord)],
    infrastructure: &HashSet<PeerId>,
) -> Vec<PeerId> {
    known
        .iter()
        .filter(|(p, r)| serves_dht(p, r, infrastructure))
        .map(|(p, _)| *p)
        .take(AT_START)
        .collect()
}

/// A DHT server that is not configured infrastructure (dialed as a bootstrap node).
fn serves_dht(peer: &PeerId, r: &PeerRecord, infrastructure: &HashSet<PeerId>) -> bool {
    r.dht_server && !infrastructure.contains(peer)
}

/// Whom a node out of touch may dial, in order: the DHT servers the store knew at start
/// (`at_start`), then those it has dialed successfully itself (in this run or before),
/// best first; never configured infrastructure (dialed as bootstrap nodes), and never
/// a stranger that only ever dialed in since start, so that a crowd of them cannot make
/// the node count itself joined.
fn candidates(
    at_start: &[PeerId],
    store: &PeerStore,
    infrastructure: &HashSet<PeerId>,
) -> Vec<PeerId> {
    let own_dials = store
        .best()
        .into_iter()
        .filter(|(p, r)| serves_dht(p, r, infrastructure) && r.dials_ok > 0)
        .map(|(p, _)| p);
    let mut seen = HashSet::new();
    at_start
        .iter()
        .copied()
        .chain(own_dials)
        .filter(|p| seen.insert(*p))
        .collect()
}

#[cfg(test)]
mod tests {
    use libp2p::Multiaddr;

    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/45.76.1.2/tcp/{port}")
            .parse()
            .expect("address")
    }

    /// A store record of a DHT server with an address; `dialed` if this node dialed it.
    fn server(store: &mut PeerStore, port: u16, dialed: bool) -> PeerId {
        let p = PeerId::random();
        store.add_addresses(p, [addr(port)]);
        store.offers(p, false, true);
        if dialed {
            store.dialed(p, true);
        }
        p
    }

    #[test]
    fn known_at_start_first_then_own_dials_never_strangers_that_dialed_in() {
        let mut store = PeerStore::in_memory(PeerId::random(), 100);
        let known = server(&mut store, 1, false);
        let own = server(&mut store, 2, true);
        let stranger = server(&mut store, 3, false);
        let infra = server(&mut store, 4, true);
        let client = PeerId::random();
        store.add_addresses(client, [addr(5)]);
        store.dialed(client, true);

        let got = candidates(&[known], &store, &HashSet::from([infra]));
        assert_eq!(got, vec![known, own]);
        assert!(
            !got.contains(&stranger),
            "a stranger that dialed in is chosen"
        );
    }

    #[test]
    fn a_peer_known_at_start_and_dialed_since_is_listed_once() {
        let mut store = PeerStore::in_memory(PeerId::random(), 100);
        let both = server(&mut store, 1, true);
        let got = candidates(&[both], &store, &HashSet::new());
        assert_eq!(got, vec![both]);
    }
}
