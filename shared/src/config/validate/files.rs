//! The peer's file keys: where downloads go and how much it stores and serves
//! (`download_dir`, `max_storage_size`, `min_file_size`, `upload_rate_limit`, the
//! `replication` and `serving` sections).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::Checker;
use crate::config::{
    ConfigError, ReplicationConfig, ServingConfig,
    file::{FileConfig, ReplicationFile, ServingFile},
};

/// The validated file keys.
pub(super) struct Files {
    pub(super) download_dir: PathBuf,
    pub(super) max_storage_size: u64,
    pub(super) min_file_size: u64,
    pub(super) upload_rate_limit: u64,
    pub(super) replication: ReplicationConfig,
    pub(super) serving: ServingConfig,
}

/// Applies the defaults and checks the replication and serving bounds. (That these keys
/// mean nothing on a bootstrap node or relay is a warning from the role check.)
pub(super) fn check(
    c: &Checker<'_>,
    f: &FileConfig,
    data_dir: &Path,
) -> Result<Files, ConfigError> {
    Ok(Files {
        download_dir: f
            .download_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("downloads")),
        max_storage_size: f.max_storage_size.map_or(1 << 30, |s| s.0),
        min_file_size: f.min_file_size.map_or(0, |s| s.0),
        upload_rate_limit: f.upload_rate_limit.map_or(0, |s| s.0),
        replication: replication(c, &f.replication)?,
        serving: serving(c, &f.serving)?,
    })
}

fn replication(c: &Checker<'_>, r: &ReplicationFile) -> Result<ReplicationConfig, ConfigError> {
    let fetch_deadline = r
        .fetch_deadline
        .map_or(Duration::from_secs(30 * 60), |d| d.0);
    if fetch_deadline.is_zero() {
        return Err(c.bad(
            "replication.fetch_deadline",
            "must be longer than 0s".into(),
        ));
    }
    let share = r.max_share_per_publisher.unwrap_or(0.25);
    if !(share > 0.0 && share <= 1.0) {
        return Err(c.bad(
            "replication.max_share_per_publisher",
            format!("is {share}; it must be above 0 and at most 1 (a share of max_storage_size)"),
        ));
    }
    Ok(ReplicationConfig {
        max_concurrent_fetches: r.max_concurrent_fetches.unwrap_or(4),
        fetch_deadline,
        max_share_per_publisher: share,
    })
}

fn serving(c: &Checker<'_>, s: &ServingFile) -> Result<ServingConfig, ConfigError> {
    let per_peer = s.max_concurrent_per_peer.unwrap_or(8);
    if per_peer == 0 {
        return Err(c.bad(
            "serving.max_concurrent_per_peer",
            "must be at least 1".into(),
        ));
    }
    let max_queued = s.max_queued.unwrap_or(64.max(per_peer));
    if max_queued < per_peer {
        return Err(c.bad(
            "serving.max_queued",
            format!(
                "is {max_queued}, below serving.max_concurrent_per_peer ({per_peer}); it bounds all peers together"
            ),
        ));
    }
    Ok(ServingConfig {
        max_concurrent_per_peer: per_peer,
        max_queued,
    })
}
