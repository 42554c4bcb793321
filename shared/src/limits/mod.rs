//! Limits on what strangers can make a node do: distinct peers, connections per source
//! IP, handshakes per source IP and subnet, request rates keyed by source address, and
//! (in [`slots`] and [`autonat_gate`]) the relay's and AutoNAT's service per source, and
//! (in [`address_votes`]) which addresses AutoNAT servers may confirm.
//!
//! Source addresses are grouped by [`IpKey`]: an IPv4 address counts on its own, an
//! IPv6 address counts per /64, since anyone with one IPv6 address usually has a whole
//! /64 to hop around in.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    task::{Context, Poll},
    time::{Duration, Instant},
};

mod acl;
mod address_votes;
mod autonat_gate;
mod slots;

pub use acl::{AclRefusal, RelayAcl};
pub use address_votes::{AddressVotes, MAX_OBSERVED_ADDRESSES, Verdict, Voter};
pub use autonat_gate::AutonatGate;
pub use slots::{ConcurrentSlots, RelayGate, SlotCaps, SlotRefusal};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

use crate::{config::ConnectionLimits, scope::Subnet};

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

/// Why [`PeerLimits`] refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum LimitExceeded {
    #[error("already connected to the maximum of {max} peers")]
    Peers { max: u32 },
    #[error("{max} inbound connections from {key:?} already")]
    PerIp { max: u32, key: IpKey },
    #[error("{max} connections from {key:?} still in their handshake")]
    PendingPerIp { max: u32, key: IpKey },
    #[error("{max} connections from {subnet:?} still in their handshake")]
    PendingPerSubnet { max: u32, subnet: Subnet },
}

impl LimitExceeded {
    /// The `reason` label of `jantar_connections_denied_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitExceeded::Peers { .. } => "max_peers",
            LimitExceeded::PerIp { .. } => "per_ip",
            LimitExceeded::PendingPerIp { .. } => "pending_per_ip",
            LimitExceeded::PendingPerSubnet { .. } => "pending_per_subnet",
        }
    }
}

/// The reserve of peer slots above `max_peers` that only the node's own dials may use:
/// a tenth of `max_peers`, at least 4.
pub fn own_dial_reserve(max_peers: u32) -> u32 {
    (max_peers / 10).max(4)
}

/// Caps the number of distinct connected peers, the inbound connections per source IP
/// (IPv6 per /64), and the inbound connections still in their handshake per source IP
/// and per subnet (IPv4 /24, IPv6 /48). A peer that is already connected may always add
/// a connection (per-peer connection counts are capped by `libp2p::connection_limits`).
///
/// `max_peers` bounds what strangers can make the node hold; the node's own dials may
/// go [`own_dial_reserve`] beyond it, so a node whose slots strangers filled can still
/// reach the peers it chose. Configured infrastructure never counts.
pub struct PeerLimits {
    max_peers: u32,
    max_per_ip: u32,
    pending_caps: SlotCaps,
    peers: HashMap<PeerId, usize>,
    inbound_by_ip: HashMap<IpKey, u32>,
    inbound_key: HashMap<ConnectionId, IpKey>,
    pending_by_ip: HashMap<IpKey, u32>,
    pending_by_subnet: HashMap<Subnet, u32>,
    pending: HashMap<ConnectionId, (IpKey, Subnet)>,
    /// Peers that never count against `max_peers`.
    exempt: HashSet<PeerId>,
}

impl PeerLimits {
    pub fn new(l: &ConnectionLimits) -> Self {
        PeerLimits {
            max_peers: l.max_peers,
            max_per_ip: l.max_connections_per_ip,
            pending_caps: SlotCaps {
                per_ip: l.max_pending_per_ip as usize,
                per_subnet: l.max_pending_per_subnet as usize,
                private: l.limit_private_sources,
            },
            peers: HashMap::new(),
            inbound_by_ip: HashMap::new(),
            inbound_key: HashMap::new(),
            pending_by_ip: HashMap::new(),
            pending_by_subnet: HashMap::new(),
            pending: HashMap::new(),
            exempt: HashSet::new(),
        }
    }

