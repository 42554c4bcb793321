//! Provider records this node stores for others, and the quotas that keep one source
//! from filling the store or one key's provider list.
//!
//! Every role but the stateless bootstrap node stores provider records, and Kademlia
//! hands each inbound ADD_PROVIDER to the event loop ([`kad::StoreInserts::FilterBoth`])
//! to be admitted here before it is stored:
//!
//! - at most `network.dht.max_provider_keys` keys hold records from others;
//! - one provider (its peer id) holds at most a quarter of them and one subnet (IPv4 /24,
//!   IPv6 /48, counted by the provider's connection) half;
//! - one subnet holds at most [`PER_KEY_PER_SUBNET`] of a key's [`kad::K_VALUE`]
//!   providers: a machine with a hundred identities cannot take every slot of the relay
//!   or peer rendezvous key and hide the real relays behind its own.
//!
//! The subnet quotas leave loopback and private sources out unless
//! `limit_private_subnets` is set, as the routing-table rule does. The node's own
//! records go straight to the store and are never refused: the store's own key limit
//! is lifted, and this quota bounds what others put in it. Records expire here (the
//! memory store itself never drops expired provider records).

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Instant,
};

use libp2p::{Multiaddr, PeerId, kad};

use super::admission::MAX_ADDRESSES;
use crate::{
    config::DhtConfig,
    scope::{Scope, Subnet},
};

/// Providers of one key from one subnet.
pub(super) const PER_KEY_PER_SUBNET: usize = 2;

/// Why a provider record was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The store holds `max_provider_keys` keys from others.
    Keys,
    /// The provider holds its share of the store.
    Provider,
    /// The provider's subnet holds its share of the store.
    Subnet,
    /// The provider's subnet holds its share of this key's providers.
    KeySubnet,
    /// The key has its [`kad::K_VALUE`] providers.
    KeyFull,
}

impl Refusal {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refusal::Keys => "store_full",
            Refusal::Provider => "provider_quota",
            Refusal::Subnet => "subnet_quota",
            Refusal::KeySubnet => "key_subnet_quota",
            Refusal::KeyFull => "key_full",
        }
    }
}

#[derive(Debug)]
struct Held {
    provider: PeerId,
    subnet: Option<Subnet>,
    expires: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct ProviderQuota {
    max_keys: usize,
    per_provider: usize,
    per_subnet: usize,
    limit_private: bool,
    keys: HashMap<kad::RecordKey, Vec<Held>>,
    per_provider_count: HashMap<PeerId, usize>,
    per_subnet_count: HashMap<Subnet, usize>,
}

impl ProviderQuota {
    pub(super) fn new(d: &DhtConfig) -> Self {
        ProviderQuota {
            max_keys: d.max_provider_keys,
            per_provider: (d.max_provider_keys / 4).max(1),
            per_subnet: (d.max_provider_keys / 2).max(1),
            limit_private: d.limit_private_subnets,
            keys: HashMap::new(),
            per_provider_count: HashMap::new(),
            per_subnet_count: HashMap::new(),
        }
    }

    /// Keys holding records from others.
    pub(super) fn keys(&self) -> usize {
        self.keys.len()
    }

    /// `record` arrived from its provider, connected from `source` (`None`: not known,
    /// or relayed). On `Ok` the record, its addresses narrowed to what the source may
    /// claim, is to be stored; a refresh of a record already held always is.
    pub(super) fn admit(
        &mut self,
        record: &mut kad::ProviderRecord,
        source: Option<&Multiaddr>,
    ) -> Result<(), Refusal> {
        let source_scope = source.map_or(Scope::Public, Scope::of_multiaddr);
        record
            .addresses
            .retain(|a| source_scope.may_claim(Scope::of_multiaddr(a)));
        record.addresses.truncate(MAX_ADDRESSES);
        let subnet = source
            .and_then(Subnet::of_multiaddr)
            .filter(|_| self.limit_private || source_scope == Scope::Public);
        let n_keys = self.keys.len();
        let held = match self.keys.entry(record.key.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                if n_keys >= self.max_keys {
                    return Err(Refusal::Keys);
                }
                e.insert(Vec::new())
            }
        };
        if let Some(h) = held.iter_mut().find(|h| h.provider == record.provider) {
            h.expires = record.expires;
            return Ok(());
        }
        let refusal = if held.len() >= kad::K_VALUE.get() {
            Some(Refusal::KeyFull)
        } else if self
            .per_provider_count
            .get(&record.provider)
            .copied()
            .unwrap_or(0)
            >= self.per_provider
        {
            Some(Refusal::Provider)
        } else if let Some(s) = subnet
            && self.per_subnet_count.get(&s).copied().unwrap_or(0) >= self.per_subnet
        {
            Some(Refusal::Subnet)
        } else if subnet.is_some()
            && held.iter().filter(|h| h.subnet == subnet).count() >= PER_KEY_PER_SUBNET
        {
            Some(Refusal::KeySubnet)
        } else {
            None
        };
        if let Some(r) = refusal {
            if held.is_empty() {
                self.keys.remove(&record.key);
            }
            return Err(r);
        }
        held.push(Held {
            provider: record.provider,
            subnet,
            expires: record.expires,
        });
        *self.per_provider_count.entry(record.provider).or_default() += 1;
        if let Some(s) = subnet {
            *self.per_subnet_count.entry(s).or_default() += 1;
        }
        Ok(())
    }

