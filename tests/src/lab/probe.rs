//! Driving the `lab-probe` helper binary inside lab hosts.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    host::LabHost,
    process::{LabProcess, ProcessSpec},
};

/// Time allowed for a probe server to bind its ports.
const SERVER_READY: Duration = Duration::from_secs(10);

/// Extra time on top of a probe's own budget before it is declared hung.
const PROBE_SLACK: Duration = Duration::from_secs(10);

/// Time given to datagrams already sent before a listening probe is stopped.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(300);

/// Runs `lab-probe` subcommands in lab hosts and parses their JSON output.
#[derive(Clone, Debug)]
pub struct Prober {
    bin: PathBuf,
}

impl Prober {
    /// Uses the `lab-probe` binary at `bin` (in integration tests:
    /// `env!("CARGO_BIN_EXE_lab-probe")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { bin: bin.into() }
    }

    /// Finds `lab-probe`: `$JANTAR_LAB_PROBE`, else next to the running
    /// executable (or one directory up, for test executables in `deps/`).
    pub fn locate() -> Result<Self> {
        if let Some(path) = std::env::var_os("JANTAR_LAB_PROBE") {
            return Ok(Self::new(path));
        }
        let exe = std::env::current_exe().context("locate current executable")?;
        let dir = exe.parent().context("executable has no directory")?;
        [dir.join("lab-probe"), dir.join("../lab-probe")]
            .into_iter()
            .find(|p| p.is_file())
            .map(Self::new)
            .with_context(|| {
                format!(
                    "lab-probe not found next to {}; build it with `cargo build -p jantar-tests --bin lab-probe` or set JANTAR_LAB_PROBE",
                    exe.display()
                )
            })
    }

    /// Path of the probe binary.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    fn spec(&self) -> ProcessSpec {
        ProcessSpec::new(&self.bin)
    }

    /// Starts echo servers on `host`: UDP and TCP ports answer
    /// `OBSERVED <source>`, sink ports count bytes. Returns once bound.
    pub async fn serve(
        &self,
        host: &LabHost,
        udp: &[u16],
        tcp: &[u16],
        sink: &[u16],
    ) -> Result<ProbeServer> {
        let mut spec = self.spec().arg("serve");
        for p in udp {
            spec = spec.arg("--udp").arg(p.to_string());
        }
        for p in tcp {
            spec = spec.arg("--tcp").arg(p.to_string());
        }
        for p in sink {
            spec = spec.arg("--sink").arg(p.to_string());
        }
        let mut process = host.spawn(spec)?;
        process
            .wait_for_log("\"event\":\"ready\"", SERVER_READY)
            .await
            .with_context(|| format!("probe server on {}", host.name()))?;
        Ok(ProbeServer {
            host: host.clone(),
            process,
        })
    }

    /// Starts a UDP probe on `host` without waiting for it.
    pub fn spawn_udp_probe(
        &self,
        host: &LabHost,
        opts: &UdpProbeOptions,
    ) -> Result<UdpProbeSession> {
        let mut spec = self
            .spec()
            .arg("udp-probe")
            .args(["--local-port", &opts.local_port.to_string()])
            .args(["--timeout-ms", &opts.reply_timeout.as_millis().to_string()])
            .args(["--attempts", &opts.attempts.to_string()])
            .args(["--listen-ms", &opts.listen.as_millis().to_string()]);
        for t in &opts.targets {
            spec = spec.args(["--target", &t.to_string()]);
        }
        if opts.recheck {
            spec = spec.arg("--recheck");
        }
        let log = host.fresh_log_path("udp-probe");
        let stop_file = log.with_extension("stop");
        if !opts.listen.is_zero() {
            spec = spec.arg("--stop-file").arg(&stop_file);
        }
        let process = host.spawn(spec.log_file(log))?;
        Ok(UdpProbeSession {
            process,
            budget: opts.budget(),
            stop_file: (!opts.listen.is_zero()).then_some(stop_file),
        })
    }

    /// Runs a UDP probe on `host` to completion.
    pub async fn udp_probe(
        &self,
        host: &LabHost,
        opts: &UdpProbeOptions,
    ) -> Result<UdpProbeReport> {
        self.spawn_udp_probe(host, opts)?.finish().await
    }

    /// Sends a few datagrams carrying `payload` from `host`'s `local_port`
    /// (0 = any) to `target`.
    pub async fn udp_send(
        &self,
        host: &LabHost,
        local_port: u16,
        target: SocketAddr,
        payload: &str,
    ) -> Result<()> {
        let spec = self
            .spec()
            .arg("udp-send")
            .args(["--local-port", &local_port.to_string()])
            .args(["--target", &target.to_string()])
            .args(["--payload", payload]);
        let mut process = host.spawn(spec)?;
        let status = process.wait(PROBE_SLACK).await?;
        if !status.success() {
            bail!(
                "udp-send on {} failed ({status})\n{}",
                host.name(),
                process.log_tail()
            );
        }
        Ok(())
    }

    /// Connects from `host` to each target in turn and reports the address
    /// each echo server saw, or why the connection failed.
    pub async fn tcp_probe(
        &self,
        host: &LabHost,
        targets: &[SocketAddr],
        per_target: Duration,
    ) -> Result<Vec<TcpResult>> {
        let mut spec = self
            .spec()
            .arg("tcp-probe")
            .args(["--timeout-ms", &per_target.as_millis().to_string()]);
        for t in targets {
            spec = spec.args(["--target", &t.to_string()]);
        }
        let mut process = host.spawn(spec)?;
        let budget = per_target * targets.len() as u32 + PROBE_SLACK;
        let events = finish(&mut process, budget).await?;
        let mut results = Vec::new();
        for ev in &events {
            let target = || addr_field(ev, "target");
            match event_name(ev) {
                "tcp_mapping" => results.push(TcpResult {
                    target: target()?,
                    mapped: Ok(addr_field(ev, "mapped")?),
                }),
                "tcp_failed" => results.push(TcpResult {
                    target: target()?,
                    mapped: Err(str_field(ev, "error").unwrap_or("unknown").to_string()),
                }),
                _ => {}
            }
        }
        if results.len() != targets.len() {
            bail!(
                "tcp-probe on {} reported {} of {} targets\n{}",
                host.name(),
                results.len(),
                targets.len(),
                process.log_tail()
            );
        }
        Ok(results)
    }

    /// Connects from `host` to a Jantar node at `target` (any multiaddr
    /// ending in `/p2p/<id>`, a relay circuit included) with libp2p, times
    /// `pings` round trips and then has `bulk_bytes` echoed back by the
    /// node's ping protocol.
    pub async fn p2p_echo(
        &self,
        host: &LabHost,
        target: &str,
        pings: u32,
        bulk_bytes: u64,
        limit: Duration,
    ) -> Result<EchoReport> {
        let spec = self
            .spec()
            .arg("p2p-echo")
            .args(["--target", target])
            .args(["--pings", &pings.to_string()])
            .args(["--bulk-bytes", &bulk_bytes.to_string()])
            .args(["--timeout-ms", &limit.as_millis().to_string()])
            .env_remove("RUST_LOG");
        let mut process = host.spawn(spec)?;
        let events = finish(&mut process, limit + PROBE_SLACK).await?;
        let mut report = EchoReport {
            log: process.log_path().to_path_buf(),
            ..EchoReport::default()
        };
        for ev in &events {
            match event_name(ev) {
                "p2p_connected" => {
                    report.address = str_field(ev, "address").map(str::to_string);
                    report.relayed = ev["relayed"].as_bool();
                }
                "p2p_ping" => report
                    .ping_rtts
                    .push(Duration::from_micros(u64_field(ev, "rtt_us")?)),
                "p2p_bulk" => {
                    report.bulk_bytes = u64_field(ev, "bytes")?;
                    report.bulk_millis = Some(u64_field(ev, "millis")?);
                }
                "p2p_bulk_failed" => report.bulk_bytes = u64_field(ev, "bytes_echoed")?,
                "p2p_failed" => {
                    let mut err = str_field(ev, "error").unwrap_or("unknown").to_string();
                    if let Some(c) = str_field(ev, "connection_closed") {
                        err.push_str(&format!(" (connection closed: {c})"));
                    }
                    report.error = Some(err);
                }
                _ => {}
            }
        }
        Ok(report)
    }

    /// Uploads `bytes` from `host` to a sink at `target` and reports the
    /// achieved rate.
    pub async fn tcp_bulk(
        &self,
        host: &LabHost,
        target: SocketAddr,
        bytes: u64,
        limit: Duration,
    ) -> Result<BulkResult> {
        let spec = self
            .spec()
            .arg("tcp-bulk")
            .args(["--target", &target.to_string()])
            .args(["--bytes", &bytes.to_string()])
            .args(["--timeout-ms", &limit.as_millis().to_string()]);
        let mut process = host.spawn(spec)?;
        let events = finish(&mut process, limit + PROBE_SLACK).await?;
        for ev in &events {
            match event_name(ev) {
                "tcp_bulk" => {
                    return Ok(BulkResult {
                        bytes: u64_field(ev, "bytes")?,
                        millis: u64_field(ev, "millis")?,
                        kbit_per_s: u64_field(ev, "kbit_per_s")?,
                    });
                }
                "tcp_bulk_failed" => bail!(
                    "bulk upload from {} to {target} failed: {}",
                    host.name(),
                    str_field(ev, "error").unwrap_or("unknown")
                ),
                _ => {}
            }
        }
        bail!(
            "tcp-bulk on {} printed no result\n{}",
            host.name(),
            process.log_tail()
        )
    }
}

