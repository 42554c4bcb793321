//! Whether others can reach this node: the NAT status AutoNAT reports, the DHT mode that
//! follows it on peers (a server only while public), hole punching with DCUtR, and UPnP
//! port mappings.

use std::time::{Duration, Instant};

use libp2p::{PeerId, Swarm, autonat, dcutr, kad, swarm::ConnectionId, upnp};
use tracing::{debug, info};

use super::connections::Connections;
use crate::{
    behaviour::Behaviour, config::PeerAddr, error::ErrorChain, metrics as m, status::NatStatus,
};

pub(super) struct Reachability {
    me: PeerId,
    nat: NatStatus,
    /// Peers switch their DHT mode with the NAT status; bootstrap nodes and relays are
    /// always servers.
    follow_with_dht_mode: bool,
    /// Configured bootstrap nodes and relays: the AutoNAT servers known from the start.
    infrastructure: Vec<PeerAddr>,
    /// Relayed connections a hole punch replaced.
    replaced: Vec<Replaced>,
}

/// A relayed connection a hole punch replaced, waiting to close.
struct Replaced {
    relayed: ConnectionId,
    direct: ConnectionId,
    peer: PeerId,
    /// When it closes at the latest.
    deadline: Instant,
}

/// The longest a relayed connection stays after a hole punch replaced it.
///
/// Gossipsub tells a peer its subscriptions once, when the first connection to it
/// opens, and forgets the peer's when the last one closes. Two things must hold before
/// the relayed connection closes, or the two peers go deaf to each other's topics:
/// - the peer's subscriptions have arrived (they come on the relayed connection, the
///   first; closing it could lose them in flight);
/// - the peer has answered identify on the direct connection. Until its swarm has the
///   direct connection, the relayed one closing is its last: it forgets this node's
///   subscriptions, and takes the direct connection for a first one on which this node,
///   for which it is a second, sends nothing.
///
/// Both usually hold within a round trip; the relayed connection closes then, since
/// requests meanwhile share out over both connections and would cross the relay. What
/// slips past the grace is healed by [`super::subscriptions`].
const REPLACED_RELAYED_GRACE: Duration = Duration::from_secs(2);

impl Reachability {
    pub(super) fn new(
        me: PeerId,
        follow_with_dht_mode: bool,
        infrastructure: Vec<PeerAddr>,
    ) -> Self {
        let r = Reachability {
            me,
            nat: NatStatus::Unknown,
            follow_with_dht_mode,
            infrastructure,
            replaced: Vec::new(),
        };
        set_nat_gauge(r.nat);
        r
    }

    pub(super) fn nat(&self) -> NatStatus {
        self.nat
    }

    /// First contact: configured infrastructure answers AutoNAT probes, and a peer whose
    /// only way out is its relay (a strict firewall) learns from the relay that it is
    /// private.
    pub(super) fn join(&self, swarm: &mut Swarm<Behaviour>) {
        for n in &self.infrastructure {
            if n.peer_id != self.me && !n.addr.is_empty() {
                swarm
                    .behaviour_mut()
                    .autonat
                    .add_server(n.peer_id, Some(n.addr.clone()));
            }
        }
    }

    /// Returns true when the NAT status changed.
    pub(super) fn on_autonat(&mut self, swarm: &mut Swarm<Behaviour>, e: autonat::Event) -> bool {
        match e {
            autonat::Event::StatusChanged { old, new } => {
                let nat = match &new {
                    autonat::NatStatus::Public(_) => NatStatus::Public,
                    autonat::NatStatus::Private => NatStatus::Private,
                    autonat::NatStatus::Unknown => NatStatus::Unknown,
                };
                match &new {
                    autonat::NatStatus::Public(addr) => info!(%addr, "NAT status: public"),
                    _ => info!(from = ?old, "NAT status: {}", nat.as_str()),
                }
                self.nat = nat;
                set_nat_gauge(nat);
                if self.follow_with_dht_mode {
                    self.set_dht_mode(swarm);
                }
                true
            }
            autonat::Event::InboundProbe(p) => {
                let result = match p {
                    autonat::InboundProbeEvent::Request { .. } => return false,
                    autonat::InboundProbeEvent::Response { .. } => "reachable",
                    autonat::InboundProbeEvent::Error { .. } => "unreachable_or_refused",
                };
                metrics::counter!(m::AUTONAT_PROBES_SERVED, "result" => result).increment(1);
                false
            }
            autonat::Event::OutboundProbe(_) => false,
        }
    }

