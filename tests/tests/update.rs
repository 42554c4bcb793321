//! Signed releases through the network (`auto_update: apply`), with real processes:
//! a publisher announces a release signed by two of three key holders; five peers, each
//! running its own copy of the binary, verify it, fetch the artifact, stage it, run it
//! in their own place and confirm it. A next release that never becomes ready is rolled
//! back on every peer. Forged, expired, replayed, foreign and tampered releases from a
//! malicious peer are each refused by name, and nothing is staged.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use jantar_tests::{
    evil::EvilProvider,
    harness::{LoopbackNet, Node, random_file},
    update::{
        Keys, ReleaseSpec, UpdateNet, binary_copy, built_version, make_release, propagate, publish,
        release, staged, update_status, write_executable,
    },
};

const READY: Duration = Duration::from_secs(60);
const RELEASES_TOPIC: &str = "jantar/releases/v1/stable";
const KEYS_TOPIC: &str = "jantar/release-keys/v1";
/// From publishing to every peer running the release.
const PROPAGATE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_reaches_five_peers_each_runs_it_and_a_broken_one_is_rolled_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut u = UpdateNet::start(dir.path(), 5, READY).await?;
    let result = apply_then_roll_back(&mut u).await;
    if result.is_err() {
        eprintln!("{}", u.diagnose().await);
    }
    result
}

