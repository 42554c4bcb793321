//! Signed releases end to end, for the update tests and `bench update`: release keys
//! made with the real `jantar-peer release` tools, a second version of the built binary
//! (its version slot rewritten, see `jantar_net::version`), peers that each run their own
//! copy of the binary, and a publisher.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use jantar_net::{
    release::manifest::this_target,
    version::{SLOT_LEN, SLOT_MARKER},
};
use serde_json::Value;

use crate::harness::{LoopbackNet, Node, Role, run_to_end};

/// Runs `jantar-peer release args...` and returns its standard output.
pub fn release(args: &[&str]) -> Result<String> {
    let mut all = vec!["release"];
    all.extend_from_slice(args);
    let (status, out, err) = run_to_end(Role::Peer, &all)?;
    ensure!(status.success(), "release {args:?} failed:\n{out}{err}");
    Ok(out)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Release keys made with `release keygen`: their files and public keys.
pub struct Keys {
    pub files: Vec<PathBuf>,
    pub public: Vec<String>,
}

impl Keys {
    pub fn generate(dir: &Path, prefix: &str, n: usize) -> Result<Keys> {
        std::fs::create_dir_all(dir)?;
        let mut keys = Keys {
            files: vec![],
            public: vec![],
        };
        for i in 0..n {
            let file = dir.join(format!("{prefix}-{i}.key"));
            let public = release(&["keygen", "--out", s(&file)])?;
            keys.files.push(file);
            keys.public.push(public.trim().to_string());
        }
        Ok(keys)
    }

    /// The `auto_update` and `update` config of a peer that trusts these keys, two of
    /// them needed.
    pub fn config(&self, mode: &str, ready_timeout: &str) -> String {
        let keys: Vec<String> = self.public.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "auto_update: {mode}\nupdate:\n  trusted_keys: [{}]\n  threshold: 2\n  ready_timeout: {ready_timeout}\n",
            keys.join(", ")
        )
    }
}

/// Copies `src` to `out` with the version in its version slot replaced by `version`.
pub fn stamp(src: &Path, version: &str, out: &Path) -> Result<()> {
    ensure!(version.len() < SLOT_LEN, "version {version} too long");
    let mut bytes = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    let at = bytes
        .windows(SLOT_MARKER.len())
        .position(|w| w == SLOT_MARKER)
        .with_context(|| format!("no version slot in {}", src.display()))?
        + SLOT_MARKER.len();
    let slot = &mut bytes[at..at + SLOT_LEN];
    slot.fill(0);
    slot[..version.len()].copy_from_slice(version.as_bytes());
    write_executable(out, &bytes)?;
    // Without debug symbols the artifact is a quarter of the size, and travels faster
    // (the version slot is data, and stays). Where `strip` is missing it travels whole.
    let _ = std::process::Command::new("strip")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    Ok(())
}

pub fn write_executable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A copy of the built `jantar-peer` at `dir/bin/jantar-peer`, for a peer to run (and
/// an update to replace).
pub fn binary_copy(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("bin").join("jantar-peer");
    std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
    std::fs::copy(Role::Peer.path(), &path)?;
    Ok(path)
}

/// The version the built binary reports.
pub fn built_version() -> Result<String> {
    let (_, out, _) = run_to_end(Role::Peer, &["--version"])?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .context("jantar-peer --version printed no version")
}

/// What a release is made of.
pub struct ReleaseSpec<'a> {
    pub version: &'a str,
    pub sequence: u64,
    /// `(target, artifact)`; the target `None` means this machine's.
    pub targets: Vec<(Option<&'a str>, &'a Path)>,
    pub expires_in: &'a str,
    /// Key files that sign, each on its own copy.
    pub signers: Vec<&'a Path>,
}

/// Writes a signed release manifest to `dir/<name>.json` with the real tools: `new`,
/// a `sign` per signer on its own copy, `combine`.
pub fn make_release(dir: &Path, name: &str, spec: &ReleaseSpec<'_>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let unsigned = dir.join(format!("{name}-unsigned.json"));
    let sequence = spec.sequence.to_string();
    let targets: Vec<String> = spec
        .targets
        .iter()
        .map(|(t, p)| format!("{}={}", t.map_or_else(this_target, str::to_string), s(p)))
        .collect();
    let mut args = vec![
        "new",
        "--version",
        spec.version,
        "--sequence",
        &sequence,
        "--expires-in",
        spec.expires_in,
        "--out",
        s(&unsigned),
    ];
    for t in &targets {
        args.extend(["--target", t]);
    }
    release(&args)?;
    let mut copies = vec![];
    for (i, key) in spec.signers.iter().enumerate() {
        let copy = dir.join(format!("{name}-{i}.json"));
        std::fs::copy(&unsigned, &copy)?;
        release(&["sign", "--key", s(key), s(&copy)])?;
        copies.push(copy);
    }
    let out = dir.join(format!("{name}.json"));
    match copies.as_slice() {
        [] => {
            std::fs::copy(&unsigned, &out)?;
        }
        [one] => {
            std::fs::copy(one, &out)?;
        }
        many => {
            let mut args = vec!["combine", "--out", s(&out)];
            args.extend(many.iter().map(|p| s(p)));
            release(&args)?;
        }
    }
    Ok(out)
}

