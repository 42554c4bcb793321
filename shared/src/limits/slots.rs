//! Concurrent caps per source: how many relay reservations and circuits the peers of
//! one IPv4 address (IPv6 /64) and of one subnet (IPv4 /24, IPv6 /48) hold at once.
//!
//! Rate limits alone let a few addresses take a relay's whole pool: 8 addresses at the
//! default rate fill 128 reservations within a minute and keep them for an hour. go-libp2p's
//! relay caps reservations at 8 per IP and 32 per ASN; Jantar counts the /24 (or /48) where
//! go-libp2p counts the ASN, since it ships no ASN database.
//!
//! `relay::Behaviour` asks its rate limiters before it grants anything, and they are the
//! only hook it has: [`RelayGate`] hands it limiters that consult the grants held per
//! source. A reservation is held until its duration after the last (re)new request, as
//! on the relay, or until the peer's last connection closes; the relay's "reservation
//! closed" event is not used, since it also fires for a peer's connections that held
//! none. A circuit ends when the relay reports it closed or refused after it was let
//! through, when its source disconnects, or at the latest after the circuit's maximum
//! duration; so a circuit the relay dropped without telling frees its slot on time.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    relay,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};
use tracing::debug;

use super::{AclRefusal, IpKey, RelayAcl};
use crate::{config::RelayLimits, metrics as m, scope::Subnet};

/// The most one source IP and one subnet may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCaps {
    pub per_ip: usize,
    pub per_subnet: usize,
    /// Whether loopback and private sources count
    /// (`network.connection_limits.limit_private_sources`).
    pub private: bool,
}

impl SlotCaps {
    /// Whether a source at `ip` is held to the caps.
    pub fn counts(&self, ip: std::net::IpAddr) -> bool {
        self.private || crate::scope::Scope::of_ip(ip) == crate::scope::Scope::Public
    }
}

/// Why [`ConcurrentSlots`] refused a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRefusal {
    PerIp,
    PerSubnet,
}

impl SlotRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotRefusal::PerIp => "per_ip",
            SlotRefusal::PerSubnet => "per_subnet",
        }
    }
}

#[derive(Debug)]
struct Grant {
    ip: IpKey,
    subnet: Subnet,
    until: Instant,
}

/// Grants held per peer, counted by the source address each was asked from.
#[derive(Debug)]
pub struct ConcurrentSlots {
    caps: SlotCaps,
    lifetime: Duration,
    grants: HashMap<PeerId, Vec<Grant>>,
}

impl ConcurrentSlots {
    pub fn new(caps: SlotCaps, lifetime: Duration) -> Self {
        ConcurrentSlots {
            caps,
            lifetime,
            grants: HashMap::new(),
        }
    }

    /// Grants held now.
    pub fn held(&self) -> usize {
        self.grants.values().map(Vec::len).sum()
    }

    fn prune(&mut self, now: Instant) {
        self.grants.retain(|_, g| {
            g.retain(|g| g.until > now);
            !g.is_empty()
        });
    }

    fn check(&self, ip: IpKey, subnet: Subnet) -> Result<(), SlotRefusal> {
        let all = self.grants.values().flatten();
        let (mut by_ip, mut by_subnet) = (0, 0);
        for g in all {
            by_ip += usize::from(g.ip == ip);
            by_subnet += usize::from(g.subnet == subnet);
        }
        if by_ip >= self.caps.per_ip {
            Err(SlotRefusal::PerIp)
        } else if by_subnet >= self.caps.per_subnet {
            Err(SlotRefusal::PerSubnet)
        } else {
            Ok(())
        }
    }

    /// A grant a peer holds once (a reservation): a peer that holds one renews it, any
    /// other takes a slot of its source. Sources without an IP of their own (relayed or
    /// memory connections) are not counted.
    pub fn hold(
        &mut self,
        peer: PeerId,
        source: &Multiaddr,
        now: Instant,
    ) -> Result<(), SlotRefusal> {
        self.prune(now);
        let until = now + self.lifetime;
        if let Some(held) = self.grants.get_mut(&peer) {
            held.iter_mut().for_each(|g| g.until = until);
            return Ok(());
        }
        self.take(peer, source, now)
    }

