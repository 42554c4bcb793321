//! From the file as written to the validated [`Config`]: one check per config section,
//! run in a fixed order so that the first key at fault is the one reported.

mod admin;
mod files;
mod log;
mod network;
mod node;
mod relay;
mod role_keys;
mod update;

use std::{num::NonZeroU32, path::Path, time::Duration};

use crate::config::{
    Config, ConfigError, Env, Loaded, Overrides, Rate, Role, Warning,
    error::Origin,
    file::{FileConfig, RateFile},
};

/// Names keys in errors and collects warnings while the sections are checked.
struct Checker<'a> {
    origin: &'a Origin<'a>,
    warnings: Vec<Warning>,
}

impl<'a> Checker<'a> {
    fn new(origin: &'a Origin<'a>) -> Self {
        Checker {
            origin,
            warnings: Vec::new(),
        }
    }

    /// The error for `key`, naming the file and the key's line.
    fn bad(&self, key: &str, msg: String) -> ConfigError {
        self.origin.invalid(key, msg)
    }

    /// Records a warning about `key`, to be logged once logging is up.
    fn warn(&mut self, key: &str, msg: String) {
        self.warnings
            .push(Warning(self.origin.describe_key(key, &msg)));
    }
}

/// A rate under `key` (`relay.circuit_rate_per_ip`, ...), or `limit` per `secs` seconds
/// when it is not set.
fn rate(
    c: &Checker<'_>,
    key: &str,
    v: Option<RateFile>,
    limit: u32,
    secs: u64,
) -> Result<Rate, ConfigError> {
    let (limit, interval) = v.map_or((limit, Duration::from_secs(secs)), |r| {
        (r.limit, r.interval.0)
    });
    let Some(limit) = NonZeroU32::new(limit) else {
        return Err(c.bad(&format!("{key}.limit"), "must be at least 1".into()));
    };
    if interval.is_zero() {
        return Err(c.bad(&format!("{key}.interval"), "must be longer than 0s".into()));
    }
    Ok(Rate { limit, interval })
}

impl Config {
    /// Applies role defaults, overrides and cross-field checks to `f`, section by
    /// section; a section's errors come before those of the sections checked after it.
    pub(super) fn from_file(
        role: Role,
        f: FileConfig,
        origin: &Origin<'_>,
        o: &Overrides,
        env: &dyn Env,
    ) -> Result<Loaded, ConfigError> {
        let mut c = Checker::new(origin);
        role_keys::check(&mut c, role, &f)?;
        let enable_dht = network::enable_dht(&c, role, f.enable_dht, f.network.enable_dht)?;
        let node = node::check(&c, role, &f, o, env)?;
        let files = files::check(&c, &f, &node.data_dir)?;
        let admin = admin::check(&c, f.admin, o)?;
        let log = log::check(&c, f.log, o)?;
        let network = network::check(&mut c, role, f.network, node.port, enable_dht)?;
        let relay = relay::check(&mut c, role, f.relay)?;
        let update = update::check(&c, role, f.auto_update, f.update)?;

        let config = Config {
            role,
            source: origin.path().map(Path::to_path_buf),
            name: node.name,
            port: node.port,
            data_dir: node.data_dir,
            key_file: node.key_file,
            download_dir: files.download_dir,
            max_storage_size: files.max_storage_size,
            min_file_size: files.min_file_size,
            upload_rate_limit: files.upload_rate_limit,
            replication: files.replication,
            serving: files.serving,
            shutdown_grace_period: node.shutdown_grace_period,
            admin_listen: admin.listen,
            admin_token: admin.token,
            log,
            network,
            relay,
            update,
        };
        Ok(Loaded {
            config,
            warnings: c.warnings,
        })
    }
}
