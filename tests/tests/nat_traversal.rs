//! NAT traversal with the real `jantar-bootstrap`, `jantar-relay` and
//! `jantar-peer` binaries running as processes inside the NAT lab's network
//! namespaces (see `docs/nat-lab.md`).
//!
//! Each test builds its own lab under [`run_scenario`] with a time limit;
//! every wait has its own timeout. On failure each node's log tail and
//! `/status` are printed, then every router's nft ruleset.
//!
//! Needs root (network namespaces); without it every test prints
//! `SKIP <name>: <reason>` and passes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use jantar_tests::lab::{
    JantarNet, LabNode, NatKind, PUNCH_OK, PairOutcome, Prober, PunchLab, Topology, TopologySpec,
    Transport, active_circuit, connections_to, discovered, line_time, peer_config, render_matrix,
    run_scenario, wait_ready, wait_reservation,
};
use serde_json::Value;

/// Time for AutoNAT to classify a peer and for the DHT to find every peer.
const SETTLE: Duration = Duration::from_secs(60);
/// Time for AutoNAT to classify a full-cone peer as public: it took 49 s in
/// one run on the 2-core CI machine (slow settling is an open issue, see
/// docs/nat-lab.md).
const SETTLE_PUBLIC: Duration = Duration::from_secs(100);

fn prober() -> Prober {
    Prober::new(env!("CARGO_BIN_EXE_lab-probe"))
}

/// Requirement 1: every peer joins the DHT through the bootstrap nodes and
/// finds every other peer; AutoNAT says public for datacenter peers, private
/// behind every NAT (the full-cone Open NAT may be either: it is reachable over
/// QUIC), and the DHT mode follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_joins_the_dht_finds_the_others_and_learns_its_nat() -> Result<()> {
    run_scenario(
        "nat_join_and_classify",
        Duration::from_secs(240),
        async |lab| {
            let net = JantarNet::new(lab);
            net.checked(async {
                let topo = Topology::build(&net, &TopologySpec::standard()).await?;
                // A full-cone NAT maps UDP for anyone but lets no TCP in: on TCP
                // alone the same NAT is private.
                let host = lab.add_home_host(NatKind::Open, "open-tcp").await?;
                let cfg = peer_config("open-tcp", &topo.bootstrap_addrs())
                    .only(Transport::Tcp)
                    .trusted_certificates(std::slice::from_ref(&topo.relay_cert));
                let open_tcp = net.start(&host, cfg).await?;

                // The full-cone peer on TCP and QUIC is reachable over QUIC only. It
                // becomes public when a server's QUIC dial-back gets through; in some
                // loaded runs every dial-back timed out and it settled private (open
                // issue in docs/nat-lab.md), so either settled answer is accepted
                // for it, with the DHT mode that goes with it.
                let mut expected: Vec<(Arc<LabNode>, &[&str])> = Vec::new();
                for p in topo.peers() {
                    let nat: &[&str] = match p.host().nat_kind() {
                        None => &["public"],
                        Some(NatKind::Open) => &["public", "private"],
                        Some(_) => &["private"],
                    };
                    expected.push((p, nat));
                }
                expected.push((open_tcp, &["private"]));
                let ids: Vec<String> = expected
                    .iter()
                    .map(|(p, _)| p.peer_id().to_string())
                    .collect();

                let start = Instant::now();
                let mut report = Vec::new();
                for (peer, nats) in &expected {
                    let limit = if nats.contains(&"public") {
                        SETTLE_PUBLIC
                    } else {
                        SETTLE
                    };
                    let what = format!("NAT status {}", nats.join(" or "));
                    let took = peer
                        .wait_until(limit, &what, async |n: &LabNode| {
                            let st = n.status().await?;
                            Ok(nats.iter().any(|nat| st["nat_status"] == *nat))
                        })
                        .await?;
                    // The DHT mode follows the NAT status, read from one snapshot.
                    peer.wait_until(
                        Duration::from_secs(15),
                        "the DHT mode that goes with the NAT status",
                        async |n: &LabNode| {
                            let st = n.status().await?;
                            let nat = st["nat_status"].as_str().unwrap_or_default();
                            let mode = if nat == "public" { "server" } else { "client" };
                            Ok(nats.contains(&nat) && st["dht_mode"] == mode)
                        },
                    )
                    .await?;
                    let st = peer.status().await?;
                    let nat = st["nat_status"].as_str().unwrap_or_default().to_string();
                    let mode = st["dht_mode"].as_str().unwrap_or_default().to_string();
                    report.push(format!(
                        "{}: {nat} after {took:?} (DHT {mode})",
                        peer.name()
                    ));
                }
                for (peer, _) in &expected {
                    wait_ready(peer).await?;
                    let others: Vec<&String> =
                        ids.iter().filter(|i| *i != peer.peer_id()).collect();
                    peer.wait_until(
                        SETTLE,
                        "discovery of every other peer through the DHT",
                        async |n: &LabNode| {
                            let found = discovered(&n.status().await?);
                            Ok(others.iter().all(|o| found.contains(o)))
                        },
                    )
                    .await?;
                }
                eprintln!(
                    "classified and discovered within {:?}:\n  {}",
                    start.elapsed(),
                    report.join("\n  ")
                );
                Ok(())
            })
            .await
        },
    )
    .await
}

