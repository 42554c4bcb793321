//! Configuration shared by all roles.
//!
//! Two layers: [`file::FileConfig`] is the YAML file as written (every key optional);
//! [`Config::from_file`] applies role defaults, command-line/environment overrides and
//! cross-field checks, and produces the validated [`Config`] the node runs on. Errors
//! name the file, line and key; keys that mean nothing for a role become warnings.
//!
//! Layout: `role` holds [`Role`] and its embedded defaults, `env` the command-line and
//! environment input ([`Overrides`], [`Env`]), `types` the validated sections
//! ([`NetworkConfig`], [`RelayLimits`], ..), and `validate` checks the file one section
//! at a time.

mod env;
mod error;
pub mod file;
mod role;
mod types;
mod validate;
pub mod value;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use env::{Env, Overrides, ProcessEnv, default_data_dir};
pub use error::ConfigError;
use file::FileConfig;
pub use role::{DEFAULT_BOOTSTRAP_CONFIG, DEFAULT_PEER_CONFIG, DEFAULT_RELAY_CONFIG, Role};
pub use types::{
    AutoUpdate, AutonatConfig, ConnectionLimits, DEFAULT_MAX_CIRCUIT_BYTES, DhtConfig,
    GossipConfig, LogConfig, LogFormat, MIN_FILE_CIRCUIT_BYTES, NetworkConfig, PeerStoreConfig,
    Rate, RelayLimits, RelayReservations, ReplicationConfig, ServingConfig, TlsConfig,
    UpdateConfig, UpdateMethod, default_listen_addresses,
};
pub use value::PeerAddr;

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
    pub replication: ReplicationConfig,
    pub serving: ServingConfig,
    pub shutdown_grace_period: Duration,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub log: LogConfig,
    pub network: NetworkConfig,
    pub relay: RelayLimits,
    pub update: UpdateConfig,
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

    /// The data directory `path` (or the embedded default) names, read leniently:
    /// unknown keys and bad values elsewhere are ignored. For a binary that refuses the
    /// config, to find a staged release that may accept it. `None` when the file cannot
    /// be read or `data_dir` itself is unusable.
    pub fn data_dir_only(
        role: Role,
        path: Option<&Path>,
        overrides: &Overrides,
        env: &dyn Env,
    ) -> Option<PathBuf> {
        #[derive(serde::Deserialize)]
        struct DataDirOnly {
            data_dir: Option<PathBuf>,
        }
        if let Some(d) = &overrides.data_dir {
            return Some(d.clone());
        }
        let text = match path {
            Some(p) => std::fs::read_to_string(p).ok()?,
            None => role.default_config().to_string(),
        };
        let file = if text.trim().is_empty() {
            None
        } else {
            serde_saphyr::from_str::<DataDirOnly>(&text).ok()?.data_dir
        };
        file.or_else(|| default_data_dir(role, env))
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
}

#[cfg(test)]
mod tests;
