//! Release manifests: what a release is (version, a sequence number that only grows,
//! an expiry, a rollout share, and per target the Jantar file ID and size of its
//! binary), signed by the release keys as a [`Signed`] document, and verified for a
//! node.

use std::{collections::BTreeMap, fmt, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::{
    keys::PublicKey,
    signed::{Document, Signed},
};
use crate::files::FileId;

/// What every signature covers before the manifest's JSON: a signature made for
/// something else cannot be passed off as a release's.
const DOMAIN: &[u8] = b"jantar release manifest v1\n";
/// Largest signed manifest accepted, as JSON (it travels by gossip).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024;
/// Most targets in one manifest.
pub const MAX_TARGETS: usize = 32;
/// Longest version or channel name.
pub const MAX_NAME: usize = 64;

/// Operating systems and architectures a target may name (Rust's names for them).
const KNOWN_OS: &[&str] = &[
    "linux", "macos", "windows", "freebsd", "openbsd", "netbsd", "android",
];
const KNOWN_ARCH: &[&str] = &[
    "x86_64",
    "aarch64",
    "arm",
    "x86",
    "riscv64",
    "powerpc64",
    "s390x",
    "loongarch64",
];

/// Whether `t` is `<os>-<arch>` of a known OS and architecture.
fn known_target(t: &str) -> bool {
    t.split_once('-')
        .is_some_and(|(os, arch)| KNOWN_OS.contains(&os) && KNOWN_ARCH.contains(&arch))
}

/// One platform's artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The artifact's Jantar file ID: fetched and verified chunk by chunk.
    pub file: FileId,
    pub size: u64,
}

/// What a release is. Every field is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The update channel (`stable`, `beta`): a node follows one.
    pub channel: String,
    /// The version the artifacts report (`jantar-peer --version`).
    pub version: String,
    /// Grows with every release of the channel; a node never accepts a sequence at or
    /// below the newest it has verified (no replays, no rollbacks by an attacker).
    pub sequence: u64,
    /// Unix seconds after which the manifest is refused (a withheld newer release
    /// cannot keep nodes on an old one forever).
    pub expires: u64,
    /// Share of peers (by peer id) that apply it, 1 to 100.
    pub rollout_percent: u8,
    /// Artifacts by target (`linux-x86_64`, `linux-aarch64`, ...).
    pub targets: BTreeMap<String, Target>,
}

/// A manifest with the signatures collected for it.
pub type SignedManifest = Signed<Manifest>;

/// The release keys a node trusts and how many must sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
}

/// Why a manifest is refused. Each says what was wrong in a line a log can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("{valid} valid signature(s) from trusted keys; {threshold} needed")]
    BelowThreshold { valid: usize, threshold: usize },
    #[error("expired at unix time {expires} (now {now})")]
    Expired { expires: u64, now: u64 },
    #[error("sequence {sequence} is not newer than {newest}, the newest verified (a replay)")]
    Replay { sequence: u64, newest: u64 },
    #[error("channel `{got}`, not `{want}`")]
    OtherChannel { got: String, want: String },
    #[error("no artifact for target `{target}` (it has: {has})")]
    NoTarget { target: String, has: String },
}

impl Document for Manifest {
    const DOMAIN: &'static [u8] = DOMAIN;
    const MAX_BYTES: usize = MAX_MANIFEST_BYTES;
    const NAME: &'static str = "manifest";

    /// Checks the fields a release tool must get right before anyone signs.
    fn check(&self) -> Result<(), Refused> {
        let bad = |m: String| Err(Refused::Malformed(m));
        if self.channel.is_empty() || self.version.is_empty() {
            return bad("channel and version must not be empty".into());
        }
        if !(1..=100).contains(&self.rollout_percent) {
            return bad(format!(
                "rollout_percent {} is not between 1 and 100",
                self.rollout_percent
            ));
        }
        if self.targets.is_empty() || self.targets.len() > MAX_TARGETS {
            return bad(format!(
                "{} targets (1 to {MAX_TARGETS} allowed)",
                self.targets.len()
            ));
        }
        // The version and channel name directories and topics: nothing that could
        // climb out of one.
        for (what, v) in [("version", &self.version), ("channel", &self.channel)] {
            if v.len() > MAX_NAME
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'))
                || v.starts_with('.')
            {
                return bad(format!(
                    "{what} {v:?} is not 1 to {MAX_NAME} letters, digits, `.`, `-`, `+`, `_`"
                ));
            }
        }
        if let Some(t) = self.targets.keys().find(|t| !known_target(t)) {
            return bad(format!(
                "unknown target `{t}` (targets are `<os>-<arch>`: {}-{})",
                KNOWN_OS.join("|"),
                KNOWN_ARCH.join("|")
            ));
        }
        Ok(())
    }
}

