//! Connection floods: raw TCP connections that never start their handshake, from many
//! addresses of one /24, against a real bootstrap node; and Sybil identities
//! ([`jantar_tests::sybil`]) filling a peer's `max_peers`.
//!
//! The bootstrap node sets `network.connection_limits.limit_private_sources`, so that its
//! handshake caps count loopback sources: `127.0.70.0/24` stands for one public /24 and
//! the honest peer's 127.0.0.1 for another.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, bail, ensure};
use jantar_tests::{
    harness::{LOOPBACK_FAST, Node, Role, diagnose_all, metric_sum},
    sybil::{Sybil, Tally},
};
use libp2p::{Multiaddr, identity::Keypair};
use tokio::{io::AsyncReadExt, net::TcpSocket, sync::watch, task::JoinSet};

use crate::{READY, memory_bounded};

/// Sockets each attacking address keeps open (above the per-IP cap of 8).
const PER_IP: usize = 12;

/// Connection attempts each attacking address makes at most.
const ATTEMPTS_PER_IP: usize = 400;

/// How long the flood runs at least: longer than [`HANDSHAKE_HELD_MAX`], so that the
/// node must drop the first wave (and the attacker refills its slots).
const FLOOD_MIN: Duration = Duration::from_secs(20);

/// How often an attacking address replaces a socket the node closed.
const PACE: Duration = Duration::from_millis(100);

/// The longest the node may leave a connection in its handshake: libp2p's connection
/// timeout (10 s), with slack for a loaded machine.
const HANDSHAKE_HELD_MAX: Duration = Duration::from_secs(16);

/// What the attacking sockets saw, summed over all addresses.
#[derive(Debug, Default)]
struct Flood {
    /// TCP connections established.
    opened: AtomicUsize,
    /// Connects that failed.
    connect_failed: AtomicUsize,
    /// Sockets the node closed within a second: refused at once.
    refused: AtomicUsize,
    /// Sockets the node closed later: held in a handshake slot until it timed out.
    timed_out: AtomicUsize,
    /// Sockets the node still held after [`HANDSHAKE_HELD_MAX`].
    outlived: AtomicUsize,
    /// The longest the node held one socket before closing it, in milliseconds.
    longest_held_ms: AtomicUsize,
}

