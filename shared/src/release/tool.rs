//! `jantar-peer release`: the release keys' holders' tools. Each key holder signs on
//! their own machine; the signed copies are combined; anyone verifies.
//!
//! ```text
//! jantar-peer release keygen --out alice.key
//! jantar-peer release new --version 0.2.0 --sequence 7 --target linux-x86_64=./jantar-peer --out r.json
//! jantar-peer release sign --key alice.key r.json          # on alice's machine
//! jantar-peer release combine --out r.json r-alice.json r-bob.json
//! jantar-peer release verify --trusted-key ed25519:... --trusted-key ed25519:... --threshold 2 r.json
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::Subcommand;

use super::{
    PublicKey, Refused, SignedManifest, SigningKey, Trust,
    manifest::{Manifest, Target, this_target},
    root::{Root, SignedRoot},
    signed::{Document, is_root},
};
use crate::{
    atomic::{self, Existing},
    cli::exit::{EXIT_FAILURE, EXIT_USAGE, out},
    files::id::hash_file,
};

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Create a release key (owner-only file, never replaced); prints its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write an unsigned manifest for the given artifacts (their file IDs and sizes are
    /// computed here).
    New {
        #[arg(long, default_value = "stable")]
        channel: String,
        #[arg(long)]
        version: String,
        /// Must grow with every release of the channel.
        #[arg(long)]
        sequence: u64,
        /// How long the manifest stays valid.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires_in: Duration,
        /// Share of peers that apply it (1 to 100), decided per peer id.
        #[arg(long, default_value_t = 100)]
        rollout_percent: u8,
        /// `TARGET=PATH`, e.g. `linux-x86_64=target/release/jantar-peer`; repeat per
        /// target.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// Written only if it does not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write an unsigned root: the release keys that take over from the keys trusted
    /// now (sign it with `sign`, by the current keys' threshold and the new keys' own).
    Root {
        /// 1 for the first rotation away from the configured keys, then one more each.
        #[arg(long)]
        sequence: u64,
        /// A new release key (`ed25519:<hex>`); repeat.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        #[arg(long)]
        threshold: usize,
        /// Written only if it does not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add this key's signature to a manifest or a root (the file is replaced
    /// atomically).
    Sign {
        #[arg(long)]
        key: PathBuf,
        manifest: PathBuf,
    },
    /// Merge the signatures of copies of one manifest (or root) signed apart.
    Combine {
        /// Written only if it does not exist.
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true, num_args = 2..)]
        manifests: Vec<PathBuf>,
    },
    /// Share the artifacts with the network and announce the signed manifest, through
    /// the running daemon (which verifies it with its own trusted keys first).
    Publish {
        /// An artifact the manifest names (shared first); repeat.
        #[arg(long = "artifact")]
        artifacts: Vec<PathBuf>,
        manifest: PathBuf,
    },
    /// Internal: watches a new version on trial and rolls it back if it is not ready
    /// in time (started by the node that applies a release).
    #[command(hide = true)]
    UpdateWatch {
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        sequence: u64,
        #[arg(long)]
        releases: PathBuf,
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(last = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Check a manifest against trusted keys; exit 0 if it verifies, 1 with the reason
    /// if not.
    Verify {
        /// A trusted release key (`ed25519:<hex>`); repeat.
        #[arg(long = "trusted-key", required = true)]
        trusted_keys: Vec<String>,
        /// How many trusted keys must have signed.
        #[arg(long)]
        threshold: usize,
        #[arg(long, default_value = "stable")]
        channel: String,
        /// The target that must have an artifact (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        manifest: PathBuf,
    },
}

/// A failed release command: what to print, and the exit status.
struct Failure(String, u8);

fn fail(message: impl Into<String>) -> Failure {
    Failure(message.into(), EXIT_FAILURE)
}

pub fn run(command: ReleaseCommand) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            eprintln!("jantar-peer release: {message}");
            ExitCode::from(code)
        }
    }
}

