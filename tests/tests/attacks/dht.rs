//! DHT poisoning and storage exhaustion: Sybil identities in this process
//! ([`jantar_tests::sybil`]) whose connections come from `127.0.66.0/24`, against a
//! real bootstrap node and relay on 127.0.0.1.
//!
//! Loopback and private sources are exempt from the subnet limits so that LANs and
//! labs work; the targets here set `network.dht.limit_private_subnets` so that
//! `127.0.66.0/24` stands for one public /24. Their per-IP connection limit is raised so
//! that every Sybil connects and the DHT's own bounds are what is tested.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use jantar_tests::{
    harness::{LOOPBACK, LOOPBACK_FAST, Node, Role, diagnose_all, metric_sum, start_serving_relay},
    sybil::{Command, Sybil, Tally},
};
use libp2p::{Multiaddr, kad};

use crate::{READY, memory_bounded};

/// Settles Sybil traffic and the honest peer's discovery.
const SETTLE: Duration = Duration::from_secs(90);

/// The relays' rendezvous key (`jantar_net`'s `RELAYS_KEY`).
const RELAYS_KEY: &[u8] = b"/jantar/relays/v1";

/// DHT settings of the targets: fast discovery, subnet limits on loopback.
const TARGET_NETWORK: &str = "  autonat: {only_global_ips: false, boot_delay: 1s}\n  dht: {discovery_interval: 1s, limit_private_subnets: true}\n  connection_limits: {max_connections_per_ip: 1000}\n";

/// A bootstrap node and a relay (its external address given, so it serves and announces
/// itself at once), both held to subnet limits on loopback.
struct Targets {
    boot: Node,
    relay: Node,
}

impl Targets {
    async fn start(root: &std::path::Path) -> Result<Targets> {
        let mut boot = Node::start(
            root,
            "boot",
            Role::Bootstrap,
            &format!("network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{TARGET_NETWORK}"),
        )
        .await?;
        boot.wait_ready(READY).await?;
        let relay = start_serving_relay(
            root,
            "relay",
            LOOPBACK,
            &format!("  bootstrap_nodes: [\"{}\"]\n{TARGET_NETWORK}", boot.addr()),
            "",
        )
        .await?;
        Ok(Targets { boot, relay })
    }

    /// An honest peer (subnet limits as by default) joining through the bootstrap node.
    async fn peer(&self, root: &std::path::Path, name: &str, network: &str) -> Result<Node> {
        let mut p = Node::start(
            root,
            name,
            Role::Peer,
            &format!(
                "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{network}  bootstrap_nodes: [\"{}\"]\n{LOOPBACK_FAST}",
                self.boot.addr()
            ),
        )
        .await?;
        p.wait_ready(READY).await?;
        Ok(p)
    }

    fn dial_list(&self) -> Result<Vec<Multiaddr>> {
        Ok(vec![self.boot.addr().parse()?, self.relay.addr().parse()?])
    }
}

/// Addresses a Sybil claims: dead ports on the attacker's own loopback subnet, so that a
/// node which hands them on sends its peers nowhere (and fails fast).
fn fake_addresses(i: usize) -> Vec<Multiaddr> {
    (0..3)
        .map(|j| {
            format!("/ip4/127.0.66.250/tcp/{}", 10_000 + i * 3 + j)
                .parse()
                .expect("a valid multiaddr")
        })
        .collect()
}

