//! The libp2p behaviour of a Jantar node, built from a validated [`Config`].
//!
//! One struct serves all three roles; the parts a role does not run are disabled
//! `Toggle`s, so one event loop handles every role:
//!
//! | part           | bootstrap          | relay              | peer                      |
//! |----------------|--------------------|--------------------|---------------------------|
//! | kad            | server, stores nothing | server, stores | client until public, then server |
//! | autonat        | server             | server (+ client)  | client (+ server)         |
//! | relay          | -                  | circuit relay v2   | -                         |
//! | relay_client   | -                  | -                  | reservations while private |
//! | dcutr, mdns, upnp | -               | -                  | yes (mdns/upnp per config) |
//!
//! The parts with large connection handlers that some role does not run are
//! [`Boxed`], so a disabled one costs a pointer in each connection, not its handler's
//! size.

use std::{io, time::Duration};

use libp2p::{
    PeerId, StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    mdns, memory_connection_limits, ping, relay,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    upnp,
};

use crate::{
    boxed::Boxed,
    config::{AutonatConfig, Config, Rate, RelayLimits, Role},
    limits::{
        AddressVotes, AutonatGate, MAX_OBSERVED_ADDRESSES, PeerLimits, RelayGate, SlotCaps,
        relay_rate_per_ip, relay_rate_per_peer,
    },
};

/// Jantar's own Kademlia protocol: a DHT of Jantar nodes, separate from other networks.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/jantar/kad/1.0.0");
/// Identify's protocol version string for Jantar nodes.
pub const PROTOCOL_VERSION: &str = "/jantar/1.0.0";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses new connections while the process holds more than `max_memory`.
    pub memory_limits: Toggle<memory_connection_limits::Behaviour>,
    pub connection_limits: connection_limits::Behaviour,
    pub peer_limits: PeerLimits,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: Toggle<kad::Behaviour<MemoryStore>>,
    /// AutoNAT, served to a share of each source's inbound connections.
    pub autonat: AutonatGate,
    /// Reservations and circuits per source (relay); frees a peer's slots when it leaves.
    pub relay_gate: Toggle<RelayGate>,
    pub relay: Toggle<Boxed<relay::Behaviour>>,
    pub relay_client: Toggle<Boxed<relay::client::Behaviour>>,
    pub dcutr: Toggle<Boxed<dcutr::Behaviour>>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub upnp: Toggle<upnp::tokio::Behaviour>,
    /// File announcements and messages (peer).
    pub gossipsub: Toggle<Boxed<gossipsub::Behaviour>>,
    /// Manifest and chunk transfer (peer).
    pub files: Toggle<Boxed<crate::files::protocol::Behaviour>>,
    /// Holds a peer's direct connections open until trimming closes them (peer).
    pub keep_alive: Toggle<crate::peering::keep_alive::KeepAlive>,
}