async fn apply_then_roll_back(u: &mut UpdateNet) -> Result<()> {
    // 1. A release of a new version reaches every peer, which runs it.
    let p = propagate(u, "99.0.0", 1, PROPAGATE).await?;
    eprintln!(
        "update: {} peers run 99.0.0, the last {:.1} s after publishing",
        p.peers,
        p.confirmed.last().map_or(0.0, Duration::as_secs_f64)
    );
    for peer in &u.peers {
        let st = update_status(peer).await?;
        ensure!(
            st["state"] == "up_to_date" && st["running_version"] == "99.0.0",
            "{}: {st}",
            peer.name
        );
        // Each ran its own binary, replaced in place; the old one is kept beside it.
        let bin = peer.dir.join("bin");
        ensure!(
            bin.join("jantar-peer.previous").exists(),
            "{}: no previous binary kept",
            peer.name
        );
        let metrics = peer.metrics().await?;
        ensure!(
            metrics.contains("jantar_update_applied_sequence 1"),
            "{}: applied sequence not in /metrics",
            peer.name
        );
    }
    // The watchers stood down, and the new versions reaped them: no child left behind,
    // not even as a zombie.
    for peer in &mut u.peers {
        let Some(pid) = peer.pid() else { continue };
        let name = peer.name.clone();
        peer.wait_until(
            READY,
            &format!("{name}'s watcher reaped"),
            async |_: &Node| Ok(children_of(pid).is_empty()),
        )
        .await?;
    }

    // 2. A release whose binary never becomes ready is rolled back everywhere, and not
    // tried again.
    let root = u.net.root.clone();
    let broken = root.join("dist").join("broken").join("jantar-peer");
    write_executable(&broken, b"#!/bin/sh\nwhile :; do sleep 1; done\n")?;
    let manifest = make_release(
        &root.join("dist"),
        "release-2",
        &ReleaseSpec {
            version: "99.1.0",
            sequence: 2,
            targets: vec![(None, &broken)],
            expires_in: "1h",
            signers: vec![&u.keys.files[1], &u.keys.files[2]],
        },
    )?;
    let since = Instant::now();
    publish(&u.publisher, &manifest, &[&broken])?;
    for peer in &mut u.peers {
        // The trial runs (no start-up line: it never gets that far), is stopped after
        // `ready_timeout`, and the previous version starts again.
        let line = peer.follow_restart(PROPAGATE).await?;
        ensure!(
            line["version"] == "99.0.0",
            "{}: after the rollback it runs {}",
            peer.name,
            line["version"]
        );
        let name = peer.name.clone();
        peer.wait_until(READY, &format!("{name} rolled back"), async |n: &Node| {
            let st = update_status(n).await?;
            Ok(st["state"] == "rolled_back" && st["applied_sequence"] == 2)
        })
        .await?;
        let installed = std::fs::read(peer.dir.join("bin").join("jantar-peer"))?;
        ensure!(
            !installed.starts_with(b"#!"),
            "{}: the broken binary is still installed",
            peer.name
        );
    }
    eprintln!(
        "update: 5 peers rolled 99.1.0 back within {:.1} s",
        since.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A malicious peer's releases: one signature of a 2-of-3 threshold, keys nobody
/// trusts, an expired manifest, a replay of an older sequence, and an artifact whose
/// only provider serves tampered chunks. Each is refused with a log line naming why,
/// nothing is staged, and the peers keep running their version. A release for another
/// target is forwarded (others need it) but not staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_foreign_and_tampered_releases_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let net = LoopbackNet::start(root, "", READY).await?;
    let keys = Keys::generate(&root.join("keys"), "holder", 3)?;
    let strangers = Keys::generate(&root.join("keys"), "stranger", 2)?;
    let mut peers = vec![];
    for name in ["a", "b"] {
        let bin = binary_copy(&root.join(name))?;
        peers.push(
            net.peer_with_binary(name, &keys.config("apply", "10s"), &bin)
                .await?,
        );
    }
    let result = refusals(root, &net, &keys, &strangers, &mut peers).await;
    if result.is_err() {
        let mut all: Vec<&Node> = vec![&net.boot];
        all.extend(peers.iter());
        eprintln!("{}", jantar_tests::harness::diagnose_all(&all).await);
    }
    result
}

async fn refusals(
    root: &Path,
    net: &LoopbackNet,
    keys: &Keys,
    strangers: &Keys,
    peers: &mut [Node],
) -> Result<()> {
    let running = built_version()?;
    let dist = root.join("dist");
    let artifact = dist.join("jantar-peer");
    jantar_tests::update::stamp(
        &jantar_tests::harness::Role::Peer.path(),
        "99.0.0",
        &artifact,
    )?;
    let other_target = if std::env::consts::ARCH == "x86_64" {
        "linux-aarch64"
    } else {
        "linux-x86_64"
    };
    let k: Vec<&Path> = keys.files.iter().map(|p| p.as_path()).collect();
    let st: Vec<&Path> = strangers.files.iter().map(|p| p.as_path()).collect();
    let one_signature = make_release(&dist, "one", &spec(&artifact, 3, vec![k[0]]))?;
    let strangers_only = make_release(&dist, "strangers", &spec(&artifact, 3, vec![st[0], st[1]]))?;
    let expired = make_release(
        &dist,
        "expired",
        &ReleaseSpec {
            expires_in: "1s",
            ..spec(&artifact, 3, vec![k[0], k[1]])
        },
    )?;
    let foreign = make_release(
        &dist,
        "foreign",
        &ReleaseSpec {
            targets: vec![(Some(other_target), &artifact)],
            ..spec(&artifact, 5, vec![k[0], k[1]])
        },
    )?;
    let replay = make_release(&dist, "replay", &spec(&artifact, 3, vec![k[1], k[2]]))?;
    // The tampered case: the manifest names the artifact truly, but its only provider
    // serves every chunk with a byte flipped.
    let tampered_file = dist.join("tampered-artifact");
    random_file(&tampered_file, 3 * 1024 * 1024 + 17, 9)?;
    let tampered = make_release(
        &dist,
        "tampered",
        &ReleaseSpec {
            targets: vec![(None, &tampered_file)],
            ..spec(&artifact, 6, vec![k[0], k[2]])
        },
    )?;
    // Past its expiry before anyone sees it.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let evil_exe = Path::new(env!("CARGO_BIN_EXE_evil-provider"));
    let addrs: Vec<String> = peers.iter().map(Node::addr).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let cases: [(&str, &Path, &str); 5] = [
        (
            "one signature",
            &one_signature,
            "1 valid signature(s) from trusted keys; 2 needed",
        ),
        (
            "strangers' keys",
            &strangers_only,
            "0 valid signature(s) from trusted keys; 2 needed",
        ),
        ("expired", &expired, "expired at unix time"),
        ("another target", &foreign, "no artifact for"),
        (
            "replay",
            &replay,
            "sequence 3 is not newer than 5, the newest verified (a replay)",
        ),
    ];
    let mut flooded = false;
    for (i, (case, manifest, says)) in cases.into_iter().enumerate() {
        if case == "replay" && !flooded {
            flood(root, net, &addrs, &keys.files, peers).await?;
            flooded = true;
        }
        let mut evil = EvilProvider::start(
            evil_exe,
            &root.join(format!("evil-{i}")),
            &artifact,
            &net.boot.addr(),
            &addrs,
            Some((manifest, RELEASES_TOPIC, 1)),
        )
        .await?;
        evil.wait_for(READY, "a release published", |e| {
            e["event"] == "release_published" && e["error"].is_null()
        })
        .await?;
        for p in peers.iter_mut() {
            p.wait_for_log(READY, |v| {
                v["reason"].as_str().is_some_and(|r| r.contains(says))
            })
            .await
            .map_err(|e| e.context(format!("{}: the {case} release", p.name)))?;
        }
    }
    for p in peers.iter() {
        let u = update_status(p).await?;
        // The foreign release is the newest verified; it has nothing for this machine.
        ensure!(
            u["newest"]["sequence"] == 5 && u["state"] == "no_target",
            "{}: {u}",
            p.name
        );
        ensure!(u["refused"].as_u64() >= Some(4), "{}: {u}", p.name);
    }

    // The tampered artifact: the manifest verifies, the fetch finds only bad chunks.
    let mut evil = EvilProvider::start(
        evil_exe,
        &root.join("evil-tampered"),
        &tampered_file,
        &net.boot.addr(),
        &addrs,
        Some((&tampered, RELEASES_TOPIC, 1)),
    )
    .await?;
    evil.wait_for(READY, "a corrupt chunk served", |e| {
        e["event"] == "corrupt_chunk_served"
    })
    .await?;
    let id = jantar_net::files::id::hash_file(&tampered_file)?
        .root()
        .to_string();
    for p in peers.iter_mut() {
        let evil_id = evil.peer_id.clone();
        let name = p.name.clone();
        let path = format!("/files/{id}");
        p.wait_until(
            READY,
            &format!("{name} to find the artifact's provider bad"),
            async |n: &Node| {
                let f = n.get_json(&path).await?;
                let u = update_status(n).await?;
                Ok(u["newest"]["sequence"] == 6
                    && u["state"] == "fetching"
                    && f["bad_providers"]
                        .as_array()
                        .is_some_and(|b| b.iter().any(|x| x == evil_id.as_str())))
            },
        )
        .await?;
    }
    for p in peers.iter() {
        ensure!(staged(p).is_empty(), "{}: staged {:?}", p.name, staged(p));
        let st = p.status().await?;
        ensure!(st["version"] == running.as_str(), "{}: {st}", p.name);
    }
    Ok(())
}

fn spec<'a>(artifact: &'a Path, sequence: u64, signers: Vec<&'a Path>) -> ReleaseSpec<'a> {
    ReleaseSpec {
        version: "99.0.0",
        sequence,
        targets: vec![(None, artifact)],
        expires_in: "1h",
        signers,
    }
}

/// `release publish MANIFEST` on `node` (its artifacts already shared): whether it
/// succeeded, and its error output.
fn release_publish(node: &Node, manifest: &Path) -> Result<(bool, String)> {
    let (status, _, err) =
        node.cli(&["release", "publish", manifest.to_str().unwrap_or_default()])?;
    Ok((status.success(), err))
}

/// Rotating the release keys: a new key set signed by two of the three old keys and by
/// its own threshold reaches the peers, survives a restart, and from then on only the
/// new keys' releases are taken. A rotation signed by the new keys alone (from a
/// malicious peer) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_release_keys_replace_the_old_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut u = UpdateNet::start(dir.path(), 2, READY).await?;
    let result = rotate(&mut u).await;
    if result.is_err() {
        eprintln!("{}", u.diagnose().await);
    }
    result
}

