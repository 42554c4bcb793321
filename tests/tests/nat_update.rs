//! Signed releases across NATs with the real binaries in the NAT lab (see
//! `docs/nat-lab.md`): a release published by a peer behind a Moderate NAT
//! reaches a peer behind another Moderate NAT and one behind a Strict NAT.
//! Each verifies the manifest, fetches the artifact through the file part
//! (the Strict peer only through the relay, across several circuits), stages
//! it and runs it in its own process, which confirms it once ready.
//!
//! The release's binary is the built `jantar-peer` with its version slot
//! rewritten (see `jantar_tests::update::stamp`). Every peer applies with
//! `update.method: stage`, so the binary the lab runs is never modified.
//!
//! Needs root (network namespaces); without it the test prints
//! `SKIP <name>: <reason>` and passes. On failure each node's log tail and
//! `/status` are printed, then every router's nft ruleset.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use jantar_tests::{
    harness::Role,
    lab::{
        JantarNet, LabNode, NatKind, Topology, TopologySpec, Transport, connections_to, line_time,
        peer_config, run_scenario, wait_ready, wait_reservation,
    },
    update::{Keys, ReleaseSpec, built_version, make_release, stamp},
};
use serde_json::Value;

/// The version the release brings.
const VERSION: &str = "99.0.0";
/// The release's sequence number.
const SEQUENCE: u64 = 1;
/// The relay's circuit byte limit in this test (its default): the artifact,
/// a debug build, is several circuits' worth.
const CIRCUIT_BYTES: &str = "16MiB";
/// Each circuit's bandwidth in this test, raised from the default 1 MiB/s: the test is
/// about the way through NATs, not the relay's throughput, and at the default the
/// relayed leg alone takes over half a minute.
const CIRCUIT_RATE: &str = "16MiB";
/// Time `release publish` may take (it shares, hashing, the artifact first).
const PUBLISH_LIMIT: Duration = Duration::from_secs(120);
/// From publishing to a peer running the release, confirmed: the Strict
/// peer pulls the whole artifact through the relay, pausing at every
/// circuit cut.
const UPDATE_LIMIT: Duration = Duration::from_secs(240);
/// States of `/status` `update` that mean the release will not be run.
const GAVE_UP: [&str; 4] = ["failed", "rolled_back", "no_target", "not_in_rollout"];

/// The first line of `node`'s current log with `message`.
fn logged(node: &LabNode, message: &str) -> Option<Value> {
    node.log_lines()
        .into_iter()
        .find(|v| v["message"] == message)
}

/// Seconds from `since` (seconds since the epoch) to the first `message` of
/// `node`, for the report.
fn after(node: &LabNode, message: &str, since: f64) -> String {
    logged(node, message)
        .as_ref()
        .and_then(line_time)
        .map_or("-".to_string(), |t| format!("{:.1} s", t - since))
}

/// Waits until `node` runs [`VERSION`] as a confirmed update of [`SEQUENCE`]
/// (its `/status` says so); fails at once, naming the reason, when it refuses
/// the release or gives up on it.
async fn wait_updated(node: &LabNode) -> Result<()> {
    let what = format!("{} to run {VERSION}, confirmed", node.name());
    node.wait_until(UPDATE_LIMIT, &what, async |n: &LabNode| {
        // The admin endpoint is down while the process hands over.
        let Ok(st) = n.status().await else {
            return Ok(false);
        };
        let u = &st["update"];
        if let Some(why) = u["last_refused"].as_str() {
            bail!("{} refused the release: {why}", n.name());
        }
        let state = u["state"].as_str().unwrap_or_default();
        if GAVE_UP.contains(&state) {
            bail!("{}: the release is {state}: {}", n.name(), u["detail"]);
        }
        Ok(st["version"] == VERSION
            && u["running_version"] == VERSION
            && u["applied_sequence"] == SEQUENCE
            && state == "up_to_date")
    })
    .await?;
    Ok(())
}

/// Circuits between `a` and `b`, either direction, that the relay's byte
/// limit cut.
fn circuits_cut(relay: &LabNode, a: &str, b: &str) -> usize {
    relay
        .log_lines()
        .into_iter()
        .filter(|v| {
            v["message"] == "circuit closed"
                && ((v["src"] == a && v["dst"] == b) || (v["src"] == b && v["dst"] == a))
                && v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Max circuit bytes"))
        })
        .count()
}