impl Behaviour {
    /// Builds the behaviour for `config.role`. `relay_client` comes from the swarm
    /// builder's relay transport and is only kept for peers.
    pub fn new(
        config: &Config,
        key: &Keypair,
        relay_client: relay::client::Behaviour,
    ) -> io::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let role = config.role;
        let net = &config.network;
        let l = &net.limits;
        let mut peer_limits = PeerLimits::new(l);
        for n in net.bootstrap_nodes.iter().chain(&net.relay_nodes) {
            peer_limits.exempt(n.peer_id);
        }
        let is_peer = role == Role::Peer;
        let relay_gate =
            (role == Role::Relay).then(|| RelayGate::new(&config.relay, l.limit_private_sources));
        let mdns = if net.enable_mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        Ok(Behaviour {
            memory_limits: (l.max_memory > 0)
                .then(|| {
                    memory_connection_limits::Behaviour::with_max_bytes(
                        usize::try_from(l.max_memory).unwrap_or(usize::MAX),
                    )
                })
                .into(),
            connection_limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(l.max_pending_connections))
                    .with_max_pending_outgoing(Some(l.max_pending_connections))
                    .with_max_established_per_peer(Some(l.max_connections_per_peer)),
            ),
            peer_limits,
            identify: identify(role, key),
            // Every 10 s, failing after 10 s. libp2p-ping reports a failure only when the
            // one before also failed, so a dead connection is closed 30 to 40 s after it
            // died (the second ping opens a fresh stream, which times out after 10 s).
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(10)),
            ),
            kad: net.dht.enabled.then(|| kademlia(config, peer_id)).into(),
            autonat: AutonatGate::new(
                autonat(role, &net.autonat, peer_id),
                SlotCaps {
                    per_ip: net.autonat.max_clients_per_ip,
                    per_subnet: net.autonat.max_clients_per_subnet,
                    private: l.limit_private_sources,
                },
                AddressVotes::new(
                    net.autonat.address_confirmations,
                    MAX_OBSERVED_ADDRESSES,
                    // A vote counts until two refreshes have passed without it, and
                    // for at least 10 minutes: servers are asked one at a time, so
                    // with fast probing the agreeing votes may be far apart.
                    (net.autonat.refresh_interval * 2).max(MIN_VOTE_LIFETIME),
                    net.external_addresses.iter().cloned(),
                ),
            ),
            relay_gate: relay_gate.clone().into(),
            relay: relay_gate
                .map(|gate| Boxed(relay_server(&config.relay, peer_id, &gate)))
                .into(),
            relay_client: is_peer.then_some(Boxed(relay_client)).into(),
            dcutr: is_peer
                .then(|| Boxed(dcutr::Behaviour::new(peer_id)))
                .into(),
            mdns: mdns.into(),
            upnp: net.enable_upnp.then(upnp::tokio::Behaviour::default).into(),
            gossipsub: if is_peer {
                Some(Boxed(gossip(key)?))
            } else {
                None
            }
            .into(),
            files: is_peer
                .then(|| Boxed(crate::files::protocol::behaviour()))
                .into(),
            keep_alive: is_peer
                .then(|| {
                    crate::peering::keep_alive::KeepAlive::new(
                        net.bootstrap_nodes
                            .iter()
                            .chain(&net.relay_nodes)
                            .map(|n| n.peer_id)
                            .collect(),
                    )
                })
                .into(),
        })
    }
}

fn identify(role: Role, key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
            .with_agent_version(format!("{}/{}", role.binary(), crate::version::version()))
            .with_push_listen_addr_updates(true)
            // No address cache: it would hand out peers' unfiltered (loopback)
            // addresses for dialing; Kademlia and connections supply addresses.
            .with_cache_size(0),
    )
}

/// The shortest time an AutoNAT server's report counts towards confirming an address.
const MIN_VOTE_LIFETIME: Duration = Duration::from_secs(600);

fn autonat(role: Role, a: &AutonatConfig, peer_id: PeerId) -> autonat::Behaviour {
    autonat::Behaviour::new(
        peer_id,
        autonat::Config {
            boot_delay: a.boot_delay,
            retry_interval: a.retry_interval,
            refresh_interval: a.refresh_interval,
            confidence_max: a.confidence_max,
            only_global_ips: a.only_global_ips,
            throttle_clients_global_max: a.max_clients,
            throttle_clients_peer_max: a.max_clients_per_peer,
            throttle_clients_period: a.throttle_period,
            // Peers ask only infrastructure (configured bootstrap nodes and relays,
            // and relays they connect to): an AutoNAT server that is also a peer
            // counts any outbound connection to the client as its dial-back, and a
            // DCUtR hole punch between the two makes a NAT'd peer look public.
            // Bootstrap nodes and relays probe through anyone they are connected to,
            // which is how one without configured external addresses learns its own.
            use_connected: role != Role::Peer,
            // With a handful of servers, a 90 s pause per server would leave a peer
            // whose address just changed without anyone to ask until the next round.
            throttle_server_period: a.retry_interval,
            ..Default::default()
        },
    )
}

/// Circuit relay v2 with the configured limits, token-bucket rate limits per source
/// peer and per source IP (IPv6 per /64), and the gate's caps per source IP and subnet
/// (last, so that what it lets through is granted).
fn relay_server(r: &RelayLimits, peer_id: PeerId, gate: &RelayGate) -> relay::Behaviour {
    let per_peer = |rate: &Rate| relay_rate_per_peer(rate.limit, rate.interval);
    let per_ip = |rate: &Rate| relay_rate_per_ip(rate.limit, rate.interval);
    relay::Behaviour::new(
        peer_id,
        relay::Config {
            max_reservations: r.max_reservations,
            max_reservations_per_peer: r.max_reservations_per_peer,
            reservation_duration: r.reservation_duration,
            reservation_rate_limiters: vec![
                per_peer(&r.reservation_rate_per_peer),
                per_ip(&r.reservation_rate_per_ip),
                gate.reservation_limiter(),
            ],
            max_circuits: r.max_circuits,
            max_circuits_per_peer: r.max_circuits_per_peer,
            max_circuit_duration: r.max_circuit_duration,
            max_circuit_bytes: r.max_circuit_bytes,
            circuit_src_rate_limiters: vec![
                per_peer(&r.circuit_rate_per_peer),
                per_ip(&r.circuit_rate_per_ip),
                gate.circuit_limiter(),
            ],
        },
    )
}

