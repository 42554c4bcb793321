//! Keeping the connections the node wants open, idle or not.
//!
//! libp2p closes a connection once no protocol uses it for the idle timeout
//! (`connection_grace_period`). A peer's connection manager wants the opposite for the
//! peers it keeps: a peer that merely has nothing to say right now is still worth
//! holding, as Kubo's connection manager holds every connection until it trims. This
//! behaviour marks the connections of the peers named in [`KeepAlive::set`] as in use;
//! every other connection idles out as before.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::DeniedUpgrade},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, handler::ConnectionEvent,
    },
};

#[derive(Default)]
pub struct KeepAlive {
    keep: HashSet<PeerId>,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Handlers to tell of a change.
    notify: VecDeque<(PeerId, ConnectionId, bool)>,
}

impl KeepAlive {
    /// The peers whose connections are kept open from now on.
    pub fn set(&mut self, keep: HashSet<PeerId>) {
        for (peer, conns) in &self.connections {
            let now = keep.contains(peer);
            if now != self.keep.contains(peer) {
                for c in conns {
                    self.notify.push_back((*peer, *c, now));
                }
            }
        }
        self.keep = keep;
    }

    pub fn is_kept(&self, peer: &PeerId) -> bool {
        self.keep.contains(peer)
    }

    fn handler(&mut self, peer: PeerId, id: ConnectionId) -> Handler {
        self.connections.entry(peer).or_default().insert(id);
        Handler {
            keep: self.keep.contains(&peer),
        }
    }
}

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, id))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, id))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(e) = event
            && let Some(conns) = self.connections.get_mut(&e.peer_id)
        {
            conns.remove(&e.connection_id);
            if conns.is_empty() {
                self.connections.remove(&e.peer_id);
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
        while let Some((peer_id, id, keep)) = self.notify.pop_front() {
            if self
                .connections
                .get(&peer_id)
                .is_some_and(|c| c.contains(&id))
            {
                return Poll::Ready(ToSwarm::NotifyHandler {
                    peer_id,
                    handler: NotifyHandler::One(id),
                    event: keep,
                });
            }
        }
        Poll::Pending
    }
}

/// Speaks no protocol; only says whether its connection is in use.
pub struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
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

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
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