async fn rotate(u: &mut UpdateNet) -> Result<()> {
    let root = u.net.root.clone();
    let dist = root.join("dist");
    let new = Keys::generate(&root.join("keys"), "new", 2)?;
    let mut args = vec!["root", "--sequence", "1", "--threshold", "2"];
    for k in &new.public {
        args.extend(["--key", k.as_str()]);
    }
    // A forged rotation first: the new keys alone.
    let forged = dist.join("root-forged.json");
    std::fs::create_dir_all(&dist)?;
    let out = forged.to_str().unwrap_or_default().to_string();
    let mut forged_args = args.clone();
    forged_args.extend(["--out", out.as_str()]);
    release(&forged_args)?;
    for k in &new.files {
        release(&["sign", "--key", k.to_str().unwrap_or_default(), &out])?;
    }
    let artifact = dist.join("any");
    std::fs::write(&artifact, b"not a release")?;
    let addrs: Vec<String> = u.peers.iter().map(Node::addr).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let _evil = EvilProvider::start(
        Path::new(env!("CARGO_BIN_EXE_evil-provider")),
        &root.join("evil"),
        &artifact,
        &u.net.boot.addr(),
        &addrs,
        Some((&forged, KEYS_TOPIC, 1)),
    )
    .await?;
    for p in u.peers.iter_mut() {
        p.wait_for_log(READY, |v| {
            v["message"] == "refused a release key rotation"
                && v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("valid signature(s) from the current release keys"))
        })
        .await?;
    }

    // The real one: two of the three old keys, and both new ones.
    let rotation = dist.join("root-1.json");
    let out = rotation.to_str().unwrap_or_default().to_string();
    args.extend(["--out", out.as_str()]);
    release(&args)?;
    for k in [
        &u.keys.files[0],
        &u.keys.files[1],
        &new.files[0],
        &new.files[1],
    ] {
        release(&["sign", "--key", k.to_str().unwrap_or_default(), &out])?;
    }
    publish(&u.publisher, &rotation, &[])?;
    for p in u.peers.iter_mut() {
        let name = p.name.clone();
        p.wait_until(
            READY,
            &format!("{name} to take the rotation"),
            async |n: &Node| {
                let st = update_status(n).await?;
                Ok(st["root_sequence"] == 1 && st["trusted_keys"] == 2)
            },
        )
        .await?;
    }
    // Kept across a restart.
    let name = u.peers[0].name.clone();
    u.peers[0].terminate(Duration::from_secs(20)).await?;
    let bin = u.net.root.join(&name).join("bin").join("jantar-peer");
    let mut restarted =
        Node::restart_with_binary(&u.net.root, &name, jantar_tests::harness::Role::Peer, &bin)
            .await?;
    restarted.wait_ready(READY).await?;
    let st = update_status(&restarted).await?;
    ensure!(st["root_sequence"] == 1, "after a restart: {st}");
    u.peers[0] = restarted;

    // The old keys' releases are refused now; the new keys' are run.
    let stamped = dist.join("99.0.0").join("jantar-peer");
    jantar_tests::update::stamp(
        &jantar_tests::harness::Role::Peer.path(),
        "99.0.0",
        &stamped,
    )?;
    let old = make_release(
        &dist,
        "old-keys",
        &spec(&stamped, 1, vec![&u.keys.files[0], &u.keys.files[2]]),
    )?;
    let (status, _, err) = u.publisher.cli(&[
        "release",
        "publish",
        "--artifact",
        stamped.to_str().unwrap_or_default(),
        old.to_str().unwrap_or_default(),
    ])?;
    ensure!(
        !status.success() && err.contains("0 valid signature(s) from trusted keys; 2 needed"),
        "the old keys' release was published: {err}"
    );
    // A release whose artifact the publishing node does not hold is refused by name.
    let unshared = dist.join("unshared").join("jantar-peer");
    jantar_tests::update::stamp(
        &jantar_tests::harness::Role::Peer.path(),
        "99.0.1",
        &unshared,
    )?;
    let not_held = make_release(
        &dist,
        "not-held",
        &spec(&unshared, 1, vec![&new.files[0], &new.files[1]]),
    )?;
    let (ok, err) = release_publish(&u.publisher, &not_held)?;
    ensure!(
        !ok && err.contains("this node does not hold the artifact for"),
        "a release without its artifact was published: {err}"
    );
    let fresh = make_release(
        &dist,
        "new-keys",
        &spec(&stamped, 1, vec![&new.files[0], &new.files[1]]),
    )?;
    let since = Instant::now();
    publish(&u.publisher, &fresh, &[&stamped])?;
    for p in u.peers.iter_mut() {
        jantar_tests::update::wait_updated(p, "99.0.0", 1, since, Duration::from_secs(120)).await?;
    }
    // The same manifest again is announced again; another one with its sequence (here
    // a later expiry) is refused by name, and the newest stays the first.
    let (ok, err) = release_publish(&u.publisher, &fresh)?;
    ensure!(ok, "publishing the newest again failed: {err}");
    let twin = make_release(
        &dist,
        "new-keys-twin",
        &ReleaseSpec {
            expires_in: "2h",
            ..spec(&stamped, 1, vec![&new.files[0], &new.files[1]])
        },
    )?;
    let (ok, err) = release_publish(&u.publisher, &twin)?;
    ensure!(
        !ok && err.contains("sequence 1 is taken by another manifest"),
        "a second manifest with a taken sequence was published: {err}"
    );
    let newest = update_status(&u.publisher).await?["newest"].clone();
    ensure!(
        newest["sequence"] == 1 && newest["version"] == "99.0.0",
        "the newest changed: {newest}"
    );
    Ok(())
}

