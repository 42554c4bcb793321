//! `jantar-peer share|get|ls|rm|peers|status|send|messages`: clients of the running
//! daemon's admin endpoint, reading its answers as the [`crate::status`] types.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use clap::Subcommand;
use hyper::Method;
use serde::Serialize;

use super::exit::{EXIT_CONFIG, out, runtime};
use crate::{
    admin::{AdminClient, ClientError},
    config::Config,
    files::FileId,
    status::{FetchState, FileInfo, FileList, MessageRecord, PeerScoreStatus, Progress, Status},
};

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Share a file with the network; prints its ID.
    Share { path: PathBuf },
    /// Fetch a file by ID into download_dir (or to -o PATH), with progress.
    Get {
        id: String,
        /// Where to write the file (must not exist).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Start the fetch and return at once instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// List files held and fetches in progress.
    Ls,
    /// Stop holding a file (replicas are deleted; your own files stay on disk).
    Rm { id: String },
    /// List connected peers with their scores (best first); `--known` adds every peer
    /// in the peer store.
    Peers {
        /// Every known peer, connected or not.
        #[arg(long)]
        known: bool,
    },
    /// Show the daemon's state: peer id, NAT status, relays, connections.
    Status,
    /// Send a message to every peer.
    Send { text: String },
    /// Show received messages.
    Messages {
        /// Keep printing new messages as they arrive.
        #[arg(long)]
        follow: bool,
    },
    /// `jantar-peer release publish`: share the artifacts, then verify and announce the
    /// manifest.
    #[command(skip)]
    PublishRelease {
        manifest: PathBuf,
        artifacts: Vec<PathBuf>,
    },
}