/// Requirement 2: every private peer holds a relay reservation, and others
/// reach it through its circuit address: the public peer connects to it
/// with `POST /connect`, and a libp2p client in the datacenter pings it
/// through the circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_peers_hold_reservations_and_are_reachable_through_the_relay() -> Result<()> {
    run_scenario("nat_reservations", Duration::from_secs(180), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let topo = Topology::build(&net, &TopologySpec::standard()).await?;
            let public = topo.public_peer.clone().context("no public peer")?;
            let probe_host = lab.add_datacenter_host("probe").await?;
            let prober = prober();
            for (kind, peer) in &topo.nat_peers {
                if *kind == NatKind::Open {
                    // Full cone on QUIC: AutoNAT says public, so no reservation
                    // is needed (see the test above).
                    continue;
                }
                let circuit = wait_reservation(peer, SETTLE).await?;
                ensure!(
                    circuit.contains(topo.relay.peer_id()) && circuit.contains("/p2p-circuit/p2p/"),
                    "{}: unexpected circuit address {circuit}",
                    peer.name()
                );
                let (code, conn) = public.connect(&circuit).await?;
                ensure!(
                    code == 200,
                    "public -> {} via {circuit}: HTTP {code} {conn}",
                    peer.name()
                );
                ensure!(conn["peer_id"] == peer.peer_id(), "{conn}");
                ensure!(
                    conn["kind"] == "relayed",
                    "expected a relayed connection: {conn}"
                );
                let echo = prober
                    .p2p_echo(&probe_host, &circuit, 3, 0, Duration::from_secs(30))
                    .await?;
                ensure!(
                    echo.error.is_none() && echo.ping_rtts.len() == 3 && echo.relayed == Some(true),
                    "ping through the circuit of {}: {echo:?}",
                    peer.name()
                );
                eprintln!(
                    "{} ({kind}) reachable at {circuit}; ping RTTs {:?}",
                    peer.name(),
                    echo.ping_rtts
                );
            }
            Ok(())
        })
        .await
    })
    .await
}

/// Kinds whose mapping is endpoint-independent.
const EIM: [NatKind; 3] = [NatKind::Open, NatKind::Moderate, NatKind::Cgnat];

async fn punch_eim_pairs(net: &JantarNet<'_>, transport: Transport) -> Result<Vec<PairOutcome>> {
    let pl = PunchLab::build(net, &EIM, &EIM, transport).await?;
    let outcomes = pl.punch(&pl.all_pairs(), Duration::from_secs(45)).await?;
    for o in &outcomes {
        eprintln!("{}", o.describe());
    }
    eprintln!("{}", render_matrix(&outcomes));
    Ok(outcomes)
}

/// Requirement 3 over QUIC: every pair of Open, Moderate and CGNAT peers, in
/// both directions, ends up on a direct QUIC connection through DCUtR, and
/// the relayed connection is closed on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_hole_punching_goes_direct_between_eim_nats() -> Result<()> {
    punch_scenario("nat_punch_quic", Transport::Quic).await
}

