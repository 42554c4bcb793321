//! Observing a host's NAT behaviour with plain UDP/TCP probes, and checking
//! it against what its [`NatKind`] promises.
//!
//! The procedure, for a host `H` and three datacenter echo servers `A`, `B`,
//! `C`:
//!
//! 1. From one UDP socket, `H` probes `A:3478`, `B:3478` and `A:4001`; each
//!    echo server reports the source address it saw (the mapping). Equal
//!    mapped ports mean endpoint-independent mapping, differing ones mean
//!    endpoint-dependent mapping.
//! 2. While `H` keeps listening on that socket, `C` (never contacted) and
//!    `A` from port 3479 (a contacted host, uncontacted port) send to the
//!    mapped address of `A:3478`. Which of the two arrive gives the filtering.
//! 3. `H` probes `A:3478` again, to show the mapping was still alive.
//! 4. `H` connects to TCP 80, 443 and 4001 on `A`.

use std::{
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::Result;

use super::{
    Lab, NatKind,
    host::LabHost,
    probe::{ProbeServer, Prober, UdpProbeOptions},
};

/// UDP echo port used for mapping probes.
const UDP_ECHO: u16 = 3478;
/// Second UDP echo port on server A (a different destination port).
const UDP_ECHO_ALT: u16 = 4001;
/// Port server A sends its unsolicited datagram from.
const UDP_UNSOLICITED_SRC: u16 = 3479;
/// TCP echo ports: two that a corporate firewall allows, one it blocks.
const TCP_PORTS: [u16; 3] = [80, 443, 4001];
/// Longest time the probed host listens for unsolicited datagrams; the
/// listening ends as soon as both have been sent.
const LISTEN: Duration = Duration::from_secs(20);
/// Per-connection TCP timeout; blocked connections take this long to fail.
const TCP_TIMEOUT: Duration = Duration::from_millis(1500);

const FROM_OTHER_HOST: &str = "UNSOLICITED-OTHER-HOST";
const FROM_OTHER_PORT: &str = "UNSOLICITED-OTHER-PORT";

/// The three datacenter echo servers used by [`observe_host`].
#[derive(Debug)]
pub struct ObservationServers {
    /// Contacted on two UDP ports and for TCP; also sends from an
    /// uncontacted port.
    pub a: ProbeServer,
    /// Contacted on one UDP port.
    pub b: ProbeServer,
    /// Never contacted; sends the unsolicited datagram.
    pub c: ProbeServer,
}

impl ObservationServers {
    /// Adds datacenter hosts `srv-a`, `srv-b`, `srv-c` and starts echo
    /// servers on them.
    pub async fn start(lab: &Lab, prober: &Prober) -> Result<Self> {
        let mut servers = Vec::new();
        for name in ["srv-a", "srv-b", "srv-c"] {
            let host = lab.add_datacenter_host(name).await?;
            servers.push(
                prober
                    .serve(&host, &[UDP_ECHO, UDP_ECHO_ALT], &TCP_PORTS, &[])
                    .await?,
            );
        }
        let c = servers.pop().expect("three servers");
        let b = servers.pop().expect("three servers");
        let a = servers.pop().expect("three servers");
        Ok(Self { a, b, c })
    }
}

/// Mapping behaviour, from the ports that different destinations saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Every destination saw the host's own address and port.
    NoTranslation,
    /// Every destination saw the same translated address and port (EIM).
    EndpointIndependent,
    /// Destinations saw different ports (EDM, symmetric).
    EndpointDependent,
    /// No destination answered: outbound UDP is blocked.
    Blocked,
    /// Some destinations answered and some did not.
    Partial,
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoTranslation => "none (public)",
            Self::EndpointIndependent => "EIM",
            Self::EndpointDependent => "EDM",
            Self::Blocked => "UDP blocked",
            Self::Partial => "partial",
        })
    }
}

/// Filtering behaviour, from which unsolicited datagrams arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Datagrams from anyone arrive (EIF).
    EndpointIndependent,
    /// Only hosts the inside contacted may send, from any port (ADF).
    AddressDependent,
    /// Only the exact contacted address and port may send (APDF).
    AddressAndPortDependent,
    /// A new host got through but a contacted host's other port did not.
    Inconsistent,
    /// Not testable (no UDP mapping to aim at).
    NotTested,
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EndpointIndependent => "EIF",
            Self::AddressDependent => "ADF",
            Self::AddressAndPortDependent => "APDF",
            Self::Inconsistent => "inconsistent",
            Self::NotTested => "n/a",
        })
    }
}

