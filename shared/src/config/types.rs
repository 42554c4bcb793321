//! The validated sections of [`super::Config`]: logging, network and relay limits.

use std::{path::PathBuf, time::Duration};

use libp2p::Multiaddr;

use super::PeerAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayReservations {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_peers: u32,
    pub max_pending_connections: u32,
    pub idle_timeout: Duration,
    pub max_connections_per_peer: u32,
    pub max_connections_per_ip: u32,
    /// Inbound connections in their handshake from one IPv4 address or IPv6 /64.
    pub max_pending_per_ip: u32,
    /// Inbound connections in their handshake from one IPv4 /24 or IPv6 /48.
    pub max_pending_per_subnet: u32,
    /// Whether the per-source caps (handshakes, relay reservations and circuits, AutoNAT
    /// service and address votes) count loopback and private sources too.
    pub limit_private_sources: bool,
    /// Process memory (resident) above which new connections are refused; 0: no limit.
    pub max_memory: u64,
    /// Trimming starts above this many peers ...
    pub high_water: u32,
    /// ... and stops here; a peer dials known peers below it.
    pub low_water: u32,
    /// Never trimmed (besides infrastructure, transfers and reservation holders).
    pub protected_peers: std::collections::HashSet<libp2p::PeerId>,
}

#[derive(Clone, Debug)]
pub struct DhtConfig {
    pub enabled: bool,
    pub refresh_interval: Duration,
    pub query_timeout: Duration,
    pub max_packet_size: usize,
    pub max_provider_keys: usize,
    pub max_peers_per_subnet_per_bucket: usize,
    pub max_peers_per_subnet: usize,
    pub limit_private_subnets: bool,
    pub discovery_interval: Duration,
    /// Requests one lookup keeps in flight (Kademlia's alpha).
    pub parallelism: std::num::NonZeroUsize,
}

#[derive(Clone, Debug)]
pub struct AutonatConfig {
    pub only_global_ips: bool,
    pub max_clients: usize,
    pub max_clients_per_peer: usize,
    /// Inbound connections from one IPv4 address or IPv6 /64 that are served.
    pub max_clients_per_ip: usize,
    /// Inbound connections from one IPv4 /24 or IPv6 /48 that are served.
    pub max_clients_per_subnet: usize,
    /// Server groups (subnets) that must agree on an address before it is confirmed.
    pub address_confirmations: usize,
    pub throttle_period: Duration,
    pub boot_delay: Duration,
    pub retry_interval: Duration,
    pub refresh_interval: Duration,
    pub confidence_max: usize,
}

/// Where TLS material for `/tls/ws` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Configured certificate and key; `None` means self-signed in `<data_dir>/tls/`.
    pub certificate: Option<(PathBuf, PathBuf)>,
    pub trusted_certificates: Vec<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct NetworkConfig {
    pub listen_addresses: Vec<Multiaddr>,
    pub external_addresses: Vec<Multiaddr>,
    pub bootstrap_nodes: Vec<PeerAddr>,
    pub relay_nodes: Vec<PeerAddr>,
    pub enable_mdns: bool,
    pub enable_upnp: bool,
    pub relay_reservations: RelayReservations,
    pub max_relays: usize,
    pub limits: ConnectionLimits,
    pub dht: DhtConfig,
    pub autonat: AutonatConfig,
    pub tls: TlsConfig,
    pub gossip: GossipConfig,
    pub peer_store: PeerStoreConfig,
    pub geoip_databases: Vec<PathBuf>,
}

/// The peer store.
#[derive(Clone, Copy, Debug)]
pub struct PeerStoreConfig {
    /// Kept in `<data_dir>/peers.json`.
    pub persist: bool,
    pub capacity: usize,
}

/// Per-sender gossip rates (peer).
#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    pub announcement_rate_per_sender: Rate,
    pub message_rate_per_sender: Rate,
}

