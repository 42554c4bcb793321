//! TLS for secure WebSocket (`/tls/ws`): the certificate a node serves and the
//! certificates it trusts when dialing.
//!
//! A node with a `/tls/ws` listener serves the configured PEM certificate, or else a
//! self-signed one that it generates once with rcgen and keeps in `<data_dir>/tls/`
//! (written atomically, key mode 0600, never overwritten). Peers trust the public web
//! roots plus `network.tls.trusted_certificates`, so a relay's self-signed certificate can
//! be handed to the peers that use it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use libp2p::{Multiaddr, multiaddr::Protocol, websocket::tls};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{
    atomic::{self, Existing},
    config::Config,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {reason}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot create the self-signed TLS certificate in {}: {reason}", dir.display())]
    Generate { dir: PathBuf, reason: String },
    #[error("TLS certificate {} and key {} do not go together: {reason}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// True when any listen address is a secure WebSocket.
pub(crate) fn serves_wss(config: &Config) -> bool {
    config.network.listen_addresses.iter().any(is_wss)
}

fn is_wss(addr: &Multiaddr) -> bool {
    let protos: Vec<_> = addr.iter().collect();
    protos.iter().any(|p| matches!(p, Protocol::Wss(_)))
        || protos
            .windows(2)
            .any(|w| matches!(w, [Protocol::Tls, Protocol::Ws(_)]))
}

/// Paths of the self-signed certificate and key kept in the data dir.
pub(crate) fn self_signed_paths(config: &Config) -> (PathBuf, PathBuf) {
    let dir = config.data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Builds the websocket TLS config: a server certificate when the node serves
/// `/tls/ws`, and the trust store for dialing.
pub(crate) fn load(config: &Config) -> Result<tls::Config, TlsError> {
    let mut builder = tls::Config::builder();
    if serves_wss(config) {
        let (cert_path, key_path) = match &config.network.tls.certificate {
            Some((c, k)) => (c.clone(), k.clone()),
            None => ensure_self_signed(config)?,
        };
        let certs = read_certs("TLS certificate", &cert_path)?;
        let key = read_key(&key_path)?;
        builder.server(key, certs).map_err(|e| TlsError::Mismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason: e.to_string(),
        })?;
    }
    for path in &config.network.tls.trusted_certificates {
        for cert in read_certs("trusted certificate", path)? {
            builder.add_trust(&cert).map_err(|e| TlsError::Read {
                what: "trusted certificate",
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(builder.finish())
}

/// Checks configured TLS files without creating anything (for `--check`).
pub(crate) fn check(config: &Config) -> Result<(), TlsError> {
    if let Some((c, k)) = &config.network.tls.certificate {
        read_certs("TLS certificate", c)?;
        read_key(k)?;
    }
    for path in &config.network.tls.trusted_certificates {
        read_certs("trusted certificate", path)?;
    }
    Ok(())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<tls::Certificate>, TlsError> {
    let err = |reason: String| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs
        .into_iter()
        .map(|c| tls::Certificate::new(c.to_vec()))
        .collect())
}

fn read_key(path: &Path) -> Result<tls::PrivateKey, TlsError> {
    let err = |reason: String| TlsError::Read {
        what: "TLS private key",
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| err(format!("not a PEM private key ({e})")))?;
    let der = key.secret_der().to_vec();
    // `tls::PrivateKey::new` panics on formats it does not know: check first.
    PrivateKeyDer::try_from(der.clone())
        .map_err(|e| err(format!("unsupported private key format ({e})")))?;
    Ok(tls::PrivateKey::new(der))
}

/// Hosts the self-signed certificate names: the IPs and DNS names of the listen and
/// external addresses, and `localhost`.
fn subject_names(config: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    let net = &config.network;
    for addr in net.listen_addresses.iter().chain(&net.external_addresses) {
        for p in addr.iter() {
            let name = match p {
                Protocol::Ip4(ip) if !ip.is_unspecified() => ip.to_string(),
                Protocol::Ip6(ip) if !ip.is_unspecified() => ip.to_string(),
                Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => h.to_string(),
                _ => continue,
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn ensure_self_signed(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = self_signed_paths(config);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    if cert.exists() {
        return Err(TlsError::Read {
            what: "TLS private key",
            path: key,
            reason: format!(
                "missing, but its certificate {} exists; restore the key or remove both",
                cert.display()
            ),
        });
    }
    let dir = cert.parent().expect("tls dir").to_path_buf();
    let gen_err = |reason: String| TlsError::Generate {
        dir: dir.clone(),
        reason,
    };
    let certified = rcgen::generate_simple_self_signed(subject_names(config))
        .map_err(|e| gen_err(e.to_string()))?;
    fs::create_dir_all(&dir).map_err(|e| gen_err(e.to_string()))?;
    // Key first: a certificate without its key is useless, a key without certificate is
    // regenerated together with one next time.
    write_new(
        &key,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(|e| gen_err(format!("{}: {e}", key.display())))?;
    write_new(&cert, certified.cert.pem().as_bytes(), 0o644)
        .map_err(|e| gen_err(format!("{}: {e}", cert.display())))?;
    Ok((cert, key))
}

/// Writes `bytes` to a new file at `path` atomically, replacing only a leftover from an
/// interrupted earlier attempt (a key whose certificate was never written).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    atomic::write(path, bytes, mode, Existing::Replace)
}