fn execute(command: ReleaseCommand) -> Result<(), Failure> {
    match command {
        ReleaseCommand::Keygen { out } => {
            let key = SigningKey::generate();
            key.save_new(&out).map_err(|e| fail(e.to_string()))?;
            out!("{}", key.public());
            Ok(())
        }
        ReleaseCommand::New {
            channel,
            version,
            sequence,
            expires_in,
            rollout_percent,
            targets,
            out,
        } => {
            let mut manifest = Manifest {
                channel,
                version,
                sequence,
                expires: (SystemTime::now() + expires_in)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                rollout_percent,
                targets: Default::default(),
            };
            for t in &targets {
                let (name, path) = t.split_once('=').ok_or_else(|| {
                    Failure(format!("--target `{t}` is not TARGET=PATH"), EXIT_USAGE)
                })?;
                let m = hash_file(Path::new(path))
                    .map_err(|e| fail(format!("cannot read artifact {path}: {e}")))?;
                let target = Target {
                    file: m.root(),
                    size: m.size,
                };
                if manifest.targets.insert(name.into(), target).is_some() {
                    return Err(Failure(
                        format!("--target `{name}` given twice"),
                        EXIT_USAGE,
                    ));
                }
            }
            manifest
                .check()
                .map_err(|e| Failure(e.to_string(), EXIT_USAGE))?;
            write_new(&out, &Doc::Manifest(SignedManifest::new(manifest)))
        }
        ReleaseCommand::Root {
            sequence,
            keys,
            threshold,
            out,
        } => {
            let keys = keys
                .iter()
                .map(|k| k.parse::<PublicKey>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure(format!("--key: {e}"), EXIT_USAGE))?;
            let root = Root {
                sequence,
                keys,
                threshold,
            };
            root.check()
                .map_err(|e| Failure(e.to_string(), EXIT_USAGE))?;
            write_new(&out, &Doc::Root(SignedRoot::new(root)))
        }
        ReleaseCommand::Sign { key, manifest } => {
            let key = SigningKey::load(&key).map_err(|e| fail(e.to_string()))?;
            let mut m = read(&manifest)?;
            m.sign(&key);
            atomic::write(&manifest, m.to_json().as_bytes(), 0o644, Existing::Replace)
                .map_err(|e| fail(format!("cannot write {}: {e}", manifest.display())))?;
            out!(
                "signed {m} with {} ({} signature(s) now)",
                key.public(),
                m.signatures()
            );
            Ok(())
        }
        ReleaseCommand::Combine { out, manifests } => {
            let mut all = manifests.iter();
            let first = all.next().map(|p| read(p)).transpose()?;
            let mut combined = first.ok_or_else(|| fail("no manifests given"))?;
            for p in all {
                combined
                    .combine(read(p)?)
                    .map_err(|e| fail(format!("{}: {e}", p.display())))?;
            }
            write_new(&out, &combined)
        }
        ReleaseCommand::Publish { .. } => Err(fail(
            "publish talks to the running daemon; run it as `jantar-peer release publish`",
        )),
        ReleaseCommand::UpdateWatch {
            pid,
            sequence,
            releases,
            timeout,
            args,
        } => {
            crate::logging::init(&crate::config::LogConfig {
                level: "info".into(),
                format: crate::config::LogFormat::Text,
            });
            super::watch::watch(
                &super::install::Releases::at(releases),
                pid,
                sequence,
                timeout,
                &args,
            )
            .map_err(|e| fail(e.to_string()))
        }
        ReleaseCommand::Verify {
            trusted_keys,
            threshold,
            channel,
            target,
            manifest,
        } => {
            let keys = trusted_keys
                .iter()
                .map(|k| k.parse::<PublicKey>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure(format!("--trusted-key: {e}"), EXIT_USAGE))?;
            if threshold == 0 || threshold > keys.len() {
                return Err(Failure(
                    format!(
                        "--threshold {threshold} must be between 1 and the {} trusted keys",
                        keys.len()
                    ),
                    EXIT_USAGE,
                ));
            }
            let m = read_manifest(&manifest)?;
            let target = target.unwrap_or_else(this_target);
            let trust = Trust { keys, threshold };
            let v = m
                .verify(&trust, &channel, SystemTime::now(), None, Some(&target))
                .map_err(|e| fail(format!("{} refused: {e}", manifest.display())))?;
            out!(
                "verified: {} ({} of {} trusted keys signed; {target}: {} bytes, file {})",
                v.manifest,
                v.signers,
                trust.keys.len(),
                v.artifact.map_or(0, |a| a.size),
                v.artifact.map(|a| a.file.to_string()).unwrap_or_default(),
            );
            Ok(())
        }
    }
}

/// A document the key holders sign: a release manifest or a root.
enum Doc {
    Manifest(SignedManifest),
    Root(SignedRoot),
}

impl Doc {
    /// A root is told from a manifest by its `keys`.
    fn parse(bytes: &[u8]) -> Result<Self, Refused> {
        if is_root(bytes) {
            SignedRoot::parse(bytes).map(Doc::Root)
        } else {
            SignedManifest::parse(bytes).map(Doc::Manifest)
        }
    }

    fn sign(&mut self, key: &SigningKey) {
        match self {
            Doc::Manifest(m) => m.sign(key),
            Doc::Root(r) => r.sign(key),
        }
    }

    fn signatures(&self) -> usize {
        match self {
            Doc::Manifest(m) => m.signatures.len(),
            Doc::Root(r) => r.signatures.len(),
        }
    }

    fn combine(&mut self, other: Doc) -> Result<(), Refused> {
        match (self, other) {
            (Doc::Manifest(a), Doc::Manifest(b)) => a.combine(b),
            (Doc::Root(a), Doc::Root(b)) => a.combine(b),
            _ => Err(Refused::Malformed(
                "a manifest and a root cannot be combined".into(),
            )),
        }
    }

    fn to_json(&self) -> String {
        match self {
            Doc::Manifest(m) => m.to_json(),
            Doc::Root(r) => r.to_json(),
        }
    }
}

impl std::fmt::Display for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Doc::Manifest(m) => write!(f, "{}", m.signed),
            Doc::Root(r) => write!(
                f,
                "root {} ({} keys, threshold {})",
                r.signed.sequence,
                r.signed.keys.len(),
                r.signed.threshold
            ),
        }
    }
}

fn read(path: &Path) -> Result<Doc, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    Doc::parse(&bytes).map_err(|e| fail(format!("{}: {e}", path.display())))
}

fn read_manifest(path: &Path) -> Result<SignedManifest, Failure> {
    match read(path)? {
        Doc::Manifest(m) => Ok(m),
        Doc::Root(_) => Err(fail(format!(
            "{} is a root, not a release manifest",
            path.display()
        ))),
    }
}

fn write_new(path: &Path, d: &Doc) -> Result<(), Failure> {
    atomic::write(path, d.to_json().as_bytes(), 0o644, Existing::Keep).map_err(|e| {
        fail(format!(
            "cannot write {}: {e} (an existing file is never replaced)",
            path.display()
        ))
    })?;
    out!("wrote {}: {d}", path.display());
    Ok(())
}