/// `jantar-peer release publish` through `publisher`'s admin endpoint.
pub fn publish(publisher: &Node, manifest: &Path, artifacts: &[&Path]) -> Result<String> {
    let mut args = vec!["release", "publish"];
    for a in artifacts {
        args.extend(["--artifact", s(a)]);
    }
    args.push(s(manifest));
    let (status, out, err) = publisher.cli(&args)?;
    ensure!(status.success(), "release publish failed:\n{out}{err}");
    Ok(out)
}

/// `node`'s `/status` `update` section.
pub async fn update_status(node: &Node) -> Result<Value> {
    Ok(node.status().await?["update"].clone())
}

/// Waits until `node` runs `version` as a confirmed update of `sequence`, following the
/// process through the hand-over; returns how long after `since` it was confirmed.
pub async fn wait_updated(
    node: &mut Node,
    version: &str,
    sequence: u64,
    since: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let deadline = since + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = node.follow_restart(left).await?;
        if line["version"] == version {
            break;
        }
    }
    loop {
        if let Ok(u) = update_status(node).await
            && u["applied_sequence"] == sequence
            && node.status().await?["version"] == version
        {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not confirm {version} within {timeout:?}\n{}",
                node.name,
                node.diagnose().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The staged releases in a peer's data directory (`releases/<sequence>-<version>`).
pub fn staged(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(node.dir.join("releases"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.split_once('-')
                        .is_some_and(|(seq, _)| seq.parse::<u64>().is_ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A network of a bootstrap node, a publisher and `n` peers that apply releases.
pub struct UpdateNet {
    pub net: LoopbackNet,
    pub keys: Keys,
    pub publisher: Node,
    pub peers: Vec<Node>,
    /// The version the built binary reports.
    pub running: String,
}

impl UpdateNet {
    pub async fn start(root: &Path, n: usize, ready: Duration) -> Result<UpdateNet> {
        let net = LoopbackNet::start(root, "", ready).await?;
        let keys = Keys::generate(&root.join("keys"), "holder", 3)?;
        let publisher = net.peer("publisher", &keys.config("notify", "10s")).await?;
        let mut peers = vec![];
        for i in 0..n {
            let name = format!("p{i}");
            let bin = binary_copy(&root.join(&name))?;
            peers.push(
                net.peer_with_binary(&name, &keys.config("apply", "10s"), &bin)
                    .await?,
            );
        }
        Ok(UpdateNet {
            net,
            keys,
            publisher,
            peers,
            running: built_version()?,
        })
    }

    /// Every node's log tail and status.
    pub async fn diagnose(&self) -> String {
        let mut all: Vec<&Node> = vec![&self.net.boot, &self.publisher];
        all.extend(self.peers.iter());
        crate::harness::diagnose_all(&all).await
    }
}

/// The time from `release publish` until every peer runs the new version, confirmed.
pub struct Propagation {
    pub peers: usize,
    /// Per peer, in the order they confirmed.
    pub confirmed: Vec<Duration>,
}

/// Publishes `version` as `sequence` (a stamped copy of the built binary) from the
/// publisher and waits until every peer runs it.
pub async fn propagate(
    u: &mut UpdateNet,
    version: &str,
    sequence: u64,
    timeout: Duration,
) -> Result<Propagation> {
    let root = u.net.root.clone();
    let artifact = root.join("dist").join(version).join("jantar-peer");
    stamp(&Role::Peer.path(), version, &artifact)?;
    let manifest = make_release(
        &root.join("dist"),
        &format!("release-{sequence}"),
        &ReleaseSpec {
            version,
            sequence,
            targets: vec![(None, &artifact)],
            expires_in: "1h",
            signers: vec![&u.keys.files[0], &u.keys.files[2]],
        },
    )?;
    let since = Instant::now();
    publish(&u.publisher, &manifest, &[&artifact])?;
    let waits = u
        .peers
        .iter_mut()
        .map(|p| wait_updated(p, version, sequence, since, timeout));
    let mut confirmed = futures::future::join_all(waits)
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    confirmed.sort();
    Ok(Propagation {
        peers: u.peers.len(),
        confirmed,
    })
}
