//! Network groups: the unit of diversity. Peers in one group are assumed to be under
//! one operator's control (one provider's address block, one autonomous system), so the
//! node spreads its connections over groups and evicts from the largest first.
//!
//! A peer on a direct connection is grouped by its AS number when a GeoIP database
//! knows it (as Bitcoin Core's asmap does), else by its IPv4 /16 or IPv6 /32. A peer
//! reached through a relay is grouped by that relay: its own address is unknown, and
//! every peer behind one relay shares that relay's fate.

use std::{fmt, net::IpAddr};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use serde::{Serialize, Serializer};

use super::geo::GeoInfo;
use crate::scope::direct_ip;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetGroup {
    /// An autonomous system, from a GeoIP database.
    Asn(u32),
    /// An IPv4 /16.
    V4([u8; 2]),
    /// An IPv6 /32.
    V6([u16; 2]),
    /// Reached through this relay.
    Relayed(PeerId),
    /// No IP and no relay in the address (a memory transport, a DNS name not resolved).
    Unknown,
}

impl NetGroup {
    /// The group of a peer connected at `remote`, given what a GeoIP database says about
    /// its IP.
    pub fn of(remote: &Multiaddr, geo: &GeoInfo) -> NetGroup {
        if let Some(ip) = direct_ip(remote) {
            return match geo.asn {
                Some(asn) => NetGroup::Asn(asn),
                None => NetGroup::of_ip(ip),
            };
        }
        match relay_of(remote) {
            Some(relay) => NetGroup::Relayed(relay),
            None => NetGroup::Unknown,
        }
    }

    /// The address-block group of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of_ip(ip: IpAddr) -> NetGroup {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, _, _] = v4.octets();
                NetGroup::V4([a, b])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => NetGroup::of_ip(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    NetGroup::V6([s[0], s[1]])
                }
            },
        }
    }
}

/// The relay in a circuit address: the peer id before `/p2p-circuit`.
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr {
        match p {
            Protocol::P2p(id) => relay = Some(id),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

impl fmt::Display for NetGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetGroup::Asn(asn) => write!(f, "AS{asn}"),
            NetGroup::V4([a, b]) => write!(f, "{a}.{b}.0.0/16"),
            NetGroup::V6([a, b]) => write!(f, "{a:x}:{b:x}::/32"),
            NetGroup::Relayed(relay) => write!(f, "relay {relay}"),
            NetGroup::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for NetGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_by_16_and_ipv6_by_32() {
        let none = GeoInfo::default();
        let a = NetGroup::of(&addr("/ip4/45.76.1.2/tcp/4001"), &none);
        let b = NetGroup::of(&addr("/ip4/45.76.200.9/udp/4001/quic-v1"), &none);
        let c = NetGroup::of(&addr("/ip4/45.77.1.2/tcp/4001"), &none);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "45.76.0.0/16");
        let v6 = NetGroup::of(&addr("/ip6/2a01:4f8:1:2::1/tcp/4001"), &none);
        assert_eq!(
            v6,
            NetGroup::of(&addr("/ip6/2a01:4f8:ffff::1/tcp/4001"), &none)
        );
        assert_eq!(v6.to_string(), "2a01:4f8::/32");
        assert_eq!(
            NetGroup::of_ip("::ffff:45.76.3.3".parse().unwrap()),
            NetGroup::V4([45, 76])
        );
    }

    #[test]
    fn an_as_number_wins_over_the_address_block() {
        let geo = GeoInfo {
            asn: Some(64500),
            ..GeoInfo::default()
        };
        let g = NetGroup::of(&addr("/ip4/45.76.1.2/tcp/4001"), &geo);
        assert_eq!(g, NetGroup::Asn(64500));
        assert_eq!(g.to_string(), "AS64500");
    }

    #[test]
    fn relayed_peers_are_grouped_by_their_relay() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let a = addr(&format!(
            "/ip4/45.76.1.2/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}"
        ));
        assert_eq!(
            NetGroup::of(&a, &GeoInfo::default()),
            NetGroup::Relayed(relay)
        );
        assert_eq!(
            NetGroup::of(&addr("/memory/1"), &GeoInfo::default()),
            NetGroup::Unknown
        );
    }
}
