//! `network.connection_limits`: how many connections a node keeps, and for how long.

use std::{collections::HashSet, time::Duration};

use libp2p::PeerId;

use super::Checker;
use crate::config::{ConfigError, ConnectionLimits, Role, file::ConnectionLimitsFile};

/// Applies the role's defaults; a limit of 0 would forbid every connection.
pub(super) fn check(
    c: &Checker<'_>,
    role: Role,
    cl: ConnectionLimitsFile,
) -> Result<ConnectionLimits, ConfigError> {
    let max_peers = cl
        .max_peers
        .unwrap_or(if role.is_server() { 1000 } else { 200 });
    let protected_peers = cl
        .protected_peers
        .unwrap_or_default()
        .iter()
        .map(|p| {
            p.parse::<PeerId>().map_err(|e| {
                c.bad(
                    "network.connection_limits.protected_peers",
                    format!("`{p}` is not a peer id: {e}"),
                )
            })
        })
        .collect::<Result<HashSet<_>, _>>()?;
    // A peer holds its connections (see `peering::keep_alive`), so the room between
    // its high watermark and the hard cap is what DHT queries and newcomers use while
    // trimming lets go of others: it keeps a quarter of `max_peers`. Bootstrap nodes
    // and relays hold nothing; they trim only near the cap.
    let high_water = cl.high_water.unwrap_or_else(|| {
        if role.is_server() {
            max_peers * 9 / 10
        } else {
            max_peers / 4
        }
        .max(1)
    });
    let low_water = cl
        .low_water
        .unwrap_or_else(|| (high_water * 7 / 9).min(high_water.saturating_sub(1)));
    let limits = ConnectionLimits {
        max_peers,
        high_water,
        low_water,
        protected_peers,
        max_pending_connections: cl.max_pending_connections.unwrap_or(if role.is_server() {
            128
        } else {
            10
        }),
        idle_timeout: cl
            .connection_grace_period
            .map_or(Duration::from_secs(20), |d| d.0),
        max_connections_per_peer: cl.max_connections_per_peer.unwrap_or(4),
        max_connections_per_ip: cl.max_connections_per_ip.unwrap_or(if role.is_server() {
            16
        } else {
            8
        }),
        max_pending_per_ip: cl
            .max_pending_per_ip
            .unwrap_or(if role.is_server() { 8 } else { 4 }),
        max_pending_per_subnet: cl.max_pending_per_subnet.unwrap_or(if role.is_server() {
            32
        } else {
            8
        }),
        limit_private_sources: cl.limit_private_sources.unwrap_or(false),
        max_memory: cl
            .max_memory
            .map_or(if role.is_server() { 2 << 30 } else { 1 << 30 }, |s| s.0),
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
        (
            "network.connection_limits.max_pending_per_ip",
            limits.max_pending_per_ip,
        ),
        (
            "network.connection_limits.max_pending_per_subnet",
            limits.max_pending_per_subnet,
        ),
    ] {
        if v == 0 {
            return Err(c.bad(key, "is 0; no connection could ever be made".into()));
        }
    }
    if limits.high_water > limits.max_peers {
        return Err(c.bad(
            "network.connection_limits.high_water",
            format!(
                "is {}, above max_peers ({}); trimming would never start",
                limits.high_water, limits.max_peers
            ),
        ));
    }
    if limits.low_water >= limits.high_water {
        return Err(c.bad(
            "network.connection_limits.low_water",
            format!(
                "is {}, not below high_water ({}); trimming needs room between them",
                limits.low_water, limits.high_water
            ),
        ));
    }
    if limits.max_memory != 0 && limits.max_memory < MIN_MEMORY {
        return Err(c.bad(
            "network.connection_limits.max_memory",
            format!(
                "is {} bytes, below 64MiB: the node itself needs more, and would refuse \
                 every connection (0 turns the limit off)",
                limits.max_memory
            ),
        ));
    }
    Ok(limits)
}

/// The smallest `max_memory` a node can run under.
const MIN_MEMORY: u64 = 64 << 20;
