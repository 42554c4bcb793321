//! Files across NATs with the real binaries in the NAT lab (see
//! `docs/nat-lab.md`): a file shared behind a Moderate NAT reaches a peer
//! behind another Moderate NAT over a hole-punched direct connection, and a
//! peer behind a Strict NAT through the relay, across several circuits when
//! the relay's byte limit cuts them.
//!
//! Needs root (network namespaces); without it the test prints
//! `SKIP <name>: <reason>` and passes. On failure each node's log tail and
//! `/status` are printed, then every router's nft ruleset.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use jantar_tests::lab::{
    JantarNet, LabNode, NatKind, Topology, TopologySpec, Transport, connections_to, run_scenario,
    wait_ready, wait_reservation,
};
use serde_json::Value;

/// Size of the shared file: several relay circuits' worth.
const FILE_SIZE: usize = 8 * 1024 * 1024;
/// The relay's circuit byte limit in this test: two or three chunks per
/// circuit, so the relayed transfer is cut several times.
const CIRCUIT_BYTES: &str = "3MiB";
/// Time a `get` may take (the relayed one pauses at every circuit cut).
const GET_LIMIT: Duration = Duration::from_secs(150);

fn write_file(path: &Path, size: usize) -> Result<Vec<u8>> {
    let data: Vec<u8> = (0..size)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    std::fs::write(path, &data).with_context(|| format!("write {}", path.display()))?;
    Ok(data)
}

/// `share PATH` on `node`; returns the file's ID (the second line of the
/// output).
async fn share(node: &LabNode, path: &Path) -> Result<String> {
    let (code, text) = node
        .cli(
            &["share", path.to_str().context("path")?],
            Duration::from_secs(60),
        )
        .await?;
    ensure!(code == 0, "share exited {code}: {text}");
    text.lines()
        .nth(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .with_context(|| format!("no ID in the share output: {text}"))
}

/// `get ID -o out` on `node`; fails with the command's output unless it
/// exits 0 and the bytes are the original ones.
async fn fetch(node: &LabNode, id: &str, want: &[u8]) -> Result<String> {
    let out = node.data_dir().join("fetched.bin");
    let (code, text) = node
        .cli(&["get", id, "-o", out.to_str().context("path")?], GET_LIMIT)
        .await?;
    ensure!(
        code == 0,
        "{}: `get {id}` exited {code}:\n{text}",
        node.name()
    );
    let got = std::fs::read(&out).with_context(|| format!("read {}", out.display()))?;
    ensure!(
        got == want,
        "{}: fetched bytes differ from the shared file",
        node.name()
    );
    Ok(text)
}

/// The relay's `circuit closed` lines between two peers, either direction.
fn circuits_closed(relay: &LabNode, a: &str, b: &str) -> Vec<Value> {
    relay
        .log_lines()
        .into_iter()
        .filter(|v| {
            v["message"] == "circuit closed"
                && ((v["src"] == a && v["dst"] == b) || (v["src"] == b && v["dst"] == a))
        })
        .collect()
}

/// Issue requirement: Moderate -> Moderate goes direct, Moderate -> Strict
/// goes through the relay; a circuit limit interrupting the relayed transfer
/// only pauses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_nats_directly_and_through_the_relay() -> Result<()> {
    run_scenario("nat_files", Duration::from_secs(420), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let mut spec = TopologySpec::standard()
                .relay_setting("relay.max_circuit_bytes", CIRCUIT_BYTES)
                // Only explicit fetches: no replication of announced files.
                .peer_setting("min_file_size", "1TiB");
            spec.public_peer = false;
            spec.nat_peers = vec![NatKind::Moderate, NatKind::Moderate, NatKind::Strict];
            // QUIC to the bootstrap nodes gives each peer its UDP mapping
            // before it punches.
            spec.bootstrap_transport = Transport::Quic;
            let topo = Topology::build(&net, &spec).await?;
            let peers = &topo.nat_peers;
            let (sharer, direct, relayed) = (&peers[0].1, &peers[1].1, &peers[2].1);
            for p in [sharer, direct, relayed] {
                wait_ready(p).await?;
                wait_reservation(p, Duration::from_secs(60)).await?;
            }

            let src = sharer.data_dir().join("shared.bin");
            let want = write_file(&src, FILE_SIZE)?;
            let id = share(sharer, &src).await?;
            eprintln!("shared {FILE_SIZE} bytes as {id}");

            // Moderate -> Moderate: over a direct connection.
            let started = std::time::Instant::now();
            fetch(direct, &id, &want).await?;
            eprintln!("moderate -> moderate: {:?}", started.elapsed());
            let sid = sharer.peer_id().to_string();
            let kinds = connections_to(&direct.status().await?, &sid);
            ensure!(
                kinds.iter().any(|(k, _)| k == "direct"),
                "the moderate peers are not directly connected after the transfer: {kinds:?}"
            );
            let cut = circuits_closed(&topo.relay, &sid, direct.peer_id())
                .into_iter()
                .filter(|v| v["error"].as_str().is_some_and(|e| e.contains("Max circuit bytes")))
                .count();
            ensure!(cut == 0, "the direct transfer went through the relay ({cut} circuits cut)");

            // Moderate -> Strict: only through the relay, cut by its byte limit.
            let started = std::time::Instant::now();
            let text = fetch(relayed, &id, &want).await?;
            eprintln!("moderate -> strict: {:?}; get printed:\n{text}", started.elapsed());
            let kinds = connections_to(&relayed.status().await?, &sid);
            ensure!(
                !kinds.iter().any(|(k, _)| k == "direct"),
                "Moderate and Strict are not expected to punch through: {kinds:?}"
            );
            // The other Moderate peer holds the file now and serves it too, so
            // the Strict peer may pull from both providers through the relay.
            let rid = relayed.peer_id();
            let cut = topo
                .relay
                .log_lines()
                .into_iter()
                .filter(|v| {
                    v["message"] == "circuit closed"
                        && (v["src"] == rid || v["dst"] == rid)
                        && v["error"].as_str().is_some_and(|e| e.contains("Max circuit bytes"))
                })
                .count();
            ensure!(
                cut >= 2,
                "an {FILE_SIZE}-byte transfer through {CIRCUIT_BYTES} circuits should have been cut \
                 at least twice; the relay logged {cut}"
            );
            eprintln!("the relay cut {cut} circuits; the fetch resumed each time");
            Ok(())
        })
        .await
    })
    .await
}

