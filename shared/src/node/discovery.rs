//! Finding other Jantar peers: on the local network through mDNS, and through the DHT,
//! where every peer publishes a provider record under [`PEERS_KEY`]. Provider records
//! carry the publisher's addresses (for a private peer: its circuit addresses), and only
//! the publisher itself can add one, so a stranger cannot announce someone else.
//! Bootstrap nodes store none of them; relays and public peers do.

use std::collections::HashSet;

use libp2p::{
    PeerId, Swarm, kad, mdns,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tracing::{debug, info};

use crate::{behaviour::Behaviour, metrics as m};

/// Rendezvous key under which every Jantar peer announces itself.
pub(super) const PEERS_KEY: &[u8] = b"/jantar/peers/v1";

pub(super) struct Discovery {
    me: PeerId,
    /// Jantar peers found so far, by either means.
    discovered: HashSet<PeerId>,
}

impl Discovery {
    pub(super) fn new(me: PeerId) -> Self {
        Discovery {
            me,
            discovered: HashSet::new(),
        }
    }

    /// The peers discovered so far, sorted.
    pub(super) fn discovered(&self) -> Vec<String> {
        let mut v: Vec<String> = self.discovered.iter().map(|p| p.to_string()).collect();
        v.sort();
        v
    }

    /// Looks up the peers' rendezvous key (each discovery round, on peers).
    pub(super) fn lookup(&self, swarm: &mut Swarm<Behaviour>) {
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            kad.get_providers(kad::RecordKey::new(&PEERS_KEY));
            metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_providers").increment(1);
        }
    }

    /// Providers of [`PEERS_KEY`]: peers to dial, at most `wanted` of those not
    /// connected (the connection manager's room below its low watermark). Dialing every
    /// provider would, in a network of thousands, connect every peer to every other.
    pub(super) fn found_in_dht(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        providers: Vec<PeerId>,
        wanted: usize,
    ) {
        let mut dials = 0;
        for peer in providers.into_iter().filter(|p| *p != self.me) {
            if self.discovered.insert(peer) {
                metrics::counter!(m::DISCOVERED_PEERS, "source" => "dht").increment(1);
                info!(%peer, "peer discovered through the DHT");
            }
            if dials < wanted && dial_known(swarm, peer) {
                dials += 1;
            }
        }
    }

    pub(super) fn on_mdns(&mut self, swarm: &mut Swarm<Behaviour>, e: mdns::Event) {
        let mdns::Event::Discovered(list) = e else {
            return;
        };
        for (peer, addr) in list {
            if peer == self.me {
                continue;
            }
            if self.discovered.insert(peer) {
                metrics::counter!(m::DISCOVERED_PEERS, "source" => "mdns").increment(1);
                info!(%peer, %addr, "peer discovered on the local network");
            }
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![addr])
                .build();
            let _ = swarm.dial(opts);
        }
    }
}

/// Dials `peer` with the addresses the behaviours know (DHT queries, routing table);
/// returns whether a dial started.
pub(super) fn dial_known(swarm: &mut Swarm<Behaviour>, peer: PeerId) -> bool {
    if swarm.is_connected(&peer) {
        return false;
    }
    let opts = DialOpts::peer_id(peer)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build();
    match swarm.dial(opts) {
        Ok(()) => true,
        Err(e) => {
            debug!(%peer, error = %e, "cannot dial discovered peer");
            false
        }
    }
}
