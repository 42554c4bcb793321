//! `network.dht`: the Kademlia DHT's timing and sizes.

use std::time::Duration;

use super::Checker;
use crate::config::{ConfigError, DhtConfig, file::DhtFile};

/// Applies the defaults; packets must hold a DHT message and intervals be positive.
pub(super) fn check(c: &Checker<'_>, d: DhtFile, enabled: bool) -> Result<DhtConfig, ConfigError> {
    let dht = DhtConfig {
        enabled,
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
        return Err(c.bad(
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
            return Err(c.bad(key, "must be longer than 0s".into()));
        }
    }
    Ok(dht)
}
