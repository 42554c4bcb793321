//! Connection management against real nodes: trimming to the low watermark, eviction
//! that resists a crowd from a few networks (also one that fills the node), discovery
//! that stops at the low watermark, rejoining through the peer store with every
//! bootstrap node down (also when the known peers come back after the node), and GeoIP
//! diversity.
//!
//! The peers that connect to the node under test are libp2p identities in this process
//! ([`Sybil`]), each dialing from a loopback address the test chooses, so that they fall
//! into the network groups (IPv4 /16s) the test wants.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result, ensure};
use jantar_tests::{
    geoip::{GeoEntry, write_database},
    harness::{
        LOOPBACK_FAST, LoopbackNet, Node, Role, diagnose_all, metric_sum, random_file,
        start_loopback_bootstrap,
    },
    sybil::{Sybil, Tally},
};
use libp2p::{Multiaddr, identity::Keypair};
use serde_json::Value;

const READY: Duration = Duration::from_secs(30);

async fn bootstrap(root: &std::path::Path) -> Result<Node> {
    start_loopback_bootstrap(root, READY).await
}

/// A peer on loopback with `limits` under `network.connection_limits` and `extra` under
/// `network`.
async fn peer(root: &std::path::Path, boot: &Node, limits: &str, extra: &str) -> Result<Node> {
    let mut node = Node::start(
        root,
        "node",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n  connection_limits: {{{limits}}}\n{extra}{LOOPBACK_FAST}",
            boot.addr()
        ),
    )
    .await?;
    node.wait_ready(READY).await?;
    Ok(node)
}

fn spawn(source: &str, target: &Node, tally: &Arc<Tally>) -> Result<Sybil> {
    spawn_with_key(Keypair::generate_ed25519(), source, target, tally)
}

fn spawn_with_key(key: Keypair, source: &str, target: &Node, tally: &Arc<Tally>) -> Result<Sybil> {
    let source: IpAddr = source.parse()?;
    let addr: Multiaddr = target.addr().parse()?;
    Sybil::spawn_with_key(key, source, &[], &[addr], tally.clone())
}

/// The connected peers in `/status`, by peer id.
fn connected(status: &Value) -> HashMap<String, Value> {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"] == true)
        .filter_map(|p| Some((p["peer_id"].as_str()?.to_string(), p.clone())))
        .collect()
}

/// An attacker's 30 identities, half from each of two addresses (two /16s).
fn crowd(target: &Node, tally: &Arc<Tally>) -> Result<Vec<Sybil>> {
    (0..30)
        .map(|i| {
            let source = if i % 2 == 0 {
                "127.66.0.1"
            } else {
                "127.67.0.1"
            };
            spawn(source, target, tally)
        })
        .collect()
}

/// The peer ids of `peers` not among `connected`.
fn missing(peers: &[Sybil], connected: &HashMap<String, Value>) -> Vec<String> {
    peers
        .iter()
        .map(|s| s.peer_id.to_string())
        .filter(|id| !connected.contains_key(id))
        .collect()
}

