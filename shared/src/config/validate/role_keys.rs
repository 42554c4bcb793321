//! Keys that mean nothing for the running role (warnings), and `bootstrap_mode`, which
//! names the binary a file is for.

use super::Checker;
use crate::config::{
    ConfigError, Role,
    file::{FileConfig, RelayFile},
};

/// Warns about keys that have no effect for `role`, then checks `bootstrap_mode`.
pub(super) fn check(c: &mut Checker<'_>, role: Role, f: &FileConfig) -> Result<(), ConfigError> {
    warn_ignored(c, role, f);
    bootstrap_mode(c, role, f.bootstrap_mode)
}

fn warn_ignored(c: &mut Checker<'_>, role: Role, f: &FileConfig) {
    // Keys that only mean something to peers.
    if role != Role::Peer {
        for (key, set) in [
            ("download_dir", f.download_dir.is_some()),
            ("max_storage_size", f.max_storage_size.is_some()),
            ("min_file_size", f.min_file_size.is_some()),
            ("upload_rate_limit", f.upload_rate_limit.is_some()),
            (
                "replication",
                f.replication.max_concurrent_fetches.is_some()
                    || f.replication.fetch_deadline.is_some()
                    || f.replication.max_share_per_publisher.is_some(),
            ),
            (
                "serving",
                f.serving.max_concurrent_per_peer.is_some() || f.serving.max_queued.is_some(),
            ),
            ("network.enable_mdns", f.network.enable_mdns == Some(true)),
            ("network.enable_upnp", f.network.enable_upnp == Some(true)),
            ("network.relay_nodes", f.network.relay_nodes.is_some()),
            (
                "network.relay_reservations",
                f.network.relay_reservations.is_some(),
            ),
            ("network.max_relays", f.network.max_relays.is_some()),
            (
                "network.gossip",
                f.network.gossip.announcement_rate_per_sender.is_some()
                    || f.network.gossip.message_rate_per_sender.is_some(),
            ),
        ] {
            if set {
                c.warn(key, format!("has no effect on {}; ignored", role.binary()));
            }
        }
    }
    if role != Role::Relay && relay_section_set(&f.relay) {
        c.warn(
            "relay",
            format!("relay limits have no effect on {}; ignored", role.binary()),
        );
    }
}

/// `bootstrap_mode` names which binary a file is for.
fn bootstrap_mode(c: &Checker<'_>, role: Role, set: Option<bool>) -> Result<(), ConfigError> {
    match (role, set) {
        (Role::Bootstrap, Some(false)) => Err(c.bad(
            "bootstrap_mode",
            "is false, but jantar-bootstrap always runs in bootstrap mode; remove the key or set it to true".into(),
        )),
        (Role::Relay | Role::Peer, Some(true)) => Err(c.bad(
            "bootstrap_mode",
            format!(
                "is true, but this is {}; run this config with jantar-bootstrap",
                role.binary()
            ),
        )),
        _ => Ok(()),
    }
}

fn relay_section_set(r: &RelayFile) -> bool {
    let RelayFile {
        max_reservations,
        max_reservations_per_peer,
        max_reservations_per_ip,
        max_reservations_per_subnet,
        reservation_duration,
        max_circuits,
        max_circuits_per_peer,
        max_circuits_per_ip,
        max_circuits_per_subnet,
        max_circuit_duration,
        max_circuit_bytes,
        max_bytes_per_second,
        circuit_bytes_per_second,
        acl,
        reservation_rate_per_peer,
        reservation_rate_per_ip,
        circuit_rate_per_peer,
        circuit_rate_per_ip,
    } = r;
    max_reservations.is_some()
        || max_reservations_per_peer.is_some()
        || max_reservations_per_ip.is_some()
        || max_reservations_per_subnet.is_some()
        || reservation_duration.is_some()
        || max_circuits.is_some()
        || max_circuits_per_peer.is_some()
        || max_circuits_per_ip.is_some()
        || max_circuits_per_subnet.is_some()
        || max_circuit_duration.is_some()
        || max_circuit_bytes.is_some()
        || max_bytes_per_second.is_some()
        || circuit_bytes_per_second.is_some()
        || acl.is_some()
        || reservation_rate_per_peer.is_some()
        || reservation_rate_per_ip.is_some()
        || circuit_rate_per_peer.is_some()
        || circuit_rate_per_ip.is_some()
}
