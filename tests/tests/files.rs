//! File and message propagation between real `jantar-peer` processes on loopback.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use jantar_tests::{
    evil::EvilProvider,
    harness::{LoopbackNet, Node, Role, diagnose_all, metric_sum, random_file},
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// The peer's own CLI against its daemon: exit code, stdout, stderr.
fn cli(node: &Node, args: &[&str]) -> Result<(i32, String, String)> {
    let (status, out, err) = node.cli(args)?;
    Ok((status.code().unwrap_or(-1), out, err))
}

/// A [`LoopbackNet`] in its own temporary directory, with the peers started
/// by [`Net::start`].
struct Net {
    _root: tempfile::TempDir,
    net: LoopbackNet,
    peers: Vec<Node>,
}

impl std::ops::Deref for Net {
    type Target = LoopbackNet;
    fn deref(&self) -> &LoopbackNet {
        &self.net
    }
}

impl Net {
    async fn start(peer_extra: &[&str]) -> Result<Net> {
        let root = tempfile::tempdir()?;
        let net = LoopbackNet::start(root.path(), "", WAIT).await?;
        let mut net = Net {
            _root: root,
            net,
            peers: vec![],
        };
        for (i, extra) in peer_extra.iter().enumerate() {
            let p = net.peer(&format!("p{i}"), extra).await?;
            net.peers.push(p);
        }
        Ok(net)
    }

