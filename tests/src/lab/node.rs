//! The real `jantar-*` binaries running inside lab hosts: generated configs,
//! start-up, the admin endpoint queried from inside the host's namespace,
//! JSON logs, and diagnostics.
//!
//! Every node's admin endpoint listens on `127.0.0.1:9090` of its own host
//! namespace, as the README recommends for production. The test process lives
//! in the root namespace and cannot reach that loopback, so each request runs
//! as a task on the host's namespace runtime (`patchbay::Device::spawn`): the
//! HTTP client's socket is created inside the namespace.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use jantar_net::admin::token;
use serde_json::{Map, Value};

use super::{
    host::LabHost,
    process::{LabProcess, ProcessSpec},
};
use crate::harness::Role;

/// Port of the admin endpoint on each host's loopback.
pub const ADMIN_PORT: u16 = 9090;
/// TCP and QUIC port every lab node listens on.
pub const P2P_PORT: u16 = 4001;
/// Port of the relay's secure WebSocket listener.
pub const WSS_PORT: u16 = 443;
/// Log filter of lab nodes: the project's debug logs plus DCUtR's attempts.
/// `JANTAR_LAB_LOG` replaces it.
pub const LOG_LEVEL: &str = "info,jantar_net=debug,libp2p_dcutr=debug";

/// Time allowed between spawning a node and its `jantar started` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one admin request (`POST /connect` waits up to 30 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(40);
/// Poll interval of [`LabNode::wait_until`].
const POLL: Duration = Duration::from_millis(250);
/// Log lines in diagnostics.
const DIAG_LOG_LINES: usize = 40;

/// Which transport a peer listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP with Noise and Yamux.
    Tcp,
    /// QUIC v1 over UDP.
    Quic,
}

impl Transport {
    /// Both transports, TCP first.
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Quic];

    /// Lowercase name, also accepted by [`std::str::FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }

    /// `/ip4/<ip>/tcp/<port>` or `/ip4/<ip>/udp/<port>/quic-v1`.
    pub fn multiaddr(self, ip: Ipv4Addr, port: u16) -> String {
        match self {
            Transport::Tcp => format!("/ip4/{ip}/tcp/{port}"),
            Transport::Quic => format!("/ip4/{ip}/udp/{port}/quic-v1"),
        }
    }

    /// Whether a multiaddr uses this transport (for a relayed address: the
    /// transport to the relay).
    pub fn matches(self, addr: &str) -> bool {
        match self {
            Transport::Tcp => addr.contains("/tcp/"),
            Transport::Quic => addr.contains("/quic-v1"),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Transport {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| anyhow!("unknown transport {s:?}; expected tcp or quic"))
    }
}

/// A node's YAML config, built from the lab defaults plus dotted-key edits.
///
/// The defaults follow the lab's needs: AutoNAT serves non-global addresses
/// and probes quickly, discovery runs every second, peers have mDNS and UPnP
/// off, logs are JSON at [`LOG_LEVEL`], the admin endpoint is on
/// `127.0.0.1:9090` of the host, and the node listens on TCP and QUIC port
/// 4001 of every IPv4 interface.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    role: Role,
    root: Map<String, Value>,
}

impl NodeConfig {
    /// Lab defaults for `role`, named `name`.
    pub fn new(role: Role, name: &str) -> Self {
        let mut cfg = Self {
            role,
            root: Map::new(),
        };
        cfg = cfg
            .set("name", name)
            .set("shutdown_grace_period", "3s")
            .set("admin.listen", format!("127.0.0.1:{ADMIN_PORT}"))
            .set("log.format", "json")
            .set(
                "log.level",
                std::env::var("JANTAR_LAB_LOG").unwrap_or_else(|_| LOG_LEVEL.to_string()),
            )
            .set("network.autonat.only_global_ips", false)
            .set("network.autonat.boot_delay", "1s")
            .set("network.autonat.retry_interval", "5s")
            .set("network.dht.discovery_interval", "1s")
            .listen(&[
                Transport::Tcp.multiaddr(Ipv4Addr::UNSPECIFIED, P2P_PORT),
                Transport::Quic.multiaddr(Ipv4Addr::UNSPECIFIED, P2P_PORT),
            ]);
        if role == Role::Peer {
            cfg = cfg
                .set("network.enable_mdns", false)
                .set("network.enable_upnp", false);
        }
        cfg
    }

