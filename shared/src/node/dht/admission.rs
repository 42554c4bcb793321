//! Who enters the routing table, and with which addresses.
//!
//! Kademlia inserts are manual ([`kad::BucketInserts::Manual`]): a peer enters only here,
//! when identify says it serves the DHT. Two rules guard the table that every lookup
//! through this node trusts:
//!
//! - Addresses: a peer may hand over only addresses no narrower than the connection it
//!   came over ([`Scope::may_claim`]): over the internet, public ones only; at most
//!   [`MAX_ADDRESSES`] per peer (when identify pushes new ones, the oldest
//!   make room).
//! - Diversity, after go-libp2p-kbucket's peer-diversity filter: at most
//!   `max_peers_per_subnet_per_bucket` peers from one subnet (IPv4 /24, IPv6 /48) in one
//!   bucket and `max_peers_per_subnet` in the whole table, counted by the address the
//!   peer's connection came from, which it cannot choose the way it chooses the
//!   addresses it claims. One machine with a thousand identities then holds a couple of
//!   slots per bucket instead of every slot close to a key. Loopback and private
//!   sources are left out unless `limit_private_subnets` is set (a LAN or a lab, where
//!   many honest nodes share a subnet); configured bootstrap and relay nodes always
//!   enter.

use std::collections::{HashMap, HashSet, VecDeque};

use libp2p::{Multiaddr, PeerId, kad};

use crate::{
    config::DhtConfig,
    scope::{Scope, Subnet},
};

/// Addresses kept per peer in the routing table (and so handed to others).
pub(super) const MAX_ADDRESSES: usize = 8;

/// Why a peer was kept out of the routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// None of the addresses it claimed may be kept.
    NoAddress,
    /// Its subnet already has its share of the peer's bucket.
    SubnetBucket,
    /// Its subnet already has its share of the table.
    SubnetTable,
}

impl Refusal {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refusal::NoAddress => "no_address",
            Refusal::SubnetBucket => "subnet_bucket",
            Refusal::SubnetTable => "subnet_table",
        }
    }
}

/// What to change in the routing table for one identified peer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) add: Vec<Multiaddr>,
    pub(super) remove: Vec<Multiaddr>,
}

#[derive(Debug)]
struct Admitted {
    /// The subnet it counts in, when the diversity rule applies to it.
    subnet: Option<Subnet>,
    bucket: u32,
    addresses: VecDeque<Multiaddr>,
}

#[derive(Debug)]
pub(super) struct Admission {
    local: kad::KBucketKey<PeerId>,
    per_bucket: usize,
    per_table: usize,
    limit_private: bool,
    /// Configured bootstrap and relay nodes: never held to the diversity rule.
    exempt: HashSet<PeerId>,
    admitted: HashMap<PeerId, Admitted>,
}

impl Admission {
    pub(super) fn new(me: PeerId, d: &DhtConfig, exempt: impl IntoIterator<Item = PeerId>) -> Self {
        Admission {
            local: kad::KBucketKey::from(me),
            per_bucket: d.max_peers_per_subnet_per_bucket,
            per_table: d.max_peers_per_subnet,
            limit_private: d.limit_private_subnets,
            exempt: exempt.into_iter().collect(),
            admitted: HashMap::new(),
        }
    }

    /// `peer`, connected from `source`, says it serves the DHT at `claimed`: the
    /// addresses to add to (and drop from) its routing-table entry, or why it stays out.
    pub(super) fn admit(
        &mut self,
        peer: PeerId,
        source: &Multiaddr,
        claimed: &[Multiaddr],
    ) -> Result<Change, Refusal> {
        let source_scope = Scope::of_multiaddr(source);
        let mut usable: Vec<Multiaddr> = Vec::new();
        for a in claimed {
            if source_scope.may_claim(Scope::of_multiaddr(a)) && !usable.contains(a) {
                usable.push(a.clone());
            }
        }
        usable.truncate(MAX_ADDRESSES);
        if let Some(entry) = self.admitted.get_mut(&peer) {
            let mut change = Change::default();
            for a in usable {
                if !entry.addresses.contains(&a) {
                    entry.addresses.push_back(a.clone());
                    change.add.push(a);
                }
            }
            while entry.addresses.len() > MAX_ADDRESSES {
                if let Some(old) = entry.addresses.pop_front() {
                    change.remove.push(old);
                }
            }
            return Ok(change);
        }
        if usable.is_empty() {
            return Err(Refusal::NoAddress);
        }
        let bucket = kad::KBucketKey::from(peer)
            .distance(&self.local)
            .ilog2()
            .unwrap_or(0);
        let limited =
            !self.exempt.contains(&peer) && (self.limit_private || source_scope == Scope::Public);
        let subnet = Subnet::of_multiaddr(source).filter(|_| limited);
        if let Some(subnet) = subnet {
            let same: Vec<&Admitted> = self
                .admitted
                .values()
                .filter(|a| a.subnet == Some(subnet))
                .collect();
            if same.iter().filter(|a| a.bucket == bucket).count() >= self.per_bucket {
                return Err(Refusal::SubnetBucket);
            }
            if same.len() >= self.per_table {
                return Err(Refusal::SubnetTable);
            }
        }
        self.admitted.insert(
            peer,
            Admitted {
                subnet,
                bucket,
                addresses: usable.iter().cloned().collect(),
            },
        );
        Ok(Change {
            add: usable,
            remove: vec![],
        })
    }

