//! The event loop: owns the swarm and the parts, and is the one place that routes each
//! swarm event, timer tick and command to the parts that care, in order ([`events`]
//! routes the swarm's events).

mod events;
mod report;

use std::time::Duration;

use futures::StreamExt;
use libp2p::{Multiaddr, Swarm, core::transport::ListenerId, kad, swarm::SwarmEvent};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    command::Command,
    connections::Connections,
    dht::Dht,
    discovery::{Discovery, PEERS_KEY},
    files::{FileService, Net, Observation},
    peering::Peering,
    reachability::Reachability,
    relay_client::{RELAYS_KEY, RelayClient},
    relay_server::RelayServer,
    subscriptions::Subscriptions,
    updates::Updates,
};
use crate::{
    behaviour::Behaviour,
    config::{Config, Role},
    metrics as m,
};

/// How often timers (bootstrap retries, relay reservations, fetches) are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) role: Role,
    pub(super) name: String,
    dht_enabled: bool,
    discovery_interval: Duration,
    shutdown_grace_period: Duration,
    ready_tx: watch::Sender<bool>,
    pub(super) connections: Connections,
    pub(super) dht: Dht,
    pub(super) discovery: Discovery,
    pub(super) reachability: Reachability,
    /// Peers only.
    pub(super) relay_client: Option<RelayClient>,
    /// Relays only.
    pub(super) relay_server: Option<RelayServer>,
    pub(super) peering: Peering,
    /// Peers only.
    files: Option<FileService>,
    /// Peers that trust release keys only.
    updates: Option<Updates>,
    /// Peers only (they gossip).
    pub(super) subscriptions: Option<Subscriptions>,
}