    /// The role this config is for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configured node name.
    pub fn name(&self) -> &str {
        self.root
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("node")
    }

    /// Sets `key` (dotted, e.g. `relay.max_circuit_bytes`) to `value`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("split yields at least one part");
        let mut map = &mut self.root;
        for part in parts {
            let entry = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            map = entry.as_object_mut().expect("just made an object");
        }
        map.insert(last.to_string(), value.into());
        self
    }

    /// Removes `key` (dotted) if present.
    pub fn unset(mut self, key: &str) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("split yields at least one part");
        let mut map = &mut self.root;
        for part in parts {
            match map.get_mut(part).and_then(Value::as_object_mut) {
                Some(m) => map = m,
                None => return self,
            }
        }
        map.remove(last);
        self
    }

    /// The value at `key` (dotted), if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut cur: Option<&Value> = None;
        let mut map = &self.root;
        for part in key.split('.') {
            let v = map.get(part)?;
            cur = Some(v);
            if let Some(m) = v.as_object() {
                map = m;
            }
        }
        cur
    }

    fn set_list(self, key: &str, items: &[String]) -> Self {
        self.set(key, Value::from(items.to_vec()))
    }

    /// `network.listen_addresses`.
    pub fn listen(self, addrs: &[String]) -> Self {
        self.set_list("network.listen_addresses", addrs)
    }

    /// Listen on one transport only, on [`P2P_PORT`] of every interface.
    pub fn only(self, transport: Transport) -> Self {
        self.listen(&[transport.multiaddr(Ipv4Addr::UNSPECIFIED, P2P_PORT)])
    }

    /// `network.external_addresses`.
    pub fn external(self, addrs: &[String]) -> Self {
        self.set_list("network.external_addresses", addrs)
    }

    /// `network.bootstrap_nodes`.
    pub fn bootstrap_nodes(self, addrs: &[String]) -> Self {
        self.set_list("network.bootstrap_nodes", addrs)
    }

    /// `network.relay_nodes`.
    pub fn relay_nodes(self, addrs: &[String]) -> Self {
        self.set_list("network.relay_nodes", addrs)
    }

    /// `network.tls.trusted_certificates`.
    pub fn trusted_certificates(self, paths: &[PathBuf]) -> Self {
        let items: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        self.set_list("network.tls.trusted_certificates", &items)
    }

    /// The config as YAML, with `data_dir` set to `data_dir`.
    pub fn to_yaml(&self, data_dir: &Path) -> String {
        let mut root = self.root.clone();
        root.insert(
            "data_dir".to_string(),
            Value::from(data_dir.display().to_string()),
        );
        let mut out = String::new();
        write_yaml_map(&mut out, &root, 0);
        out
    }
}

/// Block-style YAML for a JSON object; strings are JSON-quoted, which YAML
/// reads as double-quoted scalars.
fn write_yaml_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    let pad = " ".repeat(indent);
    for (key, value) in map {
        match value {
            Value::Object(m) if !m.is_empty() => {
                let _ = writeln!(out, "{pad}{key}:");
                write_yaml_map(out, m, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                let _ = writeln!(out, "{pad}{key}:");
                for item in items {
                    let _ = writeln!(out, "{pad}  - {}", yaml_scalar(item));
                }
            }
            other => {
                let _ = writeln!(out, "{pad}{key}: {}", yaml_scalar(other));
            }
        }
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "[]".to_string(),
        Value::Object(m) if m.is_empty() => "{}".to_string(),
        other => other.to_string(),
    }
}

