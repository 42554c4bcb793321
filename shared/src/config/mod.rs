//! Configuration shared by all roles.
//!
//! Two layers: [`file::FileConfig`] is the YAML file as written (every key optional);
//! [`Config::from_file`] applies role defaults, command-line/environment overrides and
//! cross-field checks, and produces the validated [`Config`] the node runs on. Errors
//! name the file, line and key; keys that mean nothing for a role become warnings.

mod error;
pub mod file;
pub mod value;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use error::ConfigError;
use file::{FileConfig, RateFile};
use libp2p::{Multiaddr, multiaddr::Protocol};
pub use value::PeerAddr;

/// The embedded default config for peers: mDNS and DHT on, no bootstrap nodes.
pub const DEFAULT_PEER_CONFIG: &str = include_str!("../../defaults/peer.cfg");
/// The embedded default config for bootstrap nodes.
pub const DEFAULT_BOOTSTRAP_CONFIG: &str = include_str!("../../defaults/bootstrap.cfg");
/// The embedded default config for relays.
pub const DEFAULT_RELAY_CONFIG: &str = include_str!("../../defaults/relay.cfg");

/// Which of the three executables is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Bootstrap,
    Relay,
    Peer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bootstrap => "bootstrap",
            Role::Relay => "relay",
            Role::Peer => "peer",
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Role::Bootstrap => "jantar-bootstrap",
            Role::Relay => "jantar-relay",
            Role::Peer => "jantar-peer",
        }
    }

    pub fn default_config(self) -> &'static str {
        match self {
            Role::Bootstrap => DEFAULT_BOOTSTRAP_CONFIG,
            Role::Relay => DEFAULT_RELAY_CONFIG,
            Role::Peer => DEFAULT_PEER_CONFIG,
        }
    }

    fn is_server(self) -> bool {
        matches!(self, Role::Bootstrap | Role::Relay)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Values given on the command line or in `JANTAR_*` environment variables; they win
/// over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub admin_listen: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

/// Where environment-derived defaults come from; tests feed a map instead of the real
/// environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<&str, &str, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

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
}

#[derive(Clone, Debug)]
pub struct DhtConfig {
    pub enabled: bool,
    pub refresh_interval: Duration,
    pub query_timeout: Duration,
    pub max_packet_size: usize,
    pub max_records: usize,
    pub max_provider_keys: usize,
    pub discovery_interval: Duration,
}

#[derive(Clone, Debug)]
pub struct AutonatConfig {
    pub only_global_ips: bool,
    pub max_clients: usize,
    pub max_clients_per_peer: usize,
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
    pub reservation_duration: Duration,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
    pub reservation_rate_per_peer: Rate,
    pub reservation_rate_per_ip: Rate,
    pub circuit_rate_per_peer: Rate,
    pub circuit_rate_per_ip: Rate,
}

/// The validated runtime configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    /// The file it came from; `None` for the embedded default.
    pub source: Option<PathBuf>,
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub download_dir: PathBuf,
    pub max_storage_size: u64,
    pub min_file_size: u64,
    pub upload_rate_limit: u64,
    pub shutdown_grace_period: Duration,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub log: LogConfig,
    pub network: NetworkConfig,
    pub relay: RelayLimits,
}