/// Runs a client command against the daemon named by `config` (its `admin.listen`).
pub(super) fn run(config: &Config, cmd: ClientCommand, json: bool) -> ExitCode {
    let Some(addr) = config.admin_listen else {
        eprintln!(
            "jantar-peer: the daemon's admin endpoint is off (admin.listen: off); client commands need it"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    // The configured token, else the one the daemon keeps in its data dir.
    let token = match &config.admin_token {
        Some(t) => Some(t.clone()),
        None => match crate::admin::token::read(&crate::admin::token::path(&config.data_dir)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("jantar-peer: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let client = Client {
        admin: AdminClient::new(addr, token),
        json,
    };
    let runtime = match runtime("jantar-peer", false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(client.execute(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jantar-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Client {
    admin: AdminClient,
    json: bool,
}

impl Client {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, String> {
        self.admin
            .call(method, path, body)
            .await
            .map_err(|e| match e {
                ClientError::Connect { addr, source } => format!(
                    "no daemon running at {addr}: start it with `jantar-peer run` ({source})"
                ),
                other => other.to_string(),
            })
    }

    async fn execute(&self, cmd: ClientCommand) -> Result<(), String> {
        match cmd {
            ClientCommand::Share { path } => self.share(path).await,
            ClientCommand::Get {
                id,
                output,
                no_wait,
            } => self.get(&id, output, no_wait).await,
            ClientCommand::Ls => self.ls().await,
            ClientCommand::Rm { id } => {
                let id: FileId = id.parse()?;
                let f: FileInfo = self
                    .call(Method::DELETE, &format!("/files/{id}"), None)
                    .await?;
                self.print(&f, || out!("removed {}", f.name));
                Ok(())
            }
            ClientCommand::Peers { known } => {
                let peers: Vec<PeerScoreStatus> = if known {
                    self.call(Method::GET, "/peers", None).await?
                } else {
                    let st: Status = self.call(Method::GET, "/status", None).await?;
                    st.peers
                };
                self.print(&peers, || print_peers(&peers));
                Ok(())
            }
            ClientCommand::Status => {
                let st: Status = self.call(Method::GET, "/status", None).await?;
                self.print(&st, || print_status(&st));
                Ok(())
            }
            ClientCommand::Send { text } => {
                let body = serde_json::json!({ "text": text });
                let m: MessageRecord = self.call(Method::POST, "/messages", Some(&body)).await?;
                self.print(&m, || out!("sent"));
                Ok(())
            }
            ClientCommand::Messages { follow } => self.messages(follow).await,
            ClientCommand::PublishRelease {
                manifest,
                artifacts,
            } => self.publish_release(&manifest, artifacts).await,
        }
    }

    /// `--json` prints `value`; otherwise `text` prints the human form.
    fn print<T: Serialize>(&self, value: &T, text: impl FnOnce()) {
        if self.json {
            out!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            text();
        }
    }

    async fn publish_release(
        &self,
        manifest: &std::path::Path,
        artifacts: Vec<PathBuf>,
    ) -> Result<(), String> {
        let bytes = std::fs::read(manifest)
            .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not JSON: {e}", manifest.display()))?;
        for a in artifacts {
            let path = std::path::absolute(&a).map_err(|e| format!("{}: {e}", a.display()))?;
            let url = format!("/files?path={}", encode(&path.to_string_lossy()));
            let f: FileInfo = self.call(Method::POST, &url, None).await?;
            if !self.json {
                out!("shared {} ({})", path.display(), f.id);
            }
        }
        let r: crate::status::ReleaseInfo =
            self.call(Method::POST, "/releases", Some(&body)).await?;
        self.print(&r, || {
            out!(
                "published {} (sequence {}) for {}",
                r.version,
                r.sequence,
                r.targets.join(", ")
            );
        });
        Ok(())
    }

    async fn share(&self, path: PathBuf) -> Result<(), String> {
        let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let url = format!("/files?path={}", encode(&path.to_string_lossy()));
        let f: FileInfo = self.call(Method::POST, &url, None).await?;
        self.print(&f, || {
            out!("shared {} ({})", f.name, human_size(f.size));
            out!("{}", f.id);
        });
        Ok(())
    }

    async fn get(&self, id: &str, output: Option<PathBuf>, no_wait: bool) -> Result<(), String> {
        let id: FileId = id.parse()?;
        let mut url = format!("/files/{id}/get");
        if let Some(out) = output {
            let out = std::path::absolute(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            url.push_str(&format!("?out={}", encode(&out.to_string_lossy())));
        }
        let mut p: Progress = self.call(Method::POST, &url, None).await?;
        let tty = std::io::stderr().is_terminal();
        while !no_wait && p.state == FetchState::Fetching {
            if tty && !self.json {
                eprint!("\r{}   ", progress_line(&p));
            }
            // The daemon answers as soon as the fetch ends, or with its progress
            // after the wait: the line on a terminal is redrawn four times a second.
            // A daemon that answers sooner while the fetch runs (one that cannot
            // park the request) is asked again only after the wait.
            let wait = Duration::from_millis(if tty { 250 } else { 5_000 });
            let asked = std::time::Instant::now();
            p = self
                .call(
                    Method::GET,
                    &format!("/files/{id}?wait_ms={}", wait.as_millis()),
                    None,
                )
                .await?;
            if p.state == FetchState::Fetching {
                tokio::time::sleep(wait.saturating_sub(asked.elapsed())).await;
            }
        }
        if tty && !self.json {
            eprintln!();
        }
        if self.json {
            self.print(&p, || {});
        }
        match p.state {
            FetchState::Failed => Err(p.error.unwrap_or_else(|| "fetch failed".into())),
            FetchState::Complete if !self.json => {
                out!("{}", p.path);
                Ok(())
            }
            _ if !self.json => {
                out!("fetching into {}", p.path);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn ls(&self) -> Result<(), String> {
        let list: FileList = self.call(Method::GET, "/files", None).await?;
        self.print(&list, || {
            for f in &list.files {
                out!(
                    "{}  {:>10}  {:<8}  {}",
                    short(&f.id),
                    human_size(f.size),
                    f.origin.as_str(),
                    f.name
                );
            }
            for f in &list.fetching {
                out!(
                    "{}  {:>10}  {:<8}  {} ({}/{} chunks)",
                    short(&f.id),
                    f.size.map_or_else(|| "?".into(), human_size),
                    "fetching",
                    f.name,
                    f.chunks_done,
                    f.chunks_total.map_or_else(|| "?".into(), |t| t.to_string())
                );
            }
        });
        Ok(())
    }

    async fn messages(&self, follow: bool) -> Result<(), String> {
        let mut after = 0;
        loop {
            let batch: Vec<MessageRecord> = self
                .call(Method::GET, &format!("/messages?after={after}"), None)
                .await?;
            for m in &batch {
                after = after.max(m.seq);
                if self.json {
                    out!("{}", serde_json::to_string(m).unwrap_or_default());
                } else {
                    out!("[{}] {}: {}", m.sent_at, short(&m.from), m.text);
                }
            }
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn print_status(st: &Status) {
    out!("peer id:     {}", st.peer_id);
    out!("ready:       {}", st.ready);
    out!("NAT status:  {}", st.nat_status.as_str());
    out!("DHT mode:    {}", st.dht_mode.as_deref().unwrap_or("off"));
    out!("peers:       {}", st.connected_peers);
    for r in &st.reservations {
        out!(
            "relay:       {} ({})",
            r.address.as_deref().unwrap_or(&r.relay),
            r.state
        );
    }
    for a in &st.listen_addresses {
        out!("listening:   {a}");
    }
    out!("version:     {}", st.version);
    if let Some(u) = &st.update {
        let newest = u.newest.as_ref().map_or("none".to_string(), |n| {
            format!("{} (sequence {})", n.version, n.sequence)
        });
        out!(
            "updates:     {} on channel {}; newest verified release {newest}",
            u.auto_update,
            u.channel
        );
        match &u.detail {
            Some(d) => out!("update:      {} ({d})", u.state),
            None => out!("update:      {}", u.state),
        }
    }
}

fn progress_line(p: &Progress) -> String {
    match p.chunks_total {
        Some(t) if t > 0 => format!(
            "{}: {}/{} chunks ({}%), {} providers",
            short(&p.id),
            p.chunks_done,
            t,
            u64::from(p.chunks_done) * 100 / u64::from(t),
            p.providers
        ),
        _ => format!("{}: looking for providers...", short(&p.id)),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn human_size(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// Percent-encodes a query value (paths may hold spaces and `&`).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line per peer: id, score and its components, group, where, RTT, state.
fn print_peers(peers: &[PeerScoreStatus]) {
    if peers.is_empty() {
        out!("no peers");
        return;
    }
    out!(
        "{:<52}  {:>5}  {:>5} {:>5} {:>5} {:>5}  {:<20}  {:<10}  {:>8}  STATE",
        "PEER",
        "SCORE",
        "RTT",
        "UP",
        "DATA",
        "DIV",
        "GROUP",
        "WHERE",
        "PING"
    );
    for p in peers {
        let place = match (&p.country, p.asn) {
            (Some(c), Some(a)) => format!("{c} AS{a}"),
            (Some(c), None) => c.clone(),
            (None, Some(a)) => format!("AS{a}"),
            (None, None) => p.rtt_band.as_str().to_string(),
        };
        let ping = p
            .rtt_ms
            .map_or_else(|| "-".into(), |ms| format!("{ms:.1}ms"));
        let state = match (p.connected, p.protected) {
            (true, true) => "connected, protected",
            (true, false) => "connected",
            (false, _) => "known",
        };
        out!(
            "{:<52}  {:>5.3}  {:>5.2} {:>5.2} {:>5.2} {:>5.2}  {:<20}  {:<10}  {:>8}  {state}",
            p.peer_id,
            p.score.total,
            p.score.rtt,
            p.score.uptime,
            p.score.availability,
            p.score.diversity,
            p.group,
            place,
            ping
        );
    }
}