/// What a `p2p-echo` run reported.
#[derive(Clone, Debug, Default)]
pub struct EchoReport {
    /// Remote address of the connection to the node.
    pub address: Option<String>,
    /// Whether that connection went through a relay.
    pub relayed: Option<bool>,
    /// Round-trip times of the single pings.
    pub ping_rtts: Vec<Duration>,
    /// Bytes echoed back in the bulk phase (all of them on success).
    pub bulk_bytes: u64,
    /// Duration of a completed bulk transfer.
    pub bulk_millis: Option<u64>,
    /// Why the run stopped early.
    pub error: Option<String>,
    /// The probe's output.
    pub log: PathBuf,
}

/// Settings of one `udp-probe` run.
#[derive(Clone, Debug)]
pub struct UdpProbeOptions {
    /// Local port the probe binds (0 = any).
    pub local_port: u16,
    /// Echo servers to probe, in order, all from the same socket.
    pub targets: Vec<SocketAddr>,
    /// Wait per attempt for an echo reply.
    pub reply_timeout: Duration,
    /// Attempts per target.
    pub attempts: u32,
    /// Longest time to keep listening for unsolicited datagrams after
    /// probing; [`UdpProbeSession::finish`] ends the listening earlier.
    pub listen: Duration,
    /// Probe the first target once more after listening.
    pub recheck: bool,
}

