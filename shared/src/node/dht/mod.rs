//! The Kademlia DHT: first contact through the bootstrap nodes and retries while out of
//! touch, the DHT servers this node is connected to, the provider records it publishes,
//! routing-table gauges and the queries it serves.
//!
//! Query results that other parts asked for (providers of a key, peers close to a key)
//! are handed back to the event loop as [`DhtEvent`]s. Who enters the routing table is
//! decided in [`admission`], which provider records are stored for others in
//! [`providers`], and the node's own are published through [`published`]; records
//! (PUT_VALUE) are refused, Jantar uses none. Lookups asked for by a command are kept
//! in [`lookups`] until their query ends.

mod admission;
mod lookups;
mod providers;
mod published;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId, Swarm, kad,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

pub(super) use self::published::ProviderRecords;
use self::{admission::Admission, lookups::Lookups, providers::ProviderQuota};
use super::command::Lookup;
use crate::{
    backoff::Backoff,
    behaviour::{Behaviour, KAD_PROTOCOL},
    config::{NetworkConfig, PeerAddr},
    metrics as m,
    status::{BucketStatus, DhtStats},
};

/// First and longest wait between attempts to reach the bootstrap nodes.
const BOOTSTRAP_RETRY_MIN: Duration = Duration::from_secs(1);
const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(30);

/// What a finished DHT query step means for the other parts.
#[derive(Debug)]
pub(super) enum DhtEvent {
    /// Providers of `key` found by `query` (one step of it).
    Providers {
        query: kad::QueryId,
        key: kad::RecordKey,
        providers: Vec<PeerId>,
    },
    /// Peers close to a key, with the addresses the query learned.
    ClosestPeers(Vec<kad::PeerInfo>),
    /// `query` took its last step.
    QueryEnded(kad::QueryId),
}

pub(super) struct Dht {
    /// Configured bootstrap nodes other than this node itself.
    bootstrap_nodes: Vec<PeerAddr>,
    /// Connected peers that serve the DHT (per identify).
    servers: HashSet<PeerId>,
    /// Connected peers this node dialed itself (it chose them: configured, or found in
    /// the DHT), as opposed to strangers that dialed in.
    dialed: HashSet<PeerId>,
    bootstrapped: bool,
    /// Retries the bootstrap nodes while not joined.
    retry: Backoff,
    queries_served: BTreeMap<&'static str, u64>,
    pub(super) records: ProviderRecords,
    /// Whether this node stores provider records for others (all roles but bootstrap).
    stores_providers: bool,
    admission: Admission,
    provider_quota: ProviderQuota,
    /// The remote address of each connected peer's newest connection: the source its
    /// provider records are counted against and narrowed to. DHT clients publish
    /// records too, so every connection counts, not only the servers'.
    sources: HashMap<PeerId, Multiaddr>,
    lookups: Lookups,
}

impl Dht {
    pub(super) fn new(me: PeerId, net: &NetworkConfig, stores_providers: bool) -> Self {
        let infrastructure = net
            .bootstrap_nodes
            .iter()
            .chain(&net.relay_nodes)
            .map(|p| p.peer_id);
        Dht {
            stores_providers,
            admission: Admission::new(me, &net.dht, infrastructure),
            provider_quota: ProviderQuota::new(&net.dht),
            sources: HashMap::new(),
            bootstrap_nodes: net
                .bootstrap_nodes
                .iter()
                .filter(|b| b.peer_id != me)
                .cloned()
                .collect(),
            servers: HashSet::new(),
            dialed: HashSet::new(),
            bootstrapped: false,
            retry: Backoff::new(BOOTSTRAP_RETRY_MIN, BOOTSTRAP_RETRY_MAX),
            queries_served: BTreeMap::new(),
            records: ProviderRecords::default(),
            lookups: Lookups::default(),
        }
    }

    /// Starts a lookup of the peers closest to `key`, answered on `reply` when it ends.
    pub(super) fn find_node(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        key: PeerId,
        reply: oneshot::Sender<Lookup>,
    ) {
        self.lookups
            .start(swarm.behaviour_mut().kad.as_mut(), key, reply);
    }

