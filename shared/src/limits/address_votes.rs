//! Which addresses AutoNAT may confirm as this node's own.
//!
//! An AutoNAT v1 server answers a probe with the address it dialed back, and the library
//! confirms that address as the node's external address as soon as one server says so.
//! A stranger running a server can answer with any address, and the node then hands it
//! to every peer (identify, DHT records): an address hijack. [`AddressVotes`] takes the
//! servers' answers as votes instead: an address is confirmed once servers of
//! `needed` different groups reported its IP, a group being a subnet (IPv4 /24, IPv6
//! /48) for a server on a public address. Servers on private and loopback addresses (a
//! LAN, the NAT lab, a test network) count once per peer unless
//! `network.connection_limits.limit_private_sources`, so that small networks still
//! confirm; a server reached only through a relay has no address of its
//! own to judge and does not vote.
//!
//! Confirmed addresses the node observed are at most `max_observed`, the oldest expired
//! first, so that observed addresses cannot crowd configured ones out of the 20-entry
//! lists libp2p's behaviours keep; configured addresses are never expired here.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

use crate::scope::{Scope, Subnet, direct_ip};

/// The most addresses confirmed from servers' reports at once (TCP, QUIC and WebSocket
/// on IPv4 and IPv6 fit).
pub const MAX_OBSERVED_ADDRESSES: usize = 8;

/// The most IPs that votes are kept for; beyond it the IP voted for longest ago is
/// forgotten, so lying servers cannot grow the table without bound.
const MAX_CANDIDATE_IPS: usize = 32;

/// A server's weight: one vote per group, whatever the number of its identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Voter {
    Subnet(Subnet),
    Peer(PeerId),
}

impl Voter {
    /// The group of a server reached at `remote`; `None` for a relayed connection.
    pub fn of(server: PeerId, remote: &Multiaddr, limit_private: bool) -> Option<Voter> {
        let ip = direct_ip(remote)?;
        let by_subnet = limit_private || Scope::of_ip(ip) == Scope::Public;
        Some(if by_subnet {
            Voter::Subnet(Subnet::of_ip(ip))
        } else {
            Voter::Peer(server)
        })
    }
}

/// What the swarm should do with an address after a vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Confirm(Multiaddr),
    Expire(Multiaddr),
}

#[derive(Debug)]
struct Candidate {
    voters: HashMap<Voter, Instant>,
    /// Addresses with this IP that servers reported, to confirm together.
    addresses: HashSet<Multiaddr>,
    last_vote: Instant,
}

#[derive(Debug)]
pub struct AddressVotes {
    needed: usize,
    max_observed: usize,
    vote_lifetime: Duration,
    configured: HashSet<Multiaddr>,
    candidates: HashMap<IpAddr, Candidate>,
    /// Observed addresses confirmed, oldest first.
    confirmed: VecDeque<Multiaddr>,
}

impl AddressVotes {
    /// `needed` groups must agree; a vote counts for `vote_lifetime`.
    pub fn new(
        needed: usize,
        max_observed: usize,
        vote_lifetime: Duration,
        configured: impl IntoIterator<Item = Multiaddr>,
    ) -> Self {
        AddressVotes {
            needed: needed.max(1),
            max_observed: max_observed.max(1),
            vote_lifetime,
            configured: configured.into_iter().collect(),
            candidates: HashMap::new(),
            confirmed: VecDeque::new(),
        }
    }

    /// Observed addresses confirmed now.
    pub fn confirmed(&self) -> impl Iterator<Item = &Multiaddr> {
        self.confirmed.iter()
    }

    /// IPs with votes, not yet (or no longer) agreed on.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// `voter` reported that it reached this node at `address`.
    pub fn vote(&mut self, voter: Voter, address: Multiaddr, now: Instant) -> Vec<Verdict> {
        let Some(ip) = first_ip(&address) else {
            return Vec::new();
        };
        if self.configured.contains(&address) {
            return Vec::new();
        }
        self.forget_stale(now);
        let candidate = self.candidates.entry(ip).or_insert_with(|| Candidate {
            voters: HashMap::new(),
            addresses: HashSet::new(),
            last_vote: now,
        });
        candidate.voters.insert(voter, now);
        candidate.addresses.insert(address);
        candidate.last_vote = now;
        if candidate.voters.len() < self.needed {
            self.bound_candidates();
            return Vec::new();
        }
        let agreed: Vec<Multiaddr> = candidate.addresses.drain().collect();
        let mut verdicts = Vec::new();
        for address in agreed {
            if let Some(i) = self.confirmed.iter().position(|a| *a == address) {
                // Confirmed again: it becomes the newest.
                self.confirmed.remove(i);
            } else {
                verdicts.push(Verdict::Confirm(address.clone()));
            }
            self.confirmed.push_back(address);
        }
        while self.confirmed.len() > self.max_observed {
            if let Some(oldest) = self.confirmed.pop_front() {
                verdicts.retain(|v| *v != Verdict::Confirm(oldest.clone()));
                verdicts.push(Verdict::Expire(oldest));
            }
        }
        verdicts
    }

