//! Command-line and environment input: overrides of file values and the environment
//! variables that default the data directory.

use std::path::{Path, PathBuf};

use super::Role;

/// Values given on the command line or in `JANTAR_*` environment variables; they win
/// over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub admin_listen: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

/// Where environment-derived defaults come from; tests feed a map instead of the real
/// environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<&str, &str, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

/// `$STATE_DIRECTORY` (systemd), else `$XDG_DATA_HOME/jantar/<role>`, else
/// `~/.local/share/jantar/<role>`.
pub fn default_data_dir(role: Role, env: &dyn Env) -> Option<PathBuf> {
    if let Some(dir) = env.var("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        return dir.split(':').next().map(PathBuf::from);
    }
    let base = env
        .var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".local/share")))?;
    Some(base.join("jantar").join(role.as_str()))
}
