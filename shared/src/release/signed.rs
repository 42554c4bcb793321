//! A signed document, after The Update Framework's signed metadata: the document (a
//! release [`Manifest`](super::Manifest) or a key-rotation [`Root`](super::root::Root))
//! and the release keys' signatures over exactly its fields.
//!
//! The signed bytes are the document kind's domain prefix and its JSON as this code
//! writes it (fields in declaration order, maps sorted). A document with fields this
//! version does not know is refused rather than re-encoded without them, so the bytes
//! checked are always the bytes signed; the domain prefix keeps a signature made for one
//! kind from passing as the other's.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    keys::{PublicKey, SigningKey},
    manifest::{Refused, Trust},
};

/// Most signatures on one document.
pub const MAX_SIGNATURES: usize = 16;

/// A kind of document the release keys sign.
pub trait Document: Clone + PartialEq + Serialize + DeserializeOwned {
    /// What every signature covers before the document's JSON.
    const DOMAIN: &'static [u8];
    /// Largest signed document accepted, as JSON.
    const MAX_BYTES: usize;
    /// What it is called in errors (`manifest`, `root`).
    const NAME: &'static str;

    /// The fields a key holder must get right before anyone signs.
    fn check(&self) -> Result<(), Refused>;

    fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = Self::DOMAIN.to_vec();
        // Serializing plain fields, lists and sorted maps cannot fail.
        bytes.extend(serde_json::to_vec(self).unwrap_or_default());
        bytes
    }
}

/// One release key's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: PublicKey,
    /// Ed25519 signature, hex.
    pub sig: String,
}

/// A document with the signatures collected for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: DeserializeOwned"))]
pub struct Signed<T> {
    pub signed: T,
    pub signatures: Vec<Signature>,
}

impl<T: Document> Signed<T> {
    pub fn new(document: T) -> Self {
        Signed {
            signed: document,
            signatures: vec![],
        }
    }

    /// Parses a signed document (JSON), refusing oversized ones, unknown fields, too
    /// many signatures and documents that fail their check.
    pub fn parse(bytes: &[u8]) -> Result<Self, Refused> {
        if bytes.len() > T::MAX_BYTES {
            return Err(Refused::Malformed(format!(
                "{} bytes, above the {}-byte limit",
                bytes.len(),
                T::MAX_BYTES
            )));
        }
        let d: Self = serde_json::from_slice(bytes)
            .map_err(|e| Refused::Malformed(format!("not a signed {}: {e}", T::NAME)))?;
        if d.signatures.len() > MAX_SIGNATURES {
            return Err(Refused::Malformed(format!(
                "{} signatures (at most {MAX_SIGNATURES})",
                d.signatures.len()
            )));
        }
        d.signed.check()?;
        Ok(d)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Adds (or renews) `key`'s signature.
    pub fn sign(&mut self, key: &SigningKey) {
        let public = key.public();
        let sig = hex::encode(key.sign(&self.signed.signed_bytes()));
        self.signatures.retain(|s| s.key != public);
        self.signatures.push(Signature { key: public, sig });
    }

    /// Adds the signatures of `other` over the same document (key holders sign apart).
    pub fn combine(&mut self, other: Self) -> Result<(), Refused> {
        if other.signed != self.signed {
            return Err(Refused::Malformed(format!(
                "the signatures are over a different {}",
                T::NAME
            )));
        }
        for s in other.signatures {
            if !self.signatures.iter().any(|m| m.key == s.key) {
                self.signatures.push(s);
            }
        }
        Ok(())
    }

    /// The keys of `trust` with a valid signature, each counted once.
    pub(super) fn valid_signers(&self, trust: &Trust) -> Vec<PublicKey> {
        let message = self.signed.signed_bytes();
        let mut valid: Vec<PublicKey> = vec![];
        for s in &self.signatures {
            if !trust.keys.contains(&s.key) || valid.contains(&s.key) {
                continue;
            }
            let Ok(sig) = hex::decode(&s.sig) else {
                continue;
            };
            if s.key.verify(&message, &sig) {
                valid.push(s.key.clone());
            }
        }
        valid
    }
}

/// Whether `bytes` hold a signed root rather than a manifest (a root's document has
/// `keys`); either way, the document's own parser has the last word.
pub fn is_root(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("signed").and_then(|s| s.get("keys")).is_some())
}