    /// Kademlia did not take `peer` (its bucket is full of live peers).
    pub(super) fn not_inserted(&mut self, peer: &PeerId) {
        self.admitted.remove(peer);
    }

    /// Forgets the peers that are no longer in the routing table (Kademlia replaced
    /// them), so that their subnets' slots are free again.
    pub(super) fn retain(&mut self, in_table: &HashSet<PeerId>) {
        self.admitted.retain(|p, _| in_table.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit_private: bool) -> DhtConfig {
        super::super::tests::config(1024, limit_private)
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_stranger_on_the_internet_hands_over_public_addresses_only() {
        let mut a = Admission::new(PeerId::random(), &config(false), []);
        let claimed = [
            addr("/ip4/127.0.0.1/tcp/4001"),
            addr("/ip4/10.0.0.5/tcp/4001"),
            addr("/ip4/1.2.3.4/tcp/4001"),
            addr("/ip6/2a01:4f8::1/udp/4001/quic-v1"),
        ];
        let c = a
            .admit(PeerId::random(), &addr("/ip4/1.2.3.4/tcp/50000"), &claimed)
            .unwrap();
        assert_eq!(c.add, claimed[2..].to_vec());
        // Only private addresses: nothing to keep.
        assert_eq!(
            a.admit(PeerId::random(), &addr("/ip4/5.6.7.8/tcp/1"), &claimed[..2]),
            Err(Refusal::NoAddress)
        );
        // From the LAN, private ones too; over loopback, everything.
        let c = a
            .admit(PeerId::random(), &addr("/ip4/10.0.0.9/tcp/1"), &claimed)
            .unwrap();
        assert_eq!(c.add.len(), 3);
        let c = a
            .admit(PeerId::random(), &addr("/ip4/127.0.0.1/tcp/1"), &claimed)
            .unwrap();
        assert_eq!(c.add.len(), 4);
    }

    #[test]
    fn addresses_per_peer_are_capped_oldest_dropped() {
        let mut a = Admission::new(PeerId::random(), &config(false), []);
        let peer = PeerId::random();
        let src = addr("/ip4/1.2.3.4/tcp/1");
        let many: Vec<Multiaddr> = (0..50)
            .map(|i| addr(&format!("/ip4/1.2.3.4/tcp/{}", 1000 + i)))
            .collect();
        let c = a.admit(peer, &src, &many).unwrap();
        assert_eq!(c.add, many[..8].to_vec());
        // Identify pushes more: the oldest make room.
        let more = [addr("/ip4/1.2.3.4/tcp/9"), addr("/ip4/1.2.3.4/tcp/10")];
        let c = a.admit(peer, &src, &more).unwrap();
        assert_eq!(c.add, more.to_vec());
        assert_eq!(c.remove, many[..2].to_vec());
        // Nothing new: nothing changes.
        assert_eq!(a.admit(peer, &src, &more).unwrap(), Change::default());
    }

    #[test]
    fn one_subnet_holds_two_per_bucket_and_eight_in_all() {
        let me = PeerId::random();
        let mut a = Admission::new(me, &config(false), []);
        let src = addr("/ip4/1.2.3.4/tcp/1");
        let claim = [addr("/ip4/1.2.3.4/tcp/4001")];
        let (mut admitted, mut bucket_refusals, mut table_refusals) = (0, 0, 0);
        let mut per_bucket: HashMap<u32, usize> = HashMap::new();
        for _ in 0..1000 {
            let peer = PeerId::random();
            let b = kad::KBucketKey::from(peer)
                .distance(&kad::KBucketKey::from(me))
                .ilog2()
                .unwrap();
            match a.admit(peer, &src, &claim) {
                Ok(_) => {
                    admitted += 1;
                    *per_bucket.entry(b).or_default() += 1;
                }
                Err(Refusal::SubnetBucket) => bucket_refusals += 1,
                Err(Refusal::SubnetTable) => table_refusals += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(admitted, 8);
        assert!(per_bucket.values().all(|n| *n <= 2), "{per_bucket:?}");
        assert!(bucket_refusals > 0 && table_refusals > 0);
        // Another subnet is not held back by the first one.
        let other = a.admit(
            PeerId::random(),
            &addr("/ip4/1.2.4.4/tcp/1"),
            &[addr("/ip4/1.2.4.4/tcp/4001")],
        );
        assert!(other.is_ok());
        // Slots free up when Kademlia drops peers from the table.
        a.retain(&HashSet::new());
        assert!(a.admit(PeerId::random(), &src, &claim).is_ok());
    }

    #[test]
    fn configured_infrastructure_and_private_sources_are_not_limited() {
        let bootstrap = PeerId::random();
        let mut a = Admission::new(PeerId::random(), &config(false), [bootstrap]);
        let loopback = addr("/ip4/127.0.0.1/tcp/1");
        for _ in 0..50 {
            assert!(
                a.admit(PeerId::random(), &loopback, std::slice::from_ref(&loopback))
                    .is_ok()
            );
        }
        let public = addr("/ip4/1.2.3.4/tcp/1");
        for _ in 0..50 {
            let _ = a.admit(PeerId::random(), &public, std::slice::from_ref(&public));
        }
        assert!(
            a.admit(bootstrap, &public, std::slice::from_ref(&public))
                .is_ok()
        );
        // With the limits on for private sources, loopback counts too.
        let mut lab = Admission::new(PeerId::random(), &config(true), []);
        let admitted = (0..50)
            .filter(|_| {
                lab.admit(PeerId::random(), &loopback, std::slice::from_ref(&loopback))
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 8);
    }
}
