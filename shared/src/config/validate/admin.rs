//! The `admin` section: the HTTP endpoint that serves metrics, health and status.

use std::net::SocketAddr;

use super::Checker;
use crate::config::{ConfigError, Overrides, file::AdminFile};

/// The validated admin endpoint.
pub(super) struct Admin {
    /// `None` when the endpoint is `off`.
    pub(super) listen: Option<SocketAddr>,
    pub(super) token: Option<String>,
}

/// Parses `admin.listen` (or its override) and requires a long enough `admin.token`
/// when the endpoint is reachable from other hosts.
pub(super) fn check(c: &Checker<'_>, a: AdminFile, o: &Overrides) -> Result<Admin, ConfigError> {
    let listen = match o.admin_listen.as_deref().or(a.listen.as_deref()) {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        Some("off") => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
            c.bad(
                "admin.listen",
                format!("{s:?} is not an address like `127.0.0.1:9090` (or `off`)"),
            )
        })?),
    };

    let token = a.token.filter(|t| !t.is_empty());
    if let Some(a) = listen
        && !a.ip().is_loopback()
        && token.is_none()
    {
        return Err(c.bad(
            "admin.listen",
            format!("{a} is reachable from other hosts; set admin.token so requests must carry it"),
        ));
    }
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(c.bad("admin.token", "is shorter than 16 characters".into()));
    }
    Ok(Admin { listen, token })
}
