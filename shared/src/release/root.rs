//! Rotating the release keys, after The Update Framework's root metadata: a new key set
//! and threshold (root `N + 1`) takes effect only when the threshold of the keys trusted
//! now (root `N`, or the configured keys for the first rotation) signed it, and the new
//! keys' own threshold signed it too (so the new holders proved they hold their keys).
//!
//! A node keeps the chain of roots it accepted (`<data_dir>/releases/roots.json`) and
//! replays it from its configured keys at start, so a rotation survives restarts and a
//! tampered file is caught link by link.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    PublicKey, Refused, Trust,
    signed::{Document, Signed},
};

/// Largest signed root accepted, as JSON.
pub const MAX_ROOT_BYTES: usize = 8 * 1024;
/// Most keys in one root.
pub const MAX_KEYS: usize = 16;
/// Most roots kept in a chain (rotations are rare; a chain is announced whole to a
/// peer that joins).
pub const MAX_CHAIN: usize = 16;

/// A release key set: which keys sign releases from now on, and how many must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// 1 for the first rotation away from the configured keys; each next one adds 1.
    pub sequence: u64,
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
}

/// A root with the signatures collected for it.
pub type SignedRoot = Signed<Root>;

impl Document for Root {
    const DOMAIN: &'static [u8] = b"jantar release root v1\n";
    const MAX_BYTES: usize = MAX_ROOT_BYTES;
    const NAME: &'static str = "root";

    fn check(&self) -> Result<(), Refused> {
        let bad = |m: String| Err(Refused::Malformed(m));
        if self.sequence == 0 {
            return bad("root sequence 0 is the configured keys; rotations start at 1".into());
        }
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return bad(format!(
                "{} keys (1 to {MAX_KEYS} allowed)",
                self.keys.len()
            ));
        }
        if self.threshold == 0 || self.threshold > self.keys.len() {
            return bad(format!(
                "threshold {} is not between 1 and the {} keys",
                self.threshold,
                self.keys.len()
            ));
        }
        let mut seen = self.keys.clone();
        seen.sort_by_key(ToString::to_string);
        seen.dedup();
        if seen.len() != self.keys.len() {
            return bad("a key is listed twice".into());
        }
        Ok(())
    }
}

impl Root {
    pub fn trust(&self) -> Trust {
        Trust {
            keys: self.keys.clone(),
            threshold: self.threshold,
        }
    }
}

impl Signed<Root> {
    /// Verifies this root as the next after `current` (trusted now, at
    /// `current_sequence`): the next sequence, the current threshold of current keys,
    /// and its own threshold of its own keys. Returns the trust it gives.
    pub fn verify_next(&self, current: &Trust, current_sequence: u64) -> Result<Trust, Refused> {
        self.signed.check()?;
        if self.signed.sequence <= current_sequence {
            return Err(Refused::Replay {
                sequence: self.signed.sequence,
                newest: current_sequence,
            });
        }
        if self.signed.sequence != current_sequence + 1 {
            return Err(Refused::Malformed(format!(
                "root {} does not follow root {current_sequence} (roots are taken one at a time)",
                self.signed.sequence
            )));
        }
        for (who, trust) in [("current", current), ("new", &self.signed.trust())] {
            let valid = self.valid_signers(trust).len();
            let threshold = trust.threshold.max(1);
            if valid < threshold {
                return Err(Refused::Malformed(format!(
                    "{valid} valid signature(s) from the {who} release keys; {threshold} needed"
                )));
            }
        }
        Ok(self.signed.trust())
    }
}

/// The roots a node accepted, in order, replayed from its configured keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    pub roots: Vec<SignedRoot>,
}

