//! The file protocol: replication driven by fake announcements, a flood of chunk
//! requests against a peer with `upload_rate_limit` set, and malformed requests.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use jantar_tests::harness::{LoopbackNet, Node, diagnose_all, random_file};
use serde_json::Value;

use crate::{READY, memory_bounded};

const MIB: u64 = 1 << 20;
/// How long an honest fetch may take while the target is attacked.
const FETCH: Duration = Duration::from_secs(90);
/// Replication off, for the honest peers that are not under attack.
const NO_REPLICATION: &str = "replication:\n  max_concurrent_fetches: 0\n";

/// The sum of the samples of metric `name` whose labels contain every one of `labels`.
fn metric(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The files `node` holds, as `(id, origin)`.
async fn held(node: &Node) -> Result<Vec<(String, String)>> {
    let v = node.get_json("/files").await?;
    Ok(v["files"]
        .as_array()
        .context("/files has no list of files")?
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or_default().to_string(),
                f["origin"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

async fn wait_held(node: &mut Node, id: &str, origin: &str) -> Result<()> {
    node.wait_until(FETCH, &format!("{origin} {id}"), async |n: &Node| {
        Ok(held(n).await?.iter().any(|(i, o)| i == id && o == origin))
    })
    .await
}

/// `client` fetches `id` (the user's `get`) and must end up with `want`.
async fn honest_get(client: &mut Node, id: &str, want: &Path) -> Result<()> {
    let (code, v) = client.post_json(&format!("/files/{id}/get"), &[]).await?;
    ensure!(code == 200, "{}: get {id}: {code} {v}", client.name);
    client
        .wait_until(
            FETCH,
            &format!("the honest fetch of {id}"),
            async |n: &Node| {
                let p = n.get_json(&format!("/files/{id}")).await?;
                if p["state"] == "failed" {
                    bail!("{}: the fetch of {id} failed: {p}", n.name);
                }
                Ok(p["state"] == "complete")
            },
        )
        .await?;
    let got = client.get_json(&format!("/files/{id}")).await?;
    let path = PathBuf::from(got["path"].as_str().unwrap_or_default());
    ensure!(
        std::fs::read(&path)? == std::fs::read(want)?,
        "{}: {} differs from the original",
        client.name,
        path.display()
    );
    Ok(())
}

/// The `evil-fetcher` helper, run to its end.
struct Evil {
    log: PathBuf,
    child: Child,
}

impl Evil {
    fn start(dir: &Path, name: &str, target: &Node, args: &[&str]) -> Result<Evil> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_evil-fetcher"))
            .arg("--dial")
            .arg(target.addr())
            .args(args)
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("spawn evil-fetcher")?;
        Ok(Evil { log, child })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for its end, then its JSON lines.
    async fn finish(mut self, timeout: Duration) -> Result<Vec<Value>> {
        let start = Instant::now();
        while self.running() {
            if start.elapsed() > timeout {
                bail!("evil-fetcher still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let text = std::fs::read_to_string(&self.log)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Partial files left in `node`'s store.
fn partials(node: &Node) -> Vec<String> {
    std::fs::read_dir(node.dir.join("files/partial"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

/// Identities that announce files that do not exist, against a peer with a 200 MiB
/// quota that holds an honest replica: the replication fetches they start stay within
/// the concurrency cap, the quota and each publisher's share; none of them evicts the
/// honest replica; a manifest that contradicts its announcement stops its fetch; the
/// rest stop at the deadline with their partial files removed; the target still
/// replicates an honest file afterwards and serves the honest replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_flood_keeps_the_quota_and_the_honest_replica() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LoopbackNet::start(dir.path(), "", READY).await?;
    let mut alice = net.peer("alice", NO_REPLICATION).await?;
    let mut target = net
        .peer(
            "target",
            "max_storage_size: 200MiB\nreplication:\n  fetch_deadline: 20s\n",
        )
        .await?;
    let mut bob = net.peer("bob", NO_REPLICATION).await?;
    let result = replication_flood(dir.path(), &mut alice, &mut target, &mut bob).await;
    if result.is_err() {
        eprintln!(
            "{}",
            diagnose_all(&[&net.boot, &alice, &target, &bob]).await
        );
    }
    result
}

async fn replication_flood(
    dir: &Path,
    alice: &mut Node,
    target: &mut Node,
    bob: &mut Node,
) -> Result<()> {
    let honest = dir.join("honest.bin");
    random_file(&honest, (3 * MIB) as usize, 1)?;
    let honest_id = alice.share(&honest)?;
    wait_held(target, &honest_id, "replica").await?;
    let before = target.memory()?;

    // First one publisher whose manifests contradict its announcements.
    let liar = Evil::start(
        dir,
        "liar",
        target,
        &[
            "--identities",
            "1",
            "--duration",
            "15",
            "announce",
            "--count",
            "2",
            "--size",
            &(10 * MIB).to_string(),
            "--lie-size",
        ],
    )?;
    target
        .wait_until(FETCH, "the lying manifests refused", async |n: &Node| {
            let m = n.metrics().await?;
            Ok(metric(
                &m,
                "jantar_file_replication_refused_total",
                &["reason=\"manifest\""],
            ) >= 2.0)
        })
        .await?;
    // Then six publishers with three files of 50 MiB each, which never arrive.
    let mut flood = Evil::start(
        dir,
        "flood",
        target,
        &[
            "--identities",
            "6",
            "--duration",
            "45",
            "announce",
            "--count",
            "3",
            "--size",
            &(50 * MIB).to_string(),
        ],
    )?;
    let (mut max_fetches, mut max_used, mut saw_reserved) = (0.0f64, 0.0f64, 0.0f64);
    let start = Instant::now();
    let mut drained = false;
    while start.elapsed() < Duration::from_secs(90) {
        let m = target.metrics().await?;
        let fetches = metric(&m, "jantar_file_replication_fetches", &[]);
        let held_bytes = metric(&m, "jantar_file_storage_bytes", &["kind=\"held\""]);
        let reserved = metric(&m, "jantar_file_storage_bytes", &["kind=\"reserved\""]);
        max_fetches = max_fetches.max(fetches);
        max_used = max_used.max(held_bytes + reserved);
        saw_reserved = saw_reserved.max(reserved);
        ensure!(
            held(target).await?.iter().any(|(i, _)| *i == honest_id),
            "the honest replica was evicted"
        );
        let deadlines = metric(
            &m,
            "jantar_file_replication_refused_total",
            &["reason=\"deadline\""],
        );
        if !flood.running() && deadlines > 0.0 && reserved == 0.0 && fetches == 0.0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = target.metrics().await?;
    let refused = |reason: &str| {
        metric(
            &m,
            "jantar_file_replication_refused_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    eprintln!(
        "replication flood: at most {max_fetches} fetches and {max_used} bytes (reserved up to {saw_reserved}); refused: concurrency {}, publisher_share {}, quota {}, manifest {}, deadline {}",
        refused("concurrency"),
        refused("publisher_share"),
        refused("quota"),
        refused("manifest"),
        refused("deadline")
    );
    ensure!(drained, "the fake fetches did not all stop within 90 s");
    ensure!(
        max_fetches <= 4.0,
        "{max_fetches} replication fetches at once (cap 4)"
    );
    ensure!(
        max_used <= (200 * MIB) as f64,
        "{max_used} bytes used of a 200 MiB quota"
    );
    ensure!(
        saw_reserved > 0.0,
        "the fake fetches reserved nothing: did the flood arrive?"
    );
    ensure!(
        refused("concurrency") > 0.0,
        "no announcement over the concurrency cap"
    );
    ensure!(
        refused("publisher_share") > 0.0,
        "no announcement over a publisher's share"
    );
    ensure!(
        refused("deadline") >= 1.0,
        "no fetch stopped at the deadline"
    );
    ensure!(
        partials(target).is_empty(),
        "partial files left: {:?}",
        partials(target)
    );
    let _ = flood.finish(Duration::from_secs(60)).await?;
    let _ = liar.finish(Duration::from_secs(60)).await?;

    // The target still replicates an honest publisher's new file, ...
    let second = dir.join("second.bin");
    random_file(&second, (2 * MIB) as usize, 2)?;
    let second_id = alice.share(&second)?;
    wait_held(target, &second_id, "replica").await?;
    // ... and, with alice gone, serves the honest replica to bob.
    alice.terminate(Duration::from_secs(12)).await?;
    honest_get(bob, &honest_id, &honest).await?;
    memory_bounded(target, before)?;
    Ok(())
}

/// Four identities keep many chunk requests in flight against a peer whose uploads are
/// limited to 2 MiB/s, one of them 200 at once: each identity gets at most
/// `serving.max_concurrent_per_peer` accepted and the rest are refused at once, no more
/// than `serving.max_queued` are accepted in all, the budget is shared fairly, and an
/// honest client still gets its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_queue_flood_is_bounded_and_shared_fairly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LoopbackNet::start(dir.path(), "", READY).await?;
    let target = net
        .peer(
            "target",
            &format!("upload_rate_limit: 2MiB\n{NO_REPLICATION}"),
        )
        .await?;
    let mut bob = net.peer("bob", NO_REPLICATION).await?;
    let result = upload_flood(dir.path(), &target, &mut bob).await;
    if result.is_err() {
        eprintln!("{}", diagnose_all(&[&net.boot, &target, &bob]).await);
    }
    result
}

async fn upload_flood(dir: &Path, target: &Node, bob: &mut Node) -> Result<()> {
    let file = dir.join("served.bin");
    random_file(&file, (4 * MIB) as usize, 3)?;
    let id = target.share(&file)?;
    let before = target.memory()?;
    let secs = 25;
    let greedy = Evil::start(
        dir,
        "greedy",
        target,
        &[
            "--identities",
            "1",
            "--duration",
            &secs.to_string(),
            "flood",
            "--id",
            &id,
            "--chunks",
            "4",
            "--concurrent",
            "200",
        ],
    )?;
    let others = Evil::start(
        dir,
        "others",
        target,
        &[
            "--identities",
            "3",
            "--duration",
            &secs.to_string(),
            "flood",
            "--id",
            &id,
            "--chunks",
            "4",
            "--concurrent",
            "40",
        ],
    )?;
    // Let the flood build up, then the honest client asks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut max_accepted = 0.0f64;
    let honest = honest_get(bob, &id, &file);
    tokio::pin!(honest);
    let mut sample = tokio::time::interval(Duration::from_millis(250));
    let honest_result = loop {
        tokio::select! {
            r = &mut honest => break r,
            _ = sample.tick() => {
                let m = target.metrics().await?;
                max_accepted = max_accepted.max(metric(&m, "jantar_file_uploads_accepted", &[]));
            }
        }
    };
    honest_result.context("the honest client during the flood")?;
    let mut flood = greedy.finish(Duration::from_secs(60)).await?;
    flood.extend(others.finish(Duration::from_secs(60)).await?);
    let m = target.metrics().await?;
    let per_peer = metric(
        &m,
        "jantar_file_uploads_refused_total",
        &["reason=\"per_peer\""],
    );
    let chunks: Vec<u64> = flood
        .iter()
        .filter(|e| e["event"] == "flood_done")
        .filter_map(|e| e["chunks"].as_u64())
        .collect();
    eprintln!(
        "upload flood: chunks per identity {chunks:?}, at most {max_accepted} accepted, {per_peer} refused over the per-peer bound"
    );
    ensure!(chunks.len() == 4, "not every identity reported: {flood:?}");
    ensure!(
        max_accepted <= 64.0,
        "{max_accepted} requests accepted at once (bound 64)"
    );
    ensure!(
        per_peer > 0.0,
        "nothing was refused over the per-peer bound"
    );
    // 2 MiB/s for the flood's duration, plus a second's burst, for everyone together.
    let total: u64 = chunks.iter().sum();
    ensure!(
        total <= 2 * (secs + 2),
        "{total} chunks served within a 2 MiB/s budget over {secs} s"
    );
    // The identity with 200 requests in flight gets no more than its share.
    let (greedy_got, fair) = (chunks[0], *chunks[1..].iter().min().unwrap_or(&0));
    ensure!(
        greedy_got <= 2 * fair + 2,
        "the greedy identity got {greedy_got} chunks, the others at least {fair}"
    );
    memory_bounded(target, before)?;
    Ok(())
}

/// Malformed and hostile requests on the file protocol (not CBOR, oversized, truncated,
/// absurd lengths, the wrong shape, chunk indexes out of range, unknown IDs): each is
/// refused or answered "not found" without harm, valid requests among them are served,
/// and an honest client gets its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_file_requests_are_refused_without_harm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LoopbackNet::start(dir.path(), "", READY).await?;
    let target = net.peer("target", NO_REPLICATION).await?;
    let mut bob = net.peer("bob", NO_REPLICATION).await?;
    let result = malformed(dir.path(), &target, &mut bob).await;
    if result.is_err() {
        eprintln!("{}", diagnose_all(&[&net.boot, &target, &bob]).await);
    }
    result
}

async fn malformed(dir: &Path, target: &Node, bob: &mut Node) -> Result<()> {
    let file = dir.join("served.bin");
    random_file(&file, (2 * MIB) as usize, 4)?;
    let id = target.share(&file)?;
    let before = target.memory()?;
    let rounds = 20u64;
    let evil = Evil::start(
        dir,
        "garbage",
        target,
        &[
            "--identities",
            "2",
            "--duration",
            "60",
            "garbage",
            "--id",
            &id,
            "--rounds",
            &rounds.to_string(),
        ],
    )?;
    let events = evil.finish(Duration::from_secs(90)).await?;
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "garbage_done")
        .collect();
    ensure!(done.len() == 2, "not every identity finished: {events:?}");
    for d in &done {
        ensure!(d["unsent"] == 0, "requests left unsent: {d}");
        let case = |name: &str, field: &str| d["cases"][name][field].as_u64().unwrap_or(0);
        for bad in [
            "not_cbor",
            "oversized",
            "truncated",
            "huge_length",
            "wrong_shape",
            "empty",
        ] {
            ensure!(
                case(bad, "data") == 0 && case(bad, "not_found") == 0,
                "a {bad} request was answered: {d}"
            );
        }
        for unknown in ["index_out_of_range", "unknown_chunk", "unknown_manifest"] {
            ensure!(case(unknown, "not_found") == rounds, "{unknown}: {d}");
        }
        ensure!(
            case("valid_chunk", "data") == rounds,
            "valid chunks among them: {d}"
        );
    }
    let m = target.metrics().await?;
    let malformed = metric(
        &m,
        "jantar_file_inbound_failures_total",
        &["reason=\"malformed\""],
    );
    eprintln!("malformed requests: {malformed} counted as malformed; {done:?}");
    // Requests that do not decode are dropped by the protocol handler before they
    // reach the node, so they are not counted there; the replies above show the bound.
    ensure!(
        target.get("/livez").await?.0 == 200,
        "the target stopped answering"
    );
    honest_get(bob, &id, &file).await?;
    memory_bounded(target, before)?;
    Ok(())
}