/// Starts `n` Sybils from `source` dialing `targets`, in batches small enough for the
/// targets' pending-connection limit, and waits until each batch connected to all.
async fn sybils(
    n: usize,
    source: IpAddr,
    targets: &[Multiaddr],
    tally: &Arc<Tally>,
) -> Result<Vec<Sybil>> {
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        all.push(Sybil::spawn(
            source,
            &fake_addresses(i),
            targets,
            tally.clone(),
        )?);
        if all.len() % 40 == 0 || all.len() == n {
            let want = all.len() * targets.len();
            let deadline = tokio::time::Instant::now() + READY;
            while Tally::get(&tally.connected) < want {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "only {} of {want} Sybil connections were established ({} dials failed)",
                    Tally::get(&tally.connected),
                    Tally::get(&tally.dial_failed)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(all)
}

fn routing_table(stats: &serde_json::Value) -> Result<u64> {
    stats["routing_table_size"]
        .as_u64()
        .with_context(|| format!("no routing_table_size in {stats}"))
}

/// 200 Sybils from one address (fake addresses claimed, 100 of them announcing
/// themselves as relays, one putting a record): each target's routing table holds at
/// most `max_peers_per_subnet` (8) of them, the relay stores at most 2 of their relay
/// records, records are refused, and an honest peer that joins afterwards still finds
/// the real relay through the DHT and holds a reservation on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_hold_a_few_routing_slots_and_cannot_hide_the_relay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut t = Targets::start(dir.path()).await?;
    let mut honest = None;
    let result = sybil_poisoning(dir.path(), &mut t, &mut honest).await;
    if result.is_err() {
        let mut nodes = vec![&t.boot, &t.relay];
        nodes.extend(honest.as_ref());
        eprintln!("{}", diagnose_all(&nodes).await);
    }
    result
}

async fn sybil_poisoning(
    root: &std::path::Path,
    t: &mut Targets,
    honest: &mut Option<Node>,
) -> Result<()> {
    let before = (t.boot.memory()?, t.relay.memory()?);
    let tally = Arc::new(Tally::default());
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 66, 1));
    let swarm = sybils(200, source, &t.dial_list()?, &tally).await?;

    // Every Sybil has been identified and refused or admitted by both targets.
    for node in [&mut t.boot, &mut t.relay] {
        node.wait_until(
            SETTLE,
            "200 Sybils admitted or refused",
            async |n: &Node| {
                let m = n.metrics().await?;
                let refused = metric_sum(&m, "jantar_dht_routing_refused_total", &[]);
                let table = routing_table(&n.get_json("/dht/stats").await?)? as f64;
                Ok(refused + table >= 200.0)
            },
        )
        .await?;
    }
    for node in [&t.boot, &t.relay] {
        let stats = node.get_json("/dht/stats").await?;
        // The other target is the one honest entry.
        ensure!(
            routing_table(&stats)? <= 8 + 1,
            "{}'s routing table holds more than 8 Sybils: {stats}",
            node.name
        );
        let m = node.metrics().await?;
        let subnet = metric_sum(
            &m,
            "jantar_dht_routing_refused_total",
            &["reason=\"subnet_"],
        );
        ensure!(
            subnet >= 190.0,
            "{}: only {subnet} Sybils refused for their subnet",
            node.name
        );
    }

    // 100 of them announce themselves as relays; one puts a record.
    let key = kad::RecordKey::new(&RELAYS_KEY);
    for s in &swarm[..100] {
        s.command(Command::Provide(key.clone()))?;
    }
    swarm[100].command(Command::PutRecord(kad::Record::new(
        kad::RecordKey::new(&b"/sybil/record"),
        vec![0; 1024],
    )))?;
    t.relay
        .wait_until(
            SETTLE,
            "Sybil relay records and the record refused",
            async |n: &Node| {
                let m = n.metrics().await?;
                Ok(metric_sum(
                    &m,
                    "jantar_dht_inserts_refused_total",
                    &["kind=\"provider\"", "reason=\"key_subnet_quota\""],
                ) >= 98.0
                    && metric_sum(
                        &m,
                        "jantar_dht_inserts_refused_total",
                        &["kind=\"record\"", "reason=\"records_unused\""],
                    ) >= 1.0)
            },
        )
        .await?;
    for node in [&t.boot, &t.relay] {
        let stats = node.get_json("/dht/stats").await?;
        ensure!(stats["records_stored"] == 0, "{}: {stats}", node.name);
    }
    let stats = t.boot.get_json("/dht/stats").await?;
    ensure!(stats["provider_keys_stored"] == 0, "bootstrap: {stats}");

    // An honest peer that joins now finds the real relay and holds a reservation on it.
    let p = honest.insert(
        t.peer(root, "honest", "  relay_reservations: always\n")
            .await?,
    );
    let relay_id = t.relay.peer_id.clone();
    p.wait_until(
        SETTLE,
        "a reservation on the real relay",
        async |n: &Node| {
            let st = n.status().await?;
            Ok(st["reservations"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["state"] == "active" && r["relay"] == relay_id.as_str())
            }))
        },
    )
    .await?;
    memory_bounded(&t.boot, before.0)?;
    memory_bounded(&t.relay, before.1)?;
    drop(swarm);
    Ok(())
}