/// A flood of manifests with the newest sequence (each would only be ignored, unpunished,
/// were it not for the sender's rate): past the rate they are rejected, which gossipsub
/// scores. The peers stay up, and the next sender's manifest is still heard (the replay
/// case after this).
async fn flood(
    root: &Path,
    net: &LoopbackNet,
    addrs: &[&str],
    keys: &[std::path::PathBuf],
    peers: &mut [Node],
) -> Result<()> {
    let dist = root.join("dist");
    let artifact = dist.join("jantar-peer");
    let same = make_release(
        &dist,
        "same-sequence",
        &spec(&artifact, 5, vec![keys[0].as_path(), keys[1].as_path()]),
    )?;
    let mut evil = EvilProvider::start(
        Path::new(env!("CARGO_BIN_EXE_evil-provider")),
        &root.join("evil-flood"),
        &artifact,
        &net.boot.addr(),
        addrs,
        Some((&same, RELEASES_TOPIC, 300)),
    )
    .await?;
    evil.wait_for(READY, "the flood published", |e| {
        e["event"] == "release_published" && e["error"].is_null()
    })
    .await?;
    for p in peers.iter_mut() {
        let name = p.name.clone();
        p.wait_until(
            READY,
            &format!("{name} to hold the flood to its rate"),
            async |n: &Node| {
                Ok(jantar_tests::harness::metric_sum(
                    &n.metrics().await?,
                    "jantar_update_manifests_total",
                    &["result=\"over_rate\""],
                ) > 0.0)
            },
        )
        .await?;
        let st = p.status().await?;
        ensure!(
            st["ready"] == true,
            "{}: not ready after the flood: {st}",
            p.name
        );
    }
    Ok(())
}

