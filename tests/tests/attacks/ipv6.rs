//! IPv6 sources: anyone with one IPv6 address usually holds a whole /64, and an operator a
//! /48, so the per-source caps count an IPv6 source per /64 and its subnet per /48. The
//! documentation range is not public, so the relay sets `limit_private_sources`. This
//! attack runs in a network namespace the test makes (it needs root, like the NAT lab),
//! whose loopback carries addresses of the documentation range `2001:db8::/32`: a relay
//! on `2001:db8:1::1`, Sybils from twenty addresses of one /64 and from ten /64s of one
//! /48, and an honest peer from another /48.

use std::{
    net::{IpAddr, Ipv6Addr},
    process::Command,
    sync::Arc,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use jantar_tests::{
    harness::{Node, Role, metric_sum, start_serving_relay},
    lab::check_environment,
    sybil::Tally,
};
use libp2p::Multiaddr;

use crate::{
    READY, memory_bounded,
    relay::{ask_for_reservations, identities},
};

const RELAY: &str = "2001:db8:1::1";
const HONEST: &str = "2001:db8:2::1";

/// `n`-th address of the attackers' one /64.
fn same_64(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x66, 1, 0, 0, 0, n)
}

/// An address in the `n`-th /64 of the attackers' one /48.
fn same_48(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x67, n, 0, 0, 0, 1)
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Moves the calling thread into a new network namespace whose loopback is up and
/// carries `addrs`; processes started from this thread inherit it.
fn own_namespace(addrs: &[Ipv6Addr]) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| anyhow!("unshare(CLONE_NEWNET): {e}"))?;
    ip(&["link", "set", "lo", "up"])?;
    for a in addrs {
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
    }
    Ok(())
}

#[test]
fn ipv6_sources_count_per_64_and_per_48() -> Result<()> {
    if let Err(why) = check_environment() {
        eprintln!("SKIP ipv6_sources_count_per_64_and_per_48: {why}");
        return Ok(());
    }
    // A thread of its own, so that only it (and the nodes it starts) moves.
    std::thread::spawn(|| -> Result<()> {
        let mut addrs: Vec<Ipv6Addr> = vec![RELAY.parse()?, HONEST.parse()?];
        addrs.extend((1..=20).map(same_64));
        addrs.extend((1..=10).map(same_48));
        own_namespace(&addrs)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(attack())
    })
    .join()
    .map_err(|_| anyhow!("the attack's thread panicked"))?
}

async fn attack() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let relay = start_serving_relay(
        root,
        "relay",
        &format!("/ip6/{RELAY}/tcp/0"),
        "  connection_limits: {limit_private_sources: true, max_connections_per_ip: 1000, max_pending_per_ip: 64, max_pending_per_subnet: 256}\n",
        "  reservation_rate_per_ip: {limit: 10000, interval: 1m}\n",
    )
    .await?;
    let before = relay.memory()?;
    let addr: Multiaddr = relay.addr().parse()?;

    // 200 identities from 20 addresses of one /64: one source, 8 reservations.
    let tally = Arc::new(Tally::default());
    let one_64: Vec<IpAddr> = (1..=20).map(|n| IpAddr::V6(same_64(n))).collect();
    let held_64 = ask_for_reservations(
        identities(200, &one_64),
        std::slice::from_ref(&addr),
        &tally,
    )
    .await?;
    ensure!(
        held_64.len() == 8,
        "one /64 holds {} reservations, not 8: {tally:?}\n{}",
        held_64.len(),
        relay.diagnose().await
    );

    // 100 identities from ten /64s of another /48: 32 reservations in all.
    let tally = Arc::new(Tally::default());
    let one_48: Vec<IpAddr> = (1..=10).map(|n| IpAddr::V6(same_48(n))).collect();
    let held_48 = ask_for_reservations(
        identities(100, &one_48),
        std::slice::from_ref(&addr),
        &tally,
    )
    .await?;
    ensure!(
        held_48.len() == 32,
        "one /48 holds {} reservations, not 32: {tally:?}\n{}",
        held_48.len(),
        relay.diagnose().await
    );
    let m = relay.metrics().await?;
    for reason in ["per_ip", "per_subnet"] {
        let refused = metric_sum(
            &m,
            "jantar_relay_source_refused_total",
            &["kind=\"reservation\"", &format!("reason=\"{reason}\"")],
        );
        ensure!(refused > 0.0, "no reservation refused for {reason}:\n{m}");
    }

    // An honest peer from another /48 still gets its reservation.
    let mut honest = Node::start(
        root,
        "honest",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  enable_dht: false\n  listen_addresses: [\"/ip6/{HONEST}/tcp/0\"]\n  relay_nodes: [\"{}\"]\n  relay_reservations: always\n",
            relay.addr()
        ),
    )
    .await?;
    let relay_id = relay.peer_id.clone();
    honest
        .wait_until(READY, "a reservation on the relay", async |n: &Node| {
            let st = n.status().await?;
            Ok(st["reservations"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["relay"] == relay_id.as_str() && r["state"] == "active")
            }))
        })
        .await?;
    memory_bounded(&relay, before)?;
    drop((held_64, held_48));
    Ok(())
}