    /// Connected to at least one DHT server: in touch with the network. (The routing
    /// table alone does not tell: configured bootstrap nodes are in it from the start.)
    /// In touch with the network: connected to a DHT server that this node dialed or
    /// that is one of its bootstrap nodes. Strangers that dial in and claim to serve the
    /// DHT do not count, or a crowd of them could make a node whose bootstrap nodes are
    /// down believe it joined and stop dialing them.
    pub(super) fn joined(&self) -> bool {
        self.servers.iter().any(|p| {
            self.dialed.contains(p) || self.bootstrap_nodes.iter().any(|b| b.peer_id == *p)
        })
    }

    /// Whether there are bootstrap nodes to join through (other than this node).
    pub(super) fn has_bootstrap_nodes(&self) -> bool {
        !self.bootstrap_nodes.is_empty()
    }

    /// First contact: the bootstrap nodes go into the routing table and are dialed.
    pub(super) fn join(&mut self, swarm: &mut Swarm<Behaviour>) {
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for b in &self.bootstrap_nodes {
                kad.add_address(&b.peer_id, b.addr.clone());
            }
        }
        self.retry.due(Instant::now());
        self.dial_bootstrap_nodes(swarm);
    }

    /// Whether this node dialed its connection to `peer` itself.
    pub(super) fn dialed_itself(&self, peer: &PeerId) -> bool {
        self.dialed.contains(peer)
    }

    /// Every second: expired provider records go, the routing table's subnet counts
    /// follow what Kademlia holds, and while out of touch the bootstrap nodes are
    /// dialed again with backoff. Returns whether it dialed them this time (the node is
    /// out of touch and should try what else it knows).
    pub(super) fn housekeeping(&mut self, swarm: &mut Swarm<Behaviour>) -> bool {
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else {
            return false;
        };
        {
            use kad::store::RecordStore;
            for (key, provider) in self.provider_quota.expire(Instant::now()) {
                kad.store_mut().remove_provider(&key, &provider);
            }
        }
        let in_table: HashSet<PeerId> = kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect();
        self.admission.retain(&in_table);
        if !self.has_bootstrap_nodes() {
            return false;
        }
        if self.joined() {
            self.retry.reset();
            false
        } else if self.retry.due(Instant::now()) {
            info!(
                next_retry = ?self.retry.current_delay(),
                "not connected to the network; dialing the bootstrap nodes"
            );
            self.dial_bootstrap_nodes(swarm);
            true
        } else {
            false
        }
    }

    fn dial_bootstrap_nodes(&self, swarm: &mut Swarm<Behaviour>) {
        for b in &self.bootstrap_nodes {
            let opts = DialOpts::peer_id(b.peer_id)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![b.addr.clone()])
                .build();
            if let Err(e) = swarm.dial(opts) {
                debug!(peer = %b.peer_id, error = %e, "cannot dial bootstrap node");
            }
        }
    }

    /// Publishes the records that are not current (on each discovery round).
    pub(super) fn publish_stale(&mut self, swarm: &mut Swarm<Behaviour>) {
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            self.records.publish_stale(kad);
        }
    }

    /// Identify told us, over a connection from `source`, `peer`'s protocols and
    /// addresses: a DHT server goes into the routing table with the addresses it may
    /// hand over, if [`admission`] lets it in; a peer that switched to client mode
    /// leaves the set of servers.
    pub(super) fn identified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        source: &Multiaddr,
        protocols: &[libp2p::StreamProtocol],
        addrs: &[Multiaddr],
    ) {
        self.sources.insert(peer, source.clone());
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        if !protocols.contains(&KAD_PROTOCOL) {
            self.servers.remove(&peer);
            return;
        }
        self.servers.insert(peer);
        match self.admission.admit(peer, source, addrs) {
            Ok(change) => {
                for a in &change.remove {
                    kad.remove_address(&peer, a);
                }
                for a in change.add {
                    if let kad::RoutingUpdate::Failed = kad.add_address(&peer, a) {
                        self.admission.not_inserted(&peer);
                        break;
                    }
                }
            }
            Err(refusal) => {
                debug!(%peer, %source, reason = refusal.as_str(), "not added to the routing table");
                metrics::counter!(m::DHT_ROUTING_REFUSED, "reason" => refusal.as_str())
                    .increment(1);
            }
        }
    }

    /// A connection to `peer` from `source` is up; `outbound` when this node dialed it.
    pub(super) fn connected(&mut self, peer: PeerId, source: &Multiaddr, outbound: bool) {
        self.sources.insert(peer, source.clone());
        if outbound {
            self.dialed.insert(peer);
        }
    }

    /// `peer`'s last connection closed. Only connected DHT servers count as being in
    /// touch with the network: without any, the bootstrap nodes are dialed again.
    pub(super) fn disconnected(&mut self, peer: &PeerId) {
        self.servers.remove(peer);
        self.dialed.remove(peer);
        self.sources.remove(peer);
    }

    pub(super) fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        e: kad::Event,
    ) -> Vec<DhtEvent> {
        match e {
            kad::Event::InboundRequest { request } => {
                self.served(&request);
                self.store_inbound(swarm, request);
                vec![]
            }
            kad::Event::RoutablePeer { peer, .. }
            | kad::Event::PendingRoutablePeer { peer, .. } => {
                // Inserts are manual: the peer enters through identify, if admitted.
                debug!(%peer, "routable peer awaits identify");
                vec![]
            }
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if is_new_peer {
                    debug!(%peer, "added to routing table");
                }
                update_routing_gauges(swarm);
                vec![]
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => {
                if step.last {
                    self.lookups.ended(id, &result, &stats);
                }
                self.on_query_result(swarm, id, result, step.last)
            }
            _ => vec![],
        }
    }

    fn served(&mut self, request: &kad::InboundRequest) {
        let kind = match request {
            kad::InboundRequest::FindNode { .. } => "find_node",
            kad::InboundRequest::GetProvider { .. } => "get_providers",
            kad::InboundRequest::AddProvider { .. } => "add_provider",
            kad::InboundRequest::GetRecord { .. } => "get_record",
            kad::InboundRequest::PutRecord { .. } => "put_record",
        };
        *self.queries_served.entry(kind).or_default() += 1;
        metrics::counter!(m::DHT_QUERIES_SERVED, "kind" => kind).increment(1);
    }

    /// Records arrive here to be stored by us (filtering is on for every role): a
    /// provider record is stored if its source is within its quotas (and this node is
    /// not a stateless bootstrap node); a record never is.
    fn store_inbound(&mut self, swarm: &mut Swarm<Behaviour>, request: kad::InboundRequest) {
        let refused = |kind: &'static str, reason: &'static str| {
            metrics::counter!(m::DHT_INSERTS_REFUSED, "kind" => kind, "reason" => reason)
                .increment(1);
        };
        match request {
            kad::InboundRequest::AddProvider {
                record: Some(mut record),
            } => {
                if !self.stores_providers {
                    return refused("provider", "stateless");
                }
                let source = self.sources.get(&record.provider);
                if let Err(r) = self.provider_quota.admit(&mut record, source) {
                    debug!(provider = %record.provider, reason = r.as_str(), "provider record refused");
                    return refused("provider", r.as_str());
                }
                if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                    use kad::store::RecordStore;
                    if let Err(e) = kad.store_mut().add_provider(record) {
                        warn!(error = %e, "cannot store a provider record");
                    }
                }
            }
            kad::InboundRequest::PutRecord {
                record: Some(_), ..
            } => refused("record", "records_unused"),
            _ => {}
        }
    }

    fn on_query_result(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        query: kad::QueryId,
        result: kad::QueryResult,
        last: bool,
    ) -> Vec<DhtEvent> {
        if last {
            let (kind, ok) = query_kind(&result);
            let result = if ok { "ok" } else { "error" };
            metrics::counter!(m::DHT_QUERIES_FINISHED, "kind" => kind, "result" => result)
                .increment(1);
        }
        let mut events = vec![];
        match result {
            kad::QueryResult::Bootstrap(Ok(r)) => {
                // Kademlia reports a bootstrap as done even when every peer it asked
                // was unreachable (the configured bootstrap nodes sit in the routing
                // table from the start): joined means a DHT server answered.
                if !self.bootstrapped && r.num_remaining == 0 {
                    if self.joined() {
                        self.bootstrapped = true;
                        info!(
                            routing_table = routing_table_size(swarm),
                            dht_servers = self.servers.len(),
                            "joined the DHT"
                        );
                    } else {
                        debug!("DHT bootstrap ended without reaching a DHT server");
                    }
                }
                update_routing_gauges(swarm);
            }
            kad::QueryResult::Bootstrap(Err(e)) => debug!(error = %e, "DHT bootstrap query failed"),
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                key,
                providers,
            })) => events.push(DhtEvent::Providers {
                query,
                key,
                providers: providers.into_iter().collect(),
            }),
            kad::QueryResult::StartProviding(Ok(ok)) => {
                debug!(key = %String::from_utf8_lossy(ok.key.as_ref()), "provider record published");
                self.records.published(query, &ok.key);
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                debug!(error = %e, "publishing provider record failed; retrying later");
                self.records.failed(query, e.key());
            }
            kad::QueryResult::GetClosestPeers(Ok(ok)) => {
                events.push(DhtEvent::ClosestPeers(ok.peers));
            }
            _ => {}
        }
        if last {
            events.push(DhtEvent::QueryEnded(query));
        }
        events
    }

    pub(super) fn stats(&self, swarm: &mut Swarm<Behaviour>) -> DhtStats {
        let queries_served: BTreeMap<String, u64> = self
            .queries_served
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let total = queries_served.values().sum();
        let mut stats = DhtStats {
            enabled: false,
            mode: None,
            routing_table_size: 0,
            buckets: vec![],
            queries_served,
            queries_served_total: total,
            records_stored: 0,
            provided_keys: 0,
            provider_keys_stored: self.provider_quota.keys(),
            bootstrapped: self.bootstrapped,
        };
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            use kad::store::RecordStore;
            stats.enabled = true;
            stats.mode = Some(kad.mode().to_string());
            stats.buckets = kad
                .kbuckets()
                .filter(|b| b.num_entries() > 0)
                .map(|b| BucketStatus {
                    distance: b.range().0.ilog2().unwrap_or(0),
                    peers: b.num_entries(),
                })
                .collect();
            stats.routing_table_size = stats.buckets.iter().map(|b| b.peers).sum();
            let store = kad.store_mut();
            stats.records_stored = store.records().count();
            stats.provided_keys = store.provided().count();
        }
        stats
    }
}