/// The system unit's way (`update.method: stage`): the installed binary is never
/// touched; the staged release runs, and a later start of the installed binary hands
/// over to it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_release_is_run_again_by_the_installed_binary_after_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let net = LoopbackNet::start(root, "", READY).await?;
    let keys = Keys::generate(&root.join("keys"), "holder", 3)?;
    let mut publisher = net.peer("publisher", &keys.config("notify", "10s")).await?;
    let installed = binary_copy(&root.join("peer"))?;
    let before = std::fs::read(&installed)?;
    let mut peer = net
        .peer_with_binary(
            "peer",
            &format!("{}  method: stage\n", keys.config("apply", "10s")),
            &installed,
        )
        .await?;
    let result = async {
        let artifact = root.join("dist").join("jantar-peer");
        jantar_tests::update::stamp(
            &jantar_tests::harness::Role::Peer.path(),
            "99.0.0",
            &artifact,
        )?;
        let manifest = make_release(
            &root.join("dist"),
            "release-1",
            &spec(&artifact, 1, vec![&keys.files[0], &keys.files[1]]),
        )?;
        let since = Instant::now();
        publish(&publisher, &manifest, &[&artifact])?;
        jantar_tests::update::wait_updated(&mut peer, "99.0.0", 1, since, PROPAGATE).await?;
        ensure!(
            std::fs::read(&installed)? == before,
            "the installed binary was changed"
        );
        ensure!(
            staged(&peer) == vec!["1-99.0.0".to_string()],
            "staged: {:?}",
            staged(&peer)
        );
        // Stopped, and started again from the installed binary: it hands over.
        peer.terminate(Duration::from_secs(20)).await?;
        let mut again =
            Node::restart_with_binary(root, "peer", jantar_tests::harness::Role::Peer, &installed)
                .await?;
        let status = again.status().await?;
        ensure!(status["version"] == "99.0.0", "after a restart: {status}");
        again.wait_ready(READY).await?;
        let u = update_status(&again).await?;
        ensure!(
            u["state"] == "up_to_date" && u["applied_sequence"] == 1,
            "{u}"
        );
        peer = again;
        // `--check` (the units' ExecStartPre) is run by the staged release, which a start
        // runs; so is a config the installed binary refuses (a newer release may know
        // its keys). Here the release is the same code, so it refuses it too, by name.
        let cfg = peer.dir.join("node.cfg");
        let check = |cfg: &Path| -> Result<(bool, String, String)> {
            let out = std::process::Command::new(&installed)
                .arg("-c")
                .arg(cfg)
                .arg("--check")
                .output()?;
            Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        };
        let (ok, out, err) = check(&cfg)?;
        ensure!(
            ok && out.contains(": OK (staged release 99.0.0, started by "),
            "--check was not run by the staged release: {out} {err}"
        );
        let newer_cfg = root.join("newer.cfg");
        std::fs::write(
            &newer_cfg,
            format!(
                "{}key_of_a_later_release: 1\n",
                std::fs::read_to_string(&cfg)?
            ),
        )?;
        let (ok, out, err) = check(&newer_cfg)?;
        ensure!(
            !ok && err.contains("(staged release 99.0.0, started by ")
                && err.contains("config error")
                && err.contains("key_of_a_later_release"),
            "the refused config was not handed to the staged release: {out} {err}"
        );
        // What another user could have staged is not run: root checking the config of a
        // peer whose releases belong to the peer's own user checks it itself.
        if nix::unistd::geteuid().is_root() {
            let releases = peer.dir.join("releases");
            std::os::unix::fs::chown(&releases, Some(4242), None)?;
            let (ok, out, err) = check(&cfg)?;
            std::os::unix::fs::chown(&releases, Some(0), None)?;
            ensure!(
                ok && !out.contains("staged release")
                    && err.contains("not handing over to the staged release 99.0.0")
                    && err.contains("belongs to uid 4242"),
                "another user's release was run: {out} {err}"
            );
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!(
            "{}",
            jantar_tests::harness::diagnose_all(&[&net.boot, &publisher, &peer]).await
        );
    }
    publisher.terminate(Duration::from_secs(20)).await.ok();
    result
}

/// The processes whose parent is `pid`, with their state (from `/proc`).
fn children_of(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // After the command name in parentheses: state, then the parent's pid.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}
