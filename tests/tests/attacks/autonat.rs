//! A lying AutoNAT server: strangers connected to a relay answer its reachability probes
//! with an address of their choosing. One server's word used to be confirmed as the
//! relay's external address and handed to every peer; now an address is confirmed only
//! once servers in different subnets agree on its IP.
//!
//! The relay has no configured external address, so it learns its own from AutoNAT and
//! asks whoever is connected. Four liars dial it from `127.0.66.0/24` (one subnet: the
//! relay sets `limit_private_sources`) and claim `6.6.6.6`; two honest bootstrap nodes on
//! `127.0.0.1` and `127.0.1.1` (two subnets) dial back for real.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use jantar_tests::{
    autonat_liar::Liar,
    harness::{Node, Role, diagnose_all, metric_sum},
};
use libp2p::Multiaddr;

use crate::{READY, memory_bounded};

/// Probes every second, so that the relay goes through its servers fast. Every probe
/// leaves a dial-back connection behind until it idles out; at this pace they would pile
/// up past the per-peer connection limit (and refuse the next dial-back), so the
/// bootstrap nodes close idle connections after 2 s.
const FAST_AUTONAT: &str = "  autonat: {only_global_ips: false, boot_delay: 1s, retry_interval: 1s, refresh_interval: 1s, confidence_max: 1}\n";

const BOOT_LIMITS: &str = "  connection_limits: {connection_grace_period: 2s}\n";

const LIE: &str = "/ip4/6.6.6.6/tcp/4001";

async fn bootstrap(
    root: &std::path::Path,
    name: &str,
    ip: &str,
    other: Option<&Node>,
) -> Result<Node> {
    let others = other.map_or(String::new(), |o| {
        format!("  bootstrap_nodes: [\"{}\"]\n", o.addr())
    });
    let mut node = Node::start(
        root,
        name,
        Role::Bootstrap,
        &format!(
            "network:\n  listen_addresses: [\"/ip4/{ip}/tcp/0\"]\n{others}{FAST_AUTONAT}{BOOT_LIMITS}"
        ),
    )
    .await?;
    if other.is_some() {
        node.wait_ready(READY).await?;
    }
    Ok(node)
}

#[tokio::test]
async fn lying_autonat_servers_cannot_confirm_an_address() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let boot1 = bootstrap(root, "boot1", "127.0.0.1", None).await?;
    let boot2 = bootstrap(root, "boot2", "127.0.1.1", Some(&boot1)).await?;
    let mut relay = Node::start(
        root,
        "relay",
        Role::Relay,
        &format!(
            "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\", \"{}\"]\n  connection_limits: {{limit_private_sources: true}}\n{FAST_AUTONAT}",
            boot1.addr(),
            boot2.addr()
        ),
    )
    .await?;
    let before = relay.memory()?;

    let relay_addr: Multiaddr = relay.addr().parse()?;
    let source: IpAddr = "127.0.66.1".parse()?;
    let started = std::time::Instant::now();
    let liars = (0..4)
        .map(|i| {
            let source = match source {
                IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) + i).into()),
                v6 => v6,
            };
            Liar::spawn(source, LIE.parse()?, std::slice::from_ref(&relay_addr))
        })
        .collect::<Result<Vec<_>>>()?;

    // Honest: the relay confirms its real address (two subnets agree) and serves.
    let real = relay.listen[0].clone();
    let nodes = [&boot1, &boot2];
    relay
        .wait_until(
            Duration::from_secs(90),
            "the relay's real address confirmed",
            async |n: &Node| {
                let st = n.status().await?;
                Ok(st["external_addresses"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x.as_str().is_some_and(|x| x.starts_with(real.as_str())))
                }))
            },
        )
        .await
        .with_context(|| "honest servers did not confirm the relay's address")?;
    relay.wait_ready(READY).await?;
    let confirmed_after = started.elapsed();

    // Keep probing until the liars have answered plenty.
    relay
        .wait_until(
            Duration::from_secs(60),
            "10 lies answered",
            async |_: &Node| Ok(liars.iter().map(Liar::answered).sum::<usize>() >= 10),
        )
        .await?;

    let st = relay.status().await?;
    let metrics = relay.metrics().await?;
    let external = st["external_addresses"].to_string();
    let lies: usize = liars.iter().map(Liar::answered).sum();
    ensure!(
        !external.contains("6.6.6.6"),
        "the lie was confirmed after {lies} lying answers: {external}\n{}",
        diagnose_all(&[&relay, nodes[0], nodes[1]]).await
    );
    let pending = metric_sum(
        &metrics,
        "jantar_autonat_address_reports_total",
        &["result=\"pending\""],
    );
    ensure!(
        pending >= 1.0,
        "the lies were not counted as pending reports ({pending}):\n{metrics}"
    );
    memory_bounded(&relay, before)?;
    eprintln!(
        "{lies} lying answers in {:?}, none confirmed; the relay's own address {real} confirmed after {confirmed_after:?}",
        started.elapsed()
    );
    Ok(())
}

