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
//!
//! Trimming *releases* a peer ([`KeepAlive::release`]) rather than cutting it off: its
//! connections stop being held and close once every protocol is done with them and the
//! idle timeout has passed. A DHT request or transfer running on a trimmed connection
//! therefore finishes; cutting connections mid-request made lookups across a busy
//! network miss peers (see `docs/scale.md`). Between two peers gossipsub keeps a stream
//! open on every connection (rust-libp2p issue 5190), so such a connection never goes
//! idle: the connection manager disconnects released peers after a linger instead.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::DeniedUpgrade},
    multiaddr::Protocol,
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
        ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, handler::ConnectionEvent,
    },
};

pub struct KeepAlive {
    /// Never held (configured infrastructure).
    never: HashSet<PeerId>,
    /// Released by trimming, until their last connection closes.
    released: HashSet<PeerId>,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    pending: VecDeque<ToSwarm<Infallible, Release>>,
}

impl KeepAlive {
    /// Holds every direct connection open except those to `never`.
    pub fn new(never: HashSet<PeerId>) -> Self {
        KeepAlive {
            never,
            released: HashSet::new(),
            connections: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// Stops holding `peer`'s connections, now and any it opens before they have all
    /// closed; they close when idle. Returns whether it was held before.
    pub fn release(&mut self, peer: PeerId) -> bool {
        if !self.released.insert(peer) {
            return false;
        }
        for &connection in self.connections.get(&peer).into_iter().flatten() {
            self.pending.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: Release,
            });
        }
        true
    }

    fn handler(&mut self, id: ConnectionId, peer: PeerId, remote: &Multiaddr) -> Handler {
        self.connections.entry(peer).or_default().push(id);
        let relayed = remote.iter().any(|p| p == Protocol::P2pCircuit);
        Handler {
            keep: !relayed && !self.never.contains(&peer) && !self.released.contains(&peer),
        }
    }
}

/// Tells a connection's handler to stop holding it.
#[derive(Debug)]
pub struct Release;

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(id, peer, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(id, peer, remote))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id,
            connection_id,
            ..
        }) = event
            && let Some(ids) = self.connections.get_mut(&peer_id)
        {
            ids.retain(|c| *c != connection_id);
            if ids.is_empty() {
                self.connections.remove(&peer_id);
                self.released.remove(&peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

/// Speaks no protocol; only says whether its connection is in use.
pub struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Release;
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

    fn on_behaviour_event(&mut self, Release: Release) {
        self.keep = false;
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

    fn held(k: &mut KeepAlive, peer: PeerId, remote: &Multiaddr) -> bool {
        k.handler(ConnectionId::new_unchecked(0), peer, remote)
            .connection_keep_alive()
    }

    #[test]
    fn holds_direct_connections_but_not_infrastructure_or_circuits() {
        let boot = PeerId::random();
        let mut k = KeepAlive::new([boot].into());
        let direct: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let relay = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/192.0.2.2/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert!(held(&mut k, PeerId::random(), &direct));
        assert!(!held(&mut k, boot, &direct));
        assert!(!held(&mut k, PeerId::random(), &circuit));
    }

    #[test]
    fn a_released_peer_is_no_longer_held_until_it_is_gone() {
        let mut k = KeepAlive::new(HashSet::new());
        let peer = PeerId::random();
        let direct: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let mut handler = k.handler(ConnectionId::new_unchecked(1), peer, &direct);
        assert!(handler.connection_keep_alive());

        assert!(k.release(peer));
        assert!(!k.release(peer), "released twice");
        assert!(k.released.contains(&peer));
        // The open connection's handler is told...
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match k.poll(&mut cx) {
            Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(id),
                event,
            }) => {
                assert_eq!((peer_id, id), (peer, ConnectionId::new_unchecked(1)));
                handler.on_behaviour_event(event);
            }
            _ => panic!("the connection's handler was not told"),
        }
        assert!(!handler.connection_keep_alive());
        // ...and a second connection opened meanwhile is not held either.
        assert!(!held(&mut k, peer, &direct));
        assert!(k.poll(&mut cx).is_pending());
    }
}
