//! The config file as written by operators: every key optional, every default stated.
//!
//! [`super::Config::from_file`] turns this into the validated runtime config; the
//! defaults that differ per role live there, in its section checks (`validate`).

use std::path::PathBuf;

use serde::Deserialize;

use super::value::{Addr, ByteSize, HumanDuration, PeerAddr};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Human-readable node name, shown in logs and `/status`. Default: the binary's name.
    pub name: Option<String>,
    /// TCP and UDP (QUIC) port on all interfaces. Default: 4001 for bootstrap and relay,
    /// 0 (any free port) for peers.
    pub port: Option<u16>,
    /// Directory for the identity key and node state. Default: `$STATE_DIRECTORY`, else
    /// `$XDG_DATA_HOME/jantar/<role>`, else `~/.local/share/jantar/<role>`.
    pub data_dir: Option<PathBuf>,
    /// Identity key file. Default: `<data_dir>/identity.key`, created on first start.
    pub key_file: Option<PathBuf>,
    /// Where fetched files go (peer). Default: `<data_dir>/downloads`.
    pub download_dir: Option<PathBuf>,
    /// Whether a peer follows signed releases: `false`, `notify` (verify and report),
    /// `apply` (fetch, stage and run them); `true` means `apply`. Default: false.
    pub auto_update: Option<AutoUpdateFile>,
    /// Same as `network.enable_dht`. Default: true.
    pub enable_dht: Option<bool>,
    /// Marks a bootstrap node config; only `jantar-bootstrap` accepts `true`.
    pub bootstrap_mode: Option<bool>,
    /// Disk quota for replicated files (peer). Default: 1GiB.
    pub max_storage_size: Option<ByteSize>,
    /// Smallest file a peer replicates (peer). Default: 0.
    pub min_file_size: Option<ByteSize>,
    /// Upload bandwidth for serving file chunks, bytes per second; 0 for no limit
    /// (peer). Default: 0.
    pub upload_rate_limit: Option<ByteSize>,
    /// How long shutdown may take after SIGTERM/SIGINT before exiting anyway. Default: 10s.
    pub shutdown_grace_period: Option<HumanDuration>,
    #[serde(default)]
    pub replication: ReplicationFile,
    #[serde(default)]
    pub serving: ServingFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub network: NetworkFile,
    #[serde(default)]
    pub relay: RelayFile,
    #[serde(default)]
    pub update: UpdateFile,
}

/// `auto_update` as written: a boolean (the design document's form) or a mode name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AutoUpdateFile {
    Bool(bool),
    Mode(String),
}

/// Which releases a peer trusts and how it applies them (peer).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    /// The release channel followed. Default: `stable`.
    pub channel: Option<String>,
    /// Trusted release keys, each `ed25519:<hex>`. Default: none.
    pub trusted_keys: Option<Vec<String>>,
    /// A file of trusted release keys, one per line (`#` comments). Default: none.
    pub trusted_keys_file: Option<PathBuf>,
    /// How many trusted keys must sign a release. Default: a majority of them.
    pub threshold: Option<usize>,
    /// A new version that is not ready within this time is rolled back. Default: 60s.
    pub ready_timeout: Option<HumanDuration>,
    /// `auto`, `replace` (the installed binary) or `stage` (in the data directory).
    /// Default: `auto`.
    pub method: Option<String>,
}

/// How a peer replicates announced files (peer).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationFile {
    /// Replication fetches running at once; more announcements wait to be announced
    /// again. `0` turns replication off. Default: 4.
    pub max_concurrent_fetches: Option<usize>,
    /// How long a replication fetch may run before it stops and its partial file is
    /// removed. Default: 30m.
    pub fetch_deadline: Option<HumanDuration>,
    /// Largest share of `max_storage_size` that the files of one publisher may take,
    /// held and being fetched together, above 0 and at most 1. Default: 0.25.
    pub max_share_per_publisher: Option<f64>,
}

