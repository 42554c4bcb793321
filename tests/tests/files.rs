//! File and message propagation between real `jantar-peer` processes on loopback.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use jantar_tests::harness::{Node, Role, diagnose_all, run_to_end};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const FAST: &str =
    "  autonat: {only_global_ips: false, boot_delay: 1s}\n  dht: {discovery_interval: 1s}\n";

fn random_file(path: &Path, size: usize) -> Result<()> {
    // A deterministic, incompressible pattern (xorshift), so no two chunks repeat.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data)?;
    Ok(())
}

/// The peer's own CLI against its daemon.
fn cli(node: &Node, args: &[&str]) -> Result<(i32, String, String)> {
    let cfg = node.dir.join("node.cfg");
    let mut full = vec!["-c", cfg.to_str().unwrap(), "--admin-listen", &node.admin];
    full.extend_from_slice(args);
    let (status, out, err) = run_to_end(Role::Peer, &full)?;
    Ok((status.code().unwrap_or(-1), out, err))
}

struct Net {
    _root: tempfile::TempDir,
    root: std::path::PathBuf,
    boot: Node,
    peers: Vec<Node>,
}

impl Net {
    async fn start(peer_extra: &[&str]) -> Result<Net> {
        let root = tempfile::tempdir()?;
        let path = root.path().to_path_buf();
        let mut boot = Node::start(
            &path,
            "boot",
            Role::Bootstrap,
            &format!("network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{FAST}"),
        )
        .await?;
        boot.wait_ready(WAIT).await?;
        let mut net = Net {
            _root: root,
            root: path,
            boot,
            peers: vec![],
        };
        for (i, extra) in peer_extra.iter().enumerate() {
            let p = net.peer(&format!("p{i}"), extra).await?;
            net.peers.push(p);
        }
        Ok(net)
    }

    async fn peer(&self, name: &str, extra: &str) -> Result<Node> {
        let mut p = Node::start(
            &self.root,
            name,
            Role::Peer,
            &format!(
                "download_dir: {}\n{extra}network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n{FAST}",
                self.root.join(name).join("downloads").display(),
                self.boot.addr()
            ),
        )
        .await?;
        p.wait_ready(WAIT).await?;
        Ok(p)
    }

    async fn diagnose(&self) -> String {
        let mut all = vec![&self.boot];
        all.extend(self.peers.iter());
        diagnose_all(&all).await
    }
}

async fn wait_peers(n: &mut Node, count: usize) -> Result<()> {
    n.wait_until(
        WAIT,
        &format!("{count} connected peers"),
        async |n: &Node| Ok(n.status().await?["connected_peers"].as_u64() >= Some(count as u64)),
    )
    .await
}