    /// The swarm expired an address (a listener closed, another behaviour expired it).
    pub fn expired(&mut self, address: &Multiaddr) {
        self.confirmed.retain(|a| a != address);
    }

    fn forget_stale(&mut self, now: Instant) {
        let lifetime = self.vote_lifetime;
        self.candidates.retain(|_, c| {
            c.voters
                .retain(|_, at| now.saturating_duration_since(*at) < lifetime);
            !c.voters.is_empty()
        });
    }

    fn bound_candidates(&mut self) {
        while self.candidates.len() > MAX_CANDIDATE_IPS {
            let Some(oldest) = self
                .candidates
                .iter()
                .min_by_key(|(_, c)| c.last_vote)
                .map(|(ip, _)| *ip)
            else {
                return;
            };
            self.candidates.remove(&oldest);
        }
    }
}

fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn server(ip: &str) -> Voter {
        Voter::of(
            PeerId::random(),
            &addr(&format!("/ip4/{ip}/tcp/4001")),
            false,
        )
        .unwrap()
    }

    const LIFETIME: Duration = Duration::from_secs(1800);

    #[test]
    fn one_subnet_cannot_confirm_whatever_its_identities() {
        let mut v = AddressVotes::new(2, 8, LIFETIME, []);
        let now = Instant::now();
        let lie = addr("/ip4/6.6.6.6/tcp/4001");
        for host in 1..=200 {
            let liar = server(&format!("45.76.1.{host}"));
            assert!(v.vote(liar, lie.clone(), now).is_empty());
        }
        assert_eq!(v.confirmed().count(), 0);
    }

    #[test]
    fn two_subnets_agreeing_on_the_ip_confirm_every_reported_address() {
        let mut v = AddressVotes::new(2, 8, LIFETIME, []);
        let now = Instant::now();
        let tcp = addr("/ip4/192.0.2.9/tcp/4001");
        let quic = addr("/ip4/192.0.2.9/udp/4001/quic-v1");
        assert!(v.vote(server("51.15.2.1"), tcp.clone(), now).is_empty());
        let verdicts = v.vote(server("45.76.1.1"), quic.clone(), now);
        assert_eq!(verdicts.len(), 2);
        assert!(verdicts.contains(&Verdict::Confirm(tcp)));
        assert!(verdicts.contains(&Verdict::Confirm(quic)));
        // Confirmed again: nothing new.
        let again = v.vote(server("45.76.1.1"), addr("/ip4/192.0.2.9/tcp/4001"), now);
        assert!(again.is_empty());
    }

    #[test]
    fn votes_lapse() {
        let mut v = AddressVotes::new(2, 8, LIFETIME, []);
        let t0 = Instant::now();
        let a = addr("/ip4/192.0.2.9/tcp/4001");
        v.vote(server("51.15.2.1"), a.clone(), t0);
        let later = t0 + LIFETIME + Duration::from_secs(1);
        assert!(v.vote(server("45.76.1.1"), a, later).is_empty());
    }

    #[test]
    fn configured_addresses_are_never_voted_on_or_expired() {
        let configured = addr("/ip4/192.0.2.1/tcp/4001");
        let mut v = AddressVotes::new(1, 2, LIFETIME, [configured.clone()]);
        let now = Instant::now();
        assert!(
            v.vote(server("51.15.2.1"), configured.clone(), now)
                .is_empty()
        );
        let mut expired = Vec::new();
        for host in 1..=30 {
            for verdict in v.vote(
                server("51.15.2.1"),
                addr(&format!("/ip4/192.0.2.{}/tcp/4001", host + 1)),
                now,
            ) {
                if let Verdict::Expire(a) = verdict {
                    expired.push(a);
                }
            }
        }
        assert_eq!(v.confirmed().count(), 2, "at most max_observed");
        assert_eq!(expired.len(), 28);
        assert!(!expired.contains(&configured));
    }

    #[test]
    fn private_servers_count_per_peer_and_relayed_ones_not_at_all() {
        let lan: Multiaddr = addr("/ip4/192.168.1.2/tcp/4001");
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_ne!(Voter::of(a, &lan, false), Voter::of(b, &lan, false));
        let public = addr("/ip4/51.15.2.7/tcp/4001");
        assert_eq!(Voter::of(a, &public, false), Voter::of(b, &public, false));
        let lo = addr("/ip4/127.0.66.1/tcp/4001");
        assert_ne!(Voter::of(a, &lo, false), Voter::of(b, &lo, false));
        assert_eq!(Voter::of(a, &lo, true), Voter::of(b, &lo, true));
        let circuit = addr(
            "/ip4/51.15.2.7/tcp/1/p2p/12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe/p2p-circuit",
        );
        assert_eq!(Voter::of(a, &circuit, false), None);
    }

    #[test]
    fn lying_servers_keep_a_bounded_table() {
        let mut v = AddressVotes::new(2, 8, LIFETIME, []);
        let now = Instant::now();
        let liar = server("45.76.1.1");
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0b00_0000 + i);
            v.vote(liar, addr(&format!("/ip4/{ip}/tcp/1")), now);
        }
        assert!(v.candidates() <= MAX_CANDIDATE_IPS);
    }
}