impl Signed<Manifest> {
    /// Verifies the manifest for a node: enough trusted signatures, not expired, newer
    /// than `newest` (the newest sequence it verified before), of its channel, and with
    /// an artifact for `target` (when given).
    pub fn verify(
        &self,
        trust: &Trust,
        channel: &str,
        now: SystemTime,
        newest: Option<u64>,
        target: Option<&str>,
    ) -> Result<Verified<'_>, Refused> {
        self.signed.check()?;
        let signers = self.valid_signers(trust).len();
        let threshold = trust.threshold.max(1);
        if signers < threshold {
            return Err(Refused::BelowThreshold {
                valid: signers,
                threshold,
            });
        }
        let m = &self.signed;
        if m.channel != channel {
            return Err(Refused::OtherChannel {
                got: m.channel.clone(),
                want: channel.into(),
            });
        }
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now >= m.expires {
            return Err(Refused::Expired {
                expires: m.expires,
                now,
            });
        }
        if let Some(newest) = newest
            && m.sequence <= newest
        {
            return Err(Refused::Replay {
                sequence: m.sequence,
                newest,
            });
        }
        let artifact = match target {
            Some(t) => Some(m.targets.get(t).ok_or_else(|| Refused::NoTarget {
                target: t.into(),
                has: m.targets.keys().cloned().collect::<Vec<_>>().join(", "),
            })?),
            None => None,
        };
        Ok(Verified {
            manifest: m,
            artifact,
            signers,
        })
    }
}

/// A manifest that passed [`SignedManifest::verify`].
#[derive(Debug)]
pub struct Verified<'a> {
    pub manifest: &'a Manifest,
    /// The artifact for the node's target, when one was asked for.
    pub artifact: Option<&'a Target>,
    /// How many trusted keys signed it.
    pub signers: usize,
}