    /// Peers that never count against `max_peers` (configured bootstrap nodes and relays).
    pub fn exempt(&mut self, peer: PeerId) {
        self.exempt.insert(peer);
    }

    pub fn connected_peers(&self) -> usize {
        self.peers.len()
    }

    /// Inbound connections in their handshake now, of the sources the caps count.
    pub fn pending_inbound(&self) -> usize {
        self.pending.len()
    }

    fn check_peer(&self, peer: PeerId, own_dial: bool) -> Result<(), ConnectionDenied> {
        if self.peers.contains_key(&peer) || self.exempt.contains(&peer) {
            return Ok(());
        }
        let counted = self
            .peers
            .keys()
            .filter(|p| !self.exempt.contains(p))
            .count();
        let max = if own_dial {
            self.max_peers + own_dial_reserve(self.max_peers)
        } else {
            self.max_peers
        };
        if counted >= max as usize {
            return Err(denied(LimitExceeded::Peers { max }));
        }
        Ok(())
    }

    fn release_ip(&mut self, id: ConnectionId) {
        if let Some(key) = self.inbound_key.remove(&id) {
            release(&mut self.inbound_by_ip, &key);
        }
        self.release_pending(id);
    }

    fn release_pending(&mut self, id: ConnectionId) {
        if let Some((key, subnet)) = self.pending.remove(&id) {
            release(&mut self.pending_by_ip, &key);
            release(&mut self.pending_by_subnet, &subnet);
        }
    }
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

fn denied(e: LimitExceeded) -> ConnectionDenied {
    ConnectionDenied::new(e)
}

/// The `reason` label of a refused connection: which of Jantar's limits refused it,
/// or `limit` for the library's (pending, per-peer and memory limits).
pub fn denial_reason(cause: &ConnectionDenied) -> &'static str {
    cause
        .downcast_ref::<LimitExceeded>()
        .map_or("limit", LimitExceeded::reason)
}

impl NetworkBehaviour for PeerLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = crate::scope::direct_ip(remote_addr) else {
            return Ok(());
        };
        let (key, subnet) = (IpKey::from_ip(ip), Subnet::of_ip(ip));
        if count(&self.inbound_by_ip, &key) >= self.max_per_ip as usize {
            return Err(denied(LimitExceeded::PerIp {
                max: self.max_per_ip,
                key,
            }));
        }
        let caps = self.pending_caps;
        let capped = caps.counts(ip);
        if capped && count(&self.pending_by_ip, &key) >= caps.per_ip {
            return Err(denied(LimitExceeded::PendingPerIp {
                max: caps.per_ip as u32,
                key,
            }));
        }
        if capped && count(&self.pending_by_subnet, &subnet) >= caps.per_subnet {
            return Err(denied(LimitExceeded::PendingPerSubnet {
                max: caps.per_subnet as u32,
                subnet,
            }));
        }
        *self.inbound_by_ip.entry(key).or_default() += 1;
        self.inbound_key.insert(connection_id, key);
        if capped {
            *self.pending_by_ip.entry(key).or_default() += 1;
            *self.pending_by_subnet.entry(subnet).or_default() += 1;
            self.pending.insert(connection_id, (key, subnet));
        }
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release_pending(connection_id);
        self.check_peer(peer, false)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(peer, true)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.release_pending(e.connection_id);
                *self.peers.entry(e.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(e) => {
                self.release_ip(e.connection_id);
                if e.remaining_established == 0 {
                    self.peers.remove(&e.peer_id);
                } else if let Some(n) = self.peers.get_mut(&e.peer_id) {
                    *n = n.saturating_sub(1);
                }
            }
            FromSwarm::ListenFailure(e) => self.release_ip(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
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