    /// One more grant (a circuit) for `peer`, asked from `source`.
    pub fn take(
        &mut self,
        peer: PeerId,
        source: &Multiaddr,
        now: Instant,
    ) -> Result<(), SlotRefusal> {
        self.prune(now);
        let Some(ip) = crate::scope::direct_ip(source).filter(|ip| self.caps.counts(*ip)) else {
            return Ok(());
        };
        let (key, subnet) = (IpKey::from_ip(ip), Subnet::of_ip(ip));
        self.check(key, subnet)?;
        self.grants.entry(peer).or_default().push(Grant {
            ip: key,
            subnet,
            until: now + self.lifetime,
        });
        Ok(())
    }

    /// One of `peer`'s grants ended (the oldest: the first to lapse anyway).
    pub fn release_one(&mut self, peer: &PeerId) {
        if let Some(held) = self.grants.get_mut(peer) {
            held.remove(0);
            if held.is_empty() {
                self.grants.remove(peer);
            }
        }
    }

    /// All of `peer`'s grants ended.
    pub fn release_all(&mut self, peer: &PeerId) {
        self.grants.remove(peer);
    }
}

/// A relay's reservations and circuits per source: limiters for `relay::Behaviour`,
/// and a behaviour that frees a peer's slots when its last connection closes.
#[derive(Clone)]
pub struct RelayGate {
    acl: Arc<RelayAcl>,
    reservations: Arc<Mutex<ConcurrentSlots>>,
    circuits: Arc<Mutex<ConcurrentSlots>>,
}

fn locked(slots: &Mutex<ConcurrentSlots>) -> MutexGuard<'_, ConcurrentSlots> {
    // The slots hold counts only; one poisoned update leaves them usable.
    slots.lock().unwrap_or_else(|p| p.into_inner())
}

impl RelayGate {
    pub fn new(r: &RelayLimits, private: bool) -> Self {
        let reservations = SlotCaps {
            per_ip: r.max_reservations_per_ip,
            per_subnet: r.max_reservations_per_subnet,
            private,
        };
        let circuits = SlotCaps {
            per_ip: r.max_circuits_per_ip,
            per_subnet: r.max_circuits_per_subnet,
            private,
        };
        RelayGate {
            acl: Arc::new(r.acl.clone()),
            reservations: Arc::new(Mutex::new(ConcurrentSlots::new(
                reservations,
                r.reservation_duration,
            ))),
            circuits: Arc::new(Mutex::new(ConcurrentSlots::new(
                circuits,
                r.max_circuit_duration,
            ))),
        }
    }

    /// The reservation limiter: last in the relay's list, so a request it lets through
    /// is granted. The ACL is asked first: a refused request takes no slot.
    pub fn reservation_limiter(&self) -> Box<dyn relay::RateLimiter> {
        self.limiter("reservation", &self.reservations, ConcurrentSlots::hold)
    }

    /// The circuit limiter, counted by the circuit's source.
    pub fn circuit_limiter(&self) -> Box<dyn relay::RateLimiter> {
        self.limiter("circuit", &self.circuits, ConcurrentSlots::take)
    }

    fn limiter(
        &self,
        kind: &'static str,
        slots: &Arc<Mutex<ConcurrentSlots>>,
        grant: fn(&mut ConcurrentSlots, PeerId, &Multiaddr, Instant) -> Result<(), SlotRefusal>,
    ) -> Box<dyn relay::RateLimiter> {
        let (acl, slots) = (self.acl.clone(), slots.clone());
        Box::new(move |peer: PeerId, addr: &Multiaddr, now: Instant| {
            let r = acl
                .check(&peer, addr)
                .map_err(AclRefusal::as_str)
                .and_then(|()| {
                    grant(&mut locked(&slots), peer, addr, now).map_err(SlotRefusal::as_str)
                });
            admitted(kind, peer, r)
        })
    }

    /// The relay reported a circuit from `src` closed or refused after it was let through.
    pub fn circuit_ended(&self, src: &PeerId) {
        locked(&self.circuits).release_one(src);
    }

    /// Reservations and circuits counted now.
    pub fn held(&self) -> (usize, usize) {
        (
            locked(&self.reservations).held(),
            locked(&self.circuits).held(),
        )
    }
}