/// Twenty identities from one address ask a bootstrap node for dial-backs as often as
/// they may. Only `max_clients_per_ip` (2) of their connections get AutoNAT service, so
/// they take at most 2 × `max_clients_per_peer` of the node's `max_clients` dial-backs
/// per period, and an honest peer from another address is still answered. Without the
/// cap per source, the twenty take all 30 within the first seconds and the honest peer
/// is refused for the rest of the minute.
#[tokio::test]
async fn greedy_autonat_clients_from_one_address_hold_their_share() -> Result<()> {
    use std::sync::Arc;

    use jantar_tests::autonat_client::{Answers, Asker};

    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let mut boot = Node::start(
        root,
        "boot",
        Role::Bootstrap,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  autonat: {only_global_ips: false}\n  connection_limits: {limit_private_sources: true, max_connections_per_ip: 100, max_pending_per_ip: 100, max_pending_per_subnet: 100}\n",
    )
    .await?;
    boot.wait_ready(READY).await?;
    let before = boot.memory()?;
    let target: Multiaddr = boot.addr().parse()?;
    let answers = Arc::new(Answers::default());
    let _askers = (0..20)
        .map(|_| {
            Asker::spawn(
                "127.0.66.1".parse()?,
                &target,
                Duration::from_millis(500),
                answers.clone(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    boot.wait_until(
        Duration::from_secs(30),
        "18 connections gated",
        async |n: &Node| {
            let m = n.metrics().await?;
            Ok(metric_sum(
                &m,
                "jantar_autonat_gated_connections_total",
                &["reason=\"per_ip\""],
            ) >= 18.0)
        },
    )
    .await?;
    // Let them ask for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // An honest peer from 127.0.0.1 learns that it is reachable from the same node.
    let mut peer = Node::start(
        root,
        "peer",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n  autonat: {{only_global_ips: false, boot_delay: 1s, retry_interval: 2s}}\n",
            boot.addr()
        ),
    )
    .await?;
    if let Err(e) = peer
        .wait_until(
            Duration::from_secs(60),
            "the peer's NAT status public",
            async |n: &Node| Ok(n.status().await?["nat_status"] == "public"),
        )
        .await
    {
        anyhow::bail!(
            "the honest peer was not served: {e:#}\n{}",
            boot.diagnose().await
        );
    }

    let m = boot.metrics().await?;
    let served = metric_sum(&m, "jantar_autonat_probes_served_total", &[]);
    let (answered, refused) = (answers.answered(), answers.refused());
    eprintln!(
        "20 greedy clients from one address: {answered} dial-backs answered, {refused} clients refused; the node served {served} dial-backs in all"
    );
    // Two served connections, three dial-backs each per minute (the node's per-peer
    // throttle), within the test's minute.
    ensure!(
        answered <= 6,
        "one address got {answered} dial-backs; its share is 2 connections × 3 per minute\n{m}"
    );
    ensure!(refused >= 18, "only {refused} clients refused\n{m}");
    memory_bounded(&boot, before)?;
    Ok(())
}