/// This build's target name: `<os>-<arch>` (`linux-x86_64`).
pub fn this_target() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Whether `peer` falls in a rollout of `percent`: a stable draw from the peer id and
/// the release, so the same peers go first for a release and different ones for the
/// next.
pub fn in_rollout(peer: &[u8], manifest: &Manifest) -> bool {
    if manifest.rollout_percent >= 100 {
        return true;
    }
    let mut h = blake3::Hasher::new_derive_key("jantar release rollout v1");
    h.update(manifest.channel.as_bytes());
    h.update(&manifest.sequence.to_le_bytes());
    h.update(peer);
    let draw = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]));
    draw % 100 < u64::from(manifest.rollout_percent)
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (sequence {}, expires {}, rollout {}%, targets {})",
            self.channel,
            self.version,
            self.sequence,
            self.expires,
            self.rollout_percent,
            self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A manifest of channel `stable` for `linux-x86_64`, valid until 1,800,086,400.
    pub(crate) fn manifest(sequence: u64, version: &str) -> Manifest {
        Manifest {
            channel: "stable".into(),
            version: version.into(),
            sequence,
            expires: 1_800_086_400,
            rollout_percent: 100,
            targets: [(
                "linux-x86_64".to_string(),
                Target {
                    file: FileId([9; 32]),
                    size: 1234,
                },
            )]
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::release::{SigningKey, signed::Signature};

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn manifest(sequence: u64) -> Manifest {
        tests_support::manifest(sequence, "0.2.0")
    }

    fn setup() -> (Vec<SigningKey>, Trust) {
        let keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate()).collect();
        let trust = Trust {
            keys: keys.iter().map(SigningKey::public).collect(),
            threshold: 2,
        };
        (keys, trust)
    }

    fn verify(m: &SignedManifest, trust: &Trust, newest: Option<u64>) -> Result<(), Refused> {
        m.verify(trust, "stable", at(NOW), newest, Some("linux-x86_64"))
            .map(|_| ())
    }

    #[test]
    fn two_of_three_signers_separately_then_combined_verify() {
        let (keys, trust) = setup();
        let mut a = SignedManifest::new(manifest(5));
        a.sign(&keys[0]);
        let mut b =
            SignedManifest::parse(SignedManifest::new(manifest(5)).to_json().as_bytes()).unwrap();
        b.sign(&keys[2]);
        assert_eq!(
            verify(&a, &trust, None),
            Err(Refused::BelowThreshold {
                valid: 1,
                threshold: 2
            })
        );
        // Signatures over another manifest are not merged.
        let mut other = SignedManifest::new(manifest(6));
        other.sign(&keys[1]);
        let e = a.clone().combine(other).unwrap_err();
        assert!(e.to_string().contains("different manifest"), "{e}");
        a.combine(b).unwrap();
        // Through JSON, as it travels.
        let wire = SignedManifest::parse(a.to_json().as_bytes()).unwrap();
        assert_eq!(verify(&wire, &trust, Some(4)), Ok(()));
        let v = wire
            .verify(&trust, "stable", at(NOW), None, Some("linux-x86_64"))
            .unwrap();
        assert_eq!(v.artifact.unwrap().size, 1234);
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let (keys, trust) = setup();
        let signed = |m: Manifest, by: &[&SigningKey]| {
            let mut s = SignedManifest::new(m);
            for k in by {
                s.sign(k);
            }
            s
        };
        let good = signed(manifest(5), &[&keys[0], &keys[1]]);

        // The same key twice counts once.
        let mut twice = signed(manifest(5), &[&keys[0]]);
        twice.signatures.push(twice.signatures[0].clone());
        assert!(matches!(
            verify(&twice, &trust, None),
            Err(Refused::BelowThreshold { valid: 1, .. })
        ));
        // An unknown key does not count.
        let stranger = SigningKey::generate();
        let unknown = signed(manifest(5), &[&keys[0], &stranger]);
        assert!(matches!(
            verify(&unknown, &trust, None),
            Err(Refused::BelowThreshold { valid: 1, .. })
        ));
        // A changed field breaks every signature.
        let mut tampered = good.clone();
        tampered
            .signed
            .targets
            .get_mut("linux-x86_64")
            .unwrap()
            .file = FileId([8; 32]);
        assert!(matches!(
            verify(&tampered, &trust, None),
            Err(Refused::BelowThreshold { valid: 0, .. })
        ));
        // Replays and rollbacks.
        assert_eq!(
            verify(&good, &trust, Some(5)),
            Err(Refused::Replay {
                sequence: 5,
                newest: 5
            })
        );
        // Expired.
        let mut old = manifest(6);
        old.expires = NOW - 1;
        let e = verify(&signed(old, &[&keys[0], &keys[1]]), &trust, None).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        // Another target, another channel.
        let e = good
            .verify(&trust, "stable", at(NOW), None, Some("windows-x86_64"))
            .unwrap_err();
        assert!(e.to_string().contains("linux-x86_64"), "{e}");
        assert!(matches!(
            good.verify(&trust, "beta", at(NOW), None, None),
            Err(Refused::OtherChannel { .. })
        ));
        // A signature over the manifest's bytes without the domain prefix is no use.
        let mut raw = good.clone();
        raw.signatures = vec![Signature {
            key: keys[0].public(),
            sig: hex::encode(keys[0].sign(&serde_json::to_vec(&good.signed).unwrap())),
        }];
        assert!(matches!(
            verify(&raw, &trust, None),
            Err(Refused::BelowThreshold { valid: 0, .. })
        ));
    }

    #[test]
    fn unknown_fields_and_oversized_manifests_are_refused() {
        let (keys, _) = setup();
        let mut s = SignedManifest::new(manifest(1));
        s.sign(&keys[0]);
        let mut v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        v["signed"]["extra"] = serde_json::json!(1);
        let e = SignedManifest::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            SignedManifest::parse(&big),
            Err(Refused::Malformed(_))
        ));
        let mut m = manifest(1);
        m.rollout_percent = 0;
        assert!(
            m.check()
                .unwrap_err()
                .to_string()
                .contains("rollout_percent")
        );
    }

    #[test]
    fn rollout_takes_about_its_share_and_all_at_100() {
        let mut m = manifest(1);
        m.rollout_percent = 25;
        let peers: Vec<[u8; 8]> = (0u64..4000).map(u64::to_le_bytes).collect();
        let inside = peers.iter().filter(|p| in_rollout(*p, &m)).count();
        assert!((800..1200).contains(&inside), "{inside} of 4000 at 25 %");
        m.rollout_percent = 100;
        assert!(peers.iter().all(|p| in_rollout(p, &m)));
    }

    #[test]
    fn unknown_targets_and_unsafe_versions_are_malformed() {
        let mut m = manifest(1);
        m.targets
            .insert("plan9-mips".into(), m.targets["linux-x86_64"].clone());
        let e = m.check().unwrap_err().to_string();
        assert!(e.contains("unknown target `plan9-mips`"), "{e}");
        for version in ["../../bin", ".hidden", "a/b", ""] {
            let mut m = manifest(1);
            m.version = version.into();
            assert!(m.check().is_err(), "version {version:?} accepted");
        }
        let mut m = manifest(1);
        m.version = "1.2.3-rc.1+build.5".into();
        m.check().unwrap();
    }
}