impl Flood {
    fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// Opens a TCP connection from `source` to `target` and sends nothing.
async fn connect(source: IpAddr, target: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Holds `stream` until the node closes it (or [`HANDSHAKE_HELD_MAX`] passes) and
/// counts how.
async fn hold(mut stream: tokio::net::TcpStream, flood: Arc<Flood>) {
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(HANDSHAKE_HELD_MAX, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    if closed.is_err() {
        flood.outlived.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let held = started.elapsed();
    flood
        .longest_held_ms
        .fetch_max(held.as_millis() as usize, Ordering::Relaxed);
    let counter = if held < Duration::from_secs(1) {
        &flood.refused
    } else {
        &flood.timed_out
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One attacking address: opens [`PER_IP`] sockets at once, then, every [`PACE`],
/// replaces one that the node closed, until `stop` or [`ATTEMPTS_PER_IP`]. Its sockets
/// close when it returns.
async fn attacker(
    source: IpAddr,
    target: SocketAddr,
    flood: Arc<Flood>,
    mut stop: watch::Receiver<bool>,
) {
    let mut open = JoinSet::new();
    let mut attempts = 0;
    let mut open_one = async |open: &mut JoinSet<()>| {
        attempts += 1;
        match connect(source, target).await {
            Ok(s) => {
                flood.opened.fetch_add(1, Ordering::Relaxed);
                open.spawn(hold(s, flood.clone()));
            }
            Err(_) => {
                flood.connect_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        attempts < ATTEMPTS_PER_IP
    };
    for _ in 0..PER_IP {
        open_one(&mut open).await;
    }
    let mut more = true;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(PACE) => {}
        }
        while open.try_join_next().is_some() {}
        if more && open.len() < PER_IP {
            more = open_one(&mut open).await;
        }
    }
}

/// `jantar_connections_denied_total` of inbound connections for `reason`.
async fn denied(node: &Node, reason: &str) -> Result<f64> {
    let m = node.metrics().await?;
    Ok(metric_sum(
        &m,
        "jantar_connections_denied_total",
        &["direction=\"inbound\"", &format!("reason=\"{reason}\"")],
    ))
}

/// The TCP address of a node's first listen address.
fn socket_of(node: &Node) -> Result<SocketAddr> {
    let addr: Multiaddr = node.listen[0].parse()?;
    let mut it = addr.iter();
    match (it.next(), it.next()) {
        (
            Some(libp2p::multiaddr::Protocol::Ip4(ip)),
            Some(libp2p::multiaddr::Protocol::Tcp(port)),
        ) => Ok(SocketAddr::new(ip.into(), port)),
        _ => bail!("{} does not listen on TCP over IPv4 first", node.name),
    }
}

/// 20 addresses of `127.0.70.0/24` each keep 12 raw TCP connections open against a
/// bootstrap node and send nothing, replacing every connection the node closes. The
/// node refuses what is over 8 handshakes per address (`pending_per_ip`) and 32 per
/// /24 (`pending_per_subnet`), drops the handshakes it admitted after its connection
/// timeout, stays ready, and an honest peer from 127.0.0.1 joins through it while the
/// flood goes on; its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_connection_flood_from_20_ips_is_capped_per_ip_and_subnet() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut boot = Node::start(
        dir.path(),
        "boot",
        Role::Bootstrap,
        &format!(
            "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  connection_limits: {{limit_private_sources: true}}\n{LOOPBACK_FAST}"
        ),
    )
    .await?;
    boot.wait_ready(READY).await?;
    let mut honest = None;
    let result = pending_flood(dir.path(), &boot, &mut honest).await;
    if result.is_err() {
        let mut nodes = vec![&boot];
        nodes.extend(honest.as_ref());
        eprintln!("{}", diagnose_all(&nodes).await);
    }
    result
}

async fn pending_flood(root: &Path, boot: &Node, honest: &mut Option<Node>) -> Result<()> {
    let before = boot.memory()?;
    let target = socket_of(boot)?;
    let flood = Arc::new(Flood::default());
    let (stop, stopped) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let mut attackers = JoinSet::new();
    // One address after another, so that the first four fill their 8 slots each (and
    // are refused per address) before the /24's 32 are taken.
    for host in 1..=20 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 70, host));
        attackers.spawn(attacker(source, target, flood.clone(), stopped.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = during_flood(root, boot, honest, &flood).await;
    // Keep the flood going past the connection timeout, then stop it.
    let min_end = started + FLOOD_MIN;
    tokio::time::sleep_until(min_end).await;
    let _ = stop.send(true);
    while attackers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    eprintln!("flood ran {elapsed:?}: {flood:?}");
    result?;

    let (per_ip, per_subnet, failed) = (
        denied(boot, "pending_per_ip").await?,
        denied(boot, "pending_per_subnet").await?,
        denied(boot, "error").await?,
    );
    eprintln!("refused: {per_ip} per IP, {per_subnet} per subnet; {failed} failed handshakes");
    ensure!(
        per_ip >= 4.0 * (PER_IP - 8) as f64,
        "only {per_ip} connections refused for their address: {flood:?}"
    );
    ensure!(
        per_subnet >= 16.0 * PER_IP as f64,
        "only {per_subnet} connections refused for their subnet: {flood:?}"
    );
    // The admitted handshakes were dropped after the connection timeout, not held.
    ensure!(
        Flood::get(&flood.timed_out) >= 32 && failed >= 32.0,
        "the node did not drop the handshakes that never started: {flood:?}, {failed} failed"
    );
    ensure!(
        Flood::get(&flood.outlived) == 0,
        "the node held silent connections longer than {HANDSHAKE_HELD_MAX:?}: {flood:?}"
    );
    memory_bounded(boot, before)?;
    Ok(())
}

/// While the flood runs: the node is ready and answers, an honest peer joins through it.
async fn during_flood(
    root: &Path,
    boot: &Node,
    honest: &mut Option<Node>,
    flood: &Flood,
) -> Result<()> {
    // The flood has reached the node: the /24's slots are taken and refusals counted.
    let deadline = tokio::time::Instant::now() + READY;
    while denied(boot, "pending_per_subnet").await? < 1.0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no connection refused for its subnet after {READY:?}: {flood:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = boot.get("/readyz").await?;
    ensure!(
        code == 200,
        "the bootstrap node is not ready under the flood"
    );
    let p = honest.insert(
        Node::start(
            root,
            "honest",
            Role::Peer,
            &format!(
                "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n{LOOPBACK_FAST}",
                boot.addr()
            ),
        )
        .await?,
    );
    p.wait_ready(READY).await?;
    let st = boot.status().await?;
    ensure!(
        st["connections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["peer_id"] == p.peer_id.as_str())),
        "the honest peer is not connected to the bootstrap node: {st}"
    );
    eprintln!("honest peer joined under the flood: {flood:?}");
    Ok(())
}

/// Starts a bootstrap node on 127.0.0.1 to learn its port and identity, and stops it;
/// [`restart`] brings it back on the same address with the same identity.
async fn reserve_bootstrap(root: &Path) -> Result<(String, String)> {
    let boot = Node::start(
        root,
        "boot",
        Role::Bootstrap,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n",
    )
    .await?;
    Ok((boot.listen[0].clone(), boot.addr()))
}

async fn restart(root: &Path, listen: &str) -> Result<Node> {
    let mut boot = Node::start(
        root,
        "boot",
        Role::Bootstrap,
        &format!("network:\n  listen_addresses: [\"{listen}\"]\n{LOOPBACK_FAST}"),
    )
    .await?;
    boot.wait_ready(READY).await?;
    Ok(boot)
}

/// Connection settings of the target and its friends: idle connections kept, so that
/// only the limits close them.
const KEEP_IDLE: &str = "connection_grace_period: 5m";

/// A peer whose `max_peers` (4) Sybils filled: strangers are refused (`max_peers`), the
/// strangers (DHT servers that dialed in) do not make it count itself joined while its
/// bootstrap node is down, its own dials go up to its reserve (4) beyond it and no
/// further, and its configured bootstrap node, which never counts, still connects when
/// it comes up; its memory stays bounded.
///
/// The Sybils' identities and the friends' are named in `protected_peers`: a node at
/// `max_peers` trims newcomers at once (`peering.rs` tests that), and this test is
/// about the cap and the reserve, so nothing here may be trimmed. Named peers count
/// against `max_peers` like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_peers_full_still_reaches_infrastructure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let (boot_listen, boot_addr) = reserve_bootstrap(root).await?;
    let mut nodes = Vec::new();
    let result = full_peer(root, &boot_listen, &boot_addr, &mut nodes).await;
    if let Err(e) = result {
        let nodes: Vec<&Node> = nodes.iter().collect();
        eprintln!("{}", diagnose_all(&nodes).await);
        return Err(e);
    }
    Ok(())
}

async fn full_peer(
    root: &Path,
    boot_listen: &str,
    boot_addr: &str,
    nodes: &mut Vec<Node>,
) -> Result<()> {
    // The friends the target will dial itself, started first so it can name them.
    let mut friends = Vec::new();
    let mut named = Vec::new();
    for i in 0..5 {
        let mut f = Node::start(
            root,
            &format!("friend{i}"),
            Role::Peer,
            &format!(
                "network:\n  enable_mdns: false\n  enable_upnp: false\n  enable_dht: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  connection_limits: {{{KEEP_IDLE}}}\n"
            ),
        )
        .await?;
        f.wait_ready(READY).await?;
        friends.push(f.addr());
        named.push(format!("\"{}\"", f.peer_id));
        nodes.push(f);
    }
    let keys: Vec<Keypair> = (0..8).map(|_| Keypair::generate_ed25519()).collect();
    named.extend(
        keys.iter()
            .map(|k| format!("\"{}\"", k.public().to_peer_id())),
    );
    let target = Node::start(
        root,
        "target",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{boot_addr}\"]\n  connection_limits: {{max_peers: 4, {KEEP_IDLE}, protected_peers: [{}]}}\n{LOOPBACK_FAST}",
            named.join(", ")
        ),
    )
    .await?;
    nodes.insert(0, target);
    let before = nodes[0].memory()?;
    let target_addr: Multiaddr = nodes[0].addr().parse()?;

    // Eight strangers from one address: four take the slots, four are refused.
    let tally = Arc::new(Tally::default());
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 66, 1));
    let mut sybils = Vec::new();
    for key in keys {
        sybils.push(Sybil::spawn_with_key(
            key,
            source,
            &[],
            std::slice::from_ref(&target_addr),
            tally.clone(),
        )?);
    }
    nodes[0]
        .wait_until(
            READY,
            "4 strangers admitted, 4 refused",
            async |n: &Node| Ok(denied(n, "max_peers").await? >= 4.0),
        )
        .await?;
    let st = nodes[0].status().await?;
    ensure!(
        st["connected_peers"] == 4,
        "the target holds more than its 4 peers: {st}"
    );
    // The strangers serve the DHT, but they dialed in: the target does not count itself
    // joined (or it would stop dialing its bootstrap node, which is down) and is not
    // ready. Identify has told it by now what they serve.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, _) = nodes[0].get("/readyz").await?;
    ensure!(
        code != 200,
        "strangers that dialed in made the target ready without its bootstrap node:\n{}",
        nodes[0].diagnose().await
    );

    // Its own dials: four friends fit in the reserve, the fifth does not.
    for (i, friend) in friends.iter().enumerate() {
        let (code, body) = nodes[0].post_json("/connect", &[("addr", friend)]).await?;
        ensure!(
            (code == 200) == (i < 4),
            "own dial {i} to a friend answered {code}: {body}"
        );
    }
    let m = nodes[0].metrics().await?;
    let outbound = metric_sum(
        &m,
        "jantar_connections_denied_total",
        &["direction=\"outbound\"", "reason=\"max_peers\""],
    );
    ensure!(
        outbound >= 1.0,
        "the fifth own dial was not refused for max_peers"
    );

    // The bootstrap node comes up: the target, still dialing it, reaches it.
    nodes.push(restart(root, boot_listen).await?);
    let boot_id = nodes.last().map(|b| b.peer_id.clone()).unwrap_or_default();
    nodes[0]
        .wait_until(
            READY,
            "a connection to the bootstrap node",
            async |n: &Node| {
                let st = n.status().await?;
                Ok(st["connections"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["peer_id"] == boot_id.as_str())))
            },
        )
        .await?;
    nodes[0].wait_ready(READY).await?;
    let st = nodes[0].status().await?;
    ensure!(
        st["connected_peers"] == 4 + 4 + 1,
        "the target holds other than 4 strangers, 4 friends and its bootstrap node: {st}"
    );

    // A stranger arriving now is still refused.
    let refused = denied(&nodes[0], "max_peers").await?;
    sybils.push(Sybil::spawn(
        source,
        &[],
        std::slice::from_ref(&target_addr),
        tally.clone(),
    )?);
    nodes[0]
        .wait_until(READY, "one more stranger refused", async |n: &Node| {
            Ok(denied(n, "max_peers").await? > refused)
        })
        .await?;
    memory_bounded(&nodes[0], before)?;
    eprintln!("strangers: {tally:?}");
    drop(sybils);
    Ok(())
}

/// Connections past the process's memory limit: a bootstrap node with
/// `max_memory: 64MiB` (the smallest allowed), and every other connection limit raised
/// out of the way, takes Sybil identities from one address until its resident memory
/// reaches the limit; from then on new connections are refused (`reason="limit"`), its
/// memory stays near the limit, and the honest peer that joined before the flood keeps
/// its connection and its readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_memory_limit_are_refused() -> Result<()> {
    const LIMIT_KIB: u64 = 64 * 1024;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let mut boot = Node::start(
        root,
        "boot",
        Role::Bootstrap,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  connection_limits: {max_memory: 64MiB, max_peers: 5000, max_connections_per_ip: 5000, max_pending_connections: 1000, connection_grace_period: 5m}\n",
    )
    .await?;
    boot.wait_ready(READY).await?;
    let start = boot.memory()?;
    ensure!(
        start.rss_kib < LIMIT_KIB / 2,
        "the node starts at {start:?}, too close to the 64 MiB limit for this test"
    );
    let mut honest = Node::start(
        root,
        "honest",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n  connection_limits: {{connection_grace_period: 5m}}\n{LOOPBACK_FAST}",
            boot.addr()
        ),
    )
    .await?;
    honest.wait_ready(READY).await?;

    let target: Multiaddr = boot.addr().parse()?;
    let tally = Arc::new(Tally::default());
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 66, 1));
    let mut sybils = Vec::new();
    // In batches, until the node refuses for memory (or 3,000 identities connected).
    while denied(&boot, "limit").await? == 0.0 && sybils.len() < 3000 {
        for _ in 0..100 {
            sybils.push(Sybil::spawn(
                source,
                &[],
                std::slice::from_ref(&target),
                tally.clone(),
            )?);
        }
        let want = sybils.len();
        let settle = tokio::time::Instant::now() + Duration::from_secs(20);
        while Tally::get(&tally.connected) + Tally::get(&tally.dial_failed) < want
            && tokio::time::Instant::now() < settle
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let refused = denied(&boot, "limit").await?;
    let after = boot.memory()?;
    eprintln!(
        "memory limit 64 MiB: {} identities connected, {refused} connections refused; the node went from {start:?} to {after:?}",
        Tally::get(&tally.connected)
    );
    ensure!(
        refused > 0.0,
        "{} identities connected and none was refused for memory; the node is at {after:?}\n{}",
        Tally::get(&tally.connected),
        boot.diagnose().await
    );
    // Connections already being set up when the limit is crossed still complete.
    ensure!(
        after.hwm_kib <= LIMIT_KIB + 32 * 1024,
        "the node's memory went to {after:?}, far past its 64 MiB limit"
    );
    let boot_id = boot.peer_id.clone();
    let st = honest.status().await?;
    ensure!(
        st["connections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["peer_id"] == boot_id.as_str())),
        "the honest peer lost its connection to the node: {st}"
    );
    honest.wait_ready(READY).await?;
    drop(sybils);
    Ok(())
}
