//! The top-level keys that say who the node is and where it keeps its state: `name`,
//! `port`, `data_dir`, `key_file` and `shutdown_grace_period`.

use std::{path::PathBuf, time::Duration};

use super::Checker;
use crate::config::{ConfigError, Env, Overrides, Role, default_data_dir, file::FileConfig};

/// The validated top-level node keys.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) port: u16,
    pub(super) data_dir: PathBuf,
    pub(super) key_file: PathBuf,
    pub(super) shutdown_grace_period: Duration,
}

/// Applies overrides and role defaults; refuses a data directory nothing names.
pub(super) fn check(
    c: &Checker<'_>,
    role: Role,
    f: &FileConfig,
    o: &Overrides,
    env: &dyn Env,
) -> Result<Node, ConfigError> {
    let port = o
        .port
        .or(f.port)
        .unwrap_or(if role.is_server() { 4001 } else { 0 });
    let data_dir = match o.data_dir.clone().or_else(|| f.data_dir.clone()) {
        Some(d) => d,
        None => default_data_dir(role, env).ok_or_else(|| {
            c.bad(
                "data_dir",
                "is not set and neither STATE_DIRECTORY, XDG_DATA_HOME nor HOME is; set data_dir"
                    .into(),
            )
        })?,
    };
    let key_file = f
        .key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("identity.key"));
    Ok(Node {
        name: f.name.clone().unwrap_or_else(|| role.binary().to_string()),
        port,
        data_dir,
        key_file,
        shutdown_grace_period: f
            .shutdown_grace_period
            .map_or(Duration::from_secs(10), |d| d.0),
    })
}
