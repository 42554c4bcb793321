//! What the admin endpoint reports (`/status`, `/dht/stats`, `/files`, `/messages`), as
//! serde types shared by the node, the `jantar-peer` client commands and tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the node believes about its own reachability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatStatus {
    Unknown,
    Public,
    Private,
}

impl NatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NatStatus::Unknown => "unknown",
            NatStatus::Public => "public",
            NatStatus::Private => "private",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    Direct,
    Relayed,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Direct => "direct",
            ConnectionKind::Relayed => "relayed",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionStatus {
    pub peer_id: String,
    pub address: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub kind: ConnectionKind,
    pub age_secs: u64,
}

/// A reservation this peer holds on a relay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReservationStatus {
    pub relay: String,
    /// `pending` until the relay accepts, then `active`.
    pub state: String,
    /// The circuit address others reach this peer at.
    pub address: Option<String>,
}

/// What a relay is carrying.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RelayServerStatus {
    /// False until the relay has a confirmed external address to advertise.
    pub serving: bool,
    pub reservations: usize,
    pub circuits: usize,
    /// Reservation requests refused since start (limits, rate limits).
    pub reservations_denied: u64,
    /// Circuit requests refused since start.
    pub circuits_denied: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub role: String,
    pub version: String,
    pub peer_id: String,
    pub ready: bool,
    pub listen_addresses: Vec<String>,
    pub external_addresses: Vec<String>,
    pub nat_status: NatStatus,
    /// `client` or `server`; absent when the DHT is disabled.
    pub dht_mode: Option<String>,
    pub connected_peers: usize,
    pub connections: Vec<ConnectionStatus>,
    /// Relays this peer holds (or is requesting) reservations on.
    pub reservations: Vec<ReservationStatus>,
    /// Relays this peer knows of, from config, the DHT or identify.
    pub known_relays: Vec<String>,
    /// Jantar peers discovered through the DHT or mDNS.
    pub discovered_peers: Vec<String>,
    pub relay: Option<RelayServerStatus>,
    /// Connected peers with their scores, best first (at most 200; `GET /peers` lists
    /// every known peer).
    #[serde(default)]
    pub peers: Vec<PeerScoreStatus>,
    /// The connection manager's watermarks and the peer store's size.
    #[serde(default)]
    pub peer_management: PeerManagementStatus,
    /// Signed releases followed (peers with trusted release keys).
    #[serde(default)]
    pub update: Option<UpdateStatus>,
}

/// What a peer knows of signed releases and where applying the newest stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateStatus {
    /// `false`, `notify` or `apply`.
    pub auto_update: String,
    pub channel: String,
    /// The version this binary reports.
    pub running_version: String,
    /// This machine's target (`linux-x86_64`).
    pub target: String,
    pub trusted_keys: usize,
    pub threshold: usize,
    /// The release key rotations taken (0: the configured keys).
    #[serde(default)]
    pub root_sequence: u64,
    /// The newest release this node verified.
    pub newest: Option<ReleaseInfo>,
    /// `idle`, `available` (notify), `fetching`, `staged`, `applying`, `up_to_date`,
    /// `not_in_rollout`, `no_target`, `rolled_back`, `failed`.
    pub state: String,
    /// What the state is about (an error, the version rolled back, ...).
    pub detail: Option<String>,
    /// The highest release sequence applied (confirmed or rolled back).
    pub applied_sequence: Option<u64>,
    /// Release manifests refused since start, and the last reason.
    pub refused: u64,
    pub last_refused: Option<String>,
}

/// A verified release.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub version: String,
    pub sequence: u64,
    /// Unix seconds.
    pub expires: u64,
    pub rollout_percent: u8,
    pub targets: Vec<String>,
}

/// A peer as the connection manager sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerScoreStatus {
    pub peer_id: String,
    pub connected: bool,
    /// Trimming never closes it (configured, named, a transfer, a reservation).
    pub protected: bool,
    /// Trimming released it: its connections close once idle.
    #[serde(default)]
    pub released: bool,
    /// Its network group: `AS<n>`, an IPv4 /16, an IPv6 /32, or the relay it is
    /// reached through.
    pub group: String,
    /// ISO country code, from a configured GeoIP database.
    pub country: Option<String>,
    pub asn: Option<u32>,
    /// Smoothed ping round trip.
    pub rtt_ms: Option<f64>,
    /// Distance told by RTT: `local`, `regional`, `continental`, `distant`, `unknown`.
    pub rtt_band: crate::peering::score::RttBand,
    /// Age of the present connection (0 when not connected).
    pub connected_secs: u64,
    pub score: crate::peering::score::Score,
    pub addresses: Vec<String>,
    /// Unix seconds.
    pub last_seen: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerManagementStatus {
    pub low_water: u32,
    pub high_water: u32,
    pub max_peers: u32,
    /// Peers counted against the watermarks (configured infrastructure and released
    /// peers are not).
    pub counted_peers: usize,
    /// Peers trimming released that are still connected, finishing what they do.
    #[serde(default)]
    pub releasing: usize,
    pub known_peers: usize,
    /// Peers released or closed for being above the high watermark since start.
    pub trimmed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketStatus {
    /// log2 of the XOR distance covered by the bucket.
    pub distance: u32,
    pub peers: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DhtStats {
    pub enabled: bool,
    pub mode: Option<String>,
    pub routing_table_size: usize,
    pub buckets: Vec<BucketStatus>,
    /// Inbound requests served, by kind (`find_node`, `get_providers`, ...).
    pub queries_served: BTreeMap<String, u64>,
    pub queries_served_total: u64,
    /// Records stored for others (always 0 on bootstrap nodes).
    pub records_stored: usize,
    /// Keys this node itself announces as a provider.
    pub provided_keys: usize,
    /// Keys for which this node stores provider records from others.
    pub provider_keys_stored: usize,
    pub bootstrapped: bool,
}

/// Where a file a peer holds came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Shared by the user from their own disk; served from where it lies.
    Shared,
    /// Fetched on the user's request.
    Fetched,
    /// Replicated by policy; evictable.
    Replica,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Shared => "shared",
            Origin::Fetched => "fetched",
            Origin::Replica => "replica",
        }
    }
}

/// A file the peer holds (`GET /files`, `POST /files`, `DELETE /files/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileInfo {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub origin: Origin,
    pub path: String,
}

/// The files held and the fetches running (`GET /files`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileList {
    pub files: Vec<FileInfo>,
    pub fetching: Vec<Progress>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchState {
    Fetching,
    Complete,
    Failed,
}

/// One fetch (`POST /files/{id}/get`, `GET /files/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    pub id: String,
    pub name: String,
    pub state: FetchState,
    pub size: Option<u64>,
    pub chunks_total: Option<u32>,
    pub chunks_done: u32,
    /// Chunks found already verified in a partial file from an earlier attempt.
    pub chunks_resumed: u32,
    pub providers: usize,
    pub bad_providers: Vec<String>,
    pub path: String,
    pub error: Option<String>,
}

/// A message received or sent (`GET /messages`, `POST /messages`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageRecord {
    pub seq: u64,
    pub from: String,
    pub sent_at: u64,
    pub received_at: u64,
    pub text: String,
}
