//! Release keys: Ed25519 keys that sign release manifests, kept offline by their
//! holders. A public key is written `ed25519:<64 hex digits>`; a private key file holds
//! a header line and the 32-byte secret in hex, readable by its owner only.

use std::{fmt, path::Path, str::FromStr};

use libp2p::identity::ed25519;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    atomic::{self, Existing},
    private_file::{self, ReadError},
};

const KEY_FILE_HEADER: &str = "jantar release key v1";
const PUBLIC_PREFIX: &str = "ed25519:";

/// A release key's public half: who signed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519::PublicKey::try_from_bytes(&self.0).is_ok_and(|k| k.verify(message, signature))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let hex_part = s.strip_prefix(PUBLIC_PREFIX).ok_or_else(|| {
            format!("`{s}` is not a release key (expected `{PUBLIC_PREFIX}` and 64 hex digits)")
        })?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|e| format!("`{s}` is not a release key: {e}"))?;
        ed25519::PublicKey::try_from_bytes(&bytes)
            .map_err(|e| format!("`{s}` is not an Ed25519 public key: {e}"))?;
        Ok(PublicKey(bytes))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a release key file could not be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read release key {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("release key {path} is readable by others (mode {mode:o}); `chmod 600` it")]
    Open { path: String, mode: u32 },
    #[error("no release key at {path}")]
    Missing { path: String },
    #[error("{path} is not a release key file: {reason}")]
    Malformed { path: String, reason: String },
    #[error("cannot write release key {path}: {error} (an existing file is never replaced)")]
    Write { path: String, error: std::io::Error },
}

/// A release key with its secret: signs manifests.
pub struct SigningKey(ed25519::Keypair);

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey(ed25519::Keypair::generate())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.public().to_bytes())
    }

    pub(super) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message)
    }

    /// Writes the key to a new file only its owner can read; never replaces one.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let secret = self.0.secret();
        let text = format!("{KEY_FILE_HEADER}\n{}\n", hex::encode(secret.as_ref()));
        atomic::write(path, text.as_bytes(), 0o600, Existing::Keep).map_err(|error| {
            KeyFileError::Write {
                path: path.display().to_string(),
                error,
            }
        })
    }

    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let name = path.display().to_string();
        let bytes = match private_file::read(path) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(KeyFileError::Missing { path: name }),
            Err(ReadError::Open { mode }) => return Err(KeyFileError::Open { path: name, mode }),
            Err(ReadError::Io(error)) => return Err(KeyFileError::Read { path: name, error }),
        };
        let malformed = |reason: &str| KeyFileError::Malformed {
            path: name.clone(),
            reason: reason.into(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("not text"))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(malformed(&format!(
                "the first line is not `{KEY_FILE_HEADER}`"
            )));
        }
        let mut secret = [0u8; 32];
        hex::decode_to_slice(lines.next().unwrap_or("").trim(), &mut secret)
            .map_err(|e| malformed(&format!("line 2: {e}")))?;
        let secret = ed25519::SecretKey::try_from_bytes(&mut secret)
            .map_err(|e| malformed(&format!("line 2: {e}")))?;
        Ok(SigningKey(ed25519::Keypair::from(secret)))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_saved_loads_the_same_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = SigningKey::generate();
        key.save_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SigningKey::load(&path).unwrap().public(), key.public());
        let other = SigningKey::generate();
        assert!(matches!(
            other.save_new(&path),
            Err(KeyFileError::Write { .. })
        ));
        assert_eq!(SigningKey::load(&path).unwrap().public(), key.public());
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(matches!(
            SigningKey::load(&path),
            Err(KeyFileError::Missing { .. })
        ));
        std::fs::write(&path, "hello\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SigningKey::load(&path).err().unwrap().to_string();
        assert!(
            e.contains("readable by others") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SigningKey::load(&path).err().unwrap().to_string();
        assert!(
            e.contains("not a release key file") && e.contains("first line"),
            "{e}"
        );
        std::fs::write(&path, format!("{KEY_FILE_HEADER}\nzz\n")).unwrap();
        let e = SigningKey::load(&path).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn public_keys_parse_and_print_alike() {
        let k = SigningKey::generate().public();
        let text = k.to_string();
        assert!(text.starts_with("ed25519:") && text.len() == 8 + 64);
        assert_eq!(text.parse::<PublicKey>().unwrap(), k);
        assert!("ed25519:00".parse::<PublicKey>().is_err());
        assert!(
            hex::encode([1u8; 32])
                .parse::<PublicKey>()
                .unwrap_err()
                .contains("expected `ed25519:`")
        );
    }
}