/// A key that is valid but has no effect for this role, or a value worth a second look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A loaded config plus the warnings to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Reads and validates `path`, or the role's embedded default when `path` is `None`.
    pub fn load(
        role: Role,
        path: Option<&Path>,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Result<Loaded, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::parse(role, &text, Some(path), overrides, env)
            }
            None => Self::parse(role, role.default_config(), None, overrides, env),
        }
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(
        role: Role,
        text: &str,
        path: Option<&Path>,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Result<Loaded, ConfigError> {
        let origin = error::Origin::new(path, text);
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| origin.yaml_error(&e))?
        };
        Self::from_file(role, file, &origin, overrides, env)
    }

    fn from_file(
        role: Role,
        f: FileConfig,
        origin: &error::Origin<'_>,
        o: &Overrides,
        env: &dyn Env,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let mut warn = |key: &str, msg: String| {
            warnings.push(Warning(origin.describe_key(key, &msg)));
        };
        let bad = |key: &str, msg: String| origin.invalid(key, msg);

        // Keys that only mean something to peers.
        if role != Role::Peer {
            for (key, set) in [
                ("download_dir", f.download_dir.is_some()),
                ("max_storage_size", f.max_storage_size.is_some()),
                ("min_file_size", f.min_file_size.is_some()),
                ("upload_rate_limit", f.upload_rate_limit.is_some()),
                ("network.enable_mdns", f.network.enable_mdns == Some(true)),
                ("network.enable_upnp", f.network.enable_upnp == Some(true)),
                ("network.relay_nodes", f.network.relay_nodes.is_some()),
                (
                    "network.relay_reservations",
                    f.network.relay_reservations.is_some(),
                ),
                ("network.max_relays", f.network.max_relays.is_some()),
            ] {
                if set {
                    warn(key, format!("has no effect on {}; ignored", role.binary()));
                }
            }
        }
        if role != Role::Relay && relay_section_set(&f.relay) {
            warn(
                "relay",
                format!("relay limits have no effect on {}; ignored", role.binary()),
            );
        }
        if f.auto_update == Some(true) {
            warn(
                "auto_update",
                "Jantar does not update itself; install updates with your package manager".into(),
            );
        }

        // bootstrap_mode names which binary a file is for.
        match (role, f.bootstrap_mode) {
            (Role::Bootstrap, Some(false)) => {
                return Err(bad(
                    "bootstrap_mode",
                    "is false, but jantar-bootstrap always runs in bootstrap mode; remove the key or set it to true".into(),
                ));
            }
            (Role::Relay | Role::Peer, Some(true)) => {
                return Err(bad(
                    "bootstrap_mode",
                    format!(
                        "is true, but this is {}; run this config with jantar-bootstrap",
                        role.binary()
                    ),
                ));
            }
            _ => {}
        }

        let enable_dht = match (f.enable_dht, f.network.enable_dht) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(
                    "network.enable_dht",
                    format!("is {b} but the top-level enable_dht is {a}; keep one of them"),
                ));
            }
            (a, b) => a.or(b).unwrap_or(true),
        };
        if !enable_dht && role.is_server() {
            return Err(bad(
                if f.network.enable_dht.is_some() {
                    "network.enable_dht"
                } else {
                    "enable_dht"
                },
                format!(
                    "is false, but {} needs the DHT to do its job",
                    role.binary()
                ),
            ));
        }

        let port = o
            .port
            .or(f.port)
            .unwrap_or(if role.is_server() { 4001 } else { 0 });
        let data_dir = match o.data_dir.clone().or(f.data_dir) {
            Some(d) => d,
            None => default_data_dir(role, env).ok_or_else(|| {
                bad(
                    "data_dir",
                    "is not set and neither STATE_DIRECTORY, XDG_DATA_HOME nor HOME is; set data_dir".into(),
                )
            })?,
        };
        let key_file = f.key_file.unwrap_or_else(|| data_dir.join("identity.key"));
        let download_dir = f.download_dir.unwrap_or_else(|| data_dir.join("downloads"));

        let admin_listen = match o.admin_listen.as_deref().or(f.admin.listen.as_deref()) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            Some("off") => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                bad(
                    "admin.listen",
                    format!("{s:?} is not an address like `127.0.0.1:9090` (or `off`)"),
                )
            })?),
        };

        let admin_token = f.admin.token.filter(|t| !t.is_empty());
        if let Some(a) = admin_listen
            && !a.ip().is_loopback()
            && admin_token.is_none()
        {
            return Err(bad(
                "admin.listen",
                format!(
                    "{a} is reachable from other hosts; set admin.token so requests must carry it"
                ),
            ));
        }
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(bad("admin.token", "is shorter than 16 characters".into()));
        }
        let level = o
            .log_level
            .clone()
            .or(f.log.level)
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(bad(
                "log.level",
                format!("{level:?} is not a log level (error, warn, info, debug, trace) or filter"),
            ));
        }
        let format = match o.log_format.as_deref().or(f.log.format.as_deref()) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(bad(
                    "log.format",
                    format!("{other:?} is not `text` or `json`"),
                ));
            }
        };

        let n = f.network;
        let listen_addresses = match n.listen_addresses {
            Some(list) if list.is_empty() => {
                return Err(bad(
                    "network.listen_addresses",
                    "is empty; a node must listen somewhere (omit the key for the default)".into(),
                ));
            }
            Some(list) => list.into_iter().map(|a| a.0).collect(),
            None => default_listen_addresses(port),
        };
        for a in &listen_addresses {
            if a.iter()
                .any(|p| matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit))
            {
                return Err(bad(
                    "network.listen_addresses",
                    format!("{a} must not contain /p2p or /p2p-circuit"),
                ));
            }
        }
        let external_addresses: Vec<Multiaddr> = n
            .external_addresses
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.0)
            .collect();
        for a in &external_addresses {
            if a.iter()
                .any(|p| matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit))
            {
                return Err(bad(
                    "network.external_addresses",
                    format!("{a} must be a transport address without /p2p/<peer id>"),
                ));
            }
        }
        let bootstrap_nodes = n.bootstrap_nodes.unwrap_or_default();
        for b in &bootstrap_nodes {
            if b.addr.is_empty() {
                return Err(bad(
                    "network.bootstrap_nodes",
                    format!(
                        "{b} has no transport address; a bootstrap node needs one such as /ip4/<ip>/tcp/4001/p2p/<peer id>"
                    ),
                ));
            }
        }
        let relay_nodes = n.relay_nodes.unwrap_or_default();
        if role == Role::Peer && !enable_dht && !bootstrap_nodes.is_empty() {
            warn(
                "network.bootstrap_nodes",
                "are only used by the DHT, which is disabled".into(),
            );
        }
        let relay_reservations = match n.relay_reservations.as_deref() {
            None | Some("auto") => RelayReservations::Auto,
            Some("always") => RelayReservations::Always,
            Some("never") => RelayReservations::Never,
            Some(other) => {
                return Err(bad(
                    "network.relay_reservations",
                    format!("{other:?} is not `auto`, `always` or `never`"),
                ));
            }
        };
        if role == Role::Peer
            && relay_reservations == RelayReservations::Always
            && relay_nodes.is_empty()
            && !enable_dht
        {
            return Err(bad(
                "network.relay_reservations",
                "is `always`, but there are no relay_nodes and the DHT (where relays are found) is disabled".into(),
            ));
        }
        if role == Role::Peer
            && !enable_dht
            && let Some(r) = relay_nodes.iter().find(|r| r.addr.is_empty())
        {
            return Err(bad(
                "network.relay_nodes",
                format!(
                    "{r} has no transport address and the DHT, where it would be looked up, is disabled"
                ),
            ));
        }
        let max_relays = n.max_relays.unwrap_or(2);
        if max_relays == 0 && relay_reservations == RelayReservations::Always {
            return Err(bad(
                "network.max_relays",
                "is 0 but relay_reservations is `always`".into(),
            ));
        }

        let cl = n.connection_limits;
        let limits =
            ConnectionLimits {
                max_peers: cl
                    .max_peers
                    .unwrap_or(if role.is_server() { 1000 } else { 50 }),
                max_pending_connections: cl
                    .max_pending_connections
                    .unwrap_or(if role.is_server() { 128 } else { 10 }),
                idle_timeout: cl
                    .connection_grace_period
                    .map_or(Duration::from_secs(20), |d| d.0),
                max_connections_per_peer: cl.max_connections_per_peer.unwrap_or(4),
                max_connections_per_ip: cl.max_connections_per_ip.unwrap_or(if role.is_server() {
                    16
                } else {
                    8
                }),
            };
        for (key, v) in [
            ("network.connection_limits.max_peers", limits.max_peers),
            (
                "network.connection_limits.max_pending_connections",
                limits.max_pending_connections,
            ),
            (
                "network.connection_limits.max_connections_per_peer",
                limits.max_connections_per_peer,
            ),
            (
                "network.connection_limits.max_connections_per_ip",
                limits.max_connections_per_ip,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "is 0; no connection could ever be made".into()));
            }
        }

        let d = n.dht;
        let dht = DhtConfig {
            enabled: enable_dht,
            refresh_interval: d.refresh_interval.map_or(Duration::from_secs(300), |d| d.0),
            query_timeout: d.query_timeout.map_or(Duration::from_secs(30), |d| d.0),
            max_packet_size: d.max_packet_size.map_or(16 * 1024, |s| s.0 as usize),
            max_records: d.max_records.unwrap_or(1024),
            max_provider_keys: d.max_provider_keys.unwrap_or(1024),
            discovery_interval: d
                .discovery_interval
                .map_or(Duration::from_secs(30), |d| d.0),
        };
        if dht.max_packet_size < 1024 {
            return Err(bad(
                "network.dht.max_packet_size",
                "is below 1KiB; DHT messages would not fit".into(),
            ));
        }
        for (key, v) in [
            ("network.dht.refresh_interval", dht.refresh_interval),
            ("network.dht.query_timeout", dht.query_timeout),
            ("network.dht.discovery_interval", dht.discovery_interval),
        ] {
            if v.is_zero() {
                return Err(bad(key, "must be longer than 0s".into()));
            }
        }

        let a = n.autonat;
        let autonat = AutonatConfig {
            only_global_ips: a.only_global_ips.unwrap_or(true),
            max_clients: a.max_clients.unwrap_or(30),
            max_clients_per_peer: a.max_clients_per_peer.unwrap_or(3),
            throttle_period: a.throttle_period.map_or(Duration::from_secs(60), |d| d.0),
            boot_delay: a.boot_delay.map_or(Duration::from_secs(15), |d| d.0),
            retry_interval: a.retry_interval.map_or(Duration::from_secs(90), |d| d.0),
            refresh_interval: a
                .refresh_interval
                .map_or(Duration::from_secs(15 * 60), |d| d.0),
            confidence_max: a.confidence_max.unwrap_or(3),
        };
        if autonat.max_clients_per_peer > autonat.max_clients {
            return Err(bad(
                "network.autonat.max_clients_per_peer",
                format!(
                    "({}) is larger than network.autonat.max_clients ({})",
                    autonat.max_clients_per_peer, autonat.max_clients
                ),
            ));
        }

        let tls = TlsConfig {
            certificate: match (n.tls.certificate, n.tls.private_key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(bad(
                        "network.tls.certificate",
                        "is set without network.tls.private_key; give both or neither".into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(bad(
                        "network.tls.private_key",
                        "is set without network.tls.certificate; give both or neither".into(),
                    ));
                }
            },
            trusted_certificates: n.tls.trusted_certificates.unwrap_or_default(),
        };

        let r = f.relay;
        let rate = |key: &str, v: Option<RateFile>, limit: u32, secs: u64| {
            let (limit, interval) = v.map_or((limit, Duration::from_secs(secs)), |r| {
                (r.limit, r.interval.0)
            });
            let Some(limit) = std::num::NonZeroU32::new(limit) else {
                return Err(bad(
                    &format!("relay.{key}.limit"),
                    "must be at least 1".into(),
                ));
            };
            if interval.is_zero() {
                return Err(bad(
                    &format!("relay.{key}.interval"),
                    "must be longer than 0s".into(),
                ));
            }
            Ok(Rate { limit, interval })
        };
        let relay = RelayLimits {
            max_reservations: r.max_reservations.unwrap_or(128),
            max_reservations_per_peer: r.max_reservations_per_peer.unwrap_or(4),
            reservation_duration: r
                .reservation_duration
                .map_or(Duration::from_secs(3600), |d| d.0),
            max_circuits: r.max_circuits.unwrap_or(16),
            max_circuits_per_peer: r.max_circuits_per_peer.unwrap_or(4),
            max_circuit_duration: r
                .max_circuit_duration
                .map_or(Duration::from_secs(120), |d| d.0),
            max_circuit_bytes: r
                .max_circuit_bytes
                .map_or(DEFAULT_MAX_CIRCUIT_BYTES, |s| s.0),
            reservation_rate_per_peer: rate(
                "reservation_rate_per_peer",
                r.reservation_rate_per_peer,
                30,
                120,
            )?,
            reservation_rate_per_ip: rate(
                "reservation_rate_per_ip",
                r.reservation_rate_per_ip,
                60,
                60,
            )?,
            circuit_rate_per_peer: rate("circuit_rate_per_peer", r.circuit_rate_per_peer, 30, 120)?,
            circuit_rate_per_ip: rate("circuit_rate_per_ip", r.circuit_rate_per_ip, 60, 60)?,
        };
        if role == Role::Relay {
            check_relay_limits(&relay).map_err(|(key, msg)| bad(key, msg))?;
            if role == Role::Relay && relay.max_circuit_bytes < MIN_FILE_CIRCUIT_BYTES {
                warn(
                    "relay.max_circuit_bytes",
                    format!(
                        "{} bytes is less than two file chunks ({MIN_FILE_CIRCUIT_BYTES} bytes): \
                         files cannot cross this relay, only hole-punch coordination and small \
                         messages",
                        relay.max_circuit_bytes
                    ),
                );
            }
        }

        let config = Config {
            role,
            source: origin.path().map(Path::to_path_buf),
            name: f.name.unwrap_or_else(|| role.binary().to_string()),
            port,
            data_dir,
            key_file,
            download_dir,
            max_storage_size: f.max_storage_size.map_or(1 << 30, |s| s.0),
            min_file_size: f.min_file_size.map_or(0, |s| s.0),
            upload_rate_limit: f.upload_rate_limit.map_or(0, |s| s.0),
            shutdown_grace_period: f
                .shutdown_grace_period
                .map_or(Duration::from_secs(10), |d| d.0),
            admin_listen,
            admin_token,
            log: LogConfig { level, format },
            network: NetworkConfig {
                listen_addresses,
                external_addresses,
                bootstrap_nodes,
                relay_nodes,
                enable_mdns: role == Role::Peer && n.enable_mdns.unwrap_or(true),
                enable_upnp: role == Role::Peer && n.enable_upnp.unwrap_or(true),
                relay_reservations,
                max_relays,
                limits,
                dht,
                autonat,
                tls,
            },
            relay,
        };
        Ok(Loaded { config, warnings })
    }
}