impl UdpProbeOptions {
    /// Probe `targets` from `local_port`, no listening, no recheck.
    pub fn new(local_port: u16, targets: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            local_port,
            targets: targets.into_iter().collect(),
            reply_timeout: Duration::from_millis(700),
            attempts: 3,
            listen: Duration::ZERO,
            recheck: false,
        }
    }

    /// Listen for unsolicited datagrams after probing, until
    /// [`UdpProbeSession::finish`] or at most `window`.
    pub fn listen(mut self, window: Duration) -> Self {
        self.listen = window;
        self
    }

    /// Probe the first target again at the end.
    pub fn recheck(mut self) -> Self {
        self.recheck = true;
        self
    }

    fn budget(&self) -> Duration {
        let per_target = self.reply_timeout * self.attempts.max(1);
        let probes = self.targets.len() as u32 + u32::from(self.recheck);
        per_target * probes + self.listen + PROBE_SLACK
    }
}

/// A running `udp-probe`.
#[derive(Debug)]
pub struct UdpProbeSession {
    process: LabProcess,
    budget: Duration,
    stop_file: Option<PathBuf>,
}

impl UdpProbeSession {
    /// Waits until the probe has finished probing and is listening for
    /// unsolicited datagrams; returns the mappings learned so far.
    pub async fn wait_listening(&mut self) -> Result<UdpProbeReport> {
        self.process
            .wait_for_log("\"event\":\"listening\"", self.budget)
            .await?;
        Ok(UdpProbeReport::parse(&self.process.read_log()))
    }

    /// Ends the listening phase (after a short grace period for datagrams
    /// still in flight), waits for the probe to exit and parses everything
    /// it reported.
    pub async fn finish(mut self) -> Result<UdpProbeReport> {
        if let Some(stop) = self.stop_file.take() {
            tokio::time::sleep(IN_FLIGHT_GRACE).await;
            std::fs::write(&stop, b"stop")
                .with_context(|| format!("create stop file {}", stop.display()))?;
        }
        finish(&mut self.process, self.budget).await?;
        Ok(UdpProbeReport::parse(&self.process.read_log()))
    }

    /// The underlying process.
    pub fn process(&self) -> &LabProcess {
        &self.process
    }
}

/// What a `udp-probe` reported.
#[derive(Clone, Debug, Default)]
pub struct UdpProbeReport {
    /// Local address of the probe socket.
    pub local: Option<SocketAddr>,
    /// For each target in order: the source address the echo server saw
    /// (the NAT mapping), or `None` when no reply came back.
    pub mappings: Vec<(SocketAddr, Option<SocketAddr>)>,
    /// Every datagram that arrived other than an expected echo reply.
    pub received: Vec<(SocketAddr, String)>,
    /// Mapping seen by the first target on the final recheck.
    pub recheck: Option<Option<SocketAddr>>,
}

