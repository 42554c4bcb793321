//! Limits on what strangers can make a node do: request rates keyed by source address
//! (here), connections and handshakes per source ([`peers`]), the relay's and AutoNAT's
//! service per source ([`slots`], [`autonat_gate`]), who may use a relay ([`acl`]), and
//! which addresses AutoNAT servers may confirm ([`address_votes`]).
//!
//! Source addresses are grouped by [`IpKey`]: an IPv4 address counts on its own, an
//! IPv6 address counts per /64, since anyone with one IPv6 address usually has a whole
//! /64 to hop around in.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    time::{Duration, Instant},
};

mod acl;
mod address_votes;
mod autonat_gate;
mod peers;
mod slots;

pub use acl::{AclRefusal, RelayAcl};
pub use address_votes::{AddressVotes, MAX_OBSERVED_ADDRESSES, Verdict, Voter};
pub use autonat_gate::AutonatGate;
pub use peers::{LimitExceeded, PeerLimits, denial_reason, own_dial_reserve};
pub use slots::{ConcurrentSlots, RelayGate, SlotCaps, SlotRefusal};

use libp2p::{Multiaddr, PeerId};

/// The unit a source address is counted in: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(std::net::Ipv4Addr),
    V6Prefix64(u64),
}

impl IpKey {
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4),
                None => IpKey::V6Prefix64(prefix64(v6)),
            },
        }
    }

    /// The source IP of a connection's remote address. Relayed addresses carry the
    /// relay's IP, so they are not keyed (`None`).
    pub fn from_multiaddr(addr: &Multiaddr) -> Option<Self> {
        crate::scope::direct_ip(addr).map(IpKey::from_ip)
    }
}

fn prefix64(ip: Ipv6Addr) -> u64 {
    (u128::from(ip) >> 64) as u64
}

/// A token bucket per key: `limit` requests at once, one more every `interval`.
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    limit: u32,
    interval: Duration,
    buckets: HashMap<K, (u32, Instant)>,
    last_prune: Option<Instant>,
}

impl<K: std::hash::Hash + Eq + Copy> KeyedRateLimiter<K> {
    pub fn new(limit: NonZeroU32, interval: Duration) -> Self {
        KeyedRateLimiter {
            limit: limit.get(),
            interval,
            buckets: HashMap::new(),
            last_prune: None,
        }
    }

    /// Takes a token for `key` if one is left.
    pub fn try_acquire(&mut self, key: K, now: Instant) -> bool {
        self.prune(now);
        let (limit, interval) = (self.limit, self.interval);
        let (tokens, last) = self.buckets.entry(key).or_insert((limit, now));
        let refill = (now.saturating_duration_since(*last).as_nanos() / interval.as_nanos().max(1))
            .min(u128::from(limit)) as u32;
        if refill > 0 {
            *tokens = (*tokens + refill).min(limit);
            *last += interval * refill;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }

    /// Drops buckets that have refilled completely, so memory stays bounded by the
    /// number of keys active within `limit * interval`.
    fn prune(&mut self, now: Instant) {
        let full_after = self.interval * self.limit;
        if self
            .last_prune
            .is_some_and(|p| now.saturating_duration_since(p) < full_after)
        {
            return;
        }
        self.last_prune = Some(now);
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < full_after);
    }

    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}

/// Relay rate limiter keyed by source IP (IPv6 per /64).
pub fn relay_rate_per_ip(
    limit: NonZeroU32,
    interval: Duration,
) -> Box<dyn libp2p::relay::RateLimiter> {
    let mut limiter = KeyedRateLimiter::<IpKey>::new(limit, interval);
    Box::new(move |_peer: PeerId, addr: &Multiaddr, now: Instant| {
        IpKey::from_multiaddr(addr).is_none_or(|key| limiter.try_acquire(key, now))
    })
}

/// Relay rate limiter keyed by peer id.
pub fn relay_rate_per_peer(
    limit: NonZeroU32,
    interval: Duration,
) -> Box<dyn libp2p::relay::RateLimiter> {
    let mut limiter = KeyedRateLimiter::<PeerId>::new(limit, interval);
    Box::new(move |peer: PeerId, _addr: &Multiaddr, now: Instant| limiter.try_acquire(peer, now))
}

fn count<K: std::hash::Hash + Eq>(counts: &HashMap<K, u32>, k: &K) -> usize {
    counts.get(k).copied().unwrap_or(0) as usize
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = counts.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64() {
        let a = IpKey::from_ip("2001:db8:1:2::1".parse().unwrap());
        let b = IpKey::from_ip("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = IpKey::from_ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4 = IpKey::from_ip("10.0.0.1".parse().unwrap());
        let mapped = IpKey::from_ip("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(v4, mapped);
        let relayed: Multiaddr = "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe/p2p-circuit"
            .parse()
            .unwrap();
        assert_eq!(IpKey::from_multiaddr(&relayed), None);
    }

    #[test]
    fn token_bucket_refills_per_interval() {
        let mut l = KeyedRateLimiter::new(NonZeroU32::new(2).unwrap(), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(l.try_acquire(1, t0));
        assert!(l.try_acquire(1, t0));
        assert!(!l.try_acquire(1, t0));
        assert!(l.try_acquire(2, t0), "other keys have their own bucket");
        assert!(!l.try_acquire(1, t0 + Duration::from_secs(9)));
        assert!(l.try_acquire(1, t0 + Duration::from_secs(10)));
        assert!(!l.try_acquire(1, t0 + Duration::from_secs(11)));
        // Long idle refills to the limit, not beyond.
        let later = t0 + Duration::from_secs(1000);
        assert!(l.try_acquire(1, later));
        assert!(l.try_acquire(1, later));
        assert!(!l.try_acquire(1, later));
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let mut l = KeyedRateLimiter::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(1));
        let t0 = Instant::now();
        for k in 0..100 {
            l.try_acquire(k, t0);
        }
        assert_eq!(l.tracked_keys(), 100);
        l.try_acquire(1000, t0 + Duration::from_secs(5));
        assert_eq!(l.tracked_keys(), 1);
    }

    #[test]
    fn relay_ip_limiter_groups_ipv6_by_64() {
        let mut limiter = relay_rate_per_ip(NonZeroU32::new(1).unwrap(), Duration::from_secs(60));
        let peer = PeerId::random();
        let now = Instant::now();
        let a: Multiaddr = "/ip6/2001:db8::1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip6/2001:db8::2/tcp/1".parse().unwrap();
        let c: Multiaddr = "/ip6/2001:db8:0:1::1/tcp/1".parse().unwrap();
        assert!(limiter.try_next(peer, &a, now));
        assert!(!limiter.try_next(PeerId::random(), &b, now), "same /64");
        assert!(limiter.try_next(peer, &c, now), "other /64");
    }
}