/// Four identities, three from one /24 and one from another, each publish 300 provider
/// records to the relay: the relay stores at most a quarter of its 1,024 keys per
/// identity and half per subnet,
/// its own record is still published, and an honest peer's record is still stored
/// (another peer discovers it through the relay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_flood_is_held_to_its_quotas() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut t = Targets::start(dir.path()).await?;
    let mut honest = Vec::new();
    let result = provider_flood(dir.path(), &mut t, &mut honest).await;
    if result.is_err() {
        let mut nodes = vec![&t.boot, &t.relay];
        nodes.extend(honest.iter());
        eprintln!("{}", diagnose_all(&nodes).await);
    }
    result
}

async fn provider_flood(
    root: &std::path::Path,
    t: &mut Targets,
    honest: &mut Vec<Node>,
) -> Result<()> {
    let before = t.relay.memory()?;
    let tally = Arc::new(Tally::default());
    // Only the relay: the bootstrap node stores nothing anyway.
    let relay: Multiaddr = t.relay.addr().parse()?;
    // Three identities share 127.0.66.0/24 (its quota binds first); the fourth has
    // 127.0.67.0/24 to itself (its own quota binds).
    let mut swarm = Vec::new();
    for source in [
        [127, 0, 66, 1],
        [127, 0, 66, 2],
        [127, 0, 66, 3],
        [127, 0, 67, 1],
    ] {
        let source = IpAddr::V4(Ipv4Addr::from(source));
        swarm.extend(sybils(1, source, std::slice::from_ref(&relay), &tally).await?);
    }
    for (i, s) in swarm.iter().enumerate() {
        for k in 0..300 {
            let key = kad::RecordKey::new(&format!("/sybil/{i}/{k}"));
            s.command(Command::Provide(key))?;
        }
    }
    t.relay
        .wait_until(
            SETTLE,
            "the provider flood refused past its quotas",
            async |n: &Node| {
                let m = n.metrics().await?;
                let refused = metric_sum(
                    &m,
                    "jantar_dht_inserts_refused_total",
                    &["kind=\"provider\""],
                );
                let stored = n.get_json("/dht/stats").await?["provider_keys_stored"]
                    .as_u64()
                    .unwrap_or(0) as f64;
                Ok(refused + stored >= 1200.0)
            },
        )
        .await?;
    let stats = t.relay.get_json("/dht/stats").await?;
    let stored = stats["provider_keys_stored"].as_u64().unwrap_or(0);
    // At most 512 (half of 1,024) from the shared /24, 256 (a quarter) from the other.
    ensure!(
        (700..=768).contains(&stored),
        "the relay stores {stored} keys from the flood (quotas: 512 + 256): {stats}"
    );
    ensure!(
        stats["provided_keys"].as_u64().unwrap_or(0) >= 1,
        "the relay no longer publishes its own record: {stats}"
    );
    let m = t.relay.metrics().await?;
    for reason in ["provider_quota", "subnet_quota"] {
        let n = metric_sum(
            &m,
            "jantar_dht_inserts_refused_total",
            &[&format!("reason=\"{reason}\"")],
        );
        ensure!(n >= 1.0, "no provider record refused for {reason}");
    }

    // Honest peers from another subnet: one announces itself, the other finds it.
    let alice = t.peer(root, "alice", "").await?;
    let alice_id = alice.peer_id.clone();
    honest.push(alice);
    honest.push(t.peer(root, "bob", "").await?);
    honest[1]
        .wait_until(
            SETTLE,
            "alice discovered through the DHT",
            async |n: &Node| {
                let st = n.status().await?;
                Ok(st["discovered_peers"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|p| p == alice_id.as_str())))
            },
        )
        .await?;
    let after = t.relay.get_json("/dht/stats").await?["provider_keys_stored"]
        .as_u64()
        .unwrap_or(0);
    ensure!(after > stored, "the honest peers' records were not stored");
    memory_bounded(&t.relay, before)?;
    Ok(())
}