/// Gossipsub for the peer's two topics: signed messages only, validated by the event
/// loop before they are forwarded (which holds each sender to its rate), size-limited,
/// with peer scoring that penalizes senders of invalid and over-rate messages.
///
/// Scoring, per topic (weight 0.5, thresholds at their defaults: gossip -10, publish
/// -50, graylist -80):
/// - P1, time in the mesh: +1 per second, up to an hour, so a fresh identity has no
///   credit to spend;
/// - P2, first deliveries: rewarded as by default;
/// - P3/P3b, mesh delivery deficits: off. Jantar's topics are quiet (a few
///   announcements and messages a minute); a deficit there says nothing about a peer;
/// - P4, invalid (and over-rate) deliveries: -100 times their square, halving every
///   second: two in a second put a new peer below the graylist threshold, and a flood
///   outweighs an hour of honest mesh time within seconds, after which its messages are
///   dropped unread and it is pruned from the mesh.
fn gossip(key: &Keypair) -> io::Result<gossipsub::Behaviour> {
    use crate::files::protocol::{FILES_TOPIC, MAX_GOSSIP_SIZE, MESSAGES_TOPIC};
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(MAX_GOSSIP_SIZE)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .build()
        .map_err(io::Error::other)?;
    let mut gs =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .map_err(io::Error::other)?;
    let mut params = gossipsub::PeerScoreParams::default();
    for t in [FILES_TOPIC, MESSAGES_TOPIC] {
        let topic = gossipsub::IdentTopic::new(t);
        params.topics.insert(topic.hash(), topic_score_params());
        gs.subscribe(&topic).map_err(io::Error::other)?;
    }
    gs.with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(io::Error::other)?;
    Ok(gs)
}

/// Subscribes to a release channel's topic, scored as the other topics are (invalid
/// manifests and replays weigh as invalid messages).
pub(crate) fn subscribe_releases(gs: &mut gossipsub::Behaviour, topic: &gossipsub::TopicHash) {
    let params = topic_score_params();
    if let Err(e) = gs.set_topic_params(gossipsub::IdentTopic::new(topic.as_str()), params) {
        tracing::warn!(error = %e, "cannot score the release topic");
    }
    if let Err(e) = gs.subscribe(&gossipsub::IdentTopic::new(topic.as_str())) {
        tracing::warn!(error = %e, "cannot subscribe to the release topic");
    }
}

fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        time_in_mesh_quantum: Duration::from_secs(1),
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    }
}

fn kademlia(config: &Config, peer_id: PeerId) -> kad::Behaviour<MemoryStore> {
    let d = &config.network.dht;
    let mut kc = kad::Config::new(KAD_PROTOCOL);
    kc.set_query_timeout(d.query_timeout)
        .set_max_packet_size(d.max_packet_size)
        .set_periodic_bootstrap_interval(Some(d.refresh_interval))
        .set_parallelism(d.parallelism);
    // Inbound PUT_VALUE and ADD_PROVIDER are handed to the event loop, which refuses
    // records and stores provider records within their sources' quotas (none on a
    // bootstrap node); peers enter the routing table only through the event loop's
    // admission rules. The store's own key limit is lifted so that the node's own
    // provider records are never refused: the quotas bound what others put in it.
    kc.set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_kbucket_inserts(kad::BucketInserts::Manual);
    let store_config = kad::store::MemoryStoreConfig {
        max_records: 0,
        max_provided_keys: usize::MAX,
        max_value_bytes: d.max_packet_size,
        max_providers_per_key: kad::K_VALUE.get(),
    };
    if config.role == Role::Bootstrap {
        // Stateless: nothing is stored or republished.
        kc.set_replication_interval(None)
            .set_publication_interval(None)
            .set_provider_publication_interval(None);
    }
    let mut kad =
        kad::Behaviour::with_config(peer_id, MemoryStore::with_config(peer_id, store_config), kc);
    kad.set_mode(Some(match config.role {
        Role::Bootstrap | Role::Relay => kad::Mode::Server,
        // Peers serve the DHT only once AutoNAT confirms they are publicly reachable,
        // or from the start when their config declares public addresses.
        Role::Peer if config.network.external_addresses.is_empty() => kad::Mode::Client,
        Role::Peer => kad::Mode::Server,
    }));
    kad
}
