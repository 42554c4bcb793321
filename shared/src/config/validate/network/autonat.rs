//! `network.autonat`: serving dial-backs to others and probing our own reachability.

use std::time::Duration;

use super::Checker;
use crate::config::{AutonatConfig, ConfigError, file::AutonatFile};

/// Applies the defaults; the per-peer limit may not exceed the total.
pub(super) fn check(c: &Checker<'_>, a: AutonatFile) -> Result<AutonatConfig, ConfigError> {
    let autonat = AutonatConfig {
        only_global_ips: a.only_global_ips.unwrap_or(true),
        max_clients: a.max_clients.unwrap_or(30),
        max_clients_per_peer: a.max_clients_per_peer.unwrap_or(3),
        max_clients_per_ip: a.max_clients_per_ip.unwrap_or(2),
        max_clients_per_subnet: a.max_clients_per_subnet.unwrap_or(4),
        address_confirmations: a.address_confirmations.unwrap_or(2),
        throttle_period: a.throttle_period.map_or(Duration::from_secs(60), |d| d.0),
        boot_delay: a.boot_delay.map_or(Duration::from_secs(15), |d| d.0),
        retry_interval: a.retry_interval.map_or(Duration::from_secs(90), |d| d.0),
        refresh_interval: a
            .refresh_interval
            .map_or(Duration::from_secs(15 * 60), |d| d.0),
        confidence_max: a.confidence_max.unwrap_or(3),
    };
    for (key, v) in [
        (
            "network.autonat.max_clients_per_ip",
            autonat.max_clients_per_ip,
        ),
        (
            "network.autonat.max_clients_per_subnet",
            autonat.max_clients_per_subnet,
        ),
    ] {
        if v == 0 {
            return Err(c.bad(key, "is 0; no inbound connection would be served".into()));
        }
    }
    if autonat.address_confirmations == 0 {
        return Err(c.bad(
            "network.autonat.address_confirmations",
            "is 0; at least one server must report an address".into(),
        ));
    }
    if autonat.max_clients_per_peer > autonat.max_clients {
        return Err(c.bad(
            "network.autonat.max_clients_per_peer",
            format!(
                "({}) is larger than network.autonat.max_clients ({})",
                autonat.max_clients_per_peer, autonat.max_clients
            ),
        ));
    }
    Ok(autonat)
}