/// Runs one HTTP request to the admin endpoint of `host` from inside its
/// namespace. Returns the status code and body.
pub async fn admin_request(
    host: &LabHost,
    post: bool,
    path_and_query: &str,
    token: Option<String>,
    limit: Duration,
) -> Result<(u16, String)> {
    let url = format!("http://127.0.0.1:{ADMIN_PORT}{path_and_query}");
    let what = format!(
        "{} {url} on {}",
        if post { "POST" } else { "GET" },
        host.name()
    );
    let request = async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(limit)
            .build()?;
        let mut req = if post {
            client.post(&url)
        } else {
            client.get(&url)
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let body = resp.text().await?;
        Ok::<_, reqwest::Error>((code, body))
    };
    let handle = host
        .patchbay()
        .spawn(move |_| request)
        .with_context(|| format!("{what}: namespace runtime unavailable"))?;
    let abort = handle.abort_handle();
    match tokio::time::timeout(limit + Duration::from_secs(2), handle).await {
        Ok(joined) => joined
            .with_context(|| format!("{what}: task failed"))?
            .with_context(|| what.clone()),
        Err(_) => {
            abort.abort();
            bail!("{what}: no answer within {limit:?}")
        }
    }
}

/// One start of a node's process.
struct Run {
    process: LabProcess,
    log: PathBuf,
}

/// A `jantar-*` binary running (or stopped) on a lab host.
pub struct LabNode {
    name: String,
    role: Role,
    host: LabHost,
    dir: PathBuf,
    config: NodeConfig,
    peer_id: String,
    listen: Mutex<Vec<String>>,
    run: Mutex<Option<Run>>,
    /// Log files of earlier runs, oldest first.
    old_logs: Mutex<Vec<PathBuf>>,
    /// Client commands run so far (numbers their log files).
    cli_runs: Mutex<u32>,
    starts: Mutex<u32>,
}