async fn wait_connected(node: &mut Node, n: usize) -> Result<()> {
    node.wait_until(
        Duration::from_secs(30),
        &format!("{n} peers connected"),
        async |n_: &Node| Ok(connected(&n_.status().await?).len() >= n),
    )
    .await
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// `high_water` 8, `low_water` 6: twenty peers connect (seven from networks of their
/// own, twelve from one /16, one the config names), and the node trims to six within
/// moments of their grace period ending. The bootstrap node (configured) and the named
/// peer stay; the peers closed are the worse scored (the crowded network's).
#[tokio::test]
async fn trims_to_the_low_watermark_keeping_protected_and_better_scored_peers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let boot = bootstrap(dir.path()).await?;
    let named_key = Keypair::generate_ed25519();
    let named = named_key.public().to_peer_id().to_string();
    let mut node = peer(
        dir.path(),
        &boot,
        &format!(
            "max_peers: 50, high_water: 8, low_water: 6, connection_grace_period: 5s, max_connections_per_ip: 16, protected_peers: [\"{named}\"]"
        ),
        "",
    )
    .await?;
    let tally = Arc::new(Tally::default());
    let mut sybils = vec![spawn_with_key(named_key, "127.9.0.1", &node, &tally)?];
    for i in 1..=7 {
        sybils.push(spawn(&format!("127.{i}.0.1"), &node, &tally)?);
    }
    wait_connected(&mut node, 9).await?;
    for i in 1..=12 {
        sybils.push(spawn(&format!("127.50.0.{i}"), &node, &tally)?);
    }
    // Every peer's score before any is closed (all 20 and the bootstrap node).
    let mut before: HashMap<String, Value> = HashMap::new();
    let _ = &boot;
    node.wait_until(
        Duration::from_secs(30),
        "all 20 peers connected",
        async |n: &Node| {
            let now = connected(&n.status().await?);
            let all = now.len() >= 21;
            if all {
                ensure!(
                    now.values().all(|p| p["connected"] == true),
                    "not connected"
                );
            }
            Ok(all)
        },
    )
    .await?;
    before.extend(connected(&node.status().await?));

    node.wait_until(
        Duration::from_secs(30),
        "trimmed to the low watermark, the released peers gone",
        async |n: &Node| {
            let st = n.status().await?;
            Ok(st["peer_management"]["counted_peers"].as_u64() <= Some(6)
                && st["peer_management"]["releasing"].as_u64() == Some(0))
        },
    )
    .await?;
    let st = node.status().await?;
    let after = connected(&st);
    // The bootstrap node closes idle connections itself; trimming must never have.
    let trimmed: Vec<String> = node
        .log_lines()
        .iter()
        .filter(|l| l["message"] == "trimmed")
        .filter_map(|l| l["peer"].as_str().map(str::to_string))
        .collect();
    ensure!(
        after.contains_key(&named) && !trimmed.contains(&named) && !trimmed.contains(&boot.peer_id),
        "a protected peer was closed: left {:?}, trimmed {trimmed:?}\n{}",
        after.keys().collect::<Vec<_>>(),
        node.diagnose().await
    );
    ensure!(
        after[&named]["protected"] == true,
        "the named peer is not shown as protected: {st}"
    );
    let counted = st["peer_management"]["counted_peers"].as_u64().unwrap_or(0);
    ensure!(
        (5..=6).contains(&counted),
        "expected the node at its low watermark, got {counted} peers: {st}"
    );
    let score = |p: &Value| p["score"]["total"].as_f64().unwrap_or(0.0);
    let (mut kept, mut closed) = (vec![], vec![]);
    for (id, p) in &before {
        if *id == boot.peer_id || *id == named {
            continue;
        }
        if after.contains_key(id) {
            kept.push(score(p));
        } else {
            closed.push(score(p));
        }
    }
    ensure!(
        closed.len() >= 13 && mean(&kept) > mean(&closed),
        "survivors are not the better scored: kept {kept:?}, closed {closed:?}\n{}",
        node.diagnose().await
    );
    let metrics = node.metrics().await?;
    ensure!(
        metric_sum(&metrics, "jantar_peers_trimmed_total", &[]) >= 13.0,
        "trimming not counted:\n{metrics}"
    );
    let crowded = after
        .values()
        .filter(|p| p["group"] == "127.50.0.0/16")
        .count();
    eprintln!(
        "kept {} peers (mean score {:.3}, {crowded} from the crowded /16), closed {} (mean {:.3})",
        kept.len(),
        mean(&kept),
        closed.len(),
        mean(&closed)
    );
    Ok(())
}

