//! Connection management: the peer store, scores, trimming above the high watermark and
//! dialing known peers below the low one (see [`crate::peering`] for the parts).
//!
//! - Every connected peer has a record in the store: addresses that worked, dial
//!   outcomes, time connected, smoothed ping, chunks and manifests it served, bad data.
//! - Above `high_water` peers (configured infrastructure not counted, as for
//!   `max_peers`), the node closes peers down to `low_water`, never one that is
//!   protected (configured bootstrap and relay nodes, peers named in `protected_peers`,
//!   peers with a transfer running, a relay's reservation holders, the relays this peer
//!   holds reservations on) nor one connected for less than `connection_grace_period`,
//!   unless the node is at `max_peers`: a full node refuses newcomers, so there the
//!   grace period gives way.
//!   Whom to close is chosen to resist takeover ([`crate::peering::eviction`]). A peer
//!   *releases* them ([`crate::peering::keep_alive`]): their connections are no longer
//!   held, so requests running on them finish. A released peer still connected after
//!   three grace periods, or while the node is at `max_peers`, is disconnected (unless
//!   it became protected meanwhile); between two peers that is when it goes, since
//!   gossipsub's open stream keeps the connection from going idle.
//! - A peer below `low_water` dials known peers, mostly its best-scored ones and about a
//!   quarter never tried ([`crate::peering::dials`]).
//! - At start the store's best peers are dialed with the bootstrap nodes, so a node
//!   whose bootstrap nodes are all down rejoins through the peers it knew (those serving
//!   the DHT enter the routing table through the DHT's usual admission); relays known
//!   before are offered to the relay client before it asks the DHT. While out of touch
//!   DHT servers known from before (never strangers that only dialed in) are dialed
//!   again with each bootstrap retry ([`rejoin`]).
//!
//! [`trim`] holds the trimming; [`rejoin`] the dials of a node out of touch; [`report`]
//! what the connection manager shows: `/status`, `GET /peers`, gauges.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm,
    swarm::{
        DialError,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tracing::{debug, info, warn};

mod rejoin;
mod report;
mod trim;

use super::connections::{ConnInfo, is_relayed, without_peer_id};
use crate::{
    behaviour::Behaviour,
    config::Config,
    metrics as m,
    peering::{
        dials::{DialPlan, Known, choose_dials},
        geo::{GeoDb, GeoError, GeoInfo},
        group::NetGroup,
        score::Score,
        store::{LoadError, PeerStore, unix_now},
    },
    scope::Scope,
};

/// The store file in the data dir.
pub(super) const STORE_FILE: &str = "peers.json";
/// How often the store is written when it changed.
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// How often a peer below its low watermark dials known peers.
const FILL_INTERVAL: Duration = Duration::from_secs(10);
/// Dials started per fill round.
const FILL_BATCH: usize = 8;
/// Stored peers dialed at start, besides the bootstrap nodes, and again on each
/// bootstrap retry while out of touch ([`rejoin`]).
const REJOIN_DIALS: usize = 8;
/// Share of fill dials that go to peers never tried.
const UNTRIED_SHARE: f64 = 0.25;
/// Trimming runs at most this often, so that a burst of connections is judged once
/// their grace periods end rather than one by one.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// A connected peer.
struct Live {
    since: Instant,
    remote: Multiaddr,
    group: NetGroup,
    geo: GeoInfo,
    last_useful: Option<Instant>,
}

pub(super) struct Peering {
    store: PeerStore,
    geo: Option<GeoDb>,
    high_water: usize,
    low_water: usize,
    grace: Duration,
    /// Configured infrastructure and `protected_peers`.
    configured: HashSet<PeerId>,
    /// Peers that count toward no watermark (configured bootstrap and relay nodes).
    infrastructure: HashSet<PeerId>,
    dials_out: bool,
    secret: u64,
    live: HashMap<PeerId, Live>,
    /// Peers trimming released, still connected: when.
    released: HashMap<PeerId, Instant>,
    last_save: Instant,
    last_fill: Option<Instant>,
    last_trim: Instant,
    max_peers: u32,
    trimmed: u64,
    /// DHT servers the store knew at start, best first: whom a node out of touch dials
    /// first ([`rejoin`]).
    rejoin_through: Vec<PeerId>,
}

impl Peering {
    pub(super) fn new(config: &Config, me: PeerId) -> Result<Self, GeoError> {
        let net = &config.network;
        let store = if net.peer_store.persist {
            let (store, problem) =
                PeerStore::open(me, store_path(&config.data_dir), net.peer_store.capacity);
            if let Some(e) = problem {
                warn_load(&e);
            }
            if !store.is_empty() {
                info!(peers = store.len(), "peer store loaded");
            }
            store
        } else {
            PeerStore::in_memory(me, net.peer_store.capacity)
        };
        let geo = if net.geoip_databases.is_empty() {
            None
        } else {
            Some(GeoDb::open(&net.geoip_databases)?)
        };
        let infrastructure: HashSet<PeerId> = net
            .bootstrap_nodes
            .iter()
            .chain(&net.relay_nodes)
            .map(|n| n.peer_id)
            .collect();
        let configured = infrastructure
            .iter()
            .chain(&net.limits.protected_peers)
            .copied()
            .collect();
        metrics::gauge!(m::PEER_STORE_PEERS).set(store.len() as f64);
        metrics::counter!(m::PEERS_TRIMMED).absolute(0);
        Ok(Peering {
            store,
            geo,
            high_water: net.limits.high_water as usize,
            low_water: net.limits.low_water as usize,
            grace: net.limits.idle_timeout,
            configured,
            infrastructure,
            dials_out: config.role == crate::config::Role::Peer,
            secret: rand::random(),
            live: HashMap::new(),
            released: HashMap::new(),
            last_save: Instant::now(),
            last_fill: None,
            last_trim: Instant::now(),
            max_peers: net.limits.max_peers,
            trimmed: 0,
            rejoin_through: Vec::new(),
        })
    }

    /// Relays the store knows, with their addresses, best first.
    pub(super) fn known_relays(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.store
            .best()
            .into_iter()
            .filter(|(_, r)| r.relay)
            .map(|(p, r)| (p, direct(&r.addresses)))
            .filter(|(_, a)| !a.is_empty())
            .collect()
    }

    /// First contact: the store's best peers are dialed alongside the bootstrap nodes.
    /// Those that serve the DHT enter the routing table as any peer does, through
    /// identify and the DHT's admission rules (subnet caps, address scopes).
    pub(super) fn join(&mut self, swarm: &mut Swarm<Behaviour>) {
        let known = self.store.best();
        self.rejoin_through = rejoin::known_at_start(&known, &self.infrastructure);
        // A bootstrap node or relay rejoins through DHT servers only: the peers it knew
        // are mostly clients, often behind NAT.
        let best: Vec<(PeerId, Vec<Multiaddr>)> = known
            .into_iter()
            .filter(|(p, r)| !self.infrastructure.contains(p) && (self.dials_out || r.dht_server))
            .map(|(p, r)| (p, r.addresses.clone()))
            .take(REJOIN_DIALS)
            .collect();
        if best.is_empty() {
            return;
        }
        let mut dialed = 0;
        for (peer, addrs) in best {
            if dial(swarm, peer, addrs) {
                dialed += 1;
            }
        }
        info!(dialed, "dialing peers known from before");
    }

    pub(super) fn connected(&mut self, c: &ConnInfo) {
        if c.outbound {
            self.store.dialed(c.peer, true);
            if !is_relayed(&c.addr) {
                self.store.add_addresses(c.peer, [without_peer_id(&c.addr)]);
            }
        }
        self.store.seen(c.peer);
        if !self.live.contains_key(&c.peer) {
            let geo = self.geo_of(&c.addr);
            let group = NetGroup::of(&c.addr, &geo);
            self.live.insert(
                c.peer,
                Live {
                    since: Instant::now(),
                    remote: c.addr.clone(),
                    group,
                    geo,
                    last_useful: None,
                },
            );
        }
    }

    /// A connection closed; `still_connected` if the peer has others.
    pub(super) fn disconnected(&mut self, peer: PeerId, still_connected: bool) {
        if still_connected {
            return;
        }
        if let Some(l) = self.live.remove(&peer) {
            self.store.disconnected(peer, l.since.elapsed());
        }
        self.released.remove(&peer);
    }

    /// A dial to `peer` failed for a reason of the peer's (not a limit of ours).
    pub(super) fn dial_failed(&mut self, peer: PeerId, error: &DialError) {
        if matches!(
            error,
            DialError::Transport(_) | DialError::WrongPeerId { .. }
        ) && self.store.get(&peer).is_some()
        {
            self.store.dialed(peer, false);
        }
    }

    /// Identify: the addresses `peer` listens on (those it may claim from where it
    /// connected), and whether it relays and serves the DHT.
    pub(super) fn identified(
        &mut self,
        peer: PeerId,
        source: &Multiaddr,
        protocols: &[StreamProtocol],
        listen_addrs: &[Multiaddr],
    ) {
        let scope = Scope::of_multiaddr(source);
        let usable: Vec<Multiaddr> = listen_addrs
            .iter()
            .filter(|a| is_relayed(a) || scope.may_claim(Scope::of_multiaddr(a)))
            .map(without_peer_id)
            .collect();
        self.store.add_addresses(peer, usable.into_iter().rev());
        self.store.offers(
            peer,
            protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME),
            protocols.contains(&crate::behaviour::KAD_PROTOCOL),
        );
    }

    pub(super) fn ping(&mut self, peer: PeerId, rtt: Duration) {
        self.store.ping(peer, rtt);
        metrics::histogram!(m::PEER_RTT).record(rtt.as_secs_f64());
    }

    /// `peer` served a verified chunk (`chunk`) or a manifest.
    pub(super) fn useful(&mut self, peer: PeerId, chunk: bool) {
        self.store.useful(peer, chunk);
        if let Some(l) = self.live.get_mut(&peer) {
            l.last_useful = Some(Instant::now());
        }
    }

    pub(super) fn bad_data(&mut self, peer: PeerId) {
        self.store.bad_data(peer);
    }

    fn geo_of(&self, addr: &Multiaddr) -> GeoInfo {
        match (&self.geo, crate::scope::direct_ip(addr)) {
            (Some(db), Some(ip)) => db.lookup(ip),
            _ => GeoInfo::default(),
        }
    }

    /// How many more peers the node wants: those it lacks to reach its low watermark.
    /// Discovery dials no more than this, so that in a network larger than the
    /// watermarks a node does not dial every peer it hears of.
    pub(super) fn wanted(&self) -> usize {
        self.low_water.saturating_sub(self.counted())
    }

    /// Peers that count toward the watermarks (released ones are on their way out).
    fn counted(&self) -> usize {
        self.live
            .keys()
            .filter(|p| !self.infrastructure.contains(p) && !self.released.contains_key(p))
            .count()
    }

    fn group_sizes(&self) -> HashMap<NetGroup, usize> {
        let mut groups: HashMap<NetGroup, usize> = HashMap::new();
        for l in self.live.values() {
            *groups.entry(l.group).or_default() += 1;
        }
        groups
    }

    fn score_of(&self, peer: &PeerId, groups: &HashMap<NetGroup, usize>) -> Score {
        let live = self.live.get(peer);
        let group_peers = live.map_or(0, |l| groups.get(&l.group).copied().unwrap_or(1));
        self.store.get(peer).map_or_else(Score::default, |r| {
            r.score(live.map(|l| l.since.elapsed()), group_peers)
        })
    }

    /// Every second: trims above the high watermark, dials below the low one (peers),
    /// writes the store when due. `busy` are peers protected for now (transfers,
    /// reservations).
    pub(super) fn housekeeping(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        busy: &HashSet<PeerId>,
        joined: bool,
    ) {
        let now = Instant::now();
        if now.duration_since(self.last_trim) >= TRIM_INTERVAL {
            self.last_trim = now;
            self.trim(swarm, busy);
        }
        if self.dials_out
            && joined
            && self.counted() < self.low_water
            && self
                .last_fill
                .is_none_or(|t| now.duration_since(t) >= FILL_INTERVAL)
        {
            self.last_fill = Some(now);
            self.fill(swarm);
        }
        if now.duration_since(self.last_save) >= SAVE_INTERVAL {
            self.last_save = now;
            self.save();
        }
        self.update_gauges(busy);
    }

    fn is_protected(&self, peer: &PeerId, busy: &HashSet<PeerId>) -> bool {
        self.configured.contains(peer) || busy.contains(peer)
    }

    /// Dials known peers not connected: the best-scored, and some never tried.
    fn fill(&mut self, swarm: &mut Swarm<Behaviour>) {
        let want = (self.low_water - self.counted()).min(FILL_BATCH);
        let now = unix_now();
        let known: Vec<Known<PeerId, NetGroup>> = self
            .store
            .iter()
            .filter(|(p, r)| {
                !r.addresses.is_empty()
                    && r.dialable_at(now)
                    && !self.live.contains_key(p)
                    && !swarm.is_connected(p)
            })
            .map(|(p, r)| Known {
                peer: *p,
                group: r
                    .addresses
                    .first()
                    .map_or(NetGroup::Unknown, |a| NetGroup::of(a, &self.geo_of(a))),
                tried: r.tried(),
                score: r.score(None, 0).total,
                rtt: r.rtt(),
            })
            .collect();
        if known.is_empty() {
            return;
        }
        let plan = DialPlan {
            want,
            untried_share: UNTRIED_SHARE,
            // No group holds more than a quarter of the low watermark's slots.
            max_per_group: (self.low_water / 4).max(2),
        };
        let chosen = choose_dials(&known, &self.group_sizes(), &plan, &mut rand::rng());
        if !chosen.is_empty() {
            debug!(
                count = chosen.len(),
                peers = self.counted(),
                low_water = self.low_water,
                "below the low watermark; dialing known peers"
            );
        }
        for peer in chosen {
            self.dial_stored(swarm, peer);
        }
    }

    /// Dials `peer`, unless connected, at the addresses the store has for it (circuits
    /// included); false if it has none or the dial could not start.
    pub(super) fn dial_stored(&self, swarm: &mut Swarm<Behaviour>, peer: PeerId) -> bool {
        let addrs = self
            .store
            .get(&peer)
            .map(|r| r.addresses.clone())
            .unwrap_or_default();
        !addrs.is_empty() && dial(swarm, peer, addrs)
    }

    pub(super) fn save(&mut self) {
        if let Err(e) = self.store.save() {
            warn!(error = %e, "cannot write the peer store");
        }
    }
}

fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

fn warn_load(e: &LoadError) {
    warn!(error = %e, "starting without the peers known before");
}

/// Addresses that are not circuits (circuit addresses depend on a reservation that may
/// be gone).
pub(super) fn direct(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs.iter().filter(|a| !is_relayed(a)).cloned().collect()
}

fn dial(swarm: &mut Swarm<Behaviour>, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
    !swarm.is_connected(&peer)
        && dial_with(swarm, peer, addrs, PeerCondition::DisconnectedAndNotDialing)
}

pub(super) fn dial_with(
    swarm: &mut Swarm<Behaviour>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    condition: PeerCondition,
) -> bool {
    let opts = DialOpts::peer_id(peer)
        .condition(condition)
        .addresses(addrs)
        .build();
    match swarm.dial(opts) {
        Ok(()) => true,
        Err(e) => {
            debug!(%peer, error = %e, "cannot dial known peer");
            false
        }
    }
}
