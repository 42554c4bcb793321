//! Starts the real `jantar-*` binaries as processes with generated configs, waits on
//! their readiness, and prints what a person needs when something goes wrong: each
//! node's log tail and `/status`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use jantar_net::admin::token;
use serde_json::Value;

/// Directory holding the built binaries. Built once per test process with
/// `cargo build --bins` (a no-op when they are current); `JANTAR_BIN_DIR` skips that.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("JANTAR_BIN_DIR") {
            return PathBuf::from(d);
        }
        // target/<profile>/deps/<test binary> or target/<profile>/<binary> -> target/<profile>
        let exe = std::env::current_exe().expect("executable path");
        let mut dir = exe
            .parent()
            .expect("executable in a directory")
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let profile_release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "jantar-bootstrap",
            "-p",
            "jantar-relay",
            "-p",
            "jantar-peer",
            // This crate too, so that its dependencies' features (tokio's `test-util`
            // among them) are unified as in `cargo test --workspace`, and the binaries
            // link the libraries that run already built instead of a second libp2p.
            "-p",
            "jantar-tests",
            "--bin",
            "jantar-bootstrap",
            "--bin",
            "jantar-relay",
            "--bin",
            "jantar-peer",
            // As `cargo test --workspace` builds them (this crate turns the feature on);
            // the fail points let tests make a node's task die on purpose.
            "--features",
            "jantar-net/failpoints",
        ]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run cargo build for the jantar binaries");
        assert!(
            status.success(),
            "cargo build of the jantar binaries failed"
        );
        dir
    })
}

/// Which executable a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Bootstrap,
    Relay,
    Peer,
}

impl Role {
    pub fn binary(self) -> &'static str {
        match self {
            Role::Bootstrap => "jantar-bootstrap",
            Role::Relay => "jantar-relay",
            Role::Peer => "jantar-peer",
        }
    }

    pub fn path(self) -> PathBuf {
        bin_dir().join(self.binary())
    }
}

/// Runs a binary to completion (for `--check`, `id` and refusals).
pub fn run_to_end(role: Role, args: &[&str]) -> Result<(ExitStatus, String, String)> {
    let out = Command::new(role.path())
        .args(args)
        .env_remove("JANTAR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", role.binary()))?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs `cmd` in a process group of its own until it ends or `limit` passes, then kills
/// the group (its children with it). Returns its output either way, read while it runs
/// (a child that writes more than a pipe holds never blocks), and whether the limit cut
/// it short.
pub fn output_within(mut cmd: Command, limit: Duration) -> Result<(Output, bool)> {
    use std::os::unix::process::CommandExt;

    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    let group = nix::unistd::Pid::from_raw(-i32::try_from(child.id()).context("pid")?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => Ok((out?, false)),
        Err(_) => {
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            Ok((rx.recv()??, true))
        }
    }
}

/// Creates the node's data dir, writes its identity key (via `id`) and returns its peer id.
pub fn peer_id_of(role: Role, config: &Path) -> Result<String> {
    let (status, stdout, stderr) = run_to_end(role, &["-c", config.to_str().unwrap(), "id"])?;
    if !status.success() {
        bail!("{} id failed ({status}): {stderr}", role.binary());
    }
    stdout
        .lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} id printed nothing", role.binary()))
}

/// A process's resident memory, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub rss_kib: u64,
    /// The most it has been resident since it started.
    pub hwm_kib: u64,
}

/// A running node process.
pub struct Node {
    pub name: String,
    pub role: Role,
    pub peer_id: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub admin: String,
    /// Addresses from the start-up line.
    pub listen: Vec<String>,
    child: Option<Child>,
    /// A process of this node's that the test did not start (one a rolled-back update
    /// ran in the trial's place): killed with the node.
    detached: Option<u32>,
    /// Start-up lines seen in the log so far.
    starts_seen: usize,
    http: reqwest::Client,
}

impl Node {
    /// Writes `config` (YAML, without `data_dir`/`admin`/`log`, which are added) into
    /// `root/name/`, starts the binary and waits for its start-up line.
    pub async fn start(root: &Path, name: &str, role: Role, config: &str) -> Result<Node> {
        Node::start_with_env(root, name, role, config, &[]).await
    }