/// TCP and QUIC on `port`, IPv4 and IPv6, all interfaces.
pub fn default_listen_addresses(port: u16) -> Vec<Multiaddr> {
    [
        format!("/ip4/0.0.0.0/tcp/{port}"),
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
        format!("/ip6/::/tcp/{port}"),
        format!("/ip6/::/udp/{port}/quic-v1"),
    ]
    .into_iter()
    .map(|s| s.parse().expect("static multiaddr"))
    .collect()
}

/// A token bucket: `limit` requests, refilled one per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: std::num::NonZeroU32,
    pub interval: Duration,
}

#[derive(Clone, Debug)]
pub struct RelayLimits {
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    /// Reservations held at once by the peers of one IPv4 address or IPv6 /64.
    pub max_reservations_per_ip: usize,
    /// Reservations held at once by the peers of one IPv4 /24 or IPv6 /48.
    pub max_reservations_per_subnet: usize,
    pub reservation_duration: Duration,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// Circuits at once from the peers of one IPv4 address or IPv6 /64.
    pub max_circuits_per_ip: usize,
    /// Circuits at once from the peers of one IPv4 /24 or IPv6 /48.
    pub max_circuits_per_subnet: usize,
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
    /// Bytes per second received on all streams together; 0: no budget.
    pub max_bytes_per_second: u64,
    /// Bytes per second received on one stream (one direction of a circuit); 0: none.
    pub circuit_bytes_per_second: u64,
    pub acl: crate::limits::RelayAcl,
    pub reservation_rate_per_peer: Rate,
    pub reservation_rate_per_ip: Rate,
    pub circuit_rate_per_peer: Rate,
    pub circuit_rate_per_ip: Rate,
}

/// Default `relay.max_circuit_bytes`: room for 16 file chunks per circuit.
/// Together with `relay.circuit_rate_per_peer` (30 circuits per 2 min) this
/// caps what one peer can relay at about 4 MiB/s.
pub const DEFAULT_MAX_CIRCUIT_BYTES: u64 = 16 * 1024 * 1024;
/// Below this a circuit cannot carry file chunks reliably (a chunk is 1 MiB,
/// and the relay counts both directions).
pub const MIN_FILE_CIRCUIT_BYTES: u64 = 2 * crate::files::id::CHUNK_SIZE as u64;

/// How a peer replicates announced files.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplicationConfig {
    /// Replication fetches at once; 0: no replication.
    pub max_concurrent_fetches: usize,
    /// After this a replication fetch stops and its partial file is removed.
    pub fetch_deadline: Duration,
    /// Share of `max_storage_size` one publisher's replicas may take (0, 1].
    pub max_share_per_publisher: f64,
}

/// How a peer serves chunks to others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServingConfig {
    /// Chunk requests of one peer accepted at once.
    pub max_concurrent_per_peer: usize,
    /// Chunk requests accepted at once from all peers.
    pub max_queued: usize,
}

/// Whether a peer follows signed releases (`auto_update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoUpdate {
    /// Releases are neither followed nor forwarded.
    Off,
    /// Releases are verified, forwarded and reported; nothing is fetched.
    Notify,
    /// Releases are verified, forwarded, fetched, staged and run.
    Apply,
}

impl AutoUpdate {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoUpdate::Off => "false",
            AutoUpdate::Notify => "notify",
            AutoUpdate::Apply => "apply",
        }
    }
}

/// Where a new version goes when it is applied (`update.method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMethod {
    /// `replace` when the installed binary and its directory are writable, else `stage`.
    Auto,
    /// The installed binary is replaced atomically (a user's own install).
    Replace,
    /// The new binary is kept in `<data_dir>/releases/` and the installed one hands
    /// over to it at start (a read-only `/usr` under the system unit).
    Stage,
}

/// The `update` section (peer): which releases are trusted, and how they are applied.
#[derive(Clone, Debug)]
pub struct UpdateConfig {
    pub mode: AutoUpdate,
    pub channel: String,
    /// Trusted release keys and how many must sign; empty keys: releases are not
    /// followed.
    pub trust: crate::release::Trust,
    pub ready_timeout: Duration,
    pub method: UpdateMethod,
}
