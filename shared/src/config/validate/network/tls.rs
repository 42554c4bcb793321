//! `network.tls`: the certificate served on `/tls/ws` listeners and the ones trusted
//! when dialing.

use super::Checker;
use crate::config::{ConfigError, TlsConfig, file::TlsFile};

/// A certificate needs its private key and the other way round.
pub(super) fn check(c: &Checker<'_>, t: TlsFile) -> Result<TlsConfig, ConfigError> {
    let certificate = match (t.certificate, t.private_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(c.bad(
                "network.tls.certificate",
                "is set without network.tls.private_key; give both or neither".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(c.bad(
                "network.tls.private_key",
                "is set without network.tls.certificate; give both or neither".into(),
            ));
        }
    };
    Ok(TlsConfig {
        certificate,
        trusted_certificates: t.trusted_certificates.unwrap_or_default(),
    })
}
