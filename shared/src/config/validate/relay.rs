//! The `relay` section: what a relay grants to the peers it serves.

use std::{collections::HashSet, time::Duration};

use ipnet::IpNet;
use libp2p::PeerId;

use super::{Checker, rate};
use crate::{
    config::{
        ConfigError, DEFAULT_MAX_CIRCUIT_BYTES, MIN_FILE_CIRCUIT_BYTES, RelayLimits, Role,
        file::{RelayAclFile, RelayFile},
    },
    limits::RelayAcl,
};

/// Applies the defaults and checks the rates for every role; the cross-field checks and
/// the warning about circuits too small for files only matter on a relay.
pub(super) fn check(
    c: &mut Checker<'_>,
    role: Role,
    mut r: RelayFile,
) -> Result<RelayLimits, ConfigError> {
    let acl = acl(c, r.acl.take().unwrap_or_default())?;
    let relay = RelayLimits {
        max_reservations: r.max_reservations.unwrap_or(128),
        max_reservations_per_peer: r.max_reservations_per_peer.unwrap_or(4),
        max_reservations_per_ip: r.max_reservations_per_ip.unwrap_or(8),
        max_reservations_per_subnet: r.max_reservations_per_subnet.unwrap_or(32),
        reservation_duration: r
            .reservation_duration
            .map_or(Duration::from_secs(3600), |d| d.0),
        max_circuits: r.max_circuits.unwrap_or(16),
        max_circuits_per_peer: r.max_circuits_per_peer.unwrap_or(4),
        max_circuits_per_ip: r.max_circuits_per_ip.unwrap_or(4),
        max_circuits_per_subnet: r.max_circuits_per_subnet.unwrap_or(8),
        max_circuit_duration: r
            .max_circuit_duration
            .map_or(Duration::from_secs(120), |d| d.0),
        max_circuit_bytes: r
            .max_circuit_bytes
            .map_or(DEFAULT_MAX_CIRCUIT_BYTES, |s| s.0),
        max_bytes_per_second: r.max_bytes_per_second.map_or(32 << 20, |s| s.0),
        circuit_bytes_per_second: r.circuit_bytes_per_second.map_or(1 << 20, |s| s.0),
        acl,
        reservation_rate_per_peer: rate(
            c,
            "relay.reservation_rate_per_peer",
            r.reservation_rate_per_peer,
            30,
            120,
        )?,
        reservation_rate_per_ip: rate(
            c,
            "relay.reservation_rate_per_ip",
            r.reservation_rate_per_ip,
            60,
            60,
        )?,
        circuit_rate_per_peer: rate(
            c,
            "relay.circuit_rate_per_peer",
            r.circuit_rate_per_peer,
            30,
            120,
        )?,
        circuit_rate_per_ip: rate(
            c,
            "relay.circuit_rate_per_ip",
            r.circuit_rate_per_ip,
            60,
            60,
        )?,
    };
    if role == Role::Relay {
        check_relay_limits(&relay).map_err(|(key, msg)| c.bad(key, msg))?;
        if relay.max_circuit_bytes < MIN_FILE_CIRCUIT_BYTES {
            c.warn(
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
    Ok(relay)
}

/// `relay.acl`: peer ids and networks, each entry checked.
fn acl(c: &Checker<'_>, a: RelayAclFile) -> Result<RelayAcl, ConfigError> {
    let peers = |key: &str, list: Option<Vec<String>>| {
        list.unwrap_or_default()
            .iter()
            .map(|p| {
                p.parse::<PeerId>()
                    .map_err(|e| c.bad(key, format!("`{p}` is not a peer id: {e}")))
            })
            .collect::<Result<HashSet<_>, _>>()
    };
    let networks = |key: &str, list: Option<Vec<String>>| {
        list.unwrap_or_default()
            .iter()
            .map(|n| {
                n.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                    c.bad(
                        key,
                        format!(
                            "`{n}` is not a network (CIDR, such as 192.0.2.0/24 or 2001:db8::/32)"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(RelayAcl {
        allow_peers: peers("relay.acl.allow_peers", a.allow_peers)?,
        allow_networks: networks("relay.acl.allow_networks", a.allow_networks)?,
        deny_peers: peers("relay.acl.deny_peers", a.deny_peers)?,
        deny_networks: networks("relay.acl.deny_networks", a.deny_networks)?,
    })
}

/// Cross-field checks of the relay limits; returns the key at fault and why.
fn check_relay_limits(r: &RelayLimits) -> Result<(), (&'static str, String)> {
    for (key, v) in [
        ("relay.max_reservations_per_ip", r.max_reservations_per_ip),
        (
            "relay.max_reservations_per_subnet",
            r.max_reservations_per_subnet,
        ),
        ("relay.max_circuits_per_ip", r.max_circuits_per_ip),
        ("relay.max_circuits_per_subnet", r.max_circuits_per_subnet),
    ] {
        if v == 0 {
            return Err((key, "is 0; every request would be refused".into()));
        }
    }
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
    for (key, d) in [
        ("relay.reservation_duration", r.reservation_duration),
        ("relay.max_circuit_duration", r.max_circuit_duration),
    ] {
        if d.is_zero() {
            return Err((key, "must be longer than 0s".into()));
        }
    }
    Ok(())
}