    /// Like [`Node::start`], with extra environment variables for the process.
    pub async fn start_with_env(
        root: &Path,
        name: &str,
        role: Role,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Node> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("node.cfg");
        let full = format!(
            "name: {name}\ndata_dir: {}\nadmin:\n  listen: \"127.0.0.1:0\"\nlog:\n  format: json\n  level: \"info,jantar_net=debug\"\n{config}",
            dir.display()
        );
        std::fs::write(&cfg, full)?;
        Node::spawn_in(name, role, &role.path(), dir, env).await
    }

    /// Like [`Node::start`], running `binary` instead of the built one (a copy that an
    /// update may replace).
    pub async fn start_with_binary(
        root: &Path,
        name: &str,
        role: Role,
        binary: &Path,
        config: &str,
    ) -> Result<Node> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let full = format!(
            "name: {name}\ndata_dir: {}\nadmin:\n  listen: \"127.0.0.1:0\"\nlog:\n  format: json\n  level: \"info,jantar_net=debug\"\n{config}",
            dir.display()
        );
        std::fs::write(dir.join("node.cfg"), full)?;
        Node::spawn_in(name, role, binary, dir, &[]).await
    }

    /// Starts `name` again with the config an earlier [`Node::start`] wrote into
    /// `root/name/` (same data dir: identity, peer store, files).
    pub async fn restart(root: &Path, name: &str, role: Role) -> Result<Node> {
        Node::spawn_in(name, role, &role.path(), root.join(name), &[]).await
    }

    /// Like [`Node::restart`], running `binary`.
    pub async fn restart_with_binary(
        root: &Path,
        name: &str,
        role: Role,
        binary: &Path,
    ) -> Result<Node> {
        Node::spawn_in(name, role, binary, root.join(name), &[]).await
    }

    async fn spawn_in(
        name: &str,
        role: Role,
        binary: &Path,
        dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Node> {
        let cfg = dir.join("node.cfg");
        let log = dir.join("node.log");
        let out = std::fs::File::create(&log)?;
        let mut tries = 0;
        let child = loop {
            let spawned = Command::new(binary)
                .args(["-c", cfg.to_str().unwrap(), "run"])
                .env_remove("RUST_LOG")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out.try_clone()?)
                .spawn();
            match spawned {
                // A binary copied just before (an update test's own copy) can be held
                // open for writing for a moment by a process another thread is forking:
                // ETXTBSY until that child has executed.
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                r => break r.with_context(|| format!("spawn {}", binary.display()))?,
            }
        };
        Node::attach(name, role, child, log, dir).await
    }

    /// Takes over a process started elsewhere (writing JSON logs to `log`) and waits for
    /// its start-up line.
    pub async fn attach(
        name: &str,
        role: Role,
        child: Child,
        log: PathBuf,
        dir: PathBuf,
    ) -> Result<Node> {
        let mut node = Node {
            name: name.into(),
            role,
            peer_id: String::new(),
            dir,
            log,
            admin: String::new(),
            listen: vec![],
            child: Some(child),
            detached: None,
            starts_seen: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let line = node
            .wait_for_log(Duration::from_secs(30), |v| {
                v["message"] == "jantar started"
            })
            .await?;
        node.starts_seen = 1;
        node.take_start_line(&line);
        Ok(node)
    }

    fn take_start_line(&mut self, line: &Value) {
        self.peer_id = line["peer_id"].as_str().unwrap_or_default().to_string();
        self.admin = line["admin"].as_str().unwrap_or_default().to_string();
        self.listen = line["listen"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
    }

    /// Waits for the node's next start-up line (the process ran another binary in its
    /// place: an update, or a rollback) and follows it: its admin endpoint, addresses
    /// and process. The process the test started may have ended meanwhile.
    pub async fn follow_restart(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let starts: Vec<Value> = self
                .log_lines()
                .into_iter()
                .filter(|v| v["message"] == "jantar started")
                .collect();
            if let Some(line) = starts.get(self.starts_seen) {
                let line = line.clone();
                self.starts_seen += 1;
                self.take_start_line(&line);
                let pid = line["pid"].as_u64().map(|p| p as u32);
                if pid.is_some() && pid != self.pid() {
                    self.detached = pid;
                }
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no new start-up line within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if let Some(c) = self.child.as_mut()
                && c.try_wait().ok().flatten().is_some()
            {
                self.child = None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory now and its high-water mark (`VmRSS`, `VmHWM` from `/proc`).
    pub fn memory(&self) -> Result<Memory> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {key} in /proc/{pid}/status"))
        };
        Ok(Memory {
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }

    /// The first listen address with `/p2p/<peer id>` appended.
    pub fn addr(&self) -> String {
        format!("{}/p2p/{}", self.listen[0], self.peer_id)
    }

    /// The JSON log lines so far.
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for a JSON log line matching `pred`, failing early if the process exits.
    pub async fn wait_for_log(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.log_lines().into_iter().find(|v| pred(v)) {
                return Ok(v);
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited ({status}) before the expected log line\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: expected log line not seen within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let (code, body) = self.get(path).await?;
        if code != 200 {
            bail!("{} GET {path}: HTTP {code}: {body}", self.name);
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The token the node keeps in its data dir (changes need it), if it made one.
    pub fn admin_token(&self) -> Option<String> {
        token::read(&token::path(&self.dir)).ok().flatten()
    }

    /// A POST to the admin endpoint with the node's token, as the client commands send it.
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(format!("http://{}{path}", self.admin))
            .timeout(Duration::from_secs(40));
        match self.admin_token() {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A POST with a query; returns the status and the JSON answer.
    pub async fn post_json(&self, path: &str, query: &[(&str, &str)]) -> Result<(u16, Value)> {
        let r = self.post(path).query(query).send().await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await?))
    }

    /// A POST of a JSON body; returns the status and the body of the answer.
    pub async fn post_json_body(&self, path: &str, body: &Value) -> Result<(u16, String)> {
        let r = self.post(path).json(body).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    pub async fn status(&self) -> Result<Value> {
        self.get_json("/status").await
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(self.get("/metrics").await?.1)
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let name = self.name.clone();
        self.wait_until(timeout, &format!("{name} ready"), async |n: &Node| {
            Ok(n.get("/readyz")
                .await
                .map(|(c, _)| c == 200)
                .unwrap_or(false))
        })
        .await
    }

    /// Polls `check` every 200 ms until it is true or `timeout` passes; on timeout the
    /// error carries this node's log tail and status.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        check: impl AsyncFn(&Node) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if check(self).await? {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    self.name,
                    self.diagnose().await
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.diagnose().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Log tail and `/status` of this node, for failure messages.
    pub async fn diagnose(&self) -> String {
        let status = match self.get("/status").await {
            Ok((_, body)) => body,
            Err(e) => format!("(no status: {e})"),
        };
        format!(
            "--- {} ({}) log tail:\n{}\n--- {} /status:\n{}\n",
            self.name,
            self.role.binary(),
            self.log_tail(40),
            self.name,
            status
        )
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} already stopped", self.name))?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} still running {timeout:?} later\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} already stopped", self.name))?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let start = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.detached.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Starts a relay that serves at once: its listen address (`listen`, such as
/// `/ip4/127.0.0.1/tcp/0`) is also its configured external address. The port is learned
/// from a first start and the relay restarted on it. `network` goes under `network:`
/// (after the addresses), `relay` under `relay:`; returns once the relay is ready.
pub async fn start_serving_relay(
    root: &Path,
    name: &str,
    listen: &str,
    network: &str,
    relay: &str,
) -> Result<Node> {
    let first = Node::start(
        root,
        name,
        Role::Relay,
        &format!("network:\n  listen_addresses: [\"{listen}\"]\n"),
    )
    .await?;
    let addr = first
        .listen
        .first()
        .context("the relay has no listen address")?
        .clone();
    drop(first);
    let relay = if relay.is_empty() {
        String::new()
    } else {
        format!("relay:\n{relay}")
    };
    let mut node = Node::start(
        root,
        name,
        Role::Relay,
        &format!(
            "network:\n  listen_addresses: [\"{addr}\"]\n  external_addresses: [\"{addr}\"]\n{network}{relay}"
        ),
    )
    .await?;
    node.wait_ready(Duration::from_secs(30)).await?;
    Ok(node)
}

/// A listen address on 127.0.0.1 with a port the kernel picks.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// Diagnostics of several nodes at once.
pub async fn diagnose_all(nodes: &[&Node]) -> String {
    let mut s = String::new();
    for n in nodes {
        let _ = write!(s, "{}", n.diagnose().await);
    }
    s
}

/// Settings that make loopback nodes settle in seconds: AutoNAT on private
/// addresses with a 1 s boot delay, DHT discovery every second. Goes under
/// `network:`.
pub const LOOPBACK_FAST: &str =
    "  autonat: {only_global_ips: false, boot_delay: 1s}\n  dht: {discovery_interval: 1s}\n";

/// A bootstrap node and peers on 127.0.0.1, each in its own directory under
/// `root` (`root/<name>/`, downloads in `root/<name>/downloads`).
pub struct LoopbackNet {
    pub root: PathBuf,
    pub boot: Node,
    /// Extra lines under every peer's `network:` key.
    peer_network: String,
    ready: Duration,
}

/// Starts a bootstrap node `root/boot` on 127.0.0.1 with [`LOOPBACK_FAST`] and waits
/// until it is ready (at most `ready`).
pub async fn start_loopback_bootstrap(root: &Path, ready: Duration) -> Result<Node> {
    let mut boot = Node::start(
        root,
        "boot",
        Role::Bootstrap,
        &format!("network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{LOOPBACK_FAST}"),
    )
    .await?;
    boot.wait_ready(ready).await?;
    Ok(boot)
}

impl LoopbackNet {
    /// Starts the bootstrap node and waits until it is ready (at most `ready`,
    /// which also bounds each peer's start).
    pub async fn start(root: &Path, peer_network: &str, ready: Duration) -> Result<LoopbackNet> {
        let boot = start_loopback_bootstrap(root, ready).await?;
        Ok(LoopbackNet {
            root: root.to_path_buf(),
            boot,
            peer_network: peer_network.to_string(),
            ready,
        })
    }

    /// Starts peer `name` with `extra` top-level config lines and waits until it
    /// is ready.
    pub async fn peer(&self, name: &str, extra: &str) -> Result<Node> {
        let mut p =
            Node::start(&self.root, name, Role::Peer, &self.peer_config(name, extra)).await?;
        p.wait_ready(self.ready).await?;
        Ok(p)
    }

    /// Like [`LoopbackNet::peer`], running `binary` (a copy an update may replace).
    pub async fn peer_with_binary(&self, name: &str, extra: &str, binary: &Path) -> Result<Node> {
        let mut p = Node::start_with_binary(
            &self.root,
            name,
            Role::Peer,
            binary,
            &self.peer_config(name, extra),
        )
        .await?;
        p.wait_ready(self.ready).await?;
        Ok(p)
    }

    fn peer_config(&self, name: &str, extra: &str) -> String {
        format!(
            "download_dir: {}\n{extra}network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n{}  bootstrap_nodes: [\"{}\"]\n{LOOPBACK_FAST}",
            self.root.join(name).join("downloads").display(),
            self.peer_network,
            self.boot.addr()
        )
    }
}

impl Node {
    /// Runs a `jantar-peer` client command (`share`, `get`, ...) against this
    /// node: its config and admin endpoint. Returns exit status, stdout, stderr.
    pub fn cli(&self, args: &[&str]) -> Result<(ExitStatus, String, String)> {
        let cfg = self.dir.join("node.cfg");
        let cfg = cfg.to_str().context("config path is not UTF-8")?;
        let mut full = vec!["-c", cfg, "--admin-listen", &self.admin];
        full.extend_from_slice(args);
        run_to_end(Role::Peer, &full)
    }

    /// `share PATH` on this node; returns the file's ID (the second line of the
    /// output), or the command's error output.
    pub fn share(&self, path: &Path) -> Result<String> {
        let path = path.to_str().context("path is not UTF-8")?;
        let (status, out, err) = self.cli(&["share", path])?;
        if !status.success() {
            bail!("share {path} failed: {err}");
        }
        out.lines()
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("share printed no ID: {out}"))
    }
}

/// Sum of a metric in a Prometheus exposition over the label sets that contain every
/// one of `labels` (written as in the exposition: `reason="key_full"`).
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes `size` bytes of a deterministic, incompressible pattern (xorshift, varied by
/// `seed`) to `path`, so that no two chunks of a test file repeat.
pub fn random_file(path: &Path, size: usize, seed: u64) -> Result<()> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed ^ size as u64;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data)?;
    Ok(())
}