/// Ten honest peers from ten networks are connected when an attacker connects 30
/// identities from two addresses (two /16s). The node trims back to its low watermark
/// by closing the attacker's identities: every honest peer stays. The per-IP connection
/// cap is raised so that the crowd reaches the eviction logic at all.
#[tokio::test]
async fn an_attacker_from_two_networks_cannot_evict_honest_peers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let boot = bootstrap(dir.path()).await?;
    let mut node = peer(
        dir.path(),
        &boot,
        "max_peers: 60, high_water: 20, low_water: 15, connection_grace_period: 3s, max_connections_per_ip: 16",
        "",
    )
    .await?;
    let tally = Arc::new(Tally::default());
    let honest: Vec<Sybil> = (11..=20)
        .map(|i| spawn(&format!("127.{i}.0.1"), &node, &tally))
        .collect::<Result<_>>()?;
    wait_connected(&mut node, 11).await?;
    // The honest peers have been there a while when the crowd arrives.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attackers = crowd(&node, &tally)?;
    node.wait_until(
        Duration::from_secs(20),
        "the crowd connected",
        async |n: &Node| {
            let st = n.status().await?;
            Ok(st["peer_management"]["trimmed"].as_u64().unwrap_or(0) > 0
                || st["peer_management"]["counted_peers"].as_u64().unwrap_or(0) >= 35)
        },
    )
    .await?;
    // Trimming cuts down to the low watermark (15); an attacker whose connection
    // arrives after that is let in up to the high one (20) without another trim.
    node.wait_until(
        Duration::from_secs(45),
        "trimmed, under the high watermark, the released peers gone",
        async |n: &Node| {
            let st = n.status().await?;
            let pm = &st["peer_management"];
            Ok(pm["trimmed"].as_u64().unwrap_or(0) > 0
                && pm["counted_peers"].as_u64().unwrap_or(99) <= 20
                && pm["releasing"].as_u64() == Some(0))
        },
    )
    .await?;
    let st = node.status().await?;
    let after = connected(&st);
    let lost = missing(&honest, &after);
    ensure!(
        lost.is_empty(),
        "honest peers were evicted: {lost:?}\n{}",
        node.diagnose().await
    );
    let attackers_left = attackers
        .iter()
        .filter(|s| after.contains_key(&s.peer_id.to_string()))
        .count();
    eprintln!(
        "all 10 honest peers kept; {attackers_left} of 30 attacker identities left, {} trimmed",
        st["peer_management"]["trimmed"]
    );
    Ok(())
}

/// A full node makes room at once: a node at `max_peers` refuses every newcomer, so
/// there its grace period gives way. Six honest peers from six networks are connected
/// when 30 attacker identities from two addresses fill the node (`max_peers` 16) whose
/// grace period (120 s) would otherwise hold them all. The node trims back to its low
/// watermark long before any grace period ends, closing the attacker's identities; the
/// honest peers stay, and an honest newcomer from a network of its own is let in.
#[tokio::test]
async fn a_full_node_trims_within_the_grace_period_and_lets_an_honest_newcomer_in() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let boot = bootstrap(dir.path()).await?;
    let mut node = peer(
        dir.path(),
        &boot,
        "max_peers: 16, high_water: 10, low_water: 8, connection_grace_period: 120s, max_connections_per_ip: 32",
        "",
    )
    .await?;
    let tally = Arc::new(Tally::default());
    let honest: Vec<Sybil> = (11..=16)
        .map(|i| spawn(&format!("127.{i}.0.1"), &node, &tally))
        .collect::<Result<_>>()?;
    wait_connected(&mut node, 7).await?;
    // The honest peers have been there a while when the crowd arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attackers = crowd(&node, &tally)?;
    // Well within the 120 s grace period: only the full node's rule can trim here.
    node.wait_until(
        Duration::from_secs(30),
        "the node was full, trimmed to its low watermark and let the released peers go",
        async |n: &Node| {
            let st = n.status().await?;
            let pm = &st["peer_management"];
            let refused = metric_sum(
                &n.metrics().await?,
                "jantar_connections_denied_total",
                &["max_peers"],
            );
            Ok(refused > 0.0
                && pm["trimmed"].as_u64().unwrap_or(0) > 0
                && pm["counted_peers"].as_u64().unwrap_or(99) <= 8
                && pm["releasing"].as_u64() == Some(0))
        },
    )
    .await?;
    let newcomer = spawn("127.21.0.1", &node, &tally)?;
    let newcomer_id = newcomer.peer_id.to_string();
    node.wait_until(
        Duration::from_secs(20),
        "the honest newcomer connected",
        async |n: &Node| Ok(connected(&n.status().await?).contains_key(&newcomer_id)),
    )
    .await?;
    let st = node.status().await?;
    let after = connected(&st);
    let lost = missing(&honest, &after);
    ensure!(
        lost.is_empty(),
        "honest peers were evicted: {lost:?}\n{}",
        node.diagnose().await
    );
    let attackers_left = attackers
        .iter()
        .filter(|s| after.contains_key(&s.peer_id.to_string()))
        .count();
    eprintln!(
        "all 6 honest peers kept and the newcomer let in; {attackers_left} of 30 attacker identities left, {} trimmed",
        st["peer_management"]["trimmed"]
    );
    Ok(())
}