impl Chain {
    /// Reads `path` (none: no rotation yet) and replays it from `configured`: the trust
    /// of the last root that verifies, its sequence, and the chain up to it. A link
    /// that does not verify ends the chain there, and is reported.
    pub fn load(path: &Path, configured: &Trust) -> (Trust, u64, Chain, Option<String>) {
        let chain: Chain = match std::fs::read(path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(c) => c,
                Err(e) => {
                    return (
                        configured.clone(),
                        0,
                        Chain::default(),
                        Some(format!("{} is not a root chain: {e}", path.display())),
                    );
                }
            },
            Err(_) => return (configured.clone(), 0, Chain::default(), None),
        };
        let (mut trust, mut sequence, mut kept) = (configured.clone(), 0, Chain::default());
        for r in chain.roots.into_iter().take(MAX_CHAIN) {
            match r.verify_next(&trust, sequence) {
                Ok(t) => {
                    trust = t;
                    sequence = r.signed.sequence;
                    kept.roots.push(r);
                }
                Err(e) => {
                    return (
                        trust,
                        sequence,
                        kept,
                        Some(format!(
                            "{}: root {} does not verify ({e}); the chain ends before it",
                            path.display(),
                            r.signed.sequence
                        )),
                    );
                }
            }
        }
        (trust, sequence, kept, None)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The last root's sequence; 0 while the configured keys are trusted.
    pub fn sequence(&self) -> u64 {
        self.roots.last().map_or(0, |r| r.signed.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::SigningKey;

    fn keys(n: usize) -> Vec<SigningKey> {
        (0..n).map(|_| SigningKey::generate()).collect()
    }

    fn trust(k: &[SigningKey], threshold: usize) -> Trust {
        Trust {
            keys: k.iter().map(SigningKey::public).collect(),
            threshold,
        }
    }

    fn root(sequence: u64, k: &[SigningKey], threshold: usize) -> SignedRoot {
        SignedRoot::new(Root {
            sequence,
            keys: k.iter().map(SigningKey::public).collect(),
            threshold,
        })
    }

    #[test]
    fn a_rotation_needs_the_old_threshold_and_the_new_one() {
        let old = keys(3);
        let new = keys(3);
        let configured = trust(&old, 2);
        let mut r = root(1, &new, 2);
        r.sign(&old[0]);
        r.sign(&new[0]);
        r.sign(&new[1]);
        let e = r.verify_next(&configured, 0).unwrap_err().to_string();
        assert!(
            e.contains("1 valid signature(s) from the current release keys; 2 needed"),
            "{e}"
        );
        r.sign(&old[2]);
        let mut without_new = r.clone();
        without_new
            .signatures
            .retain(|s| !new.iter().any(|k| k.public() == s.key));
        let e = without_new
            .verify_next(&configured, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0 valid signature(s) from the new release keys"),
            "{e}"
        );
        assert_eq!(r.verify_next(&configured, 0).unwrap(), trust(&new, 2));
        // Not twice, and not skipping one.
        assert!(matches!(
            r.verify_next(&configured, 1),
            Err(Refused::Replay { .. })
        ));
        let e = r.verify_next(&configured, 3).unwrap_err();
        assert!(matches!(e, Refused::Replay { .. }), "{e}");
        let mut skip = root(3, &new, 2);
        for k in old.iter().chain(&new) {
            skip.sign(k);
        }
        let e = skip.verify_next(&configured, 1).unwrap_err().to_string();
        assert!(e.contains("does not follow root 1"), "{e}");
    }

    #[test]
    fn a_chain_replays_from_the_configured_keys_and_stops_at_a_bad_link() {
        let (k0, k1, k2) = (keys(2), keys(2), keys(1));
        let configured = trust(&k0, 2);
        let mut r1 = root(1, &k1, 1);
        for k in k0.iter().chain(&k1[..1]) {
            r1.sign(k);
        }
        let mut r2 = root(2, &k2, 1);
        r2.sign(&k1[1]);
        r2.sign(&k2[0]);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("roots.json");
        let chain = Chain {
            roots: vec![r1.clone(), r2.clone()],
        };
        std::fs::write(&path, chain.to_json()).unwrap();
        let (t, seq, kept, problem) = Chain::load(&path, &configured);
        assert_eq!(
            (t, seq, kept.roots.len(), problem),
            (trust(&k2, 1), 2, 2, None)
        );
        // A link tampered with: the chain ends before it.
        let mut bad = r2;
        bad.signed.threshold = 1;
        bad.signed.keys.push(SigningKey::generate().public());
        std::fs::write(
            &path,
            Chain {
                roots: vec![r1, bad],
            }
            .to_json(),
        )
        .unwrap();
        let (t, seq, kept, problem) = Chain::load(&path, &configured);
        assert_eq!((t, seq, kept.roots.len()), (trust(&k1, 1), 1, 1));
        assert!(problem.unwrap().contains("root 2 does not verify"));
        // No file: the configured keys.
        let (t, seq, _, problem) = Chain::load(&d.path().join("none"), &configured);
        assert_eq!((t, seq, problem), (configured, 0, None));
    }

    #[test]
    fn malformed_roots_are_named() {
        let k = keys(2);
        for (r, says) in [
            (root(0, &k, 1), "rotations start at 1"),
            (
                root(1, &k, 3),
                "threshold 3 is not between 1 and the 2 keys",
            ),
            (root(1, &[], 1), "0 keys"),
        ] {
            let e = SignedRoot::parse(r.to_json().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
