//! `jantar-peer share|get|ls|rm|peers|status|send|messages`: clients of the running
//! daemon's admin endpoint.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

use crate::config::Config;

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
    /// List connected peers.
    Peers,
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
}

struct Client {
    addr: SocketAddr,
    token: Option<String>,
}

impl Client {
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| {
                format!(
                    "no daemon running at {}: start it with `jantar-peer run` ({e})",
                    self.addr
                )
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((code, v))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let (code, v) = self.request(method, path, body).await?;
        if code == 200 {
            Ok(v)
        } else {
            Err(v["error"]
                .as_str()
                .map_or_else(|| format!("HTTP {code}: {v}"), str::to_string))
        }
    }
}

/// Runs a client command against the daemon named by `config` (its `admin.listen`).
pub fn run(config: &Config, cmd: ClientCommand, json: bool) -> ExitCode {
    let Some(mut addr) = config.admin_listen else {
        eprintln!(
            "jantar-peer: the daemon's admin endpoint is off (admin.listen: off); client commands need it"
        );
        return ExitCode::from(crate::cli::EXIT_CONFIG);
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = Client {
        addr,
        token: config.admin_token.clone(),
    };
    let runtime = match crate::cli::runtime("jantar-peer", false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(execute(&client, cmd, json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jantar-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn human_size(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

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

async fn execute(c: &Client, cmd: ClientCommand, json: bool) -> Result<(), String> {
    match cmd {
        ClientCommand::Share { path } => {
            let path =
                std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let v = c
                .ok(
                    "POST",
                    &format!("/files?path={}", encode(&path.to_string_lossy())),
                    None,
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "shared {} ({})",
                    v["name"].as_str().unwrap_or("?"),
                    human_size(v["size"].as_u64().unwrap_or(0))
                );
                println!("{}", v["id"].as_str().unwrap_or("?"));
            }
        }
        ClientCommand::Get {
            id,
            output,
            no_wait,
        } => {
            let id: crate::files::FileId = id.parse()?;
            let mut path = format!("/files/{id}/get");
            if let Some(out) = output {
                let out =
                    std::path::absolute(&out).map_err(|e| format!("{}: {e}", out.display()))?;
                path.push_str(&format!("?out={}", encode(&out.to_string_lossy())));
            }
            let mut v = c.ok("POST", &path, None).await?;
            let tty = std::io::stderr().is_terminal();
            while !no_wait && v["state"] == "fetching" {
                if !json {
                    let done = v["chunks_done"].as_u64().unwrap_or(0);
                    let total = v["chunks_total"].as_u64();
                    let line = match total {
                        Some(t) if t > 0 => format!(
                            "{}: {}/{} chunks ({}%), {} providers",
                            short(&id.to_string()),
                            done,
                            t,
                            done * 100 / t,
                            v["providers"]
                        ),
                        _ => format!("{}: looking for providers...", short(&id.to_string())),
                    };
                    if tty {
                        eprint!("\r{line}   ");
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                v = c.ok("GET", &format!("/files/{id}"), None).await?;
            }
            if tty && !json {
                eprintln!();
            }
            if json {
                print_json(&v);
            }
            match v["state"].as_str() {
                Some("failed") => {
                    return Err(v["error"].as_str().unwrap_or("fetch failed").to_string());
                }
                Some("complete") if !json => println!("{}", v["path"].as_str().unwrap_or("?")),
                _ if !json => println!("fetching into {}", v["path"].as_str().unwrap_or("?")),
                _ => {}
            }
        }
        ClientCommand::Ls => {
            let v = c.ok("GET", "/files", None).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            for f in v["files"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:>10}  {:<8}  {}",
                    short(f["id"].as_str().unwrap_or("")),
                    human_size(f["size"].as_u64().unwrap_or(0)),
                    f["origin"].as_str().unwrap_or(""),
                    f["name"].as_str().unwrap_or("")
                );
            }
            for f in v["fetching"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:>10}  {:<8}  {} ({}/{} chunks)",
                    short(f["id"].as_str().unwrap_or("")),
                    f["size"]
                        .as_u64()
                        .map(human_size)
                        .unwrap_or_else(|| "?".into()),
                    "fetching",
                    f["name"].as_str().unwrap_or(""),
                    f["chunks_done"],
                    f["chunks_total"]
                );
            }
        }
        ClientCommand::Rm { id } => {
            let id: crate::files::FileId = id.parse()?;
            let v = c.ok("DELETE", &format!("/files/{id}"), None).await?;
            if json {
                print_json(&v);
            } else {
                println!("removed {}", v["name"].as_str().unwrap_or("?"));
            }
        }
        ClientCommand::Peers => {
            let v = c.ok("GET", "/status", None).await?;
            if json {
                print_json(&v["connections"]);
                return Ok(());
            }
            for conn in v["connections"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<7}  {:<8}  {}",
                    conn["peer_id"].as_str().unwrap_or(""),
                    conn["kind"].as_str().unwrap_or(""),
                    conn["direction"].as_str().unwrap_or(""),
                    conn["address"].as_str().unwrap_or("")
                );
            }
        }
        ClientCommand::Status => {
            let v = c.ok("GET", "/status", None).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            println!("peer id:     {}", v["peer_id"].as_str().unwrap_or(""));
            println!("ready:       {}", v["ready"]);
            println!("NAT status:  {}", v["nat_status"].as_str().unwrap_or(""));
            println!("DHT mode:    {}", v["dht_mode"].as_str().unwrap_or("off"));
            println!("peers:       {}", v["connected_peers"]);
            for r in v["reservations"].as_array().into_iter().flatten() {
                println!(
                    "relay:       {} ({})",
                    r["address"]
                        .as_str()
                        .unwrap_or(r["relay"].as_str().unwrap_or("")),
                    r["state"].as_str().unwrap_or("")
                );
            }
            for a in v["listen_addresses"].as_array().into_iter().flatten() {
                println!("listening:   {}", a.as_str().unwrap_or(""));
            }
        }
        ClientCommand::Send { text } => {
            let v = c
                .ok(
                    "POST",
                    "/messages",
                    Some(serde_json::json!({ "text": text })),
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                println!("sent");
            }
        }
        ClientCommand::Messages { follow } => {
            let mut after = 0;
            loop {
                let v = c
                    .ok("GET", &format!("/messages?after={after}"), None)
                    .await?;
                for m in v.as_array().into_iter().flatten() {
                    after = after.max(m["seq"].as_u64().unwrap_or(0));
                    if json {
                        println!("{m}");
                    } else {
                        println!(
                            "[{}] {}: {}",
                            m["sent_at"],
                            short(m["from"].as_str().unwrap_or("")),
                            m["text"].as_str().unwrap_or("")
                        );
                    }
                }
                if !follow {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Ok(())
}
