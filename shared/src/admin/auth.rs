//! Who may ask what. The admin endpoint can share any file the node's user can read and
//! write a download anywhere that user can, so it defends against the one stranger that
//! reaches a loopback port: a web page in the user's own browser.
//!
//! - **Browsers are refused.** A request carrying an `Origin` other than the endpoint's
//!   own, or `Sec-Fetch-Site` other than `same-origin`/`none`, is refused (403): the
//!   `jantar-peer` client, curl and Prometheus send neither.
//! - **DNS rebinding is refused.** On a loopback address the `Host` header must name
//!   loopback (`localhost`, `127.x.x.x`, `[::1]`): a page on `evil.example` whose name
//!   now resolves to 127.0.0.1 sends `Host: evil.example` and is refused (403).
//! - **A token for every change.** Every request that is not a `GET` or `HEAD` must carry
//!   `Authorization: Bearer <token>` (401 otherwise): `admin.token` when configured, else
//!   the token the node keeps in `<data_dir>/admin.token`. With `admin.token` configured
//!   (required on a non-loopback address), reads need it too; `/livez` and `/readyz`
//!   never do.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::app::{AppState, error};

/// The admin endpoint's access rules (see the module docs).
#[derive(Clone, Debug)]
pub struct Access {
    token: Arc<str>,
    /// The token guards reads too (`admin.token` configured), not only changes.
    reads: bool,
    /// Listening on loopback: `Host` must name loopback.
    loopback: bool,
}

impl Access {
    /// `token` is `admin.token` when `configured`, else the node's own token.
    pub fn new(token: String, configured: bool, listen: IpAddr) -> Self {
        Access {
            token: token.into(),
            reads: configured,
            loopback: listen.is_loopback(),
        }
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|g| constant_time_eq(g.as_bytes(), self.token.as_bytes()))
    }

    /// Why a browser request or a rebound host name is refused, if it is.
    fn refuse_browser(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if self.loopback {
            match host {
                None => return Some("a request without a Host header".into()),
                Some(h) if !is_loopback_host(h) => {
                    return Some(format!(
                        "Host {h:?} does not name loopback (a DNS-rebinding page?)"
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own = host.map(|h| format!("http://{h}"));
            if own.as_deref() != origin.to_str().ok() {
                return Some(format!(
                    "a cross-origin request from {}",
                    String::from_utf8_lossy(origin.as_bytes())
                ));
            }
        }
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin" && s != "none") {
            return Some(format!(
                "a {} request from a web page",
                site.unwrap_or_default()
            ));
        }
        None
    }
}

/// Every route: browsers and rebound host names are refused.
pub(super) async fn refuse_browsers(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(why) = s.access.refuse_browser(req.headers()) {
        metrics::counter!(crate::metrics::ADMIN_REFUSED, "reason" => "browser").increment(1);
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "refused {why}: the admin endpoint serves the jantar-peer client, not web pages"
            ),
        );
    }
    next.run(req).await
}

/// Every route but the probes: the token, for changes always, for reads when configured.
pub(super) async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if (changes || s.access.reads) && !s.access.token_ok(req.headers()) {
        metrics::counter!(crate::metrics::ADMIN_REFUSED, "reason" => "token").increment(1);
        let hint = if s.access.reads {
            "admin.token"
        } else {
            "the token in <data_dir>/admin.token, which `jantar-peer` commands send"
        };
        return error(
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong bearer token ({hint})"),
        );
    }
    next.run(req).await
}

/// `localhost`, a loopback IP literal (`127.0.0.1`, `[::1]`), with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn loopback_names_only() {
        for ok in [
            "localhost",
            "localhost:9090",
            "LOCALHOST:1",
            "127.0.0.1:9090",
            "127.1.2.3",
            "[::1]:9090",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1:9090",
            "[2001:db8::1]:9090",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn browsers_and_rebinding_are_refused_tools_are_not() {
        let a = Access::new("t".repeat(64), false, "127.0.0.1".parse().unwrap());
        assert!(
            a.refuse_browser(&headers(&[("host", "127.0.0.1:9090")]))
                .is_none()
        );
        assert!(
            a.refuse_browser(&headers(&[("host", "evil.example:9090")]))
                .unwrap()
                .contains("rebinding")
        );
        assert!(a.refuse_browser(&headers(&[])).is_some());
        let cross = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://evil.example"),
        ]);
        assert!(a.refuse_browser(&cross).unwrap().contains("cross-origin"));
        let null = headers(&[("host", "127.0.0.1:9090"), ("origin", "null")]);
        assert!(a.refuse_browser(&null).is_some());
        let site = headers(&[("host", "localhost:9090"), ("sec-fetch-site", "cross-site")]);
        assert!(a.refuse_browser(&site).is_some());
        // A non-loopback endpoint has its token for every request instead.
        let public = Access::new("t".repeat(64), true, "0.0.0.0".parse().unwrap());
        assert!(
            public
                .refuse_browser(&headers(&[("host", "relay.example:9090")]))
                .is_none()
        );
    }

    #[test]
    fn token_is_compared_exactly() {
        let a = Access::new(
            "secret-token-0123456789".into(),
            true,
            "127.0.0.1".parse().unwrap(),
        );
        assert!(a.token_ok(&headers(&[(
            "authorization",
            "Bearer secret-token-0123456789"
        )])));
        assert!(!a.token_ok(&headers(&[(
            "authorization",
            "Bearer secret-token-012345678"
        )])));
        assert!(!a.token_ok(&headers(&[("authorization", "secret-token-0123456789")])));
        assert!(!a.token_ok(&headers(&[])));
    }
}