/// A peer looks for more peers in the DHT only while it holds fewer than its low
/// watermark. `full` (`high_water` 3, `low_water` 2), once connected to two of the four
/// other peers, starts no more discovery lookups, while `open` (the default watermarks,
/// low 38) starts one every `discovery_interval` (1 s here). Looking up and dialing
/// every peer found would, in a network of thousands, connect every peer to every other.
#[tokio::test]
async fn a_peer_with_enough_peers_stops_looking_for_more() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let net = LoopbackNet::start(dir.path(), "", READY).await?;
    let mut others = vec![];
    for name in ["a", "b", "c", "d"] {
        others.push(net.peer(name, "").await?);
    }
    let mut full = peer(
        dir.path(),
        &net.boot,
        "max_peers: 20, high_water: 3, low_water: 2",
        "",
    )
    .await?;
    let open = net.peer("open", "").await?;
    full.wait_until(
        Duration::from_secs(30),
        "full holds its low watermark's two peers",
        async |n: &Node| {
            let st = n.status().await?;
            Ok(st["peer_management"]["counted_peers"].as_u64().unwrap_or(0) >= 2)
        },
    )
    .await?;
    let lookups = async |n: &Node| -> Result<f64> {
        Ok(metric_sum(
            &n.metrics().await?,
            "jantar_dht_queries_started_total",
            &["get_providers"],
        ))
    };
    let (full_before, open_before) = (lookups(&full).await?, lookups(&open).await?);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let full_looked = lookups(&full).await? - full_before;
    let open_looked = lookups(&open).await? - open_before;
    eprintln!("in 6 s: full started {full_looked} lookups, open {open_looked}");
    ensure!(
        open_looked >= 3.0,
        "open (below its low watermark) started {open_looked} lookups in 6 s with a 1 s \
         discovery interval\n{}",
        diagnose_all(&[&open]).await
    );
    ensure!(
        full_looked == 0.0,
        "full (at its low watermark) still started {full_looked} lookups in 6 s\n{}",
        diagnose_all(&[&full]).await
    );
    Ok(())
}

/// A peer that knew others restarts while its only bootstrap node is down: it dials the
/// peers in its store, becomes ready (it joined the DHT through them) and fetches a
/// file whose providers it finds in the DHT.
#[tokio::test]
async fn a_restart_with_every_bootstrap_node_down_rejoins_through_known_peers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut net = LoopbackNet::start(dir.path(), "", READY).await?;
    let a = net.peer("a", "").await?;
    let _b = net.peer("b", "").await?;
    let mut c = net.peer("c", "").await?;
    c.wait_until(
        Duration::from_secs(30),
        "c knows a and b as DHT servers",
        async |n: &Node| {
            let (_, body) = n.get("/peers").await?;
            let peers: Value = serde_json::from_str(&body)?;
            Ok(peers
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["connected"] == true).count() >= 3))
        },
    )
    .await?;
    c.terminate(Duration::from_secs(15)).await?;
    let store = std::fs::read_to_string(dir.path().join("c").join("peers.json"))
        .context("the peer store was not written on shutdown")?;
    let file: Value = serde_json::from_str(&store)?;
    let record = file["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["peer_id"] == a.peer_id.as_str()))
        .with_context(|| format!("a is not in c's store:\n{store}"))?;
    ensure!(
        record["dht_server"] == true && !record["addresses"].as_array().is_none_or(Vec::is_empty),
        "c's record of a does not say it serves the DHT, or has no address: {record}"
    );
    net.boot.terminate(Duration::from_secs(15)).await?;

    let file = dir.path().join("shared.bin");
    random_file(&file, 300_000, 7)?;
    let id = a.share(&file)?;

    let started = std::time::Instant::now();
    let mut c = Node::restart(dir.path(), "c", Role::Peer).await?;
    c.wait_ready(Duration::from_secs(45))
        .await
        .context("c did not rejoin without its bootstrap node")?;
    let rejoined = started.elapsed();
    let out = dir.path().join("fetched.bin");
    let out_s = out.to_str().context("path")?;
    let (status, stdout, stderr) = c.cli(&["get", &id, "-o", out_s])?;
    ensure!(
        status.success(),
        "c could not fetch through the DHT: {stdout}{stderr}\n{}",
        c.diagnose().await
    );
    ensure!(
        std::fs::read(&out)? == std::fs::read(&file)?,
        "the fetched file differs"
    );
    eprintln!("rejoined in {rejoined:?} with the bootstrap node down");
    Ok(())
}

