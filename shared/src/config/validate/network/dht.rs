//! `network.dht`: the Kademlia DHT's timing, sizes and per-subnet limits.

use std::time::Duration;

use super::Checker;
use crate::config::{ConfigError, DhtConfig, file::DhtFile};

/// Kademlia's alpha by default, as rust-libp2p sets it.
const DEFAULT_PARALLELISM: usize = 3;
/// More in flight than this is a flood of one lookup's own making.
const MAX_PARALLELISM: usize = 32;

/// Applies the defaults; packets must hold a DHT message and intervals be positive.
pub(super) fn check(
    c: &mut Checker<'_>,
    d: DhtFile,
    enabled: bool,
) -> Result<DhtConfig, ConfigError> {
    let parallelism = d.parallelism.unwrap_or(DEFAULT_PARALLELISM);
    let parallelism = std::num::NonZeroUsize::new(parallelism)
        .filter(|p| p.get() <= MAX_PARALLELISM)
        .ok_or_else(|| {
            c.bad(
                "network.dht.parallelism",
                format!("is {parallelism}; it must be 1 to {MAX_PARALLELISM}"),
            )
        })?;
    let dht = DhtConfig {
        enabled,
        refresh_interval: d.refresh_interval.map_or(Duration::from_secs(300), |d| d.0),
        query_timeout: d.query_timeout.map_or(Duration::from_secs(30), |d| d.0),
        max_packet_size: d.max_packet_size.map_or(16 * 1024, |s| s.0 as usize),
        max_provider_keys: d.max_provider_keys.unwrap_or(1024),
        max_peers_per_subnet_per_bucket: d.max_peers_per_subnet_per_bucket.unwrap_or(2),
        max_peers_per_subnet: d.max_peers_per_subnet.unwrap_or(8),
        limit_private_subnets: d.limit_private_subnets.unwrap_or(false),
        discovery_interval: d
            .discovery_interval
            .map_or(Duration::from_secs(30), |d| d.0),
        parallelism,
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
    for (key, v) in [
        (
            "network.dht.max_peers_per_subnet_per_bucket",
            dht.max_peers_per_subnet_per_bucket,
        ),
        ("network.dht.max_peers_per_subnet", dht.max_peers_per_subnet),
    ] {
        if v == 0 {
            return Err(c.bad(
                key,
                "must be at least 1: no peer could join the routing table".into(),
            ));
        }
    }
    if dht.max_peers_per_subnet < dht.max_peers_per_subnet_per_bucket {
        return Err(c.bad(
            "network.dht.max_peers_per_subnet",
            format!(
                "is {} but network.dht.max_peers_per_subnet_per_bucket is {}; the table limit cannot be below the bucket limit",
                dht.max_peers_per_subnet, dht.max_peers_per_subnet_per_bucket
            ),
        ));
    }
    if d.max_records.is_some() {
        c.warn(
            "network.dht.max_records",
            "has no effect: nodes store no DHT records (PUT_VALUE is refused)".into(),
        );
    }
    Ok(dht)
}
