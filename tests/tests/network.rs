//! Multi-process test on loopback: two bootstrap nodes, one relay and three peers with
//! mDNS off find each other through the DHT, one peer reaches another through a relay
//! circuit, the admin endpoints show it, and SIGTERM ends every process cleanly.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use jantar_tests::{
    harness::{Node, Role, diagnose_all},
    lab::strings,
};

const WAIT: Duration = Duration::from_secs(60);
/// Fast discovery and AutoNAT for a test network on 127.0.0.1.
const FAST: &str = "  autonat: {only_global_ips: false, boot_delay: 1s, retry_interval: 5s}\n  dht: {discovery_interval: 1s}\n";

fn bootstrap_list(nodes: &[&str]) -> String {
    nodes.iter().map(|a| format!("    - \"{a}\"\n")).collect()
}

fn has_metric(text: &str, name: &str, labels: &str, min: f64) -> bool {
    text.lines().any(|l| {
        l.starts_with(name)
            && l.contains(labels)
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= min)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstraps_relay_and_peers_form_a_network() -> Result<()> {
    let root = tempfile::tempdir()?;
    let root = root.path();
    let listen =
        "  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\n";

    // Bootstrap 1 knows nobody; bootstrap 2 has the shared list, which names itself too.
    let mut b1 = Node::start(
        root,
        "b1",
        Role::Bootstrap,
        &format!("network:\n{listen}{FAST}"),
    )
    .await?;
    b1.wait_ready(WAIT).await?;
    let b2_cfg_probe = root.join("b2-id.cfg");
    std::fs::create_dir_all(root.join("b2"))?;
    std::fs::write(
        &b2_cfg_probe,
        format!("data_dir: {}\n", root.join("b2").display()),
    )?;
    let b2_id = jantar_tests::harness::peer_id_of(Role::Bootstrap, &b2_cfg_probe)?;
    let self_entry = format!("/ip4/127.0.0.1/tcp/1/p2p/{b2_id}");
    let mut b2 = Node::start(
        root,
        "b2",
        Role::Bootstrap,
        &format!(
            "network:\n{listen}{FAST}  bootstrap_nodes:\n{}",
            bootstrap_list(&[&b1.addr(), &self_entry])
        ),
    )
    .await?;
    assert_eq!(
        b2.peer_id, b2_id,
        "the key made by `id` is the one the node runs with"
    );
    b2.wait_ready(WAIT).await?;
    let boots = bootstrap_list(&[&b1.addr(), &b2.addr()]);

    let relay = Node::start(
        root,
        "relay",
        Role::Relay,
        &format!(
            "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{FAST}  bootstrap_nodes:\n{boots}"
        ),
    )
    .await?;
    // The relay learns its own address only after start; give it as external address.
    let relay_addr = relay.listen[0].clone();
    drop(relay);
    let mut relay = Node::start(
        root,
        "relay",
        Role::Relay,
        &format!(
            "network:\n  listen_addresses: [\"{relay_addr}\"]\n  external_addresses: [\"{relay_addr}\"]\n{FAST}  bootstrap_nodes:\n{boots}"
        ),
    )
    .await?;
    relay.wait_ready(WAIT).await?;

    let mut peers = Vec::new();
    for (i, mode) in ["auto", "auto", "always"].iter().enumerate() {
        let p = Node::start(
            root,
            &format!("p{}", i + 1),
            Role::Peer,
            &format!(
                "network:\n  enable_mdns: false\n  enable_upnp: false\n  relay_reservations: {mode}\n{listen}{FAST}  bootstrap_nodes:\n{boots}"
            ),
        )
        .await?;
        peers.push(p);
    }
    for p in &mut peers {
        p.wait_ready(WAIT).await?;
    }

    let result = check_network(&mut b1, &mut b2, &mut relay, &mut peers).await;
    if let Err(e) = &result {
        let mut all: Vec<&Node> = vec![&b1, &b2, &relay];
        all.extend(peers.iter());
        eprintln!("{e:#}\n{}", diagnose_all(&all).await);
    }
    result?;

    // SIGTERM: every process exits 0 within its grace period (default 10s).
    for n in peers.iter_mut().chain([&mut relay, &mut b2, &mut b1]) {
        let (status, took) = n.terminate(Duration::from_secs(12)).await?;
        ensure!(
            status.success(),
            "{} exited with {status}\n{}",
            n.name,
            n.log_tail(20)
        );
        ensure!(
            took < Duration::from_secs(10),
            "{} took {took:?} to stop",
            n.name
        );
        ensure!(
            n.log_lines().iter().any(|l| l["message"] == "stopped"),
            "{} did not log its clean stop\n{}",
            n.name,
            n.log_tail(20)
        );
    }
    Ok(())
}

async fn check_network(
    b1: &mut Node,
    b2: &mut Node,
    relay: &mut Node,
    peers: &mut [Node],
) -> Result<()> {
    // Every peer discovers every other through the DHT (mDNS is off).
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    for p in peers.iter_mut() {
        let others: Vec<String> = ids.iter().filter(|i| **i != p.peer_id).cloned().collect();
        p.wait_until(
            WAIT,
            "discovery of every other peer through the DHT",
            async |n: &Node| {
                let st = n.status().await?;
                let found = strings(&st["discovered_peers"]);
                Ok(others.iter().all(|o| found.contains(o)))
            },
        )
        .await?;
    }

    // The third peer holds an active reservation on the relay.
    let p3 = &mut peers[2];
    p3.wait_until(WAIT, "an active relay reservation", async |n: &Node| {
        let st = n.status().await?;
        Ok(st["reservations"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["state"] == "active")))
    })
    .await?;
    let st3 = p3.status().await?;
    let circuit = st3["reservations"][0]["address"]
        .as_str()
        .context("reservation without address")?
        .to_string();
    assert!(circuit.contains("/p2p-circuit/p2p/"), "{circuit}");

    // The first peer reaches it through the relay circuit.
    let (code, conn) = peers[0]
        .post_json("/connect", &[("addr", &circuit)])
        .await?;
    ensure!(
        code == 200,
        "connect through relay failed: HTTP {code} {conn}"
    );
    ensure!(
        conn["kind"] == "relayed",
        "expected a relayed connection: {conn}"
    );
    ensure!(conn["peer_id"] == peers[2].peer_id.as_str(), "{conn}");

    // The relay counted the circuit and the reservation.
    relay
        .wait_until(WAIT, "relay metrics", async |n: &Node| {
            let m = n.metrics().await?;
            Ok(has_metric(
                &m,
                "jantar_relay_circuit_requests_total",
                "result=\"accepted\"",
                1.0,
            ) && has_metric(
                &m,
                "jantar_relay_reservation_requests_total",
                "result=\"accepted\"",
                1.0,
            ) && has_metric(&m, "jantar_relay_reservations", "", 1.0)
                && has_metric(&m, "jantar_peers", "", 3.0))
        })
        .await?;
    let rs = relay.status().await?;
    ensure!(rs["relay"]["serving"] == true, "{rs}");

    // Bootstrap nodes route and store nothing.
    for b in [b1, b2] {
        let stats = b.get_json("/dht/stats").await?;
        ensure!(
            stats["routing_table_size"].as_u64() >= Some(4),
            "{}: {stats}",
            b.name
        );
        ensure!(
            stats["queries_served_total"].as_u64() > Some(0),
            "{}: {stats}",
            b.name
        );
        ensure!(
            stats["records_stored"] == 0 && stats["provided_keys"] == 0,
            "{}: {stats}",
            b.name
        );
        let m = b.metrics().await?;
        ensure!(
            has_metric(&m, "jantar_peers", "", 1.0),
            "{}: no jantar_peers\n{m}",
            b.name
        );
        ensure!(
            has_metric(&m, "jantar_dht_routing_table_peers", "", 4.0),
            "{}\n{m}",
            b.name
        );
        ensure!(
            has_metric(&m, "jantar_dht_queries_served_total", "find_node", 1.0),
            "{}\n{m}",
            b.name
        );
        let st = b.status().await?;
        ensure!(st["dht_mode"] == "server", "{st}");
    }
    // Peers' status shows NAT state and connection kinds.
    for p in peers.iter() {
        let st = p.status().await?;
        ensure!(
            ["public", "private", "unknown"].contains(&st["nat_status"].as_str().unwrap_or("")),
            "{st}"
        );
        ensure!(
            st["connections"].as_array().is_some_and(|c| c
                .iter()
                .all(|c| c["kind"] == "direct" || c["kind"] == "relayed")),
            "{st}"
        );
    }
    Ok(())
}

/// A configured relay that nobody answers at: the peer's dial fails, the
/// reservation is given up for now (backoff) rather than left pending, and the
/// node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_is_given_up_and_retried_later() -> Result<()> {
    let root = tempfile::tempdir()?;
    let root = root.path();
    // A port nothing listens on, and a peer id that belongs to no running node.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let id = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let relay = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{id}");
    let mut peer = Node::start(
        root,
        "peer",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  enable_dht: false\n  relay_reservations: always\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  relay_nodes: [\"{relay}\"]\n"
        ),
    )
    .await?;
    let id = id.to_string();
    let res = peer
        .wait_for_log(WAIT, |v| {
            v["message"] == "relay dial failed; trying another relay later"
                && v["relay"] == id.as_str()
        })
        .await;
    if let Err(e) = res {
        return Err(e.context(peer.diagnose().await));
    }
    let st = peer.status().await?;
    ensure!(
        st["reservations"].as_array().is_some_and(Vec::is_empty),
        "the reservation on an unreachable relay is still listed: {st}"
    );
    peer.terminate(Duration::from_secs(12)).await?;
    Ok(())
}