impl UdpProbeReport {
    fn parse(log: &str) -> Self {
        let mut report = Self::default();
        for ev in json_events(log) {
            match event_name(&ev) {
                "bound" => report.local = addr_field(&ev, "local").ok(),
                "udp_mapping" => {
                    if let Ok(t) = addr_field(&ev, "target") {
                        report.mappings.push((t, addr_field(&ev, "mapped").ok()));
                    }
                }
                "udp_no_reply" => {
                    if let Ok(t) = addr_field(&ev, "target") {
                        report.mappings.push((t, None));
                    }
                }
                "udp_received" => {
                    if let Ok(from) = addr_field(&ev, "from") {
                        let payload = str_field(&ev, "payload").unwrap_or_default();
                        report.received.push((from, payload.to_string()));
                    }
                }
                "udp_recheck" => report.recheck = Some(addr_field(&ev, "mapped").ok()),
                _ => {}
            }
        }
        report
    }

    /// The mapping seen by `target`, if it replied.
    pub fn mapped(&self, target: SocketAddr) -> Option<SocketAddr> {
        self.mappings
            .iter()
            .find(|(t, _)| *t == target)
            .and_then(|(_, m)| *m)
    }

    /// Senders of received datagrams whose payload starts with `prefix`.
    pub fn received_with(&self, prefix: &str) -> Vec<SocketAddr> {
        self.received
            .iter()
            .filter(|(_, p)| p.starts_with(prefix))
            .map(|(from, _)| *from)
            .collect()
    }
}

/// Outcome of one TCP connection attempt.
#[derive(Clone, Debug)]
pub struct TcpResult {
    /// Where the probe connected to.
    pub target: SocketAddr,
    /// The source address the server saw, or the connection error.
    pub mapped: Result<SocketAddr, String>,
}

/// Outcome of a bulk upload.
#[derive(Clone, Copy, Debug)]
pub struct BulkResult {
    /// Bytes the sink confirmed.
    pub bytes: u64,
    /// Time from connect to the sink's confirmation.
    pub millis: u64,
    /// `bytes * 8 / millis`.
    pub kbit_per_s: u64,
}

/// A running `lab-probe serve`.
#[derive(Debug)]
pub struct ProbeServer {
    host: LabHost,
    process: LabProcess,
}

impl ProbeServer {
    /// The host the server runs on.
    pub fn host(&self) -> &LabHost {
        &self.host
    }

    /// `host ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.host.ip()), port)
    }

    /// Senders and payloads of datagrams the server received on `port`.
    pub fn udp_received(&self, port: u16) -> Vec<(SocketAddr, String)> {
        json_events(&self.process.read_log())
            .filter(|ev| event_name(ev) == "udp_recv" && port_field(ev) == Some(port))
            .filter_map(|ev| {
                let from = addr_field(&ev, "from").ok()?;
                Some((from, str_field(&ev, "payload")?.to_string()))
            })
            .collect()
    }

    /// Peers whose TCP connections the server accepted on `port`.
    pub fn tcp_accepted(&self, port: u16) -> Vec<SocketAddr> {
        json_events(&self.process.read_log())
            .filter(|ev| event_name(ev) == "tcp_accept" && port_field(ev) == Some(port))
            .filter_map(|ev| addr_field(&ev, "from").ok())
            .collect()
    }

    /// The server process.
    pub fn process(&self) -> &LabProcess {
        &self.process
    }
}

async fn finish(process: &mut LabProcess, budget: Duration) -> Result<Vec<Value>> {
    let status = process.wait(budget).await?;
    if !status.success() {
        bail!(
            "probe on {} failed ({status})\n{}",
            process.host(),
            process.log_tail()
        );
    }
    Ok(json_events(&process.read_log()).collect())
}

fn json_events(log: &str) -> impl Iterator<Item = Value> + '_ {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
}

fn event_name(ev: &Value) -> &str {
    ev.get("event").and_then(Value::as_str).unwrap_or_default()
}

fn str_field<'a>(ev: &'a Value, key: &str) -> Option<&'a str> {
    ev.get(key).and_then(Value::as_str)
}

fn port_field(ev: &Value) -> Option<u16> {
    ev.get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

fn u64_field(ev: &Value, key: &str) -> Result<u64> {
    ev.get(key)
        .and_then(Value::as_u64)
        .with_context(|| format!("probe event lacks {key}: {ev}"))
}

fn addr_field(ev: &Value, key: &str) -> Result<SocketAddr> {
    str_field(ev, key)
        .with_context(|| format!("probe event lacks {key}: {ev}"))?
        .parse()
        .with_context(|| format!("probe event has a bad {key}: {ev}"))
}