/// Requirement 3 over TCP: the same pairs punch through with a simultaneous
/// TCP open. The first SYN to reach the other NAT finds no mapping and is
/// dropped by that router, but it has opened its own router's mapping for
/// the other side's SYN (see "NAT kinds" in docs/nat-lab.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_hole_punching_goes_direct_between_eim_nats() -> Result<()> {
    punch_scenario("nat_punch_tcp", Transport::Tcp).await
}

async fn punch_scenario(name: &str, transport: Transport) -> Result<()> {
    run_scenario(name, Duration::from_secs(150), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let outcomes = punch_eim_pairs(&net, transport).await?;
            // Both sides must have no relayed connection left and at least
            // one direct one. Either side may hold more than one direct
            // connection: both dial during the punch, and an AutoNAT
            // dial-back from an ephemeral port adds another (see
            // docs/nat-lab.md).
            let only_direct = |k: &[String]| !k.is_empty() && k.iter().all(|k| k == "direct");
            let marker = match transport {
                Transport::Quic => "/quic-v1",
                Transport::Tcp => "/tcp/",
            };
            let bad: Vec<String> = outcomes
                .iter()
                .filter(|o| {
                    !o.punched()
                        || !only_direct(&o.final_kinds)
                        || !only_direct(&o.listener_final_kinds)
                        || !o.direct_addr.as_deref().is_some_and(|a| a.contains(marker))
                })
                .map(|o| {
                    format!(
                        "{} (dialer side: {:?}, listener side: {:?})",
                        o.describe(),
                        o.final_kinds,
                        o.listener_final_kinds
                    )
                })
                .collect();
            ensure!(
                bad.is_empty(),
                "pairs not left on direct {transport} connections only:\n{}",
                bad.join("\n")
            );
            Ok(())
        })
        .await
    })
    .await
}

/// Requirement 4: where hole punching cannot work (Strict with Strict,
/// Strict with Moderate in both directions), DCUtR gives up, the pair stays
/// connected through the relay, and data flows: pings and a bulk transfer
/// well inside the relay's limits. Circuit limits: a transfer past
/// `relay.max_circuit_bytes` is cut by the relay (which counts both
/// directions together), and after `relay.max_circuit_duration` the relay
/// closes the pair's circuit; both peers see the relayed connection close
/// and a new `POST /connect` opens a fresh circuit.
///
/// Over TCP here; over QUIC below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_pairs_stay_relayed_carry_data_and_respect_circuit_limits() -> Result<()> {
    const NAME: &str = "nat_strict_relayed_tcp";
    strict_pairs_scenario(NAME, Transport::Tcp).await
}

/// The scenario above over QUIC, where DCUtR times out on the Strict NAT's
/// endpoint-dependent mappings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_pairs_over_quic_stay_relayed_carry_data_and_respect_circuit_limits() -> Result<()> {
    const NAME: &str = "nat_strict_relayed_quic";
    strict_pairs_scenario(NAME, Transport::Quic).await
}