fn admitted(kind: &'static str, peer: PeerId, r: Result<(), &'static str>) -> bool {
    match r {
        Ok(()) => true,
        Err(reason) => {
            debug!(%peer, kind, reason, "relay request refused for its source");
            metrics::counter!(m::RELAY_SOURCE_REFUSED, "kind" => kind, "reason" => reason)
                .increment(1);
            false
        }
    }
}

impl NetworkBehaviour for RelayGate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(e) = event
            && e.remaining_established == 0
        {
            locked(&self.reservations).release_all(&e.peer_id);
            locked(&self.circuits).release_all(&e.peer_id);
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

    const CAPS: SlotCaps = SlotCaps {
        per_ip: 8,
        per_subnet: 32,
        private: false,
    };

    fn at(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/4001").parse().unwrap()
    }

    #[test]
    fn one_ip_holds_its_share_and_renewals_pass() {
        let mut s = ConcurrentSlots::new(CAPS, Duration::from_secs(3600));
        let now = Instant::now();
        let peers: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        let granted = peers
            .iter()
            .filter(|p| s.hold(**p, &at("45.76.1.7"), now).is_ok())
            .count();
        assert_eq!(granted, 8);
        assert_eq!(
            s.hold(PeerId::random(), &at("45.76.1.7"), now),
            Err(SlotRefusal::PerIp)
        );
        // Holders renew, whatever the count.
        assert!(s.hold(peers[0], &at("45.76.1.7"), now).is_ok());
        assert_eq!(s.held(), 8);
        // Another address of the /24 still gets in, up to the subnet's share.
        let subnet: usize = (1..=10)
            .map(|host| {
                (0..8)
                    .filter(|_| {
                        s.hold(PeerId::random(), &at(&format!("51.15.2.{host}")), now)
                            .is_ok()
                    })
                    .count()
            })
            .sum();
        assert_eq!(subnet, 32);
        assert_eq!(
            s.hold(PeerId::random(), &at("51.15.2.99"), now),
            Err(SlotRefusal::PerSubnet)
        );
        assert!(s.hold(PeerId::random(), &at("93.184.216.34"), now).is_ok());
    }

    #[test]
    fn grants_end_when_released_or_lapsed() {
        let mut s = ConcurrentSlots::new(
            SlotCaps {
                per_ip: 2,
                per_subnet: 4,
                private: false,
            },
            Duration::from_secs(120),
        );
        let t0 = Instant::now();
        let a = PeerId::random();
        let src = at("45.76.1.7");
        assert!(s.take(a, &src, t0).is_ok());
        assert!(s.take(a, &src, t0).is_ok());
        assert_eq!(s.take(a, &src, t0), Err(SlotRefusal::PerIp));
        s.release_one(&a);
        assert!(s.take(a, &src, t0).is_ok());
        s.release_all(&a);
        assert_eq!(s.held(), 0);
        assert!(s.take(a, &src, t0).is_ok());
        assert!(s.take(a, &src, t0).is_ok());
        // Grants the relay never reported ended free their slots after their lifetime.
        assert!(s.take(a, &src, t0 + Duration::from_secs(121)).is_ok());
        assert_eq!(s.held(), 1);
    }

    #[test]
    fn relayed_memory_and_loopback_sources_are_not_counted_unless_asked() {
        let caps = SlotCaps {
            per_ip: 1,
            per_subnet: 1,
            private: false,
        };
        let mut s = ConcurrentSlots::new(caps, Duration::from_secs(60));
        let now = Instant::now();
        let memory: Multiaddr = "/memory/1234".parse().unwrap();
        let circuit: Multiaddr =
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe/p2p-circuit"
                .parse()
                .unwrap();
        for _ in 0..5 {
            assert!(s.take(PeerId::random(), &memory, now).is_ok());
            assert!(s.take(PeerId::random(), &circuit, now).is_ok());
            assert!(s.take(PeerId::random(), &at("127.0.0.1"), now).is_ok());
        }
        assert_eq!(s.held(), 0);
        let mut lab = ConcurrentSlots::new(
            SlotCaps {
                private: true,
                ..caps
            },
            Duration::from_secs(60),
        );
        assert!(lab.take(PeerId::random(), &at("127.0.0.1"), now).is_ok());
        assert_eq!(
            lab.take(PeerId::random(), &at("127.0.0.1"), now),
            Err(SlotRefusal::PerIp)
        );
    }
}