/// A site restarts while its only bootstrap node is down, and the peer that comes back
/// first finds the others still down: its first dials fail. When they are back, one of
/// them dials it, but a connection from another does not count as joined (or strangers
/// could fake it): the peer must dial the peers its store knew at start again itself,
/// and so becomes ready.
#[tokio::test]
async fn a_peer_back_before_the_others_rejoins_once_they_are_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let mut net = LoopbackNet::start(root, "", READY).await?;
    let mut a = net.peer("a", "").await?;
    let mut b = net.peer("b", "").await?;
    let mut c = net.peer("c", "").await?;
    c.wait_until(
        Duration::from_secs(30),
        "c connected to a and b",
        async |n: &Node| {
            let st = n.status().await?;
            Ok(st["connected_peers"].as_u64().unwrap_or(0) >= 3)
        },
    )
    .await?;
    // Each comes back where it was, so that the addresses the others know stay right.
    // a and b declare their address, as servers on public addresses do: they serve the
    // DHT from the start, with no bootstrap node to confirm them.
    for n in [&a, &b, &c] {
        let cfg = root.join(&n.name).join("node.cfg");
        let text = std::fs::read_to_string(&cfg)?;
        let listen = &n.listen[0];
        let pinned = if n.name == "c" {
            format!("listen_addresses: [\"{listen}\"]")
        } else {
            format!("listen_addresses: [\"{listen}\"]\n  external_addresses: [\"{listen}\"]")
        };
        let fixed = text.replace("listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]", &pinned);
        ensure!(
            fixed != text,
            "no listen address to pin in {}",
            cfg.display()
        );
        std::fs::write(&cfg, fixed)?;
    }
    for n in [&mut c, &mut a, &mut b] {
        n.terminate(Duration::from_secs(15)).await?;
    }
    let store = std::fs::read_to_string(root.join("c").join("peers.json"))
        .context("c's peer store was not written on shutdown")?;
    let file: Value = serde_json::from_str(&store)?;
    for n in [&a, &b] {
        let known = file["peers"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p["peer_id"] == n.peer_id.as_str()
                    && p["dht_server"] == true
                    && p["addresses"].as_array().is_some_and(|a| !a.is_empty())
            })
        });
        ensure!(
            known,
            "c's store has no dialable DHT server record of {}:\n{store}",
            n.name
        );
    }
    net.boot.terminate(Duration::from_secs(15)).await?;

    let mut c = Node::restart(root, "c", Role::Peer).await?;
    // Its dials to a and b are refused: nothing listens there yet.
    let (a_id, b_id) = (a.peer_id.clone(), b.peer_id.clone());
    c.wait_until(
        Duration::from_secs(30),
        "c's dials to a and b failed",
        async |n: &Node| {
            let failed: Vec<String> = n
                .log_lines()
                .iter()
                .filter(|v| v["message"] == "dial failed")
                .filter_map(|v| v["peer"].as_str().map(str::to_string))
                .collect();
            Ok([&a_id, &b_id]
                .iter()
                .all(|id| failed.iter().any(|p| p.contains(id.as_str()))))
        },
    )
    .await?;
    let (code, _) = c.get("/readyz").await?;
    ensure!(
        code != 200,
        "c is ready with every peer it knows down:\n{}",
        c.diagnose().await
    );
    let started = std::time::Instant::now();
    let a = Node::restart(root, "a", Role::Peer).await?;
    let b = Node::restart(root, "b", Role::Peer).await?;
    // a dials c: c is connected to a DHT server, but not through a dial of its own.
    let (code, body) = a.post_json("/connect", &[("addr", &c.addr())]).await?;
    ensure!(code == 200, "a could not connect to c: {code} {body}");
    let rejoined = c.wait_ready(Duration::from_secs(45)).await;
    if let Err(e) = rejoined {
        eprintln!("{}", diagnose_all(&[&c, &a, &b]).await);
        return Err(e.context("c did not rejoin once a and b were back"));
    }
    eprintln!("c rejoined {:?} after a and b restarted", started.elapsed());
    Ok(())
}

