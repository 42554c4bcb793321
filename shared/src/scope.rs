//! Where an address lies (loopback, a private network, or the public internet) and the
//! subnet a source counts in when the DHT spreads its trust: an IPv4 /24 or an IPv6 /48,
//! the blocks one operator usually holds whole.
//!
//! A peer that reaches a node over the internet has no business handing it private or
//! loopback addresses to keep and pass on to others: dialing them would reach some other
//! host on the dialer's own network. A peer on the same LAN (or in a lab, whose
//! "internet" is the benchmarking range 198.18.0.0/15) may; over loopback anything goes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::{Multiaddr, multiaddr::Protocol};

/// How far an address reaches, narrowest last: an address is only taken from a source
/// whose scope is at least as narrow ([`Scope::may_claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Public,
    Private,
    Loopback,
}

impl Scope {
    pub fn of_ip(ip: IpAddr) -> Scope {
        match ip {
            IpAddr::V4(v4) => v4_scope(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4_scope(v4),
                None => v6_scope(v6),
            },
        }
    }

    /// The scope of the first IP in `addr` (for a relayed address, the relay's). A DNS
    /// name counts as public; an address without IP or name (a memory address) as
    /// loopback.
    pub fn of_multiaddr(addr: &Multiaddr) -> Scope {
        for p in addr {
            match p {
                Protocol::Ip4(ip) => return Scope::of_ip(ip.into()),
                Protocol::Ip6(ip) => return Scope::of_ip(ip.into()),
                Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => {
                    return Scope::Public;
                }
                _ => {}
            }
        }
        Scope::Loopback
    }

    /// Whether a peer that reached this node from a `self`-scoped address may hand it
    /// an address of scope `claimed`: public addresses from anyone, private ones from
    /// private or loopback sources, loopback ones only over loopback.
    pub fn may_claim(self, claimed: Scope) -> bool {
        claimed <= self
    }
}

fn v4_scope(ip: Ipv4Addr) -> Scope {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return Scope::Loopback;
    }
    let private = ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        // Carrier-grade NAT, 100.64.0.0/10.
        || (a == 100 && (b & 0xc0) == 64)
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15 (the NAT lab's internet).
        || (a == 198 && (b & 0xfe) == 18);
    if private {
        Scope::Private
    } else {
        Scope::Public
    }
}

fn v6_scope(ip: Ipv6Addr) -> Scope {
    if ip.is_loopback() {
        return Scope::Loopback;
    }
    let first = ip.segments()[0];
    // Global unicast is 2000::/3; within it, documentation (2001:db8::/32) is not.
    let global = (first & 0xe000) == 0x2000 && !(first == 0x2001 && ip.segments()[1] == 0x0db8);
    if global {
        Scope::Public
    } else {
        Scope::Private
    }
}

/// The subnet a source counts in: an IPv4 /24 or an IPv6 /48.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subnet {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl Subnet {
    pub fn of_ip(ip: IpAddr) -> Subnet {
        match ip {
            IpAddr::V4(v4) => v4_subnet(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4_subnet(v4),
                None => {
                    let s = v6.segments();
                    Subnet::V6([s[0], s[1], s[2]])
                }
            },
        }
    }

    /// The subnet of a direct connection's remote address; a relayed address carries
    /// the relay's IP, not the peer's (`None`).
    pub fn of_multiaddr(addr: &Multiaddr) -> Option<Subnet> {
        direct_ip(addr).map(Subnet::of_ip)
    }
}

/// The IP of a direct connection's remote address; a relayed address carries the
/// relay's IP, not the peer's (`None`).
pub fn direct_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

fn v4_subnet(ip: Ipv4Addr) -> Subnet {
    let [a, b, c, _] = ip.octets();
    Subnet::V4([a, b, c])
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subnet::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Subnet::V6([a, b, c]) => write!(f, "{a:x}:{b:x}:{c:x}::/48"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(a: &str) -> Scope {
        Scope::of_multiaddr(&a.parse().unwrap())
    }

    #[test]
    fn scopes() {
        assert_eq!(scope("/ip4/127.0.0.1/tcp/1"), Scope::Loopback);
        assert_eq!(scope("/ip6/::1/tcp/1"), Scope::Loopback);
        for private in [
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.1/udp/1/quic-v1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/198.18.3.4/tcp/1",
            "/ip4/203.0.113.9/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
        ] {
            assert_eq!(scope(private), Scope::Private, "{private}");
        }
        for public in [
            "/ip4/1.2.3.4/tcp/1",
            "/ip4/100.128.0.1/tcp/1",
            "/ip4/198.20.0.1/tcp/1",
            "/ip6/2a01:4f8::1/tcp/1",
            "/dns4/relay.example/tcp/443/wss",
        ] {
            assert_eq!(scope(public), Scope::Public, "{public}");
        }
        // A relayed address is as far-reaching as its relay.
        let relayed = "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
        assert_eq!(scope(relayed), Scope::Public);
    }

    #[test]
    fn claims_are_no_wider_than_their_source() {
        use Scope::*;
        assert!(Public.may_claim(Public));
        assert!(!Public.may_claim(Private));
        assert!(!Public.may_claim(Loopback));
        assert!(Private.may_claim(Public) && Private.may_claim(Private));
        assert!(!Private.may_claim(Loopback));
        assert!(Loopback.may_claim(Loopback) && Loopback.may_claim(Private));
    }

    #[test]
    fn subnets_are_slash_24_and_slash_48() {
        let s = |ip: &str| Subnet::of_ip(ip.parse().unwrap());
        assert_eq!(s("1.2.3.4"), s("1.2.3.200"));
        assert_ne!(s("1.2.3.4"), s("1.2.4.4"));
        assert_eq!(s("2a01:4f8:1:ffff::1"), s("2a01:4f8:1:1::2"));
        assert_ne!(s("2a01:4f8:1::1"), s("2a01:4f8:2::1"));
        assert_eq!(s("::ffff:1.2.3.4"), s("1.2.3.9"));
        assert_eq!(s("1.2.3.4").to_string(), "1.2.3.0/24");
        assert_eq!(s("2a01:4f8:1::1").to_string(), "2a01:4f8:1::/48");
        let relayed: Multiaddr = "/ip4/1.2.3.4/tcp/1/p2p-circuit".parse().unwrap();
        assert_eq!(Subnet::of_multiaddr(&relayed), None);
    }
}