    /// Drops the records that expired by `now`; returns them, to be removed from the
    /// store.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<(kad::RecordKey, PeerId)> {
        let mut gone = Vec::new();
        for (key, held) in &mut self.keys {
            held.retain(|h| {
                let alive = h.expires.is_none_or(|t| t > now);
                if !alive {
                    gone.push((key.clone(), h.provider));
                    release(&mut self.per_provider_count, &h.provider);
                    if let Some(s) = &h.subnet {
                        release(&mut self.per_subnet_count, s);
                    }
                }
                alive
            });
        }
        self.keys.retain(|_, held| !held.is_empty());
        gone
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = counts.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            counts.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn quota(max_keys: usize, limit_private: bool) -> ProviderQuota {
        ProviderQuota::new(&super::super::tests::config(max_keys, limit_private))
    }

    fn record(key: &str, provider: PeerId, ttl: Duration) -> kad::ProviderRecord {
        kad::ProviderRecord {
            key: kad::RecordKey::new(&key),
            provider,
            expires: Some(Instant::now() + ttl),
            addresses: vec![],
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn one_provider_takes_a_quarter_and_one_subnet_half() {
        let mut q = quota(1024, false);
        let src: Multiaddr = "/ip4/1.2.3.4/tcp/1".parse().unwrap();
        let mallory = PeerId::random();
        let stored = (0..1024)
            .filter(|i| {
                q.admit(&mut record(&format!("k{i}"), mallory, HOUR), Some(&src))
                    .is_ok()
            })
            .count();
        assert_eq!(stored, 256);
        assert_eq!(
            q.admit(&mut record("k-more", mallory, HOUR), Some(&src)),
            Err(Refusal::Provider)
        );
        // Its neighbours in the /24 add up to half the store.
        let mut subnet_total = stored;
        for n in 0..4 {
            let sybil = PeerId::random();
            subnet_total += (0..1024)
                .filter(|i| {
                    q.admit(&mut record(&format!("s{n}-{i}"), sybil, HOUR), Some(&src))
                        .is_ok()
                })
                .count();
        }
        assert_eq!(subnet_total, 512);
        // An honest provider elsewhere still gets in, until the store is full.
        let honest: Multiaddr = "/ip4/5.6.7.8/tcp/1".parse().unwrap();
        assert!(
            q.admit(&mut record("honest", PeerId::random(), HOUR), Some(&honest))
                .is_ok()
        );
        // A refresh of a held record is always taken.
        assert!(
            q.admit(&mut record("k0", mallory, HOUR * 2), Some(&src))
                .is_ok()
        );
    }

    #[test]
    fn a_hundred_sybils_take_two_slots_of_a_key() {
        let mut q = quota(1024, false);
        let src: Multiaddr = "/ip4/1.2.3.4/tcp/1".parse().unwrap();
        let taken = (0..100)
            .filter(|_| {
                q.admit(&mut record("relays", PeerId::random(), HOUR), Some(&src))
                    .is_ok()
            })
            .count();
        assert_eq!(taken, PER_KEY_PER_SUBNET);
        let mut honest = 0;
        for i in 0..30 {
            let relay: Multiaddr = format!("/ip4/9.9.{i}.1/tcp/1").parse().unwrap();
            if q.admit(&mut record("relays", PeerId::random(), HOUR), Some(&relay))
                .is_ok()
            {
                honest += 1;
            }
        }
        assert_eq!(honest, kad::K_VALUE.get() - PER_KEY_PER_SUBNET);
        assert_eq!(
            q.admit(
                &mut record("relays", PeerId::random(), HOUR),
                Some(&"/ip4/9.9.99.1/tcp/1".parse().unwrap())
            ),
            Err(Refusal::KeyFull)
        );
    }

    #[test]
    fn the_store_is_bounded_and_expired_records_free_their_room() {
        let mut q = quota(8, false);
        for i in 0..8 {
            let src: Multiaddr = format!("/ip4/9.9.{i}.1/tcp/1").parse().unwrap();
            q.admit(
                &mut record(&format!("k{i}"), PeerId::random(), Duration::from_secs(1)),
                Some(&src),
            )
            .unwrap();
        }
        let late = "/ip4/8.8.8.8/tcp/1".parse().unwrap();
        assert_eq!(
            q.admit(&mut record("k8", PeerId::random(), HOUR), Some(&late)),
            Err(Refusal::Keys)
        );
        let gone = q.expire(Instant::now() + Duration::from_secs(2));
        assert_eq!((gone.len(), q.keys()), (8, 0));
        assert!(
            q.admit(&mut record("k8", PeerId::random(), HOUR), Some(&late))
                .is_ok()
        );
    }

    #[test]
    fn addresses_are_narrowed_to_the_source_and_capped() {
        let mut q = quota(1024, false);
        let mut r = record("k", PeerId::random(), HOUR);
        r.addresses = vec![
            "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            "/ip4/192.168.1.2/tcp/1".parse().unwrap(),
        ];
        r.addresses
            .extend((0..20).map(|i| format!("/ip4/1.2.3.4/tcp/{i}").parse().unwrap()));
        q.admit(&mut r, Some(&"/ip4/1.2.3.4/tcp/9".parse().unwrap()))
            .unwrap();
        assert_eq!(r.addresses.len(), MAX_ADDRESSES);
        assert!(
            r.addresses
                .iter()
                .all(|a| Scope::of_multiaddr(a) == Scope::Public)
        );
    }

    #[test]
    fn private_sources_are_held_to_subnet_quotas_only_when_asked() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let mut open = quota(1024, false);
        let taken = (0..10)
            .filter(|_| {
                open.admit(&mut record("k", PeerId::random(), HOUR), Some(&lo))
                    .is_ok()
            })
            .count();
        assert_eq!(taken, 10);
        let mut lab = quota(1024, true);
        let taken = (0..10)
            .filter(|_| {
                lab.admit(&mut record("k", PeerId::random(), HOUR), Some(&lo))
                    .is_ok()
            })
            .count();
        assert_eq!(taken, PER_KEY_PER_SUBNET);
    }
}
