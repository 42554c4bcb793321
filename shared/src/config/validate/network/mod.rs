//! The `network` section: whether the DHT runs, the addresses a node listens on and
//! announces, and its subsections (one module each).

mod autonat;
mod connection_limits;
mod dht;
mod gossip;
mod peers;
mod tls;

use libp2p::{Multiaddr, multiaddr::Protocol};

use super::Checker;
use crate::config::{
    ConfigError, NetworkConfig, PeerStoreConfig, Role, default_listen_addresses, file::NetworkFile,
    value::Addr,
};

/// Resolves `enable_dht` (top level) and `network.enable_dht`, which must agree; servers
/// need the DHT.
pub(super) fn enable_dht(
    c: &Checker<'_>,
    role: Role,
    top: Option<bool>,
    network: Option<bool>,
) -> Result<bool, ConfigError> {
    let enable_dht = match (top, network) {
        (Some(a), Some(b)) if a != b => {
            return Err(c.bad(
                "network.enable_dht",
                format!("is {b} but the top-level enable_dht is {a}; keep one of them"),
            ));
        }
        (a, b) => a.or(b).unwrap_or(true),
    };
    if !enable_dht && role.is_server() {
        return Err(c.bad(
            if network.is_some() {
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
    Ok(enable_dht)
}

/// Checks the section in file order; `enable_dht` comes from [`enable_dht`].
pub(super) fn check(
    c: &mut Checker<'_>,
    role: Role,
    n: NetworkFile,
    port: u16,
    enable_dht: bool,
) -> Result<NetworkConfig, ConfigError> {
    let listen_addresses = listen(c, n.listen_addresses, port)?;
    let external_addresses = external(c, n.external_addresses)?;
    let bootstrap_nodes = peers::bootstrap_nodes(c, role, n.bootstrap_nodes, enable_dht)?;
    let relays = peers::relays(
        c,
        role,
        n.relay_nodes,
        n.relay_reservations.as_deref(),
        n.max_relays,
        enable_dht,
    )?;
    let limits = connection_limits::check(c, role, n.connection_limits)?;
    let dht = dht::check(c, n.dht, enable_dht)?;
    let autonat = autonat::check(c, n.autonat)?;
    let tls = tls::check(c, n.tls)?;
    let gossip = gossip::check(c, n.gossip)?;
    let peer_store = PeerStoreConfig {
        persist: role != Role::Bootstrap && n.peer_store.persist.unwrap_or(true),
        capacity: n.peer_store.capacity.unwrap_or(1000),
    };
    if peer_store.capacity == 0 || peer_store.capacity > MAX_PEER_STORE {
        return Err(c.bad(
            "network.peer_store.capacity",
            format!(
                "is {}; it must be between 1 and {MAX_PEER_STORE}",
                peer_store.capacity
            ),
        ));
    }
    let geoip_databases = n.geoip_databases.unwrap_or_default();
    for db in &geoip_databases {
        if !db.is_file() {
            return Err(c.bad(
                "network.geoip_databases",
                format!("{} is not a file", db.display()),
            ));
        }
    }
    Ok(NetworkConfig {
        listen_addresses,
        external_addresses,
        bootstrap_nodes,
        relay_nodes: relays.nodes,
        enable_mdns: role == Role::Peer && n.enable_mdns.unwrap_or(true),
        enable_upnp: role == Role::Peer && n.enable_upnp.unwrap_or(true),
        relay_reservations: relays.reservations,
        max_relays: relays.max_relays,
        limits,
        dht,
        autonat,
        tls,
        gossip,
        peer_store,
        geoip_databases,
    })
}

/// The largest peer store: about 2 KiB per peer in memory and on disk.
const MAX_PEER_STORE: usize = 100_000;

/// `network.listen_addresses`: not empty, and plain transport addresses.
fn listen(
    c: &Checker<'_>,
    list: Option<Vec<Addr>>,
    port: u16,
) -> Result<Vec<Multiaddr>, ConfigError> {
    let listen_addresses = match list {
        Some(list) if list.is_empty() => {
            return Err(c.bad(
                "network.listen_addresses",
                "is empty; a node must listen somewhere (omit the key for the default)".into(),
            ));
        }
        Some(list) => list.into_iter().map(|a| a.0).collect(),
        None => default_listen_addresses(port),
    };
    for a in &listen_addresses {
        if names_a_peer(a) {
            return Err(c.bad(
                "network.listen_addresses",
                format!("{a} must not contain /p2p or /p2p-circuit"),
            ));
        }
    }
    Ok(listen_addresses)
}

/// The most configured external addresses: with the observed ones they fit in the
/// 20-entry lists libp2p's behaviours keep, so none is pushed out.
const MAX_EXTERNAL_ADDRESSES: usize = 20 - crate::limits::MAX_OBSERVED_ADDRESSES;

/// `network.external_addresses`: plain transport addresses.
fn external(c: &Checker<'_>, list: Option<Vec<Addr>>) -> Result<Vec<Multiaddr>, ConfigError> {
    let external_addresses: Vec<Multiaddr> =
        list.unwrap_or_default().into_iter().map(|a| a.0).collect();
    if external_addresses.len() > MAX_EXTERNAL_ADDRESSES {
        return Err(c.bad(
            "network.external_addresses",
            format!(
                "lists {} addresses; at most {MAX_EXTERNAL_ADDRESSES} (libp2p's behaviours keep 20 \
                 external addresses, and {} stay for the addresses AutoNAT servers agree on)",
                external_addresses.len(),
                crate::limits::MAX_OBSERVED_ADDRESSES
            ),
        ));
    }
    for a in &external_addresses {
        if names_a_peer(a) {
            return Err(c.bad(
                "network.external_addresses",
                format!("{a} must be a transport address without /p2p/<peer id>"),
            ));
        }
    }
    Ok(external_addresses)
}

/// Whether `a` contains `/p2p` or `/p2p-circuit`, which a transport address must not.
fn names_a_peer(a: &Multiaddr) -> bool {
    a.iter()
        .any(|p| matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit))
}
