//! Who may use a relay: allow and deny lists by peer id and by network (CIDR).
//!
//! A request (a reservation, or a circuit by its source) is refused when its peer or its
//! source address is denied; when any allow list is given, it must also be allowed by
//! one of them. Deny wins over allow. A source reached through another relay has no IP
//! of its own, so only the peer lists can allow it.

use std::collections::HashSet;

use ipnet::IpNet;
use libp2p::{Multiaddr, PeerId};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayAcl {
    pub allow_peers: HashSet<PeerId>,
    pub allow_networks: Vec<IpNet>,
    pub deny_peers: HashSet<PeerId>,
    pub deny_networks: Vec<IpNet>,
}

/// Why [`RelayAcl`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclRefusal {
    DeniedPeer,
    DeniedNetwork,
    NotAllowed,
}

impl AclRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            AclRefusal::DeniedPeer => "acl_denied_peer",
            AclRefusal::DeniedNetwork => "acl_denied_network",
            AclRefusal::NotAllowed => "acl_not_allowed",
        }
    }
}

impl RelayAcl {
    /// Whether the lists say anything (an empty ACL lets everyone in).
    pub fn is_open(&self) -> bool {
        self.allow_peers.is_empty()
            && self.allow_networks.is_empty()
            && self.deny_peers.is_empty()
            && self.deny_networks.is_empty()
    }

    pub fn check(&self, peer: &PeerId, source: &Multiaddr) -> Result<(), AclRefusal> {
        if self.is_open() {
            return Ok(());
        }
        let ip = crate::scope::direct_ip(source);
        let in_any = |nets: &[IpNet]| ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)));
        if self.deny_peers.contains(peer) {
            return Err(AclRefusal::DeniedPeer);
        }
        if in_any(&self.deny_networks) {
            return Err(AclRefusal::DeniedNetwork);
        }
        let allow_lists = !self.allow_peers.is_empty() || !self.allow_networks.is_empty();
        if allow_lists && !self.allow_peers.contains(peer) && !in_any(&self.allow_networks) {
            return Err(AclRefusal::NotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Multiaddr {
        let proto = if ip.contains(':') { "ip6" } else { "ip4" };
        format!("/{proto}/{ip}/tcp/4001").parse().unwrap()
    }

    #[test]
    fn an_empty_acl_lets_everyone_in() {
        assert_eq!(
            RelayAcl::default().check(&PeerId::random(), &at("192.0.2.1")),
            Ok(())
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let friend = PeerId::random();
        let acl = RelayAcl {
            allow_peers: [friend].into(),
            deny_networks: vec!["192.0.2.0/24".parse().unwrap()],
            ..RelayAcl::default()
        };
        assert_eq!(
            acl.check(&friend, &at("192.0.2.9")),
            Err(AclRefusal::DeniedNetwork)
        );
        assert_eq!(acl.check(&friend, &at("198.51.100.1")), Ok(()));
        assert_eq!(
            acl.check(&PeerId::random(), &at("198.51.100.1")),
            Err(AclRefusal::NotAllowed)
        );
    }

    #[test]
    fn networks_allow_by_source_address_v4_and_v6() {
        let acl = RelayAcl {
            allow_networks: vec![
                "10.1.0.0/16".parse().unwrap(),
                "2001:db8:1::/48".parse().unwrap(),
            ],
            deny_peers: [PeerId::random()].into(),
            ..RelayAcl::default()
        };
        let p = PeerId::random();
        assert_eq!(acl.check(&p, &at("10.1.200.3")), Ok(()));
        assert_eq!(acl.check(&p, &at("2001:db8:1:ffff::1")), Ok(()));
        assert_eq!(acl.check(&p, &at("10.2.0.1")), Err(AclRefusal::NotAllowed));
        let relayed: Multiaddr =
            "/ip4/10.1.0.1/tcp/1/p2p/12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe/p2p-circuit"
                .parse()
                .unwrap();
        assert_eq!(
            acl.check(&p, &relayed),
            Err(AclRefusal::NotAllowed),
            "a relayed source has no address of its own"
        );
    }

    #[test]
    fn a_denied_peer_is_refused_from_anywhere() {
        let bad = PeerId::random();
        let acl = RelayAcl {
            deny_peers: [bad].into(),
            ..RelayAcl::default()
        };
        assert_eq!(
            acl.check(&bad, &at("192.0.2.1")),
            Err(AclRefusal::DeniedPeer)
        );
        assert_eq!(acl.check(&PeerId::random(), &at("192.0.2.1")), Ok(()));
    }
}