/// Everything [`observe_host`] saw for one host.
#[derive(Clone, Debug)]
pub struct NatObservation {
    /// Host name.
    pub host: String,
    /// NAT kind in front of the host (`None` for a datacenter host).
    pub kind: Option<NatKind>,
    /// The host's own address.
    pub host_ip: Ipv4Addr,
    /// The address the host's traffic should appear to come from.
    pub expected_public_ip: Ipv4Addr,
    /// Local UDP port used for probing.
    pub local_port: u16,
    /// Mapping seen by `A:3478`, `B:3478` and `A:4001`, in that order.
    pub udp_mapped: Vec<(SocketAddr, Option<SocketAddr>)>,
    /// Classified mapping behaviour.
    pub mapping: Mapping,
    /// Whether the datagram from never-contacted server C arrived.
    pub unsolicited_other_host: Option<bool>,
    /// Whether the datagram from server A's uncontacted port arrived.
    pub unsolicited_other_port: Option<bool>,
    /// Classified filtering behaviour.
    pub filtering: Filtering,
    /// Mapping seen by `A:3478` after the listening phase.
    pub recheck: Option<SocketAddr>,
    /// TCP 80, 443, 4001 on server A: the address A saw, or the error.
    pub tcp: Vec<(u16, Result<SocketAddr, String>)>,
}

/// What a host of a given kind must show.
struct Expectation {
    mapping: Mapping,
    filtering: Filtering,
    tcp_open: [bool; 3],
}

fn expectation(kind: Option<NatKind>) -> Expectation {
    let (mapping, filtering, tcp_open) = match kind {
        None => (
            Mapping::NoTranslation,
            Filtering::EndpointIndependent,
            [true; 3],
        ),
        Some(NatKind::Open) => (
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
            [true; 3],
        ),
        Some(NatKind::Moderate | NatKind::Cgnat) => (
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
            [true; 3],
        ),
        Some(NatKind::Strict) => (
            Mapping::EndpointDependent,
            Filtering::AddressAndPortDependent,
            [true; 3],
        ),
        Some(NatKind::Corporate) => (Mapping::Blocked, Filtering::NotTested, [true, true, false]),
    };
    Expectation {
        mapping,
        filtering,
        tcp_open,
    }
}

impl NatObservation {
    /// Whether a TCP connection to `port` on server A succeeded.
    pub fn tcp_open(&self, port: u16) -> bool {
        self.tcp.iter().any(|(p, r)| *p == port && r.is_ok())
    }

    /// Differences between what was observed and what the host's kind
    /// promises; empty when the host behaves as specified.
    pub fn violations(&self) -> Vec<String> {
        let want = expectation(self.kind);
        let mut out = Vec::new();
        if self.mapping != want.mapping {
            out.push(format!(
                "mapping is {}, expected {}",
                self.mapping, want.mapping
            ));
        }
        if self.filtering != want.filtering {
            out.push(format!(
                "filtering is {}, expected {}",
                self.filtering, want.filtering
            ));
        }
        let public = IpAddr::V4(self.expected_public_ip);
        for (target, mapped) in &self.udp_mapped {
            if let Some(m) = mapped
                && m.ip() != public
            {
                out.push(format!(
                    "{target} saw UDP from {m}, expected address {public}"
                ));
            }
        }
        if let Some(first) = self.udp_mapped.first().and_then(|(_, m)| *m)
            && self.recheck != Some(first)
        {
            out.push(format!(
                "mapping to {} changed or vanished: {first} then {:?}",
                self.udp_mapped[0].0, self.recheck
            ));
        }
        for ((port, result), open) in self.tcp.iter().zip(want.tcp_open) {
            match (result, open) {
                (Ok(m), true) if m.ip() != public => {
                    out.push(format!(
                        "TCP {port} came from {m}, expected address {public}"
                    ));
                }
                (Ok(_), true) | (Err(_), false) => {}
                (Ok(m), false) => out.push(format!("TCP {port} got through (seen as {m})")),
                (Err(e), true) => out.push(format!("TCP {port} failed: {e}")),
            }
        }
        out
    }
}

