//! Proves that each NAT kind of the lab behaves as specified, using plain
//! UDP/TCP sockets (the `lab-probe` binary) inside the hosts' namespaces.
//!
//! Every test needs root (network namespaces, nftables); without it the test
//! prints `SKIP <name>: <reason>` and passes. On failure the nft rulesets of
//! all routers are printed and the process logs are kept.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use jantar_tests::lab::{
    Filtering, Mapping, NatKind, ObservationServers, Prober, UdpProbeOptions, observe_host,
    run_scenario,
};

const LIMIT: Duration = Duration::from_secs(120);

fn prober() -> Prober {
    Prober::new(env!("CARGO_BIN_EXE_lab-probe"))
}

fn ports(mapped: &[(SocketAddr, Option<SocketAddr>)]) -> Vec<Option<u16>> {
    mapped.iter().map(|(_, m)| m.map(|m| m.port())).collect()
}

/// Baseline and control for the probes: a datacenter host is not translated
/// and receives datagrams from anyone, so "dropped" in the NAT tests below
/// means the NAT dropped it, not that the probe cannot see such packets.
#[tokio::test]
async fn datacenter_host_is_neither_translated_nor_filtered() -> Result<()> {
    run_scenario("datacenter_baseline", LIMIT, async |lab| {
        let prober = prober();
        let servers = ObservationServers::start(lab, &prober).await?;
        let host = lab.add_datacenter_host("dc-host").await?;
        let obs = observe_host(&prober, &servers, &host, 40_000).await?;
        let own = SocketAddr::new(IpAddr::V4(host.ip()), 40_000);
        for (target, mapped) in &obs.udp_mapped {
            ensure!(
                *mapped == Some(own),
                "{target} saw {mapped:?}, expected {own}"
            );
        }
        ensure!(
            obs.mapping == Mapping::NoTranslation,
            "mapping {}",
            obs.mapping
        );
        ensure!(
            obs.unsolicited_other_host == Some(true) && obs.unsolicited_other_port == Some(true),
            "unsolicited datagrams did not reach an unfiltered host: {obs:?}"
        );
        ensure!(obs.violations().is_empty(), "{:?}", obs.violations());
        Ok(())
    })
    .await
}

/// Open: one mapping for every destination (EIM), and anyone may send to it
/// (endpoint-independent filtering), including a never-contacted host.
#[tokio::test]
async fn open_nat_maps_and_filters_independently_of_endpoint() -> Result<()> {
    run_scenario("open_nat", LIMIT, async |lab| {
        let prober = prober();
        let servers = ObservationServers::start(lab, &prober).await?;
        let host = lab.add_home_host(NatKind::Open, "peer").await?;
        let obs = observe_host(&prober, &servers, &host, 40_001).await?;
        let gateway_wan = host
            .home_network()
            .and_then(|n| n.gateway().wan_ip())
            .context("gateway has no WAN address")?;
        let p = ports(&obs.udp_mapped);
        ensure!(
            p.iter().all(|x| x.is_some() && *x == p[0]),
            "mapped ports differ or missing: {p:?}"
        );
        ensure!(
            obs.udp_mapped
                .iter()
                .all(|(_, m)| m.is_some_and(|m| m.ip() == IpAddr::V4(gateway_wan))),
            "not translated to the gateway address {gateway_wan}: {:?}",
            obs.udp_mapped
        );
        ensure!(
            obs.unsolicited_other_host == Some(true),
            "datagram from the never-contacted server was dropped"
        );
        ensure!(
            obs.filtering == Filtering::EndpointIndependent,
            "filtering {}",
            obs.filtering
        );
        ensure!(obs.violations().is_empty(), "{:?}", obs.violations());
        Ok(())
    })
    .await
}