async fn strict_pairs_scenario(name: &str, transport: Transport) -> Result<()> {
    const MAX_BYTES: u64 = 256 * 1024;
    // Longer than DCUtR needs to give up on all three pairs at once (up to
    // ~25 s from the first circuit, QUIC handshake timeouts), so that the
    // pairs are still relayed when their final state is read.
    const MAX_DURATION: Duration = Duration::from_secs(40);
    run_scenario(name, Duration::from_secs(180), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let relay_settings = [
                ("relay.max_circuit_bytes", Value::from("256KiB")),
                ("relay.max_circuit_duration", Value::from("40s")),
            ];
            let kinds = [NatKind::Strict, NatKind::Moderate];
            let pl = PunchLab::build_with(&net, &kinds, &kinds, transport, &relay_settings).await?;
            // (dialer, listener): Strict->Strict, Strict->Moderate, Moderate->Strict.
            let pairs = [(0, 0), (0, 1), (1, 0)];
            let outcomes = pl.punch(&pairs, Duration::from_secs(60)).await?;
            let circuits_at = Instant::now();
            for o in &outcomes {
                eprintln!("{}", o.describe());
                ensure!(
                    o.connect.as_deref() == Ok("relayed") && !o.punched() && o.failure.is_some(),
                    "expected DCUtR to give up: {}",
                    o.describe()
                );
                ensure!(o.final_kinds == ["relayed"], "expected to stay relayed: {}", o.describe());
            }

            // Data through the relay, from each dialer's host (behind its own
            // NAT) to each listener's circuit address.
            let prober = prober();
            let bulk = 32 * 1024;
            for &(d, l) in &pairs {
                let (dkind, dialer) = &pl.dialers[d];
                let (lkind, listener, circuit) = &pl.listeners[l];
                let echo = prober
                    .p2p_echo(dialer.host(), circuit, 5, bulk, Duration::from_secs(30))
                    .await?;
                ensure!(
                    echo.error.is_none() && echo.relayed == Some(true) && echo.bulk_bytes == bulk,
                    "{dkind} host -> {} ({lkind}): {echo:?}",
                    listener.name()
                );
                eprintln!(
                    "{dkind} -> {lkind}: {} pings (RTT {:?}), {bulk} bytes echoed in {} ms through the relay",
                    echo.ping_rtts.len(),
                    echo.ping_rtts,
                    echo.bulk_millis.unwrap_or(0)
                );
            }

            // Byte limit: 256 KiB each way cannot pass a 256 KiB circuit.
            let (_, dialer) = &pl.dialers[0];
            let (_, listener, circuit) = &pl.listeners[0];
            let echo = prober
                .p2p_echo(dialer.host(), circuit, 0, MAX_BYTES, Duration::from_secs(30))
                .await?;
            ensure!(echo.error.is_some(), "a transfer past the circuit limit completed: {echo:?}");
            ensure!(
                echo.bulk_bytes < MAX_BYTES / 2,
                "more than half the limit echoed ({} bytes), though the relay counts both directions: {echo:?}",
                echo.bulk_bytes
            );
            pl.relay
                .wait_for_log(Duration::from_secs(10), |v| {
                    v["message"] == "circuit closed"
                        && v["error"].as_str().is_some_and(|e| e.contains("Max circuit bytes"))
                })
                .await?;
            eprintln!(
                "byte limit: transfer cut after {} bytes echoed ({})",
                echo.bulk_bytes,
                echo.error.as_deref().unwrap_or("")
            );

            // Duration limit: the pair's own circuit is closed by the relay.
            let (_, d0) = &pl.dialers[0];
            let lid = listener.peer_id().to_string();
            let left = MAX_DURATION.saturating_sub(circuits_at.elapsed());
            d0.wait_until(left + Duration::from_secs(15), "the relay to close the circuit at its duration limit", async |n: &LabNode| {
                Ok(!connections_to(&n.status().await?, &lid).iter().any(|(k, _)| k == "relayed"))
            })
            .await?;
            pl.relay
                .wait_for_log(Duration::from_secs(10), |v| {
                    v["message"] == "circuit closed" && v["error"].as_str().is_some_and(|e| e.contains("timed out"))
                })
                .await?;
            let (code, conn) = d0.connect(circuit).await?;
            ensure!(code == 200 && conn["kind"] == "relayed", "a new circuit after the limit: HTTP {code} {conn}");
            eprintln!("duration limit: circuit closed by the relay after ~{MAX_DURATION:?}; a new dial opened a new circuit");
            Ok(())
        })
        .await
    })
    .await
}