impl std::fmt::Debug for LabNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabNode")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("host", &self.host.name())
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl LabNode {
    /// Writes `config` under the host's log directory, creates the identity
    /// (with the binary's `id` command), starts the binary inside `host` and
    /// waits for its start-up line.
    pub async fn start(host: &LabHost, config: NodeConfig) -> Result<LabNode> {
        let role = config.role();
        let name = config.name().to_string();
        let dir = host.log_dir().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create node directory {}", dir.display()))?;
        let data_dir = dir.join("data");
        let cfg_path = dir.join("node.cfg");
        std::fs::write(&cfg_path, config.to_yaml(&data_dir))
            .with_context(|| format!("write {}", cfg_path.display()))?;
        let peer_id = crate::harness::peer_id_of(role, &cfg_path)
            .with_context(|| format!("identity of {name}"))?;
        let node = LabNode {
            name,
            role,
            host: host.clone(),
            dir,
            config,
            peer_id,
            listen: Mutex::new(Vec::new()),
            run: Mutex::new(None),
            old_logs: Mutex::new(Vec::new()),
            cli_runs: Mutex::new(0),
            starts: Mutex::new(0),
        };
        node.launch().await?;
        Ok(node)
    }

    /// Starts the process again after [`stop`](Self::stop) or
    /// [`kill`](Self::kill), with the same config and identity.
    pub async fn restart(&self) -> Result<()> {
        if self.is_running() {
            bail!("{} is still running", self.name);
        }
        self.launch().await
    }

    async fn launch(&self) -> Result<()> {
        let n = {
            let mut starts = self.starts.lock().unwrap();
            *starts += 1;
            *starts
        };
        let log = if n == 1 {
            self.dir.join("node.log")
        } else {
            self.dir.join(format!("node.{n}.log"))
        };
        let spec = ProcessSpec::new(self.role.path())
            .args(["-c".into(), self.config_path().into_os_string()])
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("JANTAR_CONFIG")
            .log_file(&log);
        let process = self.host.spawn(spec)?;
        {
            let mut run = self.run.lock().unwrap();
            if let Some(old) = run.take() {
                self.old_logs.lock().unwrap().push(old.log);
            }
            *run = Some(Run { process, log });
        }
        let line = self
            .wait_for_log(START_TIMEOUT, |v| v["message"] == "jantar started")
            .await?;
        let started_id = line["peer_id"].as_str().unwrap_or_default();
        if started_id != self.peer_id {
            bail!(
                "{} started as {started_id}, but `id` said {}",
                self.name,
                self.peer_id
            );
        }
        *self.listen.lock().unwrap() = line["listen"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Ok(())
    }

    /// Node name (also its config `name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which binary runs.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The host the node runs on.
    pub fn host(&self) -> &LabHost {
        &self.host
    }

    /// The host's own address.
    pub fn ip(&self) -> Ipv4Addr {
        self.host.ip()
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The config the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Path of the written config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.cfg")
    }

    /// The token the node keeps in its data dir, which changes (`POST`) need.
    pub fn admin_token(&self) -> Option<String> {
        token::read(&token::path(&self.data_dir())).ok().flatten()
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Listen addresses from the latest start-up line.
    pub fn listen_addrs(&self) -> Vec<String> {
        self.listen.lock().unwrap().clone()
    }

    /// `/ip4/<host ip>/<transport>/4001/p2p/<peer id>`: how datacenter nodes
    /// are dialed.
    pub fn addr(&self, transport: Transport) -> String {
        format!(
            "{}/p2p/{}",
            transport.multiaddr(self.ip(), P2P_PORT),
            self.peer_id
        )
    }

    /// `/ip4/<host ip>/tcp/443/tls/ws/p2p/<peer id>`.
    pub fn wss_addr(&self) -> String {
        format!(
            "/ip4/{}/tcp/{WSS_PORT}/tls/ws/p2p/{}",
            self.ip(),
            self.peer_id
        )
    }

    /// Path of the current (latest) log file.
    pub fn log_path(&self) -> PathBuf {
        self.run
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.log.clone())
            .unwrap_or_else(|| self.dir.join("node.log"))
    }

    /// Every log file, oldest first.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut all = self.old_logs.lock().unwrap().clone();
        all.push(self.log_path());
        all
    }

    /// The JSON lines of the current log.
    pub fn log_lines(&self) -> Vec<Value> {
        parse_log(&std::fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    /// The last `n` lines of the current log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none() && self.run.lock().unwrap().is_some()
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut run = self.run.lock().unwrap();
        run.as_mut()
            .and_then(|r| r.process.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits for the exit (killing after `grace`).
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus> {
        // Moved out so no lock is held across the wait.
        let taken = self.run.lock().unwrap().take();
        let Some(mut run) = taken else {
            bail!("{} is not running", self.name);
        };
        let result = run.process.terminate(grace).await;
        *self.run.lock().unwrap() = Some(run);
        Ok(result?.0)
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&self) -> Result<()> {
        match self.run.lock().unwrap().as_mut() {
            Some(run) => run.process.kill(),
            None => Ok(()),
        }
    }

    /// Waits for a JSON log line matching `pred`; fails early if the process
    /// exits without writing one.
    pub async fn wait_for_log(
        &self,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let exited = self.exit_status();
            if let Some(v) = self.log_lines().into_iter().find(|v| pred(v)) {
                return Ok(v);
            }
            if let Some(status) = exited {
                bail!(
                    "{} exited ({status}) before the expected log line\n{}",
                    self.name,
                    self.log_tail(DIAG_LOG_LINES)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: expected log line not seen within {limit:?}\n{}",
                    self.name,
                    self.log_tail(DIAG_LOG_LINES)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `jantar-<role> -c <config> args...` in this node's host (the
    /// client commands talk to the running daemon through its admin
    /// endpoint) and waits at most `limit` for it to exit. Returns the exit
    /// code and everything it printed.
    pub async fn cli(&self, args: &[&str], limit: Duration) -> Result<(i32, String)> {
        let seq = {
            let mut runs = self.cli_runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        let log = self.dir.join(format!("cli-{seq}.log"));
        let spec = ProcessSpec::new(self.role.path())
            .args(["-c".into(), self.config_path().into_os_string()])
            .args(args.iter().map(std::ffi::OsString::from))
            .env_remove("RUST_LOG")
            .env_remove("JANTAR_CONFIG")
            .log_file(&log);
        let mut process = self.host.spawn(spec)?;
        let status = process
            .wait(limit)
            .await
            .with_context(|| format!("{}: `{}`", self.name, args.join(" ")))?;
        Ok((status.code().unwrap_or(-1), process.read_log()))
    }

    /// `GET path` on the admin endpoint: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        admin_request(&self.host, false, path, None, HTTP_TIMEOUT).await
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let (code, body) = self.get(path).await?;
        if code != 200 {
            bail!("{} GET {path}: HTTP {code}: {body}", self.name);
        }
        serde_json::from_str(&body).with_context(|| format!("{} GET {path}: {body}", self.name))
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<Value> {
        self.get_json("/status").await
    }

    /// `POST /connect?addr=...`: status code and the JSON answer.
    pub async fn connect(&self, addr: &str) -> Result<(u16, Value)> {
        let query = format!("/connect?addr={}", percent_encode(addr));
        let (code, body) =
            admin_request(&self.host, true, &query, self.admin_token(), HTTP_TIMEOUT).await?;
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((code, value))
    }

    /// Polls `check` until it is true or `limit` passes; on timeout or exit
    /// the error names `what` and carries this node's diagnostics.
    pub async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        check: impl AsyncFn(&LabNode) -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if check(self).await? {
                return Ok(start.elapsed());
            }
            if let Some(status) = self.exit_status() {
                bail!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    self.name,
                    self.diagnose().await
                );
            }
            if start.elapsed() >= limit {
                bail!(
                    "{}: timed out after {limit:?} waiting for {what}\n{}",
                    self.name,
                    self.diagnose().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Log tail and `/status`, for failure messages.
    pub async fn diagnose(&self) -> String {
        let status = if self.is_running() {
            match admin_request(&self.host, false, "/status", None, Duration::from_secs(5)).await {
                Ok((_, body)) => body,
                Err(e) => format!("(no status: {e:#})"),
            }
        } else {
            format!("(not running: {:?})", self.exit_status())
        };
        format!(
            "----- {} ({}, host {} {}, peer {}) log tail ({}):\n{}\n----- {} /status:\n{}\n",
            self.name,
            self.role.binary(),
            self.host.name(),
            self.host.ip(),
            self.peer_id,
            self.log_path().display(),
            self.log_tail(DIAG_LOG_LINES),
            self.name,
            status
        )
    }
}

/// The JSON lines of a log text; other lines are skipped.
pub fn parse_log(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Percent-encodes a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as written by
/// the nodes' JSON logs (`2026-11-26T12:07:21.123456Z`).
pub fn parse_timestamp(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

/// The timestamp of a JSON log line, in seconds since the epoch.
pub fn line_time(line: &Value) -> Option<f64> {
    line["timestamp"].as_str().and_then(parse_timestamp)
}

/// Diagnostics of several nodes.
pub async fn diagnose_nodes(nodes: &[&LabNode]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push_str(&n.diagnose().await);
    }
    out
}

/// The strings of a JSON array.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_seconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0.0));
        let t = parse_timestamp("2026-11-26T12:07:21.500000Z").unwrap();
        assert!((t - 1_795_694_841.5).abs() < 1e-6, "{t}");
    }

    #[test]
    fn config_renders_nested_yaml() {
        let cfg = NodeConfig::new(Role::Relay, "r")
            .set("relay.max_circuit_bytes", "64KiB")
            .bootstrap_nodes(&["/ip4/1.2.3.4/tcp/4001/p2p/x".into()]);
        let yaml = cfg.to_yaml(Path::new("/d"));
        assert!(
            yaml.contains("relay:\n  max_circuit_bytes: \"64KiB\"\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("  bootstrap_nodes:\n    - \"/ip4/1.2.3.4/tcp/4001/p2p/x\"\n"),
            "{yaml}"
        );
        assert_eq!(
            cfg.get("relay.max_circuit_bytes"),
            Some(&Value::from("64KiB"))
        );
        let cfg = cfg.unset("relay.max_circuit_bytes");
        assert_eq!(cfg.get("relay.max_circuit_bytes"), None);
    }
}
