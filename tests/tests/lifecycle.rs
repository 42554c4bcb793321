//! Service-manager integration: sd_notify messages, the `healthcheck` subcommand, and
//! generated completions and man pages.

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use jantar_tests::harness::{Node, Role, run_to_end};

/// Reads notify datagrams until one contains `want`, or fails with all seen so far.
fn wait_for_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return Ok(());
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no {want} from the node within 30s; received: {seen:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_ready_watchdog_and_stopping() -> Result<()> {
    let d = tempfile::tempdir()?;
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let data = d.path().join("data");
    let log = d.path().join("log");
    let child = Command::new(Role::Relay.path())
        .args([
            "--port",
            "0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("JANTAR_DATA_DIR", &data)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JANTAR_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut node = Node::attach("relay", Role::Relay, child, log, data).await?;
    let mut seen = Vec::new();
    wait_for_notify(&sock, "READY=1", &mut seen).with_context(|| node.log_tail(20))?;
    ensure!(
        seen.iter().any(|m| m.contains("STATUS=peer id 12D3KooW")),
        "READY should carry a status line: {seen:?}"
    );
    // Heartbeats every WatchdogSec/2 = 200 ms: several within a second.
    let start = Instant::now();
    let mut beats = 0;
    while start.elapsed() < Duration::from_secs(2) && beats < 3 {
        wait_for_notify(&sock, "WATCHDOG=1", &mut seen)?;
        beats += 1;
    }
    ensure!(beats >= 3, "expected watchdog heartbeats: {seen:?}");
    let terminate = node.terminate(Duration::from_secs(12));
    let (status, _) = terminate.await?;
    ensure!(status.success(), "{status}");
    wait_for_notify(&sock, "STOPPING=1", &mut seen)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_readiness() -> Result<()> {
    let d = tempfile::tempdir()?;
    let mut node = Node::start(
        d.path(),
        "b",
        Role::Bootstrap,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n",
    )
    .await?;
    node.wait_ready(Duration::from_secs(30)).await?;
    let cfg = node.dir.join("node.cfg");
    let cfg = cfg.to_str().unwrap();
    let (status, out, err) = run_to_end(
        Role::Bootstrap,
        &["-c", cfg, "--admin-listen", &node.admin, "healthcheck"],
    )?;
    ensure!(
        status.success(),
        "healthcheck of a ready node: {status} {out} {err}"
    );
    ensure!(out.trim() == "ready", "{out}");
    node.terminate(Duration::from_secs(12)).await?;
    let (status, out, _) = run_to_end(
        Role::Bootstrap,
        &["-c", cfg, "--admin-listen", &node.admin, "healthcheck"],
    )?;
    ensure!(
        status.code() == Some(1),
        "healthcheck of a stopped node must fail: {status} {out}"
    );
    ensure!(out.contains("no node answering"), "{out}");
    Ok(())
}

#[test]
fn generates_completions_and_man_pages() -> Result<()> {
    let d = tempfile::tempdir()?;
    for role in [Role::Bootstrap, Role::Relay, Role::Peer] {
        let dir = d.path().join(role.binary());
        let dir_s = dir.to_str().unwrap();
        let (s, _, err) = run_to_end(role, &["generate", "completions", dir_s])?;
        ensure!(s.success(), "{err}");
        for f in [
            format!("{}.bash", role.binary()),
            format!("_{}", role.binary()),
            format!("{}.fish", role.binary()),
        ] {
            let text = std::fs::read_to_string(dir.join(&f)).with_context(|| f.clone())?;
            ensure!(text.contains("healthcheck"), "{f} lacks subcommands");
        }
        let (s, _, err) = run_to_end(role, &["generate", "man", dir_s])?;
        ensure!(s.success(), "{err}");
        let man = std::fs::read_to_string(dir.join(format!("{}.1", role.binary())))?;
        ensure!(
            man.contains(".TH") && man.contains(r"\-\-config"),
            "man page: {man}"
        );
        ensure!(dir.join(format!("{}-id.1", role.binary())).exists());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_enforced() -> Result<()> {
    let d = tempfile::tempdir()?;
    let token = "0123456789abcdef-test-token";
    let mut node = Node::start(
        d.path(),
        "p",
        Role::Peer,
        "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n",
    )
    .await?;
    drop(node);
    // The harness writes `admin.listen`; add the token to that section.
    let cfg = d.path().join("p/node.cfg");
    let text = std::fs::read_to_string(&cfg)?
        .replace("admin:\n", &format!("admin:\n  token: \"{token}\"\n"));
    std::fs::write(&cfg, &text)?;
    let log = d.path().join("p/node2.log");
    let child = Command::new(Role::Peer.path())
        .args(["-c", cfg.to_str().unwrap(), "run"])
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    node = Node::attach("p", Role::Peer, child, log, d.path().join("p")).await?;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", node.admin);
    ensure!(
        http.get(url("/status")).send().await?.status() == 401,
        "status without token must be refused"
    );
    ensure!(
        http.get(url("/metrics"))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await?
            .status()
            == 401
    );
    ensure!(
        http.get(url("/status"))
            .bearer_auth(token)
            .send()
            .await?
            .status()
            == 200
    );
    ensure!(
        http.get(url("/livez")).send().await?.status() == 200,
        "liveness needs no token"
    );
    // The CLI reads the token from the same config.
    let (status, out, err) = run_to_end(
        Role::Peer,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--admin-listen",
            &node.admin,
            "status",
        ],
    )?;
    ensure!(status.success() && out.contains("peer id:"), "{out}{err}");
    node.terminate(Duration::from_secs(12)).await?;
    Ok(())
}

/// A node starts without any DNS configuration (a container image with no
/// `/etc/resolv.conf`): it warns that `/dns` addresses will not resolve and
/// serves on IP addresses. Runs the binary in a private mount namespace with
/// an empty `/etc`; needs root, and prints `SKIP` without it.
#[test]
fn starts_without_a_dns_configuration() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP starts_without_a_dns_configuration: needs root for a mount namespace");
        return Ok(());
    }
    let d = tempfile::tempdir()?;
    let cfg = d.path().join("bootstrap.cfg");
    std::fs::write(
        &cfg,
        format!(
            "data_dir: {}\nadmin: {{listen: \"127.0.0.1:0\"}}\nlog: {{format: json}}\n\
             network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n",
            d.path().join("data").display()
        ),
    )?;
    let bin = Role::Bootstrap.path();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs none /etc && exec "$0" -c "$1" run"#)
        .arg(&bin)
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the bootstrap node under unshare")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("jantar started");
                lines.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    ensure!(
        started,
        "the node did not start without /etc/resolv.conf; its log:\n{}",
        lines.join("\n")
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("cannot read the system's DNS configuration")),
        "no warning about the missing DNS configuration; log:\n{}",
        lines.join("\n")
    );
    Ok(())
}