/// With a GeoIP database the node groups peers by AS number and shows their countries;
/// peers outside the database fall back to their /16. `jantar-peer peers` shows the
/// same in a table and as JSON.
#[tokio::test]
async fn a_geoip_database_gives_countries_and_as_groups() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("geo.mmdb");
    let entry = |net: &str, country, asn, org| -> Result<GeoEntry> {
        Ok(GeoEntry {
            network: net.parse()?,
            country,
            asn,
            as_org: org,
        })
    };
    write_database(
        &db,
        &[
            entry("127.1.0.0/16", "DE", 64501, "Example Hosting DE")?,
            entry("127.2.0.0/16", "DE", 64501, "Example Hosting DE")?,
            entry("127.3.0.0/16", "JP", 64502, "Example Net JP")?,
        ],
    )?;
    let boot = bootstrap(dir.path()).await?;
    let mut node = peer(
        dir.path(),
        &boot,
        "max_connections_per_ip: 16",
        &format!("  geoip_databases: [\"{}\"]\n", db.display()),
    )
    .await?;
    let tally = Arc::new(Tally::default());
    let sybils: Vec<Sybil> = ["127.1.0.1", "127.2.0.1", "127.3.0.1", "127.4.0.1"]
        .iter()
        .map(|s| spawn(s, &node, &tally))
        .collect::<Result<_>>()?;
    wait_connected(&mut node, 5).await?;
    let st = node.status().await?;
    let peers = connected(&st);
    let of = |i: usize| &peers[&sybils[i].peer_id.to_string()];
    let expect = [
        (0, Some("DE"), Some(64501u64), "AS64501"),
        (1, Some("DE"), Some(64501), "AS64501"),
        (2, Some("JP"), Some(64502), "AS64502"),
        (3, None, None, "127.4.0.0/16"),
    ];
    for (i, country, asn, group) in expect {
        let p = of(i);
        ensure!(
            p["country"].as_str() == country && p["asn"].as_u64() == asn && p["group"] == group,
            "peer from {} shown as {p}",
            ["127.1.0.1", "127.2.0.1", "127.3.0.1", "127.4.0.1"][i]
        );
    }
    // Two /16s of one AS are one group: each has half the diversity of a peer alone.
    ensure!(
        of(0)["score"]["diversity"].as_f64() == Some(0.5)
            && of(2)["score"]["diversity"].as_f64() == Some(1.0),
        "diversity does not follow the AS groups: {} / {}",
        of(0),
        of(2)
    );
    // AS64501, AS64502, 127.4/16 and the bootstrap node's 127.0/16 (the gauges follow
    // within a second).
    node.wait_until(
        Duration::from_secs(10),
        "jantar_peer_network_groups at 4",
        async |n: &Node| {
            let metrics = n.metrics().await?;
            Ok(metric_sum(&metrics, "jantar_peer_network_groups", &[]) == 4.0)
        },
    )
    .await?;
    let (status, table, err) = node.cli(&["peers"])?;
    ensure!(
        status.success() && table.contains("DE AS64501") && table.contains("JP AS64502"),
        "peers table: {table}{err}"
    );
    let (status, json, err) = node.cli(&["peers", "--known", "--json"])?;
    let known: Value = serde_json::from_str(&json).with_context(|| format!("{json}{err}"))?;
    ensure!(
        status.success() && known.as_array().is_some_and(|a| a.len() >= 5),
        "peers --known --json: {json}"
    );
    Ok(())
}

/// A file that is not a MaxMind database stops the node at start with an error that
/// names it.
#[tokio::test]
async fn a_file_that_is_not_a_geoip_database_is_refused_by_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("not-a-db.mmdb");
    std::fs::write(&bad, b"definitely not a MaxMind database")?;
    let started = Node::start(
        dir.path(),
        "geo",
        Role::Peer,
        &format!(
            "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  enable_mdns: false\n  enable_upnp: false\n  geoip_databases: [\"{}\"]\n",
            bad.display()
        ),
    )
    .await;
    let log = std::fs::read_to_string(dir.path().join("geo").join("node.log"))?;
    ensure!(
        started.is_err() && log.contains("not-a-db.mmdb") && log.contains("not a MaxMind"),
        "expected a refusal naming the file, got: {log}"
    );
    Ok(())
}