    /// A peer serves the DHT only while it is publicly reachable.
    fn set_dht_mode(&self, swarm: &mut Swarm<Behaviour>) {
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        let mode = if self.nat == NatStatus::Public {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        if kad.mode() != mode {
            info!(%mode, "DHT mode changed");
            kad.set_mode(Some(mode));
        }
    }

    /// A hole punch ended. On success the direct connection replaces the relayed ones,
    /// which close once gossipsub has the peer's subscriptions and the peer has the
    /// direct connection, or after [`REPLACED_RELAYED_GRACE`] ([`Self::close_replaced`]).
    pub(super) fn on_dcutr(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        connections: &Connections,
        e: dcutr::Event,
    ) {
        let peer = e.remote_peer_id;
        match e.result {
            Ok(direct) => {
                metrics::counter!(m::HOLEPUNCH, "result" => "success").increment(1);
                info!(%peer, "hole punch succeeded; direct connection");
                let deadline = Instant::now() + REPLACED_RELAYED_GRACE;
                self.replaced
                    .extend(
                        connections
                            .relayed_to(&peer, direct)
                            .into_iter()
                            .map(|relayed| Replaced {
                                relayed,
                                direct,
                                peer,
                                deadline,
                            }),
                    );
                self.close_replaced(swarm, connections);
            }
            Err(err) => {
                metrics::counter!(m::HOLEPUNCH, "result" => "failure").increment(1);
                info!(%peer, error = %ErrorChain(&err), "hole punch failed; staying relayed");
            }
        }
    }

    /// Closes the relayed connections a hole punch replaced whose peer's gossipsub
    /// subscriptions have arrived and whose direct connection the peer has answered
    /// identify on, or whose grace is over; forgets those whose direct connection closed
    /// (the relayed one is all there is again). Called on a hole punch, on each
    /// subscription and identify heard, and every second.
    pub(super) fn close_replaced(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        connections: &Connections,
    ) {
        if self.replaced.is_empty() {
            return;
        }
        let now = Instant::now();
        let heard: Vec<PeerId> = swarm
            .behaviour()
            .gossipsub
            .as_ref()
            .map(|g| {
                g.all_peers()
                    .filter(|(p, topics)| {
                        !topics.is_empty() && self.replaced.iter().any(|r| r.peer == **p)
                    })
                    .map(|(p, _)| *p)
                    .collect()
            })
            .unwrap_or_default();
        self.replaced.retain(|r| {
            if connections.get(r.direct).is_none() {
                return false;
            }
            let settled = heard.contains(&r.peer) && connections.is_identified(r.direct);
            if r.deadline > now && !settled {
                return true;
            }
            if !settled {
                debug!(peer = %r.peer, "closing a replaced relayed connection before the peer settled on the direct one");
            }
            swarm.close_connection(r.relayed);
            false
        });
    }

    pub(super) fn on_upnp(&self, e: upnp::Event) {
        match e {
            upnp::Event::NewExternalAddr { external_addr, .. } => {
                info!(addr = %external_addr, "UPnP mapped a port");
            }
            upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                info!(addr = %external_addr, "UPnP mapping expired");
            }
            upnp::Event::GatewayNotFound => debug!("no UPnP gateway"),
            upnp::Event::NonRoutableGateway => debug!("UPnP gateway is not routable"),
        }
    }
}

fn set_nat_gauge(nat: NatStatus) {
    for s in [NatStatus::Unknown, NatStatus::Public, NatStatus::Private] {
        metrics::gauge!(m::NAT_STATUS, "status" => s.as_str()).set(if s == nat {
            1.0
        } else {
            0.0
        });
    }
}
