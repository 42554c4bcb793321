//! `auto_update` and the `update` section: which releases a peer trusts (keys in the
//! config or a file, and a threshold) and how it applies them.

use std::{path::Path, str::FromStr, time::Duration};

use super::Checker;
use crate::{
    config::{
        AutoUpdate, ConfigError, Role, UpdateConfig, UpdateMethod,
        file::{AutoUpdateFile, UpdateFile},
    },
    release::{PublicKey, Trust},
};

/// Longest channel name (it is part of a gossipsub topic).
const MAX_CHANNEL: usize = 64;

pub(super) fn check(
    c: &Checker<'_>,
    role: Role,
    auto_update: Option<AutoUpdateFile>,
    u: UpdateFile,
) -> Result<UpdateConfig, ConfigError> {
    let mode = match auto_update {
        None | Some(AutoUpdateFile::Bool(false)) => AutoUpdate::Off,
        Some(AutoUpdateFile::Bool(true)) => AutoUpdate::Apply,
        Some(AutoUpdateFile::Mode(m)) => match m.as_str() {
            "false" | "off" => AutoUpdate::Off,
            "notify" => AutoUpdate::Notify,
            "apply" | "true" => AutoUpdate::Apply,
            other => {
                return Err(c.bad(
                    "auto_update",
                    format!("{other:?} is not `false`, `notify` or `apply`"),
                ));
            }
        },
    };
    if role != Role::Peer && mode != AutoUpdate::Off {
        return Err(c.bad(
            "auto_update",
            format!(
                "is `{}`, but only jantar-peer follows releases; {} keeps `auto_update: false` \
                 and is updated by its package or Ansible role",
                mode.as_str(),
                role.binary()
            ),
        ));
    }
    let channel = u.channel.unwrap_or_else(|| "stable".into());
    if channel.is_empty()
        || channel.len() > MAX_CHANNEL
        || !channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(c.bad(
            "update.channel",
            format!("{channel:?} is not a channel name (1 to {MAX_CHANNEL} letters, digits, `-`, `_`, `.`)"),
        ));
    }
    let mut keys = Vec::new();
    for (i, k) in u.trusted_keys.iter().flatten().enumerate() {
        let key = PublicKey::from_str(k.trim())
            .map_err(|e| c.bad(&format!("update.trusted_keys[{i}]"), e))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if let Some(path) = &u.trusted_keys_file {
        for key in keys_file(path).map_err(|e| c.bad("update.trusted_keys_file", e))? {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    let threshold = match u.threshold {
        None => keys.len() / 2 + 1,
        Some(0) => return Err(c.bad("update.threshold", "must be at least 1".into())),
        Some(t) if t > keys.len() && !keys.is_empty() => {
            return Err(c.bad(
                "update.threshold",
                format!(
                    "is {t}, but only {} trusted key(s) are configured, so no release could verify",
                    keys.len()
                ),
            ));
        }
        Some(t) => t,
    };
    if mode != AutoUpdate::Off && keys.is_empty() {
        return Err(c.bad(
            "auto_update",
            format!(
                "is `{}`, but no release keys are trusted; set update.trusted_keys or \
                 update.trusted_keys_file, or set auto_update: false",
                mode.as_str()
            ),
        ));
    }
    let ready_timeout = u.ready_timeout.map_or(Duration::from_secs(60), |d| d.0);
    if ready_timeout < Duration::from_secs(1) {
        return Err(c.bad(
            "update.ready_timeout",
            "must be at least 1s (a new version needs time to start)".into(),
        ));
    }
    let method = match u.method.as_deref() {
        None | Some("auto") => UpdateMethod::Auto,
        Some("replace") => UpdateMethod::Replace,
        Some("stage") => UpdateMethod::Stage,
        Some(other) => {
            return Err(c.bad(
                "update.method",
                format!("{other:?} is not `auto`, `replace` or `stage`"),
            ));
        }
    };
    Ok(UpdateConfig {
        mode,
        channel,
        trust: Trust { keys, threshold },
        ready_timeout,
        method,
    })
}

/// The keys in a trusted-keys file: one `ed25519:<hex>` per line; blank lines and `#`
/// comments are skipped. Errors name the file and line.
fn keys_file(path: &Path) -> Result<Vec<PublicKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let key = PublicKey::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(format!("{} holds no keys", path.display()));
    }
    Ok(keys)
}