/// Issue requirement: a signed release published behind one NAT reaches peers
/// behind Moderate and Strict NATs, which verify, fetch, stage and run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_published_behind_a_nat_reaches_moderate_and_strict_peers_which_run_it()
-> Result<()> {
    run_scenario("nat_update", Duration::from_secs(480), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let dist = lab.log_dir().join("release");
            let keys = Keys::generate(&dist.join("keys"), "holder", 3)?;
            let trusted = Value::from(keys.public.clone());
            let running = built_version()?;
            ensure!(
                running != VERSION,
                "the built binary already reports {VERSION}"
            );

            let mut spec = TopologySpec::standard()
                .relay_setting("relay.max_circuit_bytes", CIRCUIT_BYTES)
                .relay_setting("relay.circuit_bytes_per_second", CIRCUIT_RATE)
                // Only the update fetches the artifact: no replication of
                // announced files.
                .peer_setting("min_file_size", "1TiB")
                .peer_setting("auto_update", "apply")
                .peer_setting("update.trusted_keys", trusted.clone())
                .peer_setting("update.threshold", 2)
                .peer_setting("update.method", "stage")
                .peer_setting("update.ready_timeout", "60s");
            spec.bootstraps = 1;
            spec.public_peer = false;
            spec.nat_peers = vec![NatKind::Moderate, NatKind::Strict];
            // QUIC to the bootstrap node gives each peer its UDP mapping
            // before it punches.
            spec.bootstrap_transport = Transport::Quic;
            let topo = Topology::build(&net, &spec).await?;
            let (moderate, strict) = (&topo.nat_peers[0].1, &topo.nat_peers[1].1);

            // The publisher trusts the same keys (it verifies what it
            // publishes) and only reports releases.
            let host = lab.add_home_host(NatKind::Moderate, "publisher").await?;
            let cfg = peer_config("publisher", &topo.bootstrap_addrs())
                .trusted_certificates(std::slice::from_ref(&topo.relay_cert))
                .set("min_file_size", "1TiB")
                .set("auto_update", "notify")
                .set("update.trusted_keys", trusted)
                .set("update.threshold", 2);
            let publisher = net.start(&host, cfg).await?;
            for p in [&publisher, moderate, strict] {
                wait_ready(p).await?;
                wait_reservation(p, Duration::from_secs(60)).await?;
            }
            let first_pids: Vec<Value> = [moderate, strict]
                .iter()
                .map(|p| logged(p, "jantar started").map(|v| v["pid"].clone()))
                .collect::<Option<_>>()
                .context("no start-up line")?;

            let artifact = dist.join(VERSION).join("jantar-peer");
            stamp(&Role::Peer.path(), VERSION, &artifact)?;
            let size = std::fs::metadata(&artifact)?.len();
            let manifest = make_release(
                &dist,
                &format!("release-{SEQUENCE}"),
                &ReleaseSpec {
                    version: VERSION,
                    sequence: SEQUENCE,
                    targets: vec![(None, &artifact)],
                    expires_in: "1h",
                    signers: vec![&keys.files[0], &keys.files[2]],
                },
            )?;
            let (code, text) = publisher
                .cli(
                    &[
                        "release",
                        "publish",
                        "--artifact",
                        artifact.to_str().context("path")?,
                        manifest.to_str().context("path")?,
                    ],
                    PUBLISH_LIMIT,
                )
                .await?;
            ensure!(code == 0, "release publish exited {code}:\n{text}");
            eprintln!("published {VERSION} ({size} bytes) from behind a moderate NAT:\n{text}");
            let published = logged(&publisher, "published a release")
                .as_ref()
                .and_then(line_time)
                .context("the publisher did not log the release it published")?;
            let u = &publisher.status().await?["update"];
            ensure!(
                u["newest"]["sequence"] == SEQUENCE && u["state"] == "available",
                "the publisher does not report the release as available: {u}"
            );

            // Each peer takes it up on its own; the Strict one is the slower.
            for p in [moderate, strict] {
                wait_updated(p).await?;
            }

            let (publisher_id, moderate_id, strict_id) =
                (publisher.peer_id(), moderate.peer_id(), strict.peer_id());
            for (p, first_pid) in [moderate, strict].into_iter().zip(&first_pids) {
                let name = p.name();
                // Verified with the two signatures of a 2-of-3 threshold.
                let verified = logged(p, "verified a release")
                    .with_context(|| format!("{name} did not log verifying the release"))?;
                ensure!(verified["signers"] == 2, "{name}: {verified}");
                for step in [
                    "fetching the release",
                    "release staged",
                    "running the new version",
                    "the new version is ready; update confirmed",
                ] {
                    ensure!(logged(p, step).is_some(), "{name} did not log {step:?}");
                }
                // The new version runs in the same process.
                let started = p
                    .log_lines()
                    .into_iter()
                    .find(|v| v["message"] == "jantar started" && v["version"] == VERSION)
                    .with_context(|| format!("{name}: no start-up line of {VERSION}"))?;
                ensure!(
                    started["pid"] == *first_pid,
                    "{name}: {VERSION} started as process {}, the node was {first_pid}",
                    started["pid"]
                );
                // Staged in the data directory, byte for byte the artifact.
                let staged = p
                    .data_dir()
                    .join("releases")
                    .join(format!("{SEQUENCE}-{VERSION}"))
                    .join("jantar-peer");
                ensure!(
                    std::fs::read(&staged).ok() == Some(std::fs::read(&artifact)?),
                    "{name}: {} is not the published artifact",
                    staged.display()
                );
                eprintln!(
                    "{name} runs {VERSION}: verified {}, fetch started {}, staged {}, \
                     confirmed {} after publishing",
                    after(p, "verified a release", published),
                    after(p, "fetching the release", published),
                    after(p, "release staged", published),
                    after(p, "the new version is ready; update confirmed", published),
                );
            }
            // `stage` leaves the installed binary as it was.
            ensure!(
                built_version()? == running,
                "the installed binary no longer reports {running}"
            );

            // Moderate and Strict do not punch through: the artifact reached
            // the Strict peer through the relay, over several circuits, from
            // the publisher (and possibly, once it held the artifact, the
            // Moderate peer).
            let kinds = connections_to(&strict.status().await?, publisher_id);
            ensure!(
                !kinds.iter().any(|(k, _)| k == "direct"),
                "Moderate and Strict are not expected to punch through: {kinds:?}"
            );
            let (from_publisher, from_moderate) = (
                circuits_cut(&topo.relay, strict_id, publisher_id),
                circuits_cut(&topo.relay, strict_id, moderate_id),
            );
            eprintln!(
                "circuits the relay cut at {CIRCUIT_BYTES}: strict-publisher {from_publisher}, \
                 strict-moderate {from_moderate}, moderate-publisher {}",
                circuits_cut(&topo.relay, moderate_id, publisher_id)
            );
            ensure!(
                from_publisher + from_moderate >= 1,
                "the {size}-byte artifact should have crossed the relay's {CIRCUIT_BYTES} \
                 circuits to the strict peer; the relay cut none"
            );
            Ok(())
        })
        .await
    })
    .await
}