fn query_kind(result: &kad::QueryResult) -> (&'static str, bool) {
    match result {
        kad::QueryResult::Bootstrap(r) => ("bootstrap", r.is_ok()),
        kad::QueryResult::GetClosestPeers(r) => ("get_closest_peers", r.is_ok()),
        kad::QueryResult::GetProviders(r) => ("get_providers", r.is_ok()),
        kad::QueryResult::StartProviding(r) => ("start_providing", r.is_ok()),
        kad::QueryResult::RepublishProvider(r) => ("republish_provider", r.is_ok()),
        kad::QueryResult::GetRecord(r) => ("get_record", r.is_ok()),
        kad::QueryResult::PutRecord(r) => ("put_record", r.is_ok()),
        kad::QueryResult::RepublishRecord(r) => ("republish_record", r.is_ok()),
    }
}

fn routing_table_size(swarm: &mut Swarm<Behaviour>) -> usize {
    swarm
        .behaviour_mut()
        .kad
        .as_mut()
        .map_or(0, |k| k.kbuckets().map(|b| b.num_entries()).sum())
}

/// `jantar_dht_routing_table_peers` and `jantar_dht_buckets`.
pub(super) fn update_routing_gauges(swarm: &mut Swarm<Behaviour>) {
    if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
        let (mut peers, mut buckets) = (0usize, 0usize);
        for b in kad.kbuckets() {
            if b.num_entries() > 0 {
                buckets += 1;
                peers += b.num_entries();
            }
        }
        metrics::gauge!(m::DHT_ROUTING_TABLE_PEERS).set(peers as f64);
        metrics::gauge!(m::DHT_BUCKETS).set(buckets as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::DhtConfig;

    /// The defaults, with the store size and the private-subnet switch under test.
    pub(super) fn config(max_provider_keys: usize, limit_private_subnets: bool) -> DhtConfig {
        DhtConfig {
            enabled: true,
            refresh_interval: Duration::from_secs(300),
            query_timeout: Duration::from_secs(30),
            max_packet_size: 16 * 1024,
            max_provider_keys,
            max_peers_per_subnet_per_bucket: 2,
            max_peers_per_subnet: 8,
            limit_private_subnets,
            discovery_interval: Duration::from_secs(30),
            parallelism: std::num::NonZeroUsize::new(3).expect("non-zero"),
        }
    }
}