    /// Runs `check` on the network; if it fails, prints the error with every node's log
    /// tail and status.
    async fn checked(&mut self, check: impl AsyncFnOnce(&mut Net) -> Result<()>) -> Result<()> {
        let r = check(self).await;
        if let Err(e) = &r {
            eprintln!("{e:#}\n{}", self.diagnose().await);
        }
        r
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_file_reaches_every_peer_identically() -> Result<()> {
    let mut net = Net::start(&["", "", ""]).await?;
    net.checked(async |net: &mut Net| {
        for p in net.peers.iter_mut() {
            wait_peers(p, 3).await?;
        }
        let src = net.root.join("photo.bin");
        random_file(&src, 5 * 1024 * 1024 + 777, 0)?;
        let id = net.peers[0].share(&src)?;
        let want = std::fs::read(&src)?;
        // Peers 1 and 2 replicate it on their own (min_file_size 0, room in the quota).
        for p in net.peers[1..].iter_mut() {
            wait_listed(p, &id).await?;
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
    })
    .await
}

/// Waits until `p` lists `id` among its files (a replica or a download).
async fn wait_listed(p: &mut Node, id: &str) -> Result<()> {
    p.wait_until(WAIT, &format!("file {id} listed"), async |n: &Node| {
        let (code, out, _) = cli(n, &["ls", "--json"])?;
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        Ok(code == 0
            && v["files"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["id"] == id)))
    })
    .await
}

/// Shared files are announced again to peers that join the files topic later, at most
/// every 10 s: a peer that joins during that cool-down learns of them when it ends,
/// not only when yet another peer joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_join_later_learn_of_shared_files() -> Result<()> {
    let mut net = Net::start(&[""]).await?;
    net.checked(async |net: &mut Net| {
        let src = net.root.join("early.bin");
        random_file(&src, 64 * 1024, 1)?;
        // Shared with no peer around: the first announcement reaches no one.
        let id = net.peers[0].share(&src)?;
        let p1 = net.peer("p1", "").await?;
        net.peers.push(p1);
        wait_listed(&mut net.peers[1], &id).await?;
        let first_join = Instant::now();
        // The next peer joins once gossipsub's own history (3 heartbeats of 1 s) no
        // longer offers the announcement, and inside p0's cool-down.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let p2 = net.peer("p2", "").await?;
        net.peers.push(p2);
        let ready = first_join.elapsed();
        wait_listed(&mut net.peers[2], &id).await?;
        println!(
            "p2 ready {:.1} s after p1 got the file, listed it {:.1} s after",
            ready.as_secs_f64(),
            first_join.elapsed().as_secs_f64()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_during_replication_gives_the_user_their_file() -> Result<()> {
    // p0 uploads slowly, so p1's replication of its file is still running when the user
    // of p1 asks for it.
    let mut net = Net::start(&["upload_rate_limit: 4MiB\n", ""]).await?;
    net.checked(async |net: &mut Net| {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("album.bin");
        random_file(&src, 12 * 1024 * 1024, 0)?;
        let want = std::fs::read(&src)?;
        let id = net.peers[0].share(&src)?;
        let id2 = id.clone();
        net.peers[1]
            .wait_until(WAIT, "the replication fetch", async |n: &Node| {
                let (_, out, _) = cli(n, &["ls", "--json"])?;
                let v: Value = serde_json::from_str(&out).unwrap_or_default();
                Ok(v["fetching"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["id"] == id2.as_str())))
            })
            .await?;
        let (code, out, err) = cli(&net.peers[1], &["get", &id])?;
        ensure!(code == 0, "{err}");
        let got = net.root.join("p1/downloads/album.bin");
        ensure!(
            out.trim() == got.to_str().unwrap(),
            "get should end with the file in download_dir, not as a replica: {out}"
        );
        ensure!(std::fs::read(&got)? == want, "the fetched file differs");
        let (_, out, _) = cli(&net.peers[1], &["ls", "--json"])?;
        let v: Value = serde_json::from_str(&out)?;
        let held = v["files"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == id.as_str()))
            .cloned()
            .unwrap_or_default();
        ensure!(held["origin"] == "fetched", "held as {held}");
        ensure!(!net.peers[1].dir.join("files/replicas").join(&id).exists());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_progress_request_answers_when_the_fetch_ends() -> Result<()> {
    // p0 uploads slowly, so the fetch runs for a few seconds.
    let mut net = Net::start(&["upload_rate_limit: 4MiB\n", "min_file_size: 1TiB\n"]).await?;
    net.checked(async |net: &mut Net| {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("slow.bin");
        random_file(&src, 12 * 1024 * 1024, 0)?;
        let id = net.peers[0].share(&src)?;
        let (code, _, err) = cli(&net.peers[1], &["get", &id, "--no-wait"])?;
        ensure!(code == 0, "{err}");
        // A short wait ends with the fetch still running.
        let v = net.peers[1]
            .get_json(&format!("/files/{id}?wait_ms=100"))
            .await?;
        ensure!(v["state"] == "fetching", "after 100 ms: {v}");
        // Long ones end when the fetch does, not when the wait runs out; beyond the
        // bound of 64 waiting requests, the rest are answered at once.
        let asked = Instant::now();
        let path = format!("/files/{id}?wait_ms=30000");
        let answers = futures::future::join_all((0..70).map(|_| async {
            let v = net.peers[1].get_json(&path).await;
            (v, asked.elapsed())
        }))
        .await;
        let mut states = std::collections::BTreeMap::<String, Vec<Duration>>::new();
        for (v, took) in answers {
            let state = v?["state"].as_str().unwrap_or("?").to_string();
            states.entry(state).or_default().push(took);
        }
        let count = |s: &str| states.get(s).map_or(0, Vec::len);
        ensure!(
            count("complete") == 64 && count("fetching") == 6,
            "64 answered at the end, 6 at once: {states:?}"
        );
        let latest = states.values().flatten().max().copied().unwrap_or_default();
        ensure!(
            latest < Duration::from_secs(20),
            "answered after {latest:?}, not when the fetch ended: {states:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_at_its_bound_answers_busy_and_the_fetch_goes_on() -> Result<()> {
    // p0 serves one request per peer at a time; p1 asks for eight at once.
    let mut net = Net::start(&[
        "serving:\n  max_concurrent_per_peer: 1\n",
        "min_file_size: 1TiB\n",
    ])
    .await?;
    net.checked(async |net: &mut Net| {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("bounded.bin");
        random_file(&src, 6 * 1024 * 1024, 0)?;
        let id = net.peers[0].share(&src)?;
        let (code, out, err) = cli(&net.peers[1], &["get", &id])?;
        ensure!(code == 0, "{err}");
        ensure!(
            std::fs::read(out.trim())? == std::fs::read(&src)?,
            "the fetched file differs"
        );
        let refused = metric_sum(
            &net.peers[0].metrics().await?,
            "jantar_file_uploads_refused_total",
            &["reason=\"per_peer\""],
        );
        ensure!(refused > 0.0, "the bound was never reached");
        // Each refusal said "busy": the provider was kept and asked again, never
        // dropped as one without the file.
        let busy = net.peers[1]
            .log_lines()
            .iter()
            .filter(|l| l["message"] == "provider busy; asking it again shortly")
            .count();
        ensure!(
            busy as f64 >= refused,
            "{refused} refusals, {busy} busy answers seen"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_resumes_from_another_provider() -> Result<()> {
    // p0 uploads slowly; p1 stores nothing on its own.
    let mut net = Net::start(&["upload_rate_limit: 2MiB\n", "min_file_size: 1TiB\n"]).await?;
    net.checked(async |net: &mut Net| {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("video.bin");
        random_file(&src, 24 * 1024 * 1024, 0)?;
        let id = net.peers[0].share(&src)?;
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
        ensure!(p2.share(&copy)? == id, "same bytes, same ID");
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
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_bad_ids_give_clear_errors() -> Result<()> {
    let mut net = Net::start(&["", "max_storage_size: 1MiB\nmin_file_size: 1TiB\n"]).await?;
    net.checked(async |net: &mut Net| {
        wait_peers(&mut net.peers[1], 2).await?;
        let src = net.root.join("large.bin");
        random_file(&src, 3 * 1024 * 1024, 0)?;
        let id = net.peers[0].share(&src)?;
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
    })
    .await
}

/// Names of the entries in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A provider that answers with a true manifest but corrupt chunks is caught by the
/// chunk hashes, dropped as a source and penalized, and the same fetch then completes
/// from an honest provider with the original bytes.
///
/// The malicious provider is the `evil-provider` helper (real libp2p, Jantar's own
/// protocols and codec); everything else is a real `jantar-peer`. The order makes
/// the malicious one the fetcher's only source at first, so the test cannot pass
/// without it being asked for chunks: it announces the file to the fetcher (which
/// does not replicate on its own), the fetcher runs `jantar-peer get`, rejects the
/// corrupt chunks and keeps waiting; only then does an honest peer share the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_chunks_from_a_malicious_provider_are_rejected_and_the_file_completes() -> Result<()>
{
    // p0 fetches; it and the honest peer only store what they are asked to.
    let mut net = Net::start(&["min_file_size: 1TiB\n"]).await?;
    let src = net.root.join("doc.bin");
    random_file(&src, 5 * 1024 * 1024 + 123, 0)?;
    let want = std::fs::read(&src)?;
    let id = jantar_net::files::id::hash_file(&src)?.root().to_string();
    let evil = EvilProvider::start(
        Path::new(env!("CARGO_BIN_EXE_evil-provider")),
        &net.root.join("evil"),
        &src,
        &net.boot.addr(),
        &[&net.peers[0].addr()],
        None,
    )
    .await?;
    let mut get: Option<tokio::process::Child> = None;
    let r = async {
        let fetcher = &mut net.peers[0];
        let evil_id = evil.peer_id.clone();
        fetcher
            .wait_for_log(WAIT, |v| {
                v["message"] == "file announced" && v["publisher"] == evil_id.as_str()
            })
            .await
            .context("the fetcher never got the malicious provider's announcement")?;

        let cfg = fetcher.dir.join("node.cfg");
        get = Some(
            tokio::process::Command::new(Role::Peer.path())
                .args([
                    "-c",
                    cfg.to_str().unwrap(),
                    "--admin-listen",
                    &fetcher.admin,
                ])
                .args(["get", &id, "--json"])
                .env_remove("JANTAR_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("run jantar-peer get")?,
        );

        // The only source sends corrupt chunks: rejected, nothing kept.
        let progress = format!("/files/{id}");
        fetcher
            .wait_until(
                WAIT,
                "the malicious provider to be dropped",
                async |n: &Node| {
                    // 404 until `get` has started the fetch.
                    let (code, body) = n.get(&progress).await?;
                    let v: Value = serde_json::from_str(&body).unwrap_or_default();
                    Ok(code == 200
                        && v["bad_providers"]
                            .as_array()
                            .is_some_and(|b| b.iter().any(|p| *p == evil_id.as_str())))
                },
            )
            .await?;
        let v = fetcher.get_json(&progress).await?;
        ensure!(
            v["state"] == "fetching" && v["chunks_done"] == 0 && v["providers"] == 0,
            "no corrupt chunk kept, still fetching, no source left: {v}"
        );
        ensure!(
            evil.count("corrupt_chunk_served") >= 1,
            "the malicious provider served no chunk:\n{}",
            evil.log_tail(20)
        );
        fetcher
            .wait_for_log(WAIT, |l| {
                l["message"] == "provider sent bad data; dropped as a source and penalized"
                    && l["peer"] == evil_id.as_str()
                    && l["id"] == id.as_str()
            })
            .await
            .context("no bad-data warning naming the malicious provider")?;
        let bad = metric_sum(&fetcher.metrics().await?, "jantar_file_bad_data_total", &[]);
        ensure!(bad >= 1.0, "jantar_file_bad_data_total is {bad}");
        let downloads = net.root.join("p0/downloads");
        ensure!(
            entries(&downloads).is_empty(),
            "nothing in download_dir before the file is complete: {:?}",
            entries(&downloads)
        );

        // An honest peer shares the same bytes; the running fetch completes from it.
        let honest = net.peer("p1", "min_file_size: 1TiB\n").await?;
        let (code, conn) = honest
            .post_json("/connect", &[("addr", &net.peers[0].addr())])
            .await?;
        ensure!(code == 200, "honest peer cannot reach the fetcher: {conn}");
        let copy = net.root.join("p1/doc.bin");
        std::fs::copy(&src, &copy)?;
        ensure!(honest.share(&copy)? == id, "same bytes, same ID");
        net.peers.push(honest);

        let child = get.take().context("get is running")?;
        let out = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .context("`jantar-peer get` did not finish")??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "`jantar-peer get` failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(&stdout)?;
        let got = downloads.join("doc.bin");
        ensure!(
            v["state"] == "complete" && v["path"] == got.to_str().unwrap(),
            "{v}"
        );
        ensure!(
            v["bad_providers"] == serde_json::json!([evil_id]),
            "only the malicious provider is marked bad: {v}"
        );
        let data = std::fs::read(&got)?;
        ensure!(data == want, "downloaded bytes differ from the original");
        ensure!(
            jantar_net::files::id::hash_file(&got)?.root().to_string() == id,
            "downloaded file does not hash to its ID"
        );
        // Only the verified file in download_dir; no partial file or name left behind.
        ensure!(
            entries(&downloads) == ["doc.bin"],
            "download_dir: {:?}",
            entries(&downloads)
        );
        let partial = net.root.join("p0/files/partial");
        ensure!(
            entries(&partial).is_empty(),
            "partial dir: {:?}",
            entries(&partial)
        );
        Ok(())
    }
    .await;
    if let Err(e) = &r {
        let progress = match net.peers[0].get(&format!("/files/{id}")).await {
            Ok((_, body)) => body,
            Err(e) => format!("(no progress: {e})"),
        };
        eprintln!(
            "{e:#}\n--- fetch progress:\n{progress}\n--- evil-provider log tail:\n{}\n{}",
            evil.log_tail(40),
            net.diagnose().await
        );
    }
    drop(get);
    r
}
