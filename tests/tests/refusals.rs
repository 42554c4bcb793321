//! Bad input is refused before any socket is bound: exit code 78 and a message naming
//! the file, line and key. Key files are never overwritten or modified.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use jantar_tests::harness::{Node, Role, run_to_end};

const PEER_ID: &str = "12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe";

fn write_cfg(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("data_dir: {}\n{body}", dir.join("data").display()),
    )
    .unwrap();
    p
}

/// Runs `--check` and a real start with `cfg`; both must exit 78 with every `needle`
/// in the message.
fn assert_refused(role: Role, cfg: &Path, needles: &[&str]) {
    let path = cfg.to_str().unwrap();
    for args in [
        vec!["-c", path, "--check"],
        vec!["-c", path, "--admin-listen", "127.0.0.1:0", "run"],
    ] {
        let (status, _out, err) = run_to_end(role, &args).unwrap();
        assert_eq!(
            status.code(),
            Some(78),
            "{args:?}: expected exit 78, got {status}; stderr:\n{err}"
        );
        for n in needles {
            assert!(
                err.contains(n),
                "{args:?}: message should contain {n:?}:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn misspelled_key_suggests_correction() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        d.path(),
        "a.cfg",
        "network:\n  enable_dht: true\n  bootstrap_node: []\n",
    );
    assert_refused(
        Role::Peer,
        &cfg,
        &[
            cfg.to_str().unwrap(),
            "line 4",
            "network.bootstrap_node",
            "did you mean `bootstrap_nodes`?",
        ],
    );
}

#[test]
fn wrong_type_names_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(d.path(), "a.cfg", "port: fourthousand\n");
    assert_refused(Role::Relay, &cfg, &["line 2", "key `port`"]);
    let cfg = write_cfg(d.path(), "b.cfg", "relay:\n  max_circuit_bytes: lots\n");
    assert_refused(
        Role::Relay,
        &cfg,
        &["line 3", "relay.max_circuit_bytes", "invalid size"],
    );
}

#[test]
fn seed_placeholder_and_missing_peer_id_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        d.path(),
        "a.cfg",
        "network:\n  bootstrap_nodes:\n    - \"/ip4/165.232.45.78/tcp/4001/p2p/12D3KooWBootstrap1...\"\n",
    );
    assert_refused(
        Role::Peer,
        &cfg,
        &[
            "line 4",
            "network.bootstrap_nodes[0]",
            "not a valid multiaddr",
        ],
    );
    let cfg = write_cfg(
        d.path(),
        "b.cfg",
        "network:\n  relay_nodes:\n    - /ip4/10.0.0.1/tcp/4001\n",
    );
    assert_refused(
        Role::Peer,
        &cfg,
        &["line 4", "network.relay_nodes[0]", "/p2p/<peer id>"],
    );
}

#[test]
fn contradictions_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(
        d.path(),
        "a.cfg",
        "enable_dht: true\nnetwork:\n  enable_dht: false\n",
    );
    assert_refused(Role::Peer, &cfg, &["line 4", "network.enable_dht"]);
    let cfg = write_cfg(d.path(), "b.cfg", "bootstrap_mode: true\n");
    assert_refused(Role::Relay, &cfg, &["bootstrap_mode", "jantar-bootstrap"]);
    let cfg = write_cfg(
        d.path(),
        "c.cfg",
        "relay:\n  max_circuits: 2\n  max_circuits_per_peer: 3\n",
    );
    assert_refused(
        Role::Relay,
        &cfg,
        &["line 4", "relay.max_circuits_per_peer"],
    );
}

#[test]
fn missing_config_file_is_refused() {
    let (status, _, err) =
        run_to_end(Role::Peer, &["-c", "/nonexistent/jantar.cfg", "--check"]).unwrap();
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("/nonexistent/jantar.cfg"), "{err}");
}

#[test]
fn usage_error_exits_64() {
    let (status, _, err) = run_to_end(Role::Peer, &["--no-such-flag"]).unwrap();
    assert_eq!(status.code(), Some(64), "{err}");
}

#[test]
fn irrelevant_key_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(d.path(), "a.cfg", "download_dir: /tmp/jantar\nport: 4001\n");
    let (status, out, err) =
        run_to_end(Role::Bootstrap, &["-c", cfg.to_str().unwrap(), "--check"]).unwrap();
    assert!(status.success(), "{err}");
    assert!(out.contains(": OK"), "{out}");
    assert!(
        err.contains("warning") && err.contains("download_dir") && err.contains("no effect"),
        "{err}"
    );
}

fn key_setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_cfg(d.path(), "a.cfg", "");
    let key = d.path().join("data/identity.key");
    (d, cfg, key)
}

#[test]
fn identity_is_created_once_and_stable() {
    let (_d, cfg, key) = key_setup();
    let (s1, out1, _) = run_to_end(Role::Bootstrap, &["-c", cfg.to_str().unwrap(), "id"]).unwrap();
    assert!(s1.success());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (_, out2, _) = run_to_end(Role::Bootstrap, &["-c", cfg.to_str().unwrap(), "id"]).unwrap();
    assert_eq!(
        out1.lines().next(),
        out2.lines().next(),
        "peer id must survive restarts"
    );
    assert!(
        out1.lines()
            .nth(1)
            .is_some_and(|l| l.contains("/tcp/4001/p2p/12D3KooW")),
        "{out1}"
    );
}