/// Gossipsub tells a peer its subscriptions only on the first connection to it. A peer
/// that went silent (stopped) and comes back under the same identity before the other
/// side has seen its old connection close is, for that side, a second connection: it
/// never hears that side's subscriptions, and cannot send it a message. The node notices
/// the missing subscriptions and reconnects, after which messages flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_back_under_the_same_identity_hears_the_others_topics() -> Result<()> {
    use jantar_tests::harness::LoopbackNet;
    use nix::{sys::signal, unistd::Pid};

    let root = tempfile::tempdir()?;
    let root = root.path();
    let net = LoopbackNet::start(root, "", Duration::from_secs(30)).await?;
    let mut a = net.peer("a", "").await?;
    let mut b = net.peer("b", "").await?;
    for (n, what) in [
        (&mut a, "b among a's message peers"),
        (&mut b, "a among b's"),
    ] {
        n.wait_until(WAIT, what, async |n: &Node| {
            Ok(n.cli(&["send", "hello"])?.0.success())
        })
        .await?;
    }

    // b goes silent; its connection to a stays open.
    let pid = Pid::from_raw(b.pid().context("b runs")? as i32);
    signal::kill(pid, signal::Signal::SIGSTOP)?;
    // It comes back as b2, under the same identity.
    std::fs::create_dir_all(root.join("b2"))?;
    std::fs::copy(root.join("b/identity.key"), root.join("b2/identity.key"))?;
    let mut b2 = net.peer("b2", "").await?;
    ensure!(b2.peer_id == b.peer_id, "b2 runs under b's identity");
    let a_id = a.peer_id.clone();
    b2.wait_until(WAIT, "b2 connected to a", async |n: &Node| {
        let st = n.status().await?;
        Ok(st["connections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["peer_id"] == a_id.as_str())))
    })
    .await?;
    // The old process ends: a's old connection to b closes, b2's stays.
    signal::kill(pid, signal::Signal::SIGKILL)?;
    b.wait_exit(Duration::from_secs(10)).await?;

    let text = "b is back";
    let sent = b2
        .wait_until(
            Duration::from_secs(90),
            "b2 able to send a message",
            async |n: &Node| Ok(n.cli(&["send", text])?.0.success()),
        )
        .await;
    if let Err(e) = sent {
        anyhow::bail!("{e:#}\n{}", diagnose_all(&[&a, &net.boot]).await);
    }
    let reconnected = b2.log_lines().into_iter().any(|v| {
        v["message"] == "gossip subscriptions of a connected peer never arrived; reconnecting to it"
            && v["peer"] == a_id.as_str()
    });
    ensure!(
        reconnected,
        "b2 sent without reconnecting to a:\n{}",
        b2.log_tail(40)
    );
    a.wait_until(WAIT, "b2's message at a", async |n: &Node| {
        Ok(n.cli(&["messages"])?.1.contains(text))
    })
    .await?;
    let metrics = b2.metrics().await?;
    ensure!(
        has_metric(&metrics, "jantar_gossip_reconnects_total", "", 1.0),
        "b2's reconnect is not counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("gossip"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for n in [&mut b2, &mut a] {
        n.terminate(Duration::from_secs(15)).await?;
    }
    Ok(())
}