/// Runs the observation procedure (see the module docs) for `host`, using
/// `local_port` for its UDP socket.
pub async fn observe_host(
    prober: &Prober,
    servers: &ObservationServers,
    host: &LabHost,
    local_port: u16,
) -> Result<NatObservation> {
    let targets = [
        servers.a.addr(UDP_ECHO),
        servers.b.addr(UDP_ECHO),
        servers.a.addr(UDP_ECHO_ALT),
    ];
    let opts = UdpProbeOptions::new(local_port, targets)
        .listen(LISTEN)
        .recheck();
    let mut session = prober.spawn_udp_probe(host, &opts)?;
    let learned = session.wait_listening().await?;
    let aim = learned.mapped(targets[0]);
    if let Some(aim) = aim {
        prober
            .udp_send(servers.c.host(), 0, aim, FROM_OTHER_HOST)
            .await?;
        prober
            .udp_send(servers.a.host(), UDP_UNSOLICITED_SRC, aim, FROM_OTHER_PORT)
            .await?;
    }
    let report = session.finish().await?;

    let udp_mapped: Vec<_> = targets.iter().map(|t| (*t, report.mapped(*t))).collect();
    let mapping = classify_mapping(host, local_port, &udp_mapped);
    let arrived = |payload: &str| aim.map(|_| !report.received_with(payload).is_empty());
    let unsolicited_other_host = arrived(FROM_OTHER_HOST);
    let unsolicited_other_port = arrived(FROM_OTHER_PORT);
    let filtering = match (unsolicited_other_host, unsolicited_other_port) {
        (Some(true), Some(true)) => Filtering::EndpointIndependent,
        (Some(false), Some(true)) => Filtering::AddressDependent,
        (Some(false), Some(false)) => Filtering::AddressAndPortDependent,
        (Some(true), Some(false)) => Filtering::Inconsistent,
        _ => Filtering::NotTested,
    };

    let tcp_targets: Vec<SocketAddr> = TCP_PORTS.iter().map(|p| servers.a.addr(*p)).collect();
    let tcp = prober
        .tcp_probe(host, &tcp_targets, TCP_TIMEOUT)
        .await?
        .into_iter()
        .map(|r| (r.target.port(), r.mapped))
        .collect();

    Ok(NatObservation {
        host: host.name().to_string(),
        kind: host.nat_kind(),
        host_ip: host.ip(),
        expected_public_ip: host.public_ip(),
        local_port,
        udp_mapped,
        mapping,
        unsolicited_other_host,
        unsolicited_other_port,
        filtering,
        recheck: report.recheck.flatten(),
        tcp,
    })
}

fn classify_mapping(
    host: &LabHost,
    local_port: u16,
    mapped: &[(SocketAddr, Option<SocketAddr>)],
) -> Mapping {
    let seen: Vec<SocketAddr> = mapped.iter().filter_map(|(_, m)| *m).collect();
    if seen.is_empty() {
        return Mapping::Blocked;
    }
    if seen.len() != mapped.len() {
        return Mapping::Partial;
    }
    if seen.iter().any(|m| *m != seen[0]) {
        return Mapping::EndpointDependent;
    }
    if seen[0] == SocketAddr::new(IpAddr::V4(host.ip()), local_port) {
        Mapping::NoTranslation
    } else {
        Mapping::EndpointIndependent
    }
}

/// Renders observations as a plain-text table, one row per host.
pub fn render_table(rows: &[NatObservation]) -> String {
    let header = [
        "host",
        "nat",
        "host ip",
        "public ip",
        "mapped ip",
        "ports A/B/A'",
        "mapping",
        "filtering",
        "tcp 80",
        "tcp 443",
        "tcp 4001",
        "verdict",
    ];
    let yes_no = |b: bool| if b { "open" } else { "blocked" }.to_string();
    let mut cells: Vec<Vec<String>> = Vec::new();
    for row in rows {
        let mapped_ip = row
            .udp_mapped
            .iter()
            .find_map(|(_, m)| m.map(|m| m.ip().to_string()))
            .unwrap_or_else(|| "-".to_string());
        let ports = row
            .udp_mapped
            .iter()
            .map(|(_, m)| m.map_or("-".to_string(), |m| m.port().to_string()))
            .collect::<Vec<_>>()
            .join("/");
        let violations = row.violations();
        cells.push(vec![
            row.host.clone(),
            row.kind.map_or("datacenter".to_string(), |k| k.to_string()),
            row.host_ip.to_string(),
            row.expected_public_ip.to_string(),
            mapped_ip,
            ports,
            row.mapping.to_string(),
            row.filtering.to_string(),
            yes_no(row.tcp_open(80)),
            yes_no(row.tcp_open(443)),
            yes_no(row.tcp_open(4001)),
            if violations.is_empty() {
                "as specified".to_string()
            } else {
                "MISMATCH".to_string()
            },
        ]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let parts: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join(" | ").trim_end());
    };
    line(&mut out, &header.map(str::to_string));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", rule.join("-+-"));
    for row in &cells {
        line(&mut out, row);
    }
    out
}
