//! Connection-management figures for `bench peering`:
//!
//! - **churn**: a peer (high watermark 30, low 20) holds 20 steady peers from 20
//!   networks while 100 others from four networks arrive one every 200 ms and leave
//!   after 5 to 15 s each. At the end, the share of the peer's slots held by the 20
//!   best-scored peers it knows, against the share they would hold if the slots went to
//!   peers drawn at random from all it has seen (20 / peers known).
//! - **rejoin**: a peer that knew others restarts with its bootstrap node down; the time
//!   until it is ready again (joined the DHT), against a restart with the bootstrap node
//!   up, in the same run.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use libp2p::Multiaddr;
use rand::Rng;
use serde_json::Value;

use crate::{
    harness::{LOOPBACK_FAST, LoopbackNet, Node, Role, start_loopback_bootstrap},
    sybil::{Sybil, Tally},
};

const READY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct Churn {
    /// Share of the counted slots held by the 20 best-scored known peers.
    pub top20_share: f64,
    /// What slots held by peers drawn at random from all the node has seen would give
    /// the top 20: 20 / peers known.
    pub random_share: f64,
    /// How many of the top 20 are connected.
    pub top20_connected: usize,
    pub counted: usize,
    pub trimmed: u64,
    /// Steady peers still connected at the end (of 20).
    pub steady_kept: usize,
}

fn spawn(source: IpAddr, target: &Multiaddr, tally: &Arc<Tally>) -> Result<Sybil> {
    Sybil::spawn(source, &[], std::slice::from_ref(target), tally.clone())
}

pub async fn churn(root: &Path) -> Result<Churn> {
    let boot = start_loopback_bootstrap(root, READY).await?;
    let mut node = Node::start(
        root,
        "node",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n  connection_limits: {{max_peers: 60, high_water: 30, low_water: 20, connection_grace_period: 2s, max_connections_per_ip: 64}}\n{LOOPBACK_FAST}",
            boot.addr()
        ),
    )
    .await?;
    node.wait_ready(READY).await?;
    let target: Multiaddr = node.addr().parse()?;
    let tally = Arc::new(Tally::default());
    let mut steady = vec![];
    for i in 0..20u8 {
        steady.push(spawn(IpAddr::from([127, 101 + i, 0, 1]), &target, &tally)?);
    }
    // A hundred arrivals, each leaving 5 to 15 s later.
    let mut churners: Vec<(Instant, Sybil)> = vec![];
    let mut rng = rand::rng();
    for i in 0..100u8 {
        let source = IpAddr::from([127, 201 + i % 4, 0, 1 + i / 4]);
        let leaves = Instant::now() + Duration::from_millis(rng.random_range(5_000..15_000));
        churners.push((leaves, spawn(source, &target, &tally)?));
        tokio::time::sleep(Duration::from_millis(200)).await;
        churners.retain(|(at, _)| *at > Instant::now());
    }
    // Let the last trims settle (grace 2 s, trimming every second).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, body) = node.get("/peers").await?;
    let known: Vec<Value> = serde_json::from_str(&body)?;
    let st = node.status().await?;
    let connected: HashSet<String> = st["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peer_id"] != boot.peer_id.as_str() && p["released"] != true)
        .filter_map(|p| p["peer_id"].as_str().map(str::to_string))
        .collect();
    let mut ranked: Vec<&Value> = known
        .iter()
        .filter(|p| p["peer_id"] != boot.peer_id.as_str())
        .collect();
    ranked.sort_by(|a, b| {
        let s = |p: &Value| p["score"]["total"].as_f64().unwrap_or(0.0);
        s(b).total_cmp(&s(a))
    });
    let top: HashSet<&str> = ranked
        .iter()
        .take(20)
        .filter_map(|p| p["peer_id"].as_str())
        .collect();
    let held = connected
        .iter()
        .filter(|p| top.contains(p.as_str()))
        .count();
    let steady_kept = steady
        .iter()
        .filter(|s| connected.contains(&s.peer_id.to_string()))
        .count();
    let counted = connected.len().max(1);
    drop(churners);
    drop(steady);
    Ok(Churn {
        top20_share: held as f64 / counted as f64,
        random_share: 20.0 / ranked.len().max(20) as f64,
        top20_connected: held,
        counted: connected.len(),
        trimmed: st["peer_management"]["trimmed"].as_u64().unwrap_or(0),
        steady_kept,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Rejoin {
    /// Restart to ready with the bootstrap node down (through the peer store).
    pub without_bootstrap: Duration,
    /// Restart to ready with the bootstrap node up.
    pub with_bootstrap: Duration,
    /// Restart to connected to all four old peers again, bootstrap node down.
    pub all_peers_without_bootstrap: Duration,
}

pub async fn rejoin(root: &Path) -> Result<Rejoin> {
    let mut net = LoopbackNet::start(root, "", READY).await?;
    let mut peers = vec![];
    for name in ["a", "b", "c", "d"] {
        peers.push(net.peer(name, "").await?);
    }
    let mut e = net.peer("e", "").await?;
    e.wait_until(READY, "e connected to the others", async |n: &Node| {
        Ok(n.status().await?["connected_peers"].as_u64() >= Some(5))
    })
    .await?;
    // Baseline: a restart with the bootstrap node up.
    e.terminate(Duration::from_secs(15)).await?;
    let start = Instant::now();
    let mut e = Node::restart(root, "e", Role::Peer).await?;
    e.wait_ready(READY).await?;
    let with_bootstrap = start.elapsed();
    e.wait_until(READY, "e connected to the others", async |n: &Node| {
        Ok(n.status().await?["connected_peers"].as_u64() >= Some(5))
    })
    .await?;
    e.terminate(Duration::from_secs(15)).await?;
    net.boot.terminate(Duration::from_secs(15)).await?;
    let start = Instant::now();
    let mut e = Node::restart(root, "e", Role::Peer).await?;
    e.wait_ready(READY)
        .await
        .context("no rejoin with the bootstrap node down")?;
    let without_bootstrap = start.elapsed();
    e.wait_until(
        READY,
        "e connected to its four old peers",
        async |n: &Node| Ok(n.status().await?["connected_peers"].as_u64() >= Some(4)),
    )
    .await?;
    Ok(Rejoin {
        without_bootstrap,
        with_bootstrap,
        all_peers_without_bootstrap: start.elapsed(),
    })
}