/// How a peer serves file chunks to others (peer).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingFile {
    /// Chunk requests of one peer accepted at once (waiting, being read or being
    /// sent); more are refused at once. Default: 8.
    pub max_concurrent_per_peer: Option<usize>,
    /// Chunk requests accepted at once from all peers together, at least
    /// `max_concurrent_per_peer`; more are refused at once. Default: 64.
    pub max_queued: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Admin HTTP listen address (`/metrics`, `/livez`, `/readyz`, `/status`, `/dht/stats`).
    /// Default: `127.0.0.1:9090`. Use `off` to disable.
    pub listen: Option<String>,
    /// Bearer token required on every admin request except `/livez` and `/readyz`.
    /// Required when `listen` is not a loopback address. Default: none.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `error`, `warn`, `info`, `debug`, `trace` or a tracing filter. Default: `info`.
    pub level: Option<String>,
    /// `text` or `json`. Default: `text`.
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// Kademlia DHT. Default: true (bootstrap and relay require it).
    pub enable_dht: Option<bool>,
    /// mDNS discovery on the local network (peer). Default: true for peers.
    pub enable_mdns: Option<bool>,
    /// UPnP port mapping on the home router (peer). Default: true for peers.
    pub enable_upnp: Option<bool>,
    /// Listen addresses. Default: TCP and QUIC on `port`, IPv4 and IPv6, all interfaces.
    pub listen_addresses: Option<Vec<Addr>>,
    /// Addresses under which this node is reachable from the internet (public IP or
    /// DNS name). Confirmed at once, so a relay serves immediately. Default: none.
    pub external_addresses: Option<Vec<Addr>>,
    /// Bootstrap nodes, each `<address>/p2p/<peer id>`. Default: none.
    pub bootstrap_nodes: Option<Vec<PeerAddr>>,
    /// Relay nodes, each `<address>/p2p/<peer id>` (or `/p2p-circuit/p2p/<peer id>` to
    /// look the address up in the DHT). Default: none; relays are also found in the DHT.
    pub relay_nodes: Option<Vec<PeerAddr>>,
    /// When a peer holds relay reservations: `auto` (while AutoNAT says private),
    /// `always`, or `never`. Default: `auto`.
    pub relay_reservations: Option<String>,
    /// How many relays a private peer holds reservations on. Default: 2.
    pub max_relays: Option<usize>,
    #[serde(default)]
    pub connection_limits: ConnectionLimitsFile,
    #[serde(default)]
    pub dht: DhtFile,
    #[serde(default)]
    pub autonat: AutonatFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub gossip: GossipFile,
    #[serde(default)]
    pub peer_store: PeerStoreFile,
    /// MaxMind-format databases (GeoLite2/GeoIP2 Country, City or ASN) that give peers'
    /// countries and AS numbers for diversity. Default: none (network groups by address
    /// block, RTT bands for distance).
    pub geoip_databases: Option<Vec<PathBuf>>,
}

/// The peer store: known peers, their addresses and scores, kept across restarts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerStoreFile {
    /// Keep the store in `<data_dir>/peers.json` (peer, relay; a bootstrap node keeps
    /// it in memory only, staying stateless). Default: true.
    pub persist: Option<bool>,
    /// Peers the store holds at most. Default: 1000.
    pub capacity: Option<usize>,
}

/// Gossip rates per sender (peer): over-rate announcements and messages are dropped and
/// count against the sender's gossip score.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipFile {
    /// File announcements accepted per publishing peer. Default: 60 per 1m.
    pub announcement_rate_per_sender: Option<RateFile>,
    /// Messages accepted per sending peer. Default: 30 per 1m.
    pub message_rate_per_sender: Option<RateFile>,
}