/// Cross-field checks of the relay limits; returns the key at fault and why.
/// Default `relay.max_circuit_bytes`: room for 16 file chunks per circuit.
/// Together with `relay.circuit_rate_per_peer` (30 circuits per 2 min) this
/// caps what one peer can relay at about 4 MiB/s.
pub const DEFAULT_MAX_CIRCUIT_BYTES: u64 = 16 * 1024 * 1024;
/// Below this a circuit cannot carry file chunks reliably (a chunk is 1 MiB,
/// and the relay counts both directions).
pub const MIN_FILE_CIRCUIT_BYTES: u64 = 2 * crate::files::id::CHUNK_SIZE as u64;

fn check_relay_limits(r: &RelayLimits) -> Result<(), (&'static str, String)> {
    if r.max_reservations_per_peer > r.max_reservations {
        return Err((
            "relay.max_reservations_per_peer",
            format!(
                "({}) is larger than relay.max_reservations ({})",
                r.max_reservations_per_peer, r.max_reservations
            ),
        ));
    }
    if r.max_circuits_per_peer > r.max_circuits {
        return Err((
            "relay.max_circuits_per_peer",
            format!(
                "({}) is larger than relay.max_circuits ({})",
                r.max_circuits_per_peer, r.max_circuits
            ),
        ));
    }
    if r.max_circuit_duration.as_secs() > u64::from(u32::MAX) {
        return Err(("relay.max_circuit_duration", "is too long".into()));
    }
    if r.reservation_duration.is_zero() {
        return Err((
            "relay.reservation_duration",
            "must be longer than 0s".into(),
        ));
    }
    if r.max_circuit_duration.is_zero() {
        return Err((
            "relay.max_circuit_duration",
            "must be longer than 0s".into(),
        ));
    }
    Ok(())
}