/// Moderate, written out with the raw probe API: from one local port the
/// host reaches two different datacenter servers and both see the same
/// mapped port (EIM); an unsolicited datagram from a third server is dropped
/// while the mapping stays alive (the contacted server still gets through).
#[tokio::test]
async fn moderate_nat_keeps_one_mapping_and_drops_unsolicited() -> Result<()> {
    run_scenario("moderate_nat", LIMIT, async |lab| {
        let prober = prober();
        let mut servers = Vec::new();
        for name in ["srv1", "srv2", "srv3"] {
            let host = lab.add_datacenter_host(name).await?;
            servers.push(prober.serve(&host, &[3478], &[], &[]).await?);
        }
        let peer = lab.add_home_host(NatKind::Moderate, "peerA").await?;
        let targets = [servers[0].addr(3478), servers[1].addr(3478)];
        let opts = UdpProbeOptions::new(41_000, targets)
            .listen(Duration::from_secs(20))
            .recheck();
        let mut session = prober.spawn_udp_probe(&peer, &opts)?;
        let learned = session.wait_listening().await?;
        let m1 = learned.mapped(targets[0]).context("srv1 did not answer")?;
        let m2 = learned.mapped(targets[1]).context("srv2 did not answer")?;
        ensure!(m1 == m2, "EIM violated: srv1 saw {m1}, srv2 saw {m2}");
        ensure!(
            m1.ip() == IpAddr::V4(peer.public_ip()),
            "mapped to {m1}, expected the router address {}",
            peer.public_ip()
        );
        prober
            .udp_send(servers[2].host(), 0, m1, "UNSOLICITED")
            .await?;
        let report = session.finish().await?;
        let arrived = report.received_with("UNSOLICITED");
        ensure!(
            arrived.is_empty(),
            "unsolicited datagram from srv3 reached the host: {arrived:?}"
        );
        ensure!(
            servers[2]
                .udp_received(3478)
                .iter()
                .all(|(from, _)| from.ip() != m1.ip()),
            "the host contacted srv3, which would invalidate the test"
        );
        ensure!(
            report.recheck == Some(Some(m1)),
            "mapping did not survive the listening phase: {:?}",
            report.recheck
        );
        Ok(())
    })
    .await
}

/// Moderate, through the shared observation procedure: also shows the
/// filtering is port-dependent (a contacted host's other port is dropped).
#[tokio::test]
async fn moderate_nat_filters_by_address_and_port() -> Result<()> {
    run_scenario("moderate_nat_apdf", LIMIT, async |lab| {
        let prober = prober();
        let servers = ObservationServers::start(lab, &prober).await?;
        let host = lab.add_home_host(NatKind::Moderate, "peer").await?;
        let obs = observe_host(&prober, &servers, &host, 40_002).await?;
        ensure!(
            obs.mapping == Mapping::EndpointIndependent,
            "mapping {}",
            obs.mapping
        );
        ensure!(
            obs.unsolicited_other_host == Some(false),
            "never-contacted host got through"
        );
        ensure!(
            obs.unsolicited_other_port == Some(false),
            "contacted host got through from another port"
        );
        ensure!(obs.violations().is_empty(), "{:?}", obs.violations());
        Ok(())
    })
    .await
}

/// Strict: every destination (even another port on the same server) gets
/// its own mapped port, and unsolicited datagrams are dropped.
#[tokio::test]
async fn strict_nat_maps_each_destination_to_its_own_port() -> Result<()> {
    run_scenario("strict_nat", LIMIT, async |lab| {
        let prober = prober();
        let servers = ObservationServers::start(lab, &prober).await?;
        let host = lab.add_home_host(NatKind::Strict, "peer").await?;
        let obs = observe_host(&prober, &servers, &host, 40_003).await?;
        let p: Vec<u16> = ports(&obs.udp_mapped)
            .into_iter()
            .collect::<Option<_>>()
            .context("a destination did not answer")?;
        ensure!(
            p[0] != p[1] && p[1] != p[2] && p[0] != p[2],
            "mapped ports are not all distinct: {p:?}"
        );
        ensure!(
            obs.mapping == Mapping::EndpointDependent,
            "mapping {}",
            obs.mapping
        );
        ensure!(
            obs.unsolicited_other_host == Some(false) && obs.unsolicited_other_port == Some(false),
            "unsolicited datagrams got through: {obs:?}"
        );
        ensure!(obs.violations().is_empty(), "{:?}", obs.violations());
        Ok(())
    })
    .await
}

