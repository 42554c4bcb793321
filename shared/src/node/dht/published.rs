//! The provider records this node publishes itself (the peer and relay rendezvous keys,
//! its files), one publication of each at a time.

use std::collections::HashMap;

use libp2p::{Swarm, kad};
use tracing::warn;

use crate::{behaviour::Behaviour, metrics as m};

/// The provider records this node publishes, and whether each is current: a record
/// goes stale when the node's addresses change, and stale records are published again
/// on the next discovery round. One publication of a key runs at a time, so rounds
/// while the network is unreachable do not pile up queries.
#[derive(Debug, Default)]
pub(in crate::node) struct ProviderRecords {
    current: HashMap<kad::RecordKey, Publication>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publication {
    Stale,
    /// Being published by this query; its result counts only while it is the latest.
    Publishing(kad::QueryId),
    Current,
}

impl ProviderRecords {
    /// Publishes `key` now, and again whenever the node's addresses change.
    pub(in crate::node) fn provide(&mut self, swarm: &mut Swarm<Behaviour>, key: kad::RecordKey) {
        if matches!(self.current.get(&key), Some(Publication::Publishing(_))) {
            return;
        }
        self.current.insert(key.clone(), Publication::Stale);
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            self.start(kad, key);
        }
    }

    /// Publishes `key` on the next discovery round unless it is already published.
    pub(in crate::node) fn want(&mut self, key: kad::RecordKey) {
        self.current.entry(key).or_insert(Publication::Stale);
    }

    /// Stops publishing `key`.
    pub(in crate::node) fn withdraw(&mut self, swarm: &mut Swarm<Behaviour>, key: &kad::RecordKey) {
        self.current.remove(key);
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            kad.stop_providing(key);
        }
    }

    /// The node's addresses changed: every record must be published again (a
    /// publication running now carries the old addresses).
    pub(in crate::node) fn invalidate(&mut self) {
        for p in self.current.values_mut() {
            *p = Publication::Stale;
        }
    }

    /// `query` published `key`.
    pub(super) fn published(&mut self, query: kad::QueryId, key: &kad::RecordKey) {
        if let Some(p) = self.current.get_mut(key)
            && *p == Publication::Publishing(query)
        {
            *p = Publication::Current;
        }
    }

    /// `query` could not publish `key`: the next round tries again.
    pub(super) fn failed(&mut self, query: kad::QueryId, key: &kad::RecordKey) {
        if let Some(p) = self.current.get_mut(key)
            && *p == Publication::Publishing(query)
        {
            *p = Publication::Stale;
        }
    }

    pub(super) fn publish_stale(&mut self, kad: &mut kad::Behaviour<kad::store::MemoryStore>) {
        let stale: Vec<kad::RecordKey> = self
            .current
            .iter()
            .filter(|(_, p)| **p == Publication::Stale)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.start(kad, key);
        }
    }

    fn start(&mut self, kad: &mut kad::Behaviour<kad::store::MemoryStore>, key: kad::RecordKey) {
        match kad.start_providing(key.clone()) {
            Ok(query) => {
                self.current.insert(key, Publication::Publishing(query));
                metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "start_providing").increment(1);
            }
            Err(e) => warn!(error = %e, "cannot publish provider record"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_publication_of_a_key_runs_at_a_time() {
        use libp2p::PeerId;

        let me = PeerId::random();
        let mut kad = kad::Behaviour::new(me, kad::store::MemoryStore::new(me));
        let key = kad::RecordKey::new(&b"/jantar/peers/v1");
        let mut records = ProviderRecords::default();
        let running = |records: &ProviderRecords| match records.current[&key] {
            Publication::Publishing(q) => Some(q),
            _ => None,
        };

        records.want(key.clone());
        records.publish_stale(&mut kad);
        let first = running(&records).expect("published");
        // Rounds while it runs (an unreachable network) start nothing more.
        records.publish_stale(&mut kad);
        records.publish_stale(&mut kad);
        assert_eq!(kad.iter_queries().count(), 1);

        // New addresses: published again; the old query's result no longer counts.
        records.invalidate();
        records.publish_stale(&mut kad);
        let second = running(&records).expect("published again");
        assert_ne!(first, second);
        records.published(first, &key);
        assert_eq!(running(&records), Some(second));
        records.published(second, &key);
        assert_eq!(records.current[&key], Publication::Current);
        records.publish_stale(&mut kad);
        assert_eq!(
            kad.iter_queries().count(),
            2,
            "nothing new for a current record"
        );

        // A failed publication is retried on the next round.
        records.invalidate();
        records.publish_stale(&mut kad);
        let third = running(&records).expect("published");
        records.failed(third, &key);
        assert_eq!(records.current[&key], Publication::Stale);
    }
}
