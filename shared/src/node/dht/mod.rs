//! The Kademlia DHT: first contact through the bootstrap nodes and retries while out of
//! touch, the DHT servers this node is connected to, the provider records it publishes,
//! routing-table gauges and the queries it serves.
//!
//! Query results that other parts asked for (providers of a key, peers close to a key)
//! are handed back to the event loop as [`DhtEvent`]s.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId, Swarm, kad,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tracing::{debug, info, warn};

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

/// The provider records this node publishes, and whether each is current: a record
/// goes stale when the node's addresses change, and stale records are published again
/// on the next discovery round.
#[derive(Debug, Default)]
pub(super) struct ProviderRecords {
    current: HashMap<kad::RecordKey, bool>,
}

impl ProviderRecords {
    /// Publishes `key` now, and again whenever the node's addresses change.
    pub(super) fn provide(&mut self, swarm: &mut Swarm<Behaviour>, key: kad::RecordKey) {
        self.current.insert(key.clone(), false);
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            let _ = kad.start_providing(key);
        }
    }

    /// Publishes `key` on the next discovery round unless it is already published.
    pub(super) fn want(&mut self, key: kad::RecordKey) {
        self.current.entry(key).or_insert(false);
    }

    /// Stops publishing `key`.
    pub(super) fn withdraw(&mut self, swarm: &mut Swarm<Behaviour>, key: &kad::RecordKey) {
        self.current.remove(key);
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            kad.stop_providing(key);
        }
    }

    /// The node's addresses changed: every record must be published again.
    pub(super) fn invalidate(&mut self) {
        for current in self.current.values_mut() {
            *current = false;
        }
    }

    fn published(&mut self, key: kad::RecordKey) {
        self.current.insert(key, true);
    }

    fn publish_stale(&mut self, kad: &mut kad::Behaviour<kad::store::MemoryStore>) {
        let stale = self.current.iter().filter(|(_, c)| !**c).map(|(k, _)| k);
        for key in stale {
            if let Err(e) = kad.start_providing(key.clone()) {
                warn!(error = %e, "cannot publish provider record");
            }
            metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "start_providing").increment(1);
        }
    }
}

pub(super) struct Dht {
    /// Configured bootstrap nodes other than this node itself.
    bootstrap_nodes: Vec<PeerAddr>,
    /// Connected peers that serve the DHT (per identify).
    servers: HashSet<PeerId>,
    bootstrapped: bool,
    /// Retries the bootstrap nodes while not joined.
    retry: Backoff,
    queries_served: BTreeMap<&'static str, u64>,
    pub(super) records: ProviderRecords,
}

impl Dht {
    pub(super) fn new(me: PeerId, net: &NetworkConfig) -> Self {
        Dht {
            bootstrap_nodes: net
                .bootstrap_nodes
                .iter()
                .filter(|b| b.peer_id != me)
                .cloned()
                .collect(),
            servers: HashSet::new(),
            bootstrapped: false,
            retry: Backoff::new(BOOTSTRAP_RETRY_MIN, BOOTSTRAP_RETRY_MAX),
            queries_served: BTreeMap::new(),
            records: ProviderRecords::default(),
        }
    }

    /// Connected to at least one DHT server: in touch with the network. (The routing
    /// table alone does not tell: configured bootstrap nodes are in it from the start.)
    pub(super) fn joined(&self) -> bool {
        !self.servers.is_empty()
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

    /// Every second: while out of touch, dials the bootstrap nodes again with backoff.
    pub(super) fn housekeeping(&mut self, swarm: &mut Swarm<Behaviour>) {
        if !self.has_bootstrap_nodes() || !swarm.behaviour().kad.is_enabled() {
            return;
        }
        if self.joined() {
            self.retry.reset();
        } else if self.retry.due(Instant::now()) {
            info!(
                next_retry = ?self.retry.current_delay(),
                "not connected to the network; dialing the bootstrap nodes"
            );
            self.dial_bootstrap_nodes(swarm);
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

    /// Identify told us `peer`'s protocols and addresses: a DHT server goes into the
    /// routing table with its addresses; a peer that switched to client mode leaves the
    /// set of servers.
    pub(super) fn identified(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        protocols: &[libp2p::StreamProtocol],
        addrs: &[Multiaddr],
    ) {
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        if protocols.contains(&KAD_PROTOCOL) {
            for addr in addrs {
                kad.add_address(&peer, addr.clone());
            }
            self.servers.insert(peer);
        } else {
            self.servers.remove(&peer);
        }
    }

    /// `peer`'s last connection closed. Only connected DHT servers count as being in
    /// touch with the network: without any, the bootstrap nodes are dialed again.
    pub(super) fn disconnected(&mut self, peer: &PeerId) {
        self.servers.remove(peer);
    }

    pub(super) fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        e: kad::Event,
    ) -> Vec<DhtEvent> {
        match e {
            kad::Event::InboundRequest { request } => {
                self.served(&request);
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
                id, result, step, ..
            } => self.on_query_result(swarm, id, result, step.last),
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
        // With filtering on (bootstrap nodes), records arrive here to be stored by us;
        // a stateless node drops them.
        match request {
            kad::InboundRequest::AddProvider { record: Some(_) } => {
                metrics::counter!(m::DHT_INSERTS_REFUSED, "kind" => "provider").increment(1);
            }
            kad::InboundRequest::PutRecord {
                record: Some(_), ..
            } => {
                metrics::counter!(m::DHT_INSERTS_REFUSED, "kind" => "record").increment(1);
            }
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
                self.records.published(ok.key);
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                debug!(error = %e, "publishing provider record failed; retrying later");
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