/// Requirement 5: behind the corporate firewall (TCP 80/443 out only) the
/// peer reaches the relay over secure WebSocket on 443, holds a
/// reservation, learns it is private, and the others reach it through the
/// relay. The peer runs with `relay_reservations: always` (the standard
/// topology's corporate setting); `auto` is the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corporate_peer_uses_the_relay_over_wss() -> Result<()> {
    run_scenario("nat_corporate_wss", Duration::from_secs(150), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let mut spec = TopologySpec::standard();
            spec.nat_peers = vec![NatKind::Moderate, NatKind::Corporate];
            let topo = Topology::build(&net, &spec).await?;
            let corp = topo
                .nat_peer(NatKind::Corporate)
                .context("no corporate peer")?;
            let relay_id = topo.relay.peer_id().to_string();
            corp.wait_until(
                SETTLE,
                "a connection to the relay over /tls/ws on 443",
                async |n: &LabNode| {
                    Ok(connections_to(&n.status().await?, &relay_id)
                        .iter()
                        .any(|(k, a)| k == "direct" && a.contains("/tcp/443/tls/ws")))
                },
            )
            .await?;
            let circuit = wait_reservation(&corp, SETTLE).await?;
            // AutoNAT settles some seconds after the reservation, with the
            // relay as its only server.
            corp.wait_until(SETTLE, "NAT status private", async |n: &LabNode| {
                Ok(n.status().await?["nat_status"] == "private")
            })
            .await?;
            for other in topo.peers().iter().filter(|p| p.name() != corp.name()) {
                let (code, conn) = other.connect(&circuit).await?;
                ensure!(
                    code == 200 && conn["peer_id"] == corp.peer_id() && conn["kind"] == "relayed",
                    "{} -> corporate via {circuit}: HTTP {code} {conn}",
                    other.name()
                );
            }
            let probe_host = lab.add_datacenter_host("probe").await?;
            let echo = prober()
                .p2p_echo(&probe_host, &circuit, 3, 16 * 1024, Duration::from_secs(30))
                .await?;
            ensure!(
                echo.error.is_none() && echo.bulk_bytes == 16 * 1024,
                "echo through the corporate peer's circuit: {echo:?}"
            );
            Ok(())
        })
        .await
    })
    .await
}

/// Requirement 5 with the default `relay_reservations: auto`: the corporate
/// peer must learn from AutoNAT (with its configured relay as server) that
/// it is private, and then reserve. The test above uses `always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corporate_peer_with_auto_reservations_learns_private_and_reserves() -> Result<()> {
    const NAME: &str = "nat_corporate_auto";
    run_scenario(NAME, Duration::from_secs(120), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let mut spec = TopologySpec::standard();
            spec.nat_peers = vec![NatKind::Corporate];
            spec.corporate_settings.clear();
            let topo = Topology::build(&net, &spec).await?;
            let corp = topo
                .nat_peer(NatKind::Corporate)
                .context("no corporate peer")?;
            corp.wait_until(SETTLE, "NAT status private", async |n: &LabNode| {
                Ok(n.status().await?["nat_status"] == "private")
            })
            .await?;
            let circuit = wait_reservation(&corp, SETTLE).await?;
            ensure!(
                circuit.contains(topo.relay.peer_id()),
                "unexpected circuit {circuit}"
            );
            Ok(())
        })
        .await
    })
    .await
}