impl EventLoop {
    pub(super) fn new(
        config: &Config,
        swarm: Swarm<Behaviour>,
        listeners: Vec<ListenerId>,
        files: Option<FileService>,
        peering: Peering,
        updates: Option<Updates>,
        ready_tx: watch::Sender<bool>,
    ) -> Self {
        let me = *swarm.local_peer_id();
        let role = config.role;
        let net = &config.network;
        metrics::gauge!(m::BUILD_INFO, "version" => crate::version::version(), "role" => role.as_str())
            .set(1.0);
        let relay_client = (role == Role::Peer).then(|| RelayClient::new(me, net));
        if relay_client.is_none() {
            metrics::gauge!(m::RELAY_CLIENT_RESERVATIONS).set(0.0);
        }
        let mut swarm = swarm;
        super::dht::update_routing_gauges(&mut swarm);
        if let (Some(u), Some(g)) = (&updates, swarm.behaviour_mut().gossipsub.as_mut()) {
            crate::behaviour::subscribe_releases(g, u.topic());
            crate::behaviour::subscribe_releases(g, u.keys_topic());
        }
        let infrastructure = net.bootstrap_nodes.iter().chain(&net.relay_nodes).cloned();
        let mut dht = Dht::new(me, net, role != Role::Bootstrap);
        for id in files.iter().flat_map(FileService::held_ids) {
            dht.records.want(id.dht_key());
        }
        EventLoop {
            role,
            name: config.name.clone(),
            dht_enabled: net.dht.enabled,
            discovery_interval: net.dht.discovery_interval,
            shutdown_grace_period: config.shutdown_grace_period,
            ready_tx,
            connections: Connections::new(listeners),
            dht,
            discovery: Discovery::new(me),
            reachability: Reachability::new(me, role == Role::Peer, infrastructure.collect()),
            relay_client,
            relay_server: (role == Role::Relay)
                .then(|| RelayServer::new(swarm.behaviour().relay_gate.as_ref().cloned())),
            files,
            updates,
            peering,
            subscriptions: swarm
                .behaviour()
                .gossipsub
                .is_enabled()
                .then(Subscriptions::default),
            swarm,
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
        listening: oneshot::Sender<Vec<Multiaddr>>,
    ) -> bool {
        let mut listening = Some(listening);
        let mut discovery = tokio::time::interval(self.discovery_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Sent from the event loop itself, so a stuck loop stops the heartbeats.
        let mut watchdog = crate::systemd::watchdog_interval().map(tokio::time::interval);
        loop {
            if self.connections.all_listening()
                && let Some(tx) = listening.take()
            {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
                // Dial out only once every listener is bound, so that TCP dials reuse
                // the listening port (what the other side observes, and what hole
                // punching needs) instead of an ephemeral one.
                self.join_network();
            }
            let joined = listening.is_none();
            tokio::select! {
                Some(()) = tick(watchdog.as_mut()) => crate::systemd::watchdog(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(cmd) = commands.recv() => self.on_command(cmd),
                Some(done) = offloaded(self.files.as_mut()) => {
                    if let Some((files, mut net)) = self.files() {
                        files.on_offloaded(&mut net, done);
                    }
                }
                _ = discovery.tick(), if joined => self.discover(),
                _ = housekeeping.tick(), if joined => self.housekeeping(),
                _ = cancel.cancelled() => break,
            }
            self.update_ready();
        }
        self.drain().await
    }

    /// Closes every connection and keeps driving the swarm until they are gone or the
    /// grace period is over.
    async fn drain(mut self) -> bool {
        let grace = self.shutdown_grace_period;
        info!(
            connections = self.connections.len(),
            ?grace,
            "shutting down"
        );
        if let Some(rc) = self.relay_client.as_mut() {
            rc.remove_listeners(&mut self.swarm);
        }
        // No new connections from others while closing: peers that lost theirs would
        // dial again and keep the drain from ever ending.
        for id in self.connections.listeners().to_vec() {
            self.swarm.remove_listener(id);
        }
        let peers: Vec<_> = self.swarm.connected_peers().copied().collect();
        for p in peers {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        let deadline = tokio::time::Instant::now() + grace;
        let drained = self.drain_connections(deadline).await;
        self.peering.save();
        drained
    }

    async fn drain_connections(&mut self, deadline: tokio::time::Instant) -> bool {
        let grace = self.shutdown_grace_period;
        while self.swarm.network_info().num_peers() > 0 {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => {
                    // One that was already on its way in (or a dial of ours) is closed
                    // too.
                    let late = match &event {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(*peer_id),
                        _ => None,
                    };
                    self.on_swarm_event(event);
                    if let Some(peer) = late {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
                Err(_) => {
                    warn!(
                        open = self.swarm.network_info().num_peers(),
                        ?grace,
                        "connections still open when the shutdown grace period ran out"
                    );
                    return false;
                }
            }
        }
        true
    }

    /// The release part, with the files part and what they work on.
    fn updates(&mut self) -> Option<(&mut Updates, &mut FileService, Net<'_>)> {
        let updates = self.updates.as_mut()?;
        let files = self.files.as_mut()?;
        Some((
            updates,
            files,
            Net {
                swarm: &mut self.swarm,
                connections: &self.connections,
                records: &mut self.dht.records,
            },
        ))
    }

    /// The files part with what it works on.
    fn files(&mut self) -> Option<(&mut FileService, Net<'_>)> {
        let files = self.files.as_mut()?;
        Some((
            files,
            Net {
                swarm: &mut self.swarm,
                connections: &self.connections,
                records: &mut self.dht.records,
            },
        ))
    }

    fn on_command(&mut self, cmd: Command) {
        fail::fail_point!("node::command");
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::DhtStats(tx) => {
                let _ = tx.send(self.dht_stats());
            }
            // Only peers run the file service; other roles drop the command, and the
            // admin endpoint answers that this node holds no files.
            Command::Files(cmd) => {
                if let Some((files, mut net)) = self.files() {
                    files.on_command(&mut net, cmd);
                }
            }
            Command::Connect { addr, reply } => {
                self.connections.connect(&mut self.swarm, addr, reply);
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peering.known(&self.busy_peers()));
            }
            Command::FindNode { key, reply } => self.dht.find_node(&mut self.swarm, key, reply),
            Command::PublishRelease { manifest, reply } => {
                let r = match self.updates() {
                    Some((u, files, mut net)) => u.publish(files, &mut net, &manifest),
                    None => Err("this node follows no releases: it trusts no release keys \
                                 (update.trusted_keys)"
                        .into()),
                };
                let _ = reply.send(r);
            }
        }
    }

    /// First contact, once every listener is bound.
    fn join_network(&mut self) {
        if let Some(rc) = self.relay_client.as_mut() {
            // Relays that served before are tried before the DHT is asked for more.
            rc.remember(self.peering.known_relays());
            rc.join(&mut self.swarm);
        }
        self.peering.join(&mut self.swarm);
        self.reachability.join(&mut self.swarm);
        self.dht.join(&mut self.swarm);
        self.manage_reservations();
    }

    /// Every second: bootstrap retries (with DHT servers known from before while out of
    /// touch), relayed connections a hole punch replaced, relay reservations, fetches,
    /// the upload budget, and peers whose gossip subscriptions never arrived.
    fn housekeeping(&mut self) {
        if self.dht.housekeeping(&mut self.swarm) {
            let dht = &self.dht;
            self.peering
                .rejoin(&mut self.swarm, |p| dht.dialed_itself(p));
        }
        self.reachability
            .close_replaced(&mut self.swarm, &self.connections);
        self.manage_reservations();
        if let Some((files, mut net)) = self.files() {
            files.housekeeping(&mut net);
        }
        if let Some((u, files, mut net)) = self.updates() {
            u.housekeeping(files, &mut net);
        }
        let busy = self.busy_peers();
        if let Some(s) = self.subscriptions.as_mut() {
            s.housekeeping(&mut self.swarm, &busy);
        }
        let joined = self.dht.joined() || !self.dht.has_bootstrap_nodes();
        self.peering.housekeeping(&mut self.swarm, &busy, joined);
    }

    /// Peers trimming must not close for now: transfers running, a relay's
    /// reservation holders, the relays this peer holds reservations on.
    pub(super) fn busy_peers(&self) -> std::collections::HashSet<libp2p::PeerId> {
        let mut busy: std::collections::HashSet<libp2p::PeerId> = self
            .files
            .iter()
            .flat_map(FileService::transfer_peers)
            .collect();
        if let Some(rs) = &self.relay_server {
            busy.extend(rs.reservation_holders());
        }
        if let Some(rc) = &self.relay_client {
            busy.extend(rc.relays_in_use());
        }
        busy
    }

    /// What providers did, into the peer store.
    pub(super) fn record_observations(&mut self) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        for (peer, what) in files.take_observations() {
            match what {
                Observation::Chunk => self.peering.useful(peer, true),
                Observation::Manifest => self.peering.useful(peer, false),
                Observation::BadData => self.peering.bad_data(peer),
            }
        }
    }

    /// Every `network.dht.discovery_interval`: publish this node's provider records and
    /// look for relays, and for peers while below the low watermark.
    fn discover(&mut self) {
        if self.swarm.behaviour().kad.is_enabled() && self.dht.joined() {
            match self.role {
                Role::Peer => self.dht.records.want(kad::RecordKey::new(&PEERS_KEY)),
                Role::Relay if self.relay_server.as_ref().is_some_and(|r| r.serving()) => {
                    self.dht.records.want(kad::RecordKey::new(&RELAYS_KEY));
                }
                _ => {}
            }
            self.dht.publish_stale(&mut self.swarm);
            if self.role == Role::Peer {
                // A peer with its low watermark's worth of peers has no one to dial.
                if self.peering.wanted() > 0 {
                    self.discovery.lookup(&mut self.swarm);
                }
                if let Some(rc) = self.relay_client.as_ref() {
                    rc.lookup(&mut self.swarm, self.reachability.nat());
                }
            }
        }
        self.manage_reservations();
    }

    fn manage_reservations(&mut self) {
        if let Some(rc) = self.relay_client.as_mut() {
            rc.manage(&mut self.swarm, self.reachability.nat());
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        if !self.connections.all_listening() {
            return false;
        }
        let others = self.dht.has_bootstrap_nodes();
        match self.role {
            Role::Bootstrap => !others || self.dht.joined(),
            Role::Relay => self.relay_server.as_ref().is_some_and(|r| r.serving()),
            Role::Peer => !self.dht_enabled || !others || self.dht.joined(),
        }
    }

    fn update_ready(&mut self) {
        let ready = self.is_ready();
        if ready && let Some(u) = self.updates.as_mut() {
            u.on_ready();
        }
        self.ready_tx.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }
}

/// The next chunk the file part read or wrote on the blocking pool; never, on a node
/// without one.
async fn offloaded(files: Option<&mut FileService>) -> Option<super::files::Offloaded> {
    match files {
        Some(f) => f.next_offloaded().await,
        None => std::future::pending().await,
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: Option<&mut tokio::time::Interval>) -> Option<()> {
    match interval {
        Some(i) => {
            i.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}