#[test]
fn group_readable_key_is_refused_and_untouched() {
    let (_d, cfg, key) = key_setup();
    run_to_end(Role::Relay, &["-c", cfg.to_str().unwrap(), "id"]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read(&key).unwrap();
    for args in [
        vec!["-c", cfg.to_str().unwrap(), "id"],
        vec!["-c", cfg.to_str().unwrap(), "--check"],
    ] {
        let (status, _, err) = run_to_end(Role::Relay, &args).unwrap();
        assert_eq!(status.code(), Some(78), "{err}");
        assert!(
            err.contains(key.to_str().unwrap()) && err.contains("chmod 600"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&key).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

/// Starts `jantar-peer run` on `cfg` (admin on an ephemeral port) and waits for it to
/// exit: these configs are refused before anything is served.
fn run_peer(cfg: &Path) -> (std::process::ExitStatus, String, String) {
    run_to_end(
        Role::Peer,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "run",
        ],
    )
    .unwrap()
}

#[test]
fn corrupt_key_is_refused_and_untouched() {
    let (_d, cfg, key) = key_setup();
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, b"garbage").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, _, err) = run_peer(&cfg);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage");
}

#[test]
fn unreadable_key_is_refused() {
    let (_d, cfg, key) = key_setup();
    std::fs::create_dir_all(&key).unwrap(); // a directory where the key should be
    let (status, _, err) = run_to_end(Role::Peer, &["-c", cfg.to_str().unwrap(), "id"]).unwrap();
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("cannot read identity key"), "{err}");
}

#[test]
fn configured_key_path_is_used() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("keys/boot.key");
    let cfg = write_cfg(d.path(), "a.cfg", &format!("key_file: {}\n", key.display()));
    let (status, out, err) =
        run_to_end(Role::Bootstrap, &["-c", cfg.to_str().unwrap(), "id"]).unwrap();
    assert!(status.success(), "{err}");
    assert!(key.exists());
    assert!(out.starts_with("12D3KooW"), "{out}");
    assert_ne!(out.lines().next(), Some(PEER_ID));
}

/// With no config file each binary starts on its embedded default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_starts_on_embedded_default() -> Result<()> {
    for role in [Role::Bootstrap, Role::Relay, Role::Peer] {
        let d = tempfile::tempdir()?;
        let dir = d.path().join("data");
        let log = d.path().join("log");
        let child = std::process::Command::new(role.path())
            .args([
                "--port",
                "0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .env("JANTAR_DATA_DIR", &dir)
            .env_remove("JANTAR_CONFIG")
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut node = Node::attach(role.binary(), role, child, log.clone(), dir.clone()).await?;
        let st = node.status().await?;
        assert_eq!(st["role"], role.binary().trim_start_matches("jantar-"));
        assert_eq!(
            st["dht_mode"],
            if role == Role::Peer {
                "client"
            } else {
                "server"
            }
        );
        assert!(dir.join("identity.key").exists());
        let (status, took) = node.terminate(Duration::from_secs(12)).await?;
        assert!(status.success(), "{status}\n{}", node.log_tail(20));
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    Ok(())
}

#[test]
fn bad_tls_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let bogus = d.path().join("cert.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let cfg = write_cfg(
        d.path(),
        "a.cfg",
        &format!(
            "network:\n  tls:\n    trusted_certificates: [\"{}\"]\n",
            bogus.display()
        ),
    );
    let (status, _, err) =
        run_to_end(Role::Peer, &["-c", cfg.to_str().unwrap(), "--check"]).unwrap();
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(
        err.contains(bogus.to_str().unwrap()) && err.contains("trusted certificate"),
        "{err}"
    );
    // Starting for real fails the same way, before serving anything.
    let (status, _, err) = run_peer(&cfg);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
}

/// A readable-by-others or corrupt admin token is refused by the daemon and by the
/// client commands (exit 78, naming the file) and left as it is.
#[test]
fn open_or_corrupt_admin_token_is_refused_and_untouched() {
    let (d, cfg, _key) = key_setup();
    let token = d.path().join("data/admin.token");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    for (content, mode, needle) in [
        ("ab".repeat(32), 0o644, "chmod 600"),
        ("not a token".to_string(), 0o600, "not a token"),
    ] {
        std::fs::write(&token, &content).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let (status, _, err) = run_peer(&cfg);
        let (client, _, client_err) = run_to_end(
            Role::Peer,
            &[
                "-c",
                cfg.to_str().unwrap(),
                "--admin-listen",
                "127.0.0.1:9",
                "status",
            ],
        )
        .unwrap();
        for (what, status, err) in [("run", status, &err), ("status", client, &client_err)] {
            assert_eq!(status.code(), Some(78), "{what}: {err}");
            assert!(
                err.contains(token.to_str().unwrap()) && err.contains(needle),
                "{what}: {err}"
            );
        }
        assert_eq!(std::fs::read_to_string(&token).unwrap(), content);
        assert_eq!(
            std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
            mode
        );
    }
}