/// Requirement 6: with two of three bootstrap nodes stopped a new peer still
/// joins; with all three stopped, connected peers keep working, a new peer
/// retries with growing delays, and joins as soon as one bootstrap node is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_failover_and_rejoin_with_backoff() -> Result<()> {
    run_scenario(
        "nat_bootstrap_failover",
        Duration::from_secs(240),
        async |lab| {
            let net = JantarNet::new(lab);
            net.checked(async {
                let mut spec = TopologySpec::standard();
                spec.bootstraps = 3;
                spec.nat_peers = vec![NatKind::Moderate];
                let topo = Topology::build(&net, &spec).await?;
                let public = topo.public_peer.clone().context("no public peer")?;
                let home = topo
                    .nat_peer(NatKind::Moderate)
                    .context("no moderate peer")?;
                for p in [&public, &home] {
                    wait_ready(p).await?;
                }
                wait_reservation(&home, SETTLE).await?;
                let boots = topo.bootstrap_addrs();
                let grace = Duration::from_secs(5);
                topo.bootstraps[0].stop(grace).await?;
                topo.bootstraps[1].stop(grace).await?;

                let new_peer = async |name: &str| -> Result<Arc<LabNode>> {
                    let host = lab.add_home_host(NatKind::Moderate, name).await?;
                    let cfg = peer_config(name, &boots)
                        .trusted_certificates(std::slice::from_ref(&topo.relay_cert));
                    net.start(&host, cfg).await
                };
                let late1 = new_peer("late1").await?;
                let took = wait_ready(&late1).await?;
                let pid = public.peer_id().to_string();
                late1
                    .wait_until(
                        SETTLE,
                        "discovery of the public peer",
                        async |n: &LabNode| Ok(discovered(&n.status().await?).contains(&pid)),
                    )
                    .await?;
                eprintln!("with 2 of 3 bootstrap nodes down, a new peer joined in {took:?}");

                topo.bootstraps[2].stop(grace).await?;
                // Connected peers keep working: the home peer still reaches the
                // public peer and keeps its reservation.
                let (code, conn) = home.connect(&public.addr(Transport::Quic)).await?;
                ensure!(
                    code == 200 && conn["kind"] == "direct",
                    "home -> public with no bootstrap node: HTTP {code} {conn}"
                );
                ensure!(
                    active_circuit(&home.status().await?).is_some(),
                    "home peer lost its reservation"
                );

                let late2 = new_peer("late2").await?;
                let retries = |n: &LabNode| -> Vec<f64> {
                    n.log_lines()
                        .iter()
                        .filter(|v| {
                            v["message"]
                                == "not connected to the network; dialing the bootstrap nodes"
                        })
                        .filter_map(line_time)
                        .collect()
                };
                late2
                    .wait_until(
                        Duration::from_secs(30),
                        "four retries of the bootstrap nodes",
                        async |n: &LabNode| Ok(retries(n).len() >= 4),
                    )
                    .await?;
                let (code, _) = late2.get("/readyz").await?;
                ensure!(code == 503, "late2 is ready without any bootstrap node");
                let times = retries(&late2);
                let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
                // Retries run on the node's 1 s housekeeping tick, so each
                // gap may be up to a second off its backoff delay (one run
                // measured [3.0, 4.0, 9.0] s for delays of 2, 4 and 8 s):
                // each gap must grow by half, give or take that tick, and the
                // last must be well above the first, which a fixed delay
                // cannot pass.
                let (first, last) = (gaps[0], gaps[gaps.len() - 1]);
                ensure!(
                    gaps.windows(2).all(|g| g[1] + 1.0 >= g[0] * 1.5) && last >= first * 2.5,
                    "retry gaps do not grow: {gaps:?}"
                );
                eprintln!("all bootstrap nodes down: retry gaps {gaps:.1?} s");

                topo.bootstraps[1].restart().await?;
                let back = Instant::now();
                wait_ready(&topo.bootstraps[1]).await?;
                // The next retry is at most the backoff's cap (30 s) away.
                let took = late2
                    .wait_until(
                        Duration::from_secs(40),
                        "/readyz after a bootstrap node came back",
                        async |n: &LabNode| Ok(n.get("/readyz").await?.0 == 200),
                    )
                    .await?;
                late2
                    .wait_until(
                        SETTLE,
                        "discovery of the public peer",
                        async |n: &LabNode| Ok(discovered(&n.status().await?).contains(&pid)),
                    )
                    .await?;
                eprintln!(
                    "bootstrap node back: late2 joined {:?} after the restart (waited {took:?})",
                    back.elapsed()
                );
                Ok(())
            })
            .await
        },
    )
    .await
}