/// TLS for secure WebSocket (`/tls/ws`) listeners and dials.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain served on `/tls/ws` listeners. Default: a self-signed
    /// certificate generated at `<data_dir>/tls/cert.pem` covering the listen and
    /// external addresses' hosts.
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`. Default: `<data_dir>/tls/key.pem`.
    pub private_key: Option<PathBuf>,
    /// PEM certificates to trust, besides the public web roots, when dialing `/tls/ws`
    /// addresses (for example a relay's self-signed certificate). Default: none.
    pub trusted_certificates: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimitsFile {
    /// Distinct peers connected at once. Default: 50 (peer), 1000 (bootstrap, relay).
    pub max_peers: Option<u32>,
    /// Connections being set up at once, per direction. Default: 10 (peer), 128 (others).
    pub max_pending_connections: Option<u32>,
    /// How long an idle connection is kept open, and how long a new connection is
    /// safe from trimming. Default: 20s.
    pub connection_grace_period: Option<HumanDuration>,
    /// Above this many peers, the node closes the worst-scored unprotected ones down
    /// to `low_water`. Default: 9/10 of `max_peers`.
    pub high_water: Option<u32>,
    /// Where trimming stops, and below which a peer dials known peers to get back up.
    /// Default: 7/10 of `max_peers`.
    pub low_water: Option<u32>,
    /// Peer ids never closed by trimming (besides configured bootstrap and relay nodes,
    /// peers with a transfer running and a relay's reservation holders). Default: none.
    pub protected_peers: Option<Vec<String>>,
    /// Connections to one peer. Default: 4.
    pub max_connections_per_peer: Option<u32>,
    /// Inbound connections from one IPv4 address or IPv6 /64. Default: 8 (peer), 16 (others).
    pub max_connections_per_ip: Option<u32>,
    /// Inbound connections still in their handshake from one IPv4 address or IPv6 /64.
    /// Default: 4 (peer), 8 (others).
    pub max_pending_per_ip: Option<u32>,
    /// Inbound connections still in their handshake from one IPv4 /24 or IPv6 /48.
    /// Default: 8 (peer), 32 (others).
    pub max_pending_per_subnet: Option<u32>,
    /// Apply the caps per source (handshakes, relay reservations and circuits, AutoNAT
    /// service and address votes) to loopback and private sources too. Off by default:
    /// those are this host or its LAN (local tools, test networks, labs), where one
    /// address or subnet holds many honest nodes. Default: false.
    pub limit_private_sources: Option<bool>,
    /// Resident memory of the process above which new connections are refused; `0` for
    /// no limit. Default: 1GiB (peer), 2GiB (others).
    pub max_memory: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhtFile {
    /// How often the routing table is refreshed. Default: 5m.
    pub refresh_interval: Option<HumanDuration>,
    /// Time limit of one DHT query. Default: 30s.
    pub query_timeout: Option<HumanDuration>,
    /// Largest DHT message accepted. Default: 16KiB.
    pub max_packet_size: Option<ByteSize>,
    /// Accepted for older configs and ignored: nodes store no DHT records (PUT_VALUE
    /// is refused), so setting it is a warning.
    pub max_records: Option<usize>,
    /// Provider keys kept for others (relay, peer), in total. One peer may hold a
    /// quarter of them, one subnet half, and one subnet two providers of any one key.
    /// The node's own records are never refused. Default: 1024.
    pub max_provider_keys: Option<usize>,
    /// Peers from one subnet (IPv4 /24, IPv6 /48) in one routing-table bucket.
    /// Default: 2.
    pub max_peers_per_subnet_per_bucket: Option<usize>,
    /// Peers from one subnet in the whole routing table. Default: 8.
    pub max_peers_per_subnet: Option<usize>,
    /// Apply the subnet limits (routing table, provider records) to loopback and
    /// private sources too, as on a large LAN or in a lab. Default: false.
    pub limit_private_subnets: Option<bool>,
    /// How often peers look for other peers and relays in the DHT. Default: 30s.
    pub discovery_interval: Option<HumanDuration>,
    /// Requests one lookup keeps in flight (Kademlia's alpha), 1 to 32. Default: 3.
    pub parallelism: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutonatFile {
    /// Only dial back global IP addresses when serving AutoNAT. Default: true.
    pub only_global_ips: Option<bool>,
    /// AutoNAT dial-backs served per `throttle_period`, in total. Default: 30.
    pub max_clients: Option<usize>,
    /// AutoNAT dial-backs served per `throttle_period` for one peer. Default: 3.
    pub max_clients_per_peer: Option<usize>,
    /// Inbound connections from one IPv4 address or IPv6 /64 whose peers may ask for
    /// dial-backs; more get no AutoNAT service. Default: 2.
    pub max_clients_per_ip: Option<usize>,
    /// The same per IPv4 /24 or IPv6 /48. Default: 4.
    pub max_clients_per_subnet: Option<usize>,
    /// AutoNAT servers in different subnets (IPv4 /24, IPv6 /48; servers on private
    /// addresses count per peer) that must report an address's IP before this node
    /// confirms the address as its own. Default: 2.
    pub address_confirmations: Option<usize>,
    /// Window for the two limits above. Default: 1m.
    pub throttle_period: Option<HumanDuration>,
    /// Delay before the first reachability probe (peer). Default: 15s.
    pub boot_delay: Option<HumanDuration>,
    /// Probe interval while the status is unknown or changing. Default: 90s.
    pub retry_interval: Option<HumanDuration>,
    /// Probe interval once the status is settled. Default: 15m.
    pub refresh_interval: Option<HumanDuration>,
    /// Agreeing probes needed to settle the status. Default: 3.
    pub confidence_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// Reservations held at once, in total. Default: 128.
    pub max_reservations: Option<usize>,
    /// Reservations held at once by one peer. Default: 4.
    pub max_reservations_per_peer: Option<usize>,
    /// Reservations held at once by the peers of one IPv4 address or IPv6 /64.
    /// Default: 8.
    pub max_reservations_per_ip: Option<usize>,
    /// Reservations held at once by the peers of one IPv4 /24 or IPv6 /48. Default: 32.
    pub max_reservations_per_subnet: Option<usize>,
    /// Lifetime of a reservation before the peer must renew it. Default: 1h.
    pub reservation_duration: Option<HumanDuration>,
    /// Circuits relayed at once, in total. Default: 16.
    pub max_circuits: Option<usize>,
    /// Circuits relayed at once for one peer. Default: 4.
    pub max_circuits_per_peer: Option<usize>,
    /// Circuits at once from the peers of one IPv4 address or IPv6 /64. Default: 4.
    pub max_circuits_per_ip: Option<usize>,
    /// Circuits at once from the peers of one IPv4 /24 or IPv6 /48. Default: 8.
    pub max_circuits_per_subnet: Option<usize>,
    /// Lifetime of one circuit. Default: 2m.
    pub max_circuit_duration: Option<HumanDuration>,
    /// Bytes relayed by one circuit, both directions together. Default: 16MiB.
    pub max_circuit_bytes: Option<ByteSize>,
    /// Reservation requests per peer. Default: 30 per 2m.
    pub reservation_rate_per_peer: Option<RateFile>,
    /// Reservation requests per source IPv4 address or IPv6 /64. Default: 60 per 1m.
    pub reservation_rate_per_ip: Option<RateFile>,
    /// Circuit requests per source peer. Default: 30 per 2m.
    pub circuit_rate_per_peer: Option<RateFile>,
    /// Circuit requests per source IPv4 address or IPv6 /64. Default: 60 per 1m.
    pub circuit_rate_per_ip: Option<RateFile>,
    /// Bytes per second the relay receives on all its streams together (what it relays,
    /// and its own small DHT and identify traffic), shared round-robin among the
    /// streams that want more; `0` for no budget. Default: 32MiB.
    pub max_bytes_per_second: Option<ByteSize>,
    /// Bytes per second the relay receives on one stream: one direction of one
    /// circuit; `0` for no limit. Default: 1MiB.
    pub circuit_bytes_per_second: Option<ByteSize>,
    /// Who may reserve and open circuits. Default: everyone.
    pub acl: Option<RelayAclFile>,
}

/// `relay.acl`: allow and deny lists. Deny wins; when an allow list is given, a request
/// must match one of them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAclFile {
    /// Peer ids that may use the relay.
    pub allow_peers: Option<Vec<String>>,
    /// Networks (CIDR, such as `192.0.2.0/24` or `2001:db8::/32`) whose sources may use
    /// the relay.
    pub allow_networks: Option<Vec<String>>,
    /// Peer ids refused.
    pub deny_peers: Option<Vec<String>>,
    /// Networks (CIDR) whose sources are refused.
    pub deny_networks: Option<Vec<String>>,
}

/// A token bucket: `limit` requests, refilled one per `interval`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateFile {
    pub limit: u32,
    pub interval: HumanDuration,
}
