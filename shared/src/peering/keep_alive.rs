//! Holding a peer's connections open, idle or not, until the connection manager trims.
//!
//! libp2p closes a connection once no protocol has used it for the idle timeout
//! (`connection_grace_period`). For a peer that is the wrong rule: a peer that merely has
//! nothing to say right now is still worth holding, and the set of peers should change
//! by the connection manager's choice (trimming above the high watermark, dialing below
//! the low one), as Kubo's connection manager holds every connection until it trims.
//! This behaviour marks a peer's direct connections as in use, except those to `release`
//! (configured bootstrap nodes and relays: they count toward no watermark, and close
//! their idle connections themselves). Relayed connections are not held: they take a
//! relay's circuit, which the peers give back when idle.

use std::{
    collections::HashSet,
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::DeniedUpgrade},
    multiaddr::Protocol,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::ConnectionEvent,
    },
};

pub struct KeepAlive {
    release: HashSet<PeerId>,
}

impl KeepAlive {
    /// Holds every direct connection open except those to `release`.
    pub fn new(release: HashSet<PeerId>) -> Self {
        KeepAlive { release }
    }

    fn handler(&self, peer: &PeerId, remote: &Multiaddr) -> Handler {
        let relayed = remote.iter().any(|p| p == Protocol::P2pCircuit);
        Handler {
            keep: !relayed && !self.release.contains(peer),
        }
    }
}

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer, remote))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Speaks no protocol; only says whether its connection is in use.
pub struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<'_, DeniedUpgrade, DeniedUpgrade, (), Infallible>,
    ) {
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, Infallible>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_direct_connections_but_not_infrastructure_or_circuits() {
        let boot = PeerId::random();
        let k = KeepAlive::new([boot].into());
        let direct: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let relay = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/192.0.2.2/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert!(
            k.handler(&PeerId::random(), &direct)
                .connection_keep_alive()
        );
        assert!(!k.handler(&boot, &direct).connection_keep_alive());
        assert!(
            !k.handler(&PeerId::random(), &circuit)
                .connection_keep_alive()
        );
    }
}