/// Requirement 7: a home router loses its uplink for 45 s and gets it back;
/// without a restart, its peer rejoins the DHT, renews its reservation and
/// punches through to another peer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_recovery_without_restart() -> Result<()> {
    run_scenario("nat_partition", Duration::from_secs(330), async |lab| {
        let net = JantarNet::new(lab);
        net.checked(async {
            let mut spec = TopologySpec::standard();
            spec.nat_peers = vec![NatKind::Moderate, NatKind::Cgnat];
            // Listening on the host address keeps 127.0.0.1 out of the
            // addresses the peers announce (see "Open issues" in
            // docs/nat-lab.md).
            spec.listen_on_host_ip = true;
            // A QUIC bootstrap connection gives each peer its UDP mapping
            // before the first punch.
            spec.bootstrap_transport = Transport::Quic;
            let topo = Topology::build(&net, &spec).await?;
            let home = topo
                .nat_peer(NatKind::Moderate)
                .context("no moderate peer")?;
            let other = topo.nat_peer(NatKind::Cgnat).context("no cgnat peer")?;
            let relay_id = topo.relay.peer_id().to_string();

            let punch = async |since: f64| -> Result<()> {
                let circuit = wait_reservation(&other, SETTLE).await?;
                let (code, conn) = home.connect(&circuit).await?;
                ensure!(
                    code == 200,
                    "home -> other via {circuit}: HTTP {code} {conn}"
                );
                let oid = other.peer_id().to_string();
                home.wait_until(
                    Duration::from_secs(30),
                    "a hole punch to the other peer",
                    async |n: &LabNode| {
                        Ok(n.log_lines().iter().any(|v| {
                            v["message"] == PUNCH_OK
                                && v["peer"] == oid.as_str()
                                && line_time(v).is_some_and(|t| t >= since)
                        }) || other.log_lines().iter().any(|v| {
                            v["message"] == PUNCH_OK
                                && v["peer"] == n.peer_id()
                                && line_time(v).is_some_and(|t| t >= since)
                        }))
                    },
                )
                .await?;
                home.wait_until(
                    Duration::from_secs(10),
                    "a direct connection to the other peer",
                    async |n: &LabNode| {
                        Ok(connections_to(&n.status().await?, &oid)
                            .iter()
                            .any(|(k, _)| k == "direct"))
                    },
                )
                .await?;
                Ok(())
            };
            wait_reservation(&home, SETTLE).await?;
            punch(0.0).await?;
            eprintln!("before the cut: reservation held, direct connection to the other peer");

            let router = home.host().uplink().clone();
            let cut = router.cut_uplink().await?;
            let cut_at = now();
            eprintln!(
                "cut the uplink of {} (routes kept: {:?})",
                router.name(),
                cut.routes()
            );
            // Longer than pings take to close a dead connection (30 to 40 s:
            // libp2p-ping reports only the second failure in a row). A shorter cut
            // can end first; TCP's retransmission may then revive the relay
            // connection, or not, and the test would race it.
            tokio::time::sleep(CUT).await;
            let during = home.status().await?;
            cut.restore().await?;
            let restored_at = now();
            eprintln!(
                "uplink restored; during the cut {} had {} connections",
                home.name(),
                during["connections"].as_array().map_or(0, Vec::len)
            );
            ensure!(home.is_running(), "the home peer died during the cut");

            let took = home
                .wait_until(
                    SETTLE,
                    "a connection to a bootstrap node after the cut",
                    async |n: &LabNode| {
                        let st = n.status().await?;
                        let boots = topo
                            .bootstraps
                            .iter()
                            .any(|b| !connections_to(&st, b.peer_id()).is_empty());
                        Ok(boots && n.get("/readyz").await?.0 == 200)
                    },
                )
                .await?;
            eprintln!("rejoined {took:?} after the restore");
            let took = home
                .wait_until(
                    Duration::from_secs(150),
                    "a reservation renewed after the cut",
                    async |n: &LabNode| {
                        let renewed = n.log_lines().iter().any(|v| {
                            v["message"] == "relay reservation accepted"
                                && v["relay"] == relay_id.as_str()
                                && line_time(v).is_some_and(|t| t >= cut_at)
                        });
                        Ok(renewed && active_circuit(&n.status().await?).is_some())
                    },
                )
                .await
                .inspect_err(|_| eprintln!("{}", relay_story(&home, &relay_id)))?;
            eprintln!("reservation renewed {took:?} after the restore");
            punch(restored_at).await?;
            eprintln!(
                "after the restore: reservation renewed and punched through again, same process"
            );
            Ok(())
        })
        .await
    })
    .await
}

/// What `node`'s log says about its relay: reservations, and the connections and
/// dials to the relay, whole (a log tail is mostly other traffic).
fn relay_story(node: &LabNode, relay_id: &str) -> String {
    let lines: Vec<String> = node
        .log_lines()
        .iter()
        .filter(|v| {
            let msg = v["message"].as_str().unwrap_or_default();
            msg.contains("reservation")
                || msg.contains("relay")
                || msg.starts_with("ping failed")
                || msg.starts_with("NAT status")
                || v.to_string().contains(relay_id)
        })
        .map(|v| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("target");
                o.remove("spans");
            }
            v.to_string()
        })
        .collect();
    format!(
        "----- {}: every log line about the relay {relay_id}:\n{}",
        node.name(),
        lines.join("\n")
    )
}

/// Seconds since the epoch, comparable with log timestamps.
/// How long the partition test cuts the home router's uplink.
const CUT: Duration = Duration::from_secs(45);

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