/// A relay configured below two chunks per circuit warns at start, and a
/// fetch whose only path to the provider is that relay fails with an error
/// that says so, instead of reopening circuits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_too_small_for_files_gives_a_clear_error() -> Result<()> {
    run_scenario(
        "nat_files_small_relay",
        Duration::from_secs(300),
        async |lab| {
            let net = JantarNet::new(lab);
            net.checked(async {
                let mut spec = TopologySpec::standard()
                    .relay_setting("relay.max_circuit_bytes", "512KiB")
                    .peer_setting("min_file_size", "1TiB");
                spec.bootstraps = 1;
                spec.public_peer = false;
                spec.nat_peers = vec![NatKind::Moderate, NatKind::Strict];
                spec.bootstrap_transport = Transport::Quic;
                let topo = Topology::build(&net, &spec).await?;
                ensure!(
                    topo.relay.log_lines().iter().any(|v| {
                        v["level"] == "WARN"
                            && v.to_string().contains("files cannot cross this relay")
                    }),
                    "the relay did not warn that its circuits are too small for files"
                );
                let (sharer, fetcher) = (&topo.nat_peers[0].1, &topo.nat_peers[1].1);
                for p in [sharer, fetcher] {
                    wait_ready(p).await?;
                    wait_reservation(p, Duration::from_secs(60)).await?;
                }
                let src = sharer.data_dir().join("shared.bin");
                write_file(&src, 3 * 1024 * 1024)?;
                let id = share(sharer, &src).await?;

                let out = fetcher.data_dir().join("fetched.bin");
                let started = std::time::Instant::now();
                let (code, text) = fetcher
                    .cli(
                        &["get", &id, "-o", out.to_str().context("path")?],
                        GET_LIMIT,
                    )
                    .await?;
                eprintln!("get exited {code} after {:?}:\n{text}", started.elapsed());
                ensure!(
                    code != 0,
                    "the fetch through a 512 KiB relay succeeded:\n{text}"
                );
                ensure!(
                    text.contains("relay") && text.contains("too small"),
                    "the error does not name the relay's limit:\n{text}"
                );
                ensure!(!out.exists(), "a failed fetch left {}", out.display());
                Ok(())
            })
            .await
        },
    )
    .await
}