fn relay_section_set(r: &file::RelayFile) -> bool {
    let file::RelayFile {
        max_reservations,
        max_reservations_per_peer,
        reservation_duration,
        max_circuits,
        max_circuits_per_peer,
        max_circuit_duration,
        max_circuit_bytes,
        reservation_rate_per_peer,
        reservation_rate_per_ip,
        circuit_rate_per_peer,
        circuit_rate_per_ip,
    } = r;
    max_reservations.is_some()
        || max_reservations_per_peer.is_some()
        || reservation_duration.is_some()
        || max_circuits.is_some()
        || max_circuits_per_peer.is_some()
        || max_circuit_duration.is_some()
        || max_circuit_bytes.is_some()
        || reservation_rate_per_peer.is_some()
        || reservation_rate_per_ip.is_some()
        || circuit_rate_per_peer.is_some()
        || circuit_rate_per_ip.is_some()
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_DATA_HOME/jantar/<role>`, else
/// `~/.local/share/jantar/<role>`.
pub fn default_data_dir(role: Role, env: &dyn Env) -> Option<PathBuf> {
    if let Some(dir) = env.var("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        return dir.split(':').next().map(PathBuf::from);
    }
    let base = env
        .var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".local/share")))?;
    Some(base.join("jantar").join(role.as_str()))
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

#[cfg(test)]
mod tests;