fn share(node: &Node, path: &Path) -> Result<String> {
    let (code, out, err) = cli(node, &["share", path.to_str().unwrap()])?;
    ensure!(code == 0, "share failed: {err}");
    out.lines()
        .nth(1)
        .map(str::to_string)
        .context("share printed no ID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_file_reaches_every_peer_identically() -> Result<()> {
    let mut net = Net::start(&["", "", ""]).await?;
    let r = async {
        for p in net.peers.iter_mut() {
            wait_peers(p, 3).await?;
        }
        let src = net.root.join("photo.bin");
        random_file(&src, 5 * 1024 * 1024 + 777)?;
        let id = share(&net.peers[0], &src)?;
        let want = std::fs::read(&src)?;
        // Peers 1 and 2 replicate it on their own (min_file_size 0, room in the quota).
        for p in net.peers[1..].iter_mut() {
            let id2 = id.clone();
            p.wait_until(WAIT, "the replica", async |n: &Node| {
                let (code, out, _) = cli(n, &["ls", "--json"])?;
                let v: Value = serde_json::from_str(&out).unwrap_or_default();
                Ok(code == 0
                    && v["files"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f["id"] == id2.as_str())))
            })
            .await?;
            let replica = p.dir.join("files/replicas").join(&id);
            ensure!(
                std::fs::read(&replica)? == want,
                "{}: replica differs",
                p.name
            );
        }
        // An explicit get of a replica moves it into download_dir under its name.
        let (code, out, err) = cli(&net.peers[2], &["get", &id])?;
        ensure!(code == 0, "{err}");
        let got = net.root.join("p2/downloads/photo.bin");
        ensure!(out.trim() == got.to_str().unwrap(), "{out}");
        ensure!(std::fs::read(&got)? == want);
        ensure!(!net.peers[2].dir.join("files/replicas").join(&id).exists());
        // Messages: signed, delivered, shown with sender.
        let (code, _, err) = cli(&net.peers[1], &["send", "hello from p1"])?;
        ensure!(code == 0, "{err}");
        let sender = net.peers[1].peer_id.clone();
        for i in [0, 2] {
            let sender = sender.clone();
            net.peers[i]
                .wait_until(WAIT, "the message", async |n: &Node| {
                    let (_, out, _) = cli(n, &["messages", "--json"])?;
                    Ok(out
                        .lines()
                        .any(|l| l.contains("hello from p1") && l.contains(&sender)))
                })
                .await?;
        }
        // Too long a message is refused before it leaves.
        let (code, _, err) = cli(&net.peers[1], &["send", &"x".repeat(5000)])?;
        ensure!(code != 0 && err.contains("4096"), "{err}");
        Ok(())
    }
    .await;
    if let Err(e) = &r {
        eprintln!("{e:#}\n{}", net.diagnose().await);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_resumes_from_another_provider() -> Result<()> {
    // p0 uploads slowly; p1 stores nothing on its own.
    let mut net = Net::start(&["upload_rate_limit: 2MiB\n", "min_file_size: 1TiB\n"]).await?;
    let r = async {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("video.bin");
        random_file(&src, 24 * 1024 * 1024)?;
        let id = share(&net.peers[0], &src)?;
        let (code, _, err) = cli(&net.peers[1], &["get", &id, "--no-wait"])?;
        ensure!(code == 0, "{err}");
        let id2 = id.clone();
        net.peers[1]
            .wait_until(WAIT, "part of the file", async |n: &Node| {
                let v = n.get_json(&format!("/files/{id2}")).await?;
                Ok(v["chunks_done"].as_u64() >= Some(3))
            })
            .await?;
        // The only provider dies mid-transfer, and so does the fetching daemon.
        let (code, _) = net.peers[0].terminate(Duration::from_secs(12)).await?;
        ensure!(code.success());
        net.peers[1].terminate(Duration::from_secs(12)).await?;
        let partial = std::fs::read_dir(net.root.join("p1/files/partial"))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "part"))
            })
            .count();
        ensure!(partial == 1, "the partial file stays for resuming");
        ensure!(
            !net.root.join("p1/downloads/video.bin").exists(),
            "nothing half-written in download_dir"
        );
        // Another peer has the same bytes; the restarted fetch finishes from it.
        let p2 = net.peer("p2", "").await?;
        let copy = net.root.join("copy.bin");
        std::fs::copy(&src, &copy)?;
        ensure!(share(&p2, &copy)? == id, "same bytes, same ID");
        net.peers.push(p2);
        let mut p1 = net.peer("p1", "min_file_size: 1TiB\n").await?;
        wait_peers(&mut p1, 2).await?;
        let (code, out, err) = cli(&p1, &["get", &id, "--json"])?;
        ensure!(code == 0, "{err}\n{}", p1.log_tail(30));
        let v: Value = serde_json::from_str(&out)?;
        ensure!(v["state"] == "complete", "{v}");
        ensure!(
            v["chunks_resumed"].as_u64() >= Some(3),
            "resumed from the partial file: {v}"
        );
        let got = net.root.join("p1/downloads/video.bin");
        ensure!(
            v["path"] == got.to_str().unwrap(),
            "named as first announced: {v}"
        );
        ensure!(std::fs::read(&got)? == std::fs::read(&src)?);
        net.peers.push(p1);
        Ok(())
    }
    .await;
    if let Err(e) = &r {
        eprintln!("{e:#}\n{}", net.diagnose().await);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_bad_ids_give_clear_errors() -> Result<()> {
    let mut net = Net::start(&["", "max_storage_size: 1MiB\nmin_file_size: 1TiB\n"]).await?;
    let r = async {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("large.bin");
        random_file(&src, 3 * 1024 * 1024)?;
        let id = share(&net.peers[0], &src)?;
        let (code, _, err) = cli(&net.peers[1], &["get", &id])?;
        ensure!(
            code != 0 && err.contains("storage quota"),
            "expected a quota error: {code} {err}"
        );
        let dl = net.root.join("p1/downloads");
        let leftovers = std::fs::read_dir(&dl).map(|d| d.count()).unwrap_or(0);
        ensure!(leftovers == 0, "nothing may be left in download_dir");
        let partial = std::fs::read_dir(net.root.join("p1/files/partial"))?.count();
        ensure!(partial == 0, "no partial file after a quota refusal");

        let (code, _, err) = cli(&net.peers[1], &["get", "not-an-id"])?;
        ensure!(code != 0 && err.contains("not a file ID"), "{err}");
        let unknown = "ab".repeat(32);
        let (code, _, err) = cli(&net.peers[1], &["get", &unknown])?;
        ensure!(code != 0 && err.contains("no peer provides"), "{err}");
        // The CLI without a daemon says how to start one.
        net.peers[1].terminate(Duration::from_secs(12)).await?;
        let (code, _, err) = cli(&net.peers[1], &["ls"])?;
        ensure!(
            code != 0 && err.contains("no daemon running at") && err.contains("jantar-peer run"),
            "{err}"
        );
        Ok(())
    }
    .await;
    if let Err(e) = &r {
        eprintln!("{e:#}\n{}", net.diagnose().await);
    }
    r
}