/// CGNAT: two NAT levels. The world sees the carrier's public address (not
/// the home router's, which sits in 100.64.0.0/10), the mapping is still
/// endpoint-independent end to end, and unsolicited datagrams are dropped.
#[tokio::test]
async fn cgnat_host_appears_as_the_carrier_address() -> Result<()> {
    run_scenario("cgnat", LIMIT, async |lab| {
        let prober = prober();
        let servers = ObservationServers::start(lab, &prober).await?;
        let host = lab.add_home_host(NatKind::Cgnat, "peer").await?;
        let net = host.home_network().context("no home network")?;
        let carrier = net.carrier().context("no carrier router")?;
        let carrier_wan = carrier.wan_ip().context("carrier has no WAN")?;
        let home_wan = net.gateway().wan_ip().context("home router has no WAN")?;
        let shared = |ip: Ipv4Addr| ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64;
        ensure!(
            shared(home_wan),
            "home router WAN {home_wan} is not in 100.64.0.0/10"
        );
        let obs = observe_host(&prober, &servers, &host, 40_004).await?;
        for (target, mapped) in &obs.udp_mapped {
            let m = mapped.with_context(|| format!("{target} did not answer"))?;
            ensure!(
                m.ip() == IpAddr::V4(carrier_wan),
                "{target} saw {m}, expected the carrier address {carrier_wan}"
            );
        }
        ensure!(
            obs.mapping == Mapping::EndpointIndependent,
            "mapping {}",
            obs.mapping
        );
        ensure!(
            obs.filtering == Filtering::AddressAndPortDependent,
            "filtering {}",
            obs.filtering
        );
        for (port, result) in &obs.tcp {
            let seen = result
                .as_ref()
                .map_err(|e| anyhow::anyhow!("TCP {port}: {e}"))?;
            ensure!(
                seen.ip() == IpAddr::V4(carrier_wan),
                "TCP {port} seen from {seen}"
            );
        }
        ensure!(obs.violations().is_empty(), "{:?}", obs.violations());
        Ok(())
    })
    .await
}

/// Corporate: TCP 80 and 443 get out, TCP 4001 and all UDP (including DNS
/// port 53) do not; the servers' own logs show the blocked traffic never
/// arrived.
#[tokio::test]
async fn corporate_firewall_only_lets_web_tcp_out() -> Result<()> {
    run_scenario("corporate", LIMIT, async |lab| {
        let prober = prober();
        let servers = ObservationServers::start(lab, &prober).await?;
        let dns = prober.serve(servers.b.host(), &[53], &[], &[]).await?;
        let host = lab.add_home_host(NatKind::Corporate, "office").await?;
        let obs = observe_host(&prober, &servers, &host, 40_005).await?;
        ensure!(obs.tcp_open(443), "TCP 443 blocked: {:?}", obs.tcp);
        ensure!(obs.tcp_open(80), "TCP 80 blocked: {:?}", obs.tcp);
        ensure!(!obs.tcp_open(4001), "TCP 4001 got out: {:?}", obs.tcp);
        ensure!(
            obs.mapping == Mapping::Blocked,
            "UDP got out: {:?}",
            obs.udp_mapped
        );

        let dns_probe = prober
            .udp_probe(&host, &UdpProbeOptions::new(0, [dns.addr(53)]))
            .await?;
        ensure!(
            dns_probe.mapped(dns.addr(53)).is_none(),
            "UDP 53 got out: {dns_probe:?}"
        );

        let public = IpAddr::V4(host.public_ip());
        ensure!(
            servers.a.tcp_accepted(443).iter().any(|p| p.ip() == public),
            "server A never saw the TCP 443 connection"
        );
        ensure!(
            servers
                .a
                .tcp_accepted(4001)
                .iter()
                .all(|p| p.ip() != public),
            "server A accepted TCP 4001 from the office"
        );
        for (server, port) in [(&servers.a, 3478), (&servers.a, 4001), (&servers.b, 3478)] {
            ensure!(
                server
                    .udp_received(port)
                    .iter()
                    .all(|(f, _)| f.ip() != public),
                "UDP to port {port} reached {}",
                server.host().name()
            );
        }
        ensure!(dns.udp_received(53).is_empty(), "UDP 53 reached the server");
        ensure!(obs.violations().is_empty(), "{:?}", obs.violations());
        Ok(())
    })
    .await
}
