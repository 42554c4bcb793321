//! Small UDP/TCP probe used by the NAT lab.
//!
//! Every result is printed to stdout as one JSON object per line, so the lab
//! can read it back from the process log. The probe never decides whether a
//! behaviour is right or wrong; it only reports what it observed.
//!
//! * `serve`: UDP and TCP echo servers that answer `OBSERVED <ip:port>` with
//!   the source address they saw, plus TCP sinks that count received bytes.
//! * `udp-probe`: sends to several targets from one local port, reports the
//!   mapped address each target saw, then optionally listens for unsolicited
//!   datagrams on the same socket (until a stop file appears or time runs out).
//! * `udp-send`: fires a few datagrams from a chosen local port.
//! * `tcp-probe`: connects to targets and reports the mapped address or error.
//! * `tcp-bulk`: uploads a number of bytes to a sink and reports the rate.
//! * `p2p-echo`: connects to a Jantar node over libp2p (relay circuits
//!   included) and times pings and a bulk transfer echoed by the node.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    time::timeout,
};

#[derive(Parser)]
#[command(about = "UDP/TCP probe for the Jantar NAT lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run echo servers until killed.
    Serve {
        /// UDP echo port (repeatable).
        #[arg(long = "udp")]
        udp: Vec<u16>,
        /// TCP echo port (repeatable).
        #[arg(long = "tcp")]
        tcp: Vec<u16>,
        /// TCP sink port that counts bytes until EOF (repeatable).
        #[arg(long = "sink")]
        sink: Vec<u16>,
    },
    /// Learn the mapped address seen by each target from one local port.
    UdpProbe {
        /// Local UDP port (0 picks any).
        #[arg(long, default_value_t = 0)]
        local_port: u16,
        /// Echo server to probe, in order (repeatable).
        #[arg(long = "target", required = true)]
        targets: Vec<SocketAddr>,
        /// Time to wait for each reply.
        #[arg(long, default_value_t = 700)]
        timeout_ms: u64,
        /// Probes sent per target before giving up.
        #[arg(long, default_value_t = 3)]
        attempts: u32,
        /// After probing, keep the socket open this long and report every
        /// datagram that arrives.
        #[arg(long, default_value_t = 0)]
        listen_ms: u64,
        /// Stop listening early once this file exists.
        #[arg(long)]
        stop_file: Option<PathBuf>,
        /// After listening, probe the first target again.
        #[arg(long)]
        recheck: bool,
    },
    /// Send a few datagrams from a chosen local port.
    UdpSend {
        #[arg(long, default_value_t = 0)]
        local_port: u16,
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        payload: String,
        #[arg(long, default_value_t = 3)]
        count: u32,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
    /// Connect to TCP echo servers and report the mapped address.
    TcpProbe {
        #[arg(long = "target", required = true)]
        targets: Vec<SocketAddr>,
        #[arg(long, default_value_t = 1500)]
        timeout_ms: u64,
    },
    /// Exchange data with a Jantar node over libp2p: pings, then a bulk
    /// transfer, both echoed by the node's ping protocol.
    P2pEcho {
        /// Address of the node, ending in `/p2p/<peer id>` (may be a
        /// `/p2p-circuit` address).
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 5)]
        pings: u32,
        /// Bytes to send and get echoed after the pings.
        #[arg(long, default_value_t = 0)]
        bulk_bytes: u64,
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Upload bytes to a TCP sink and report the achieved rate.
    TcpBulk {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
}

/// How often a listening `udp-probe` looks for its stop file.
const STOP_POLL: Duration = Duration::from_millis(50);

fn emit(value: Value) {
    println!("{value}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { udp, tcp, sink } => serve(udp, tcp, sink).await,
        Cmd::UdpProbe {
            local_port,
            targets,
            timeout_ms,
            attempts,
            listen_ms,
            stop_file,
            recheck,
        } => {
            udp_probe(
                local_port,
                &targets,
                Duration::from_millis(timeout_ms),
                attempts,
                Duration::from_millis(listen_ms),
                stop_file.as_deref(),
                recheck,
            )
            .await
        }
        Cmd::UdpSend {
            local_port,
            target,
            payload,
            count,
            interval_ms,
        } => udp_send(local_port, target, &payload, count, interval_ms).await,
        Cmd::TcpProbe {
            targets,
            timeout_ms,
        } => {
            tcp_probe(&targets, Duration::from_millis(timeout_ms)).await;
            Ok(())
        }
        Cmd::TcpBulk {
            target,
            bytes,
            timeout_ms,
        } => tcp_bulk(target, bytes, Duration::from_millis(timeout_ms)).await,
        Cmd::P2pEcho {
            target,
            pings,
            bulk_bytes,
            timeout_ms,
        } => {
            let opts = jantar_tests::lab::EchoOptions {
                target: target
                    .parse()
                    .with_context(|| format!("bad multiaddr {target}"))?,
                pings,
                bulk_bytes,
                timeout: Duration::from_millis(timeout_ms),
            };
            let result = jantar_tests::lab::run_echo(opts, emit).await;
            if let Err(e) = &result {
                emit(json!({"event": "p2p_failed", "error": format!("{e:#}")}));
                emit(json!({"event": "done"}));
            }
            Ok(())
        }
    }
}

async fn serve(udp: Vec<u16>, tcp: Vec<u16>, sink: Vec<u16>) -> Result<()> {
    if udp.is_empty() && tcp.is_empty() && sink.is_empty() {
        bail!("serve needs at least one --udp, --tcp or --sink port");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for port in udp.iter().copied() {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .with_context(|| format!("bind udp {port}"))?;
        tasks.spawn(udp_echo(sock, port));
    }
    for port in tcp.iter().copied() {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .with_context(|| format!("bind tcp {port}"))?;
        tasks.spawn(tcp_echo(listener, port));
    }
    for port in sink.iter().copied() {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .await
            .with_context(|| format!("bind tcp sink {port}"))?;
        tasks.spawn(tcp_sink(listener, port));
    }
    emit(json!({"event": "ready", "udp": udp, "tcp": tcp, "sink": sink}));
    while let Some(res) = tasks.join_next().await {
        res.context("server task panicked")??;
    }
    Ok(())
}

async fn udp_echo(sock: UdpSocket, port: u16) -> Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        let payload = String::from_utf8_lossy(&buf[..n]).into_owned();
        emit(
            json!({"event": "udp_recv", "port": port, "from": from.to_string(), "payload": payload}),
        );
        let reply = format!("OBSERVED {from}");
        if let Err(e) = sock.send_to(reply.as_bytes(), from).await {
            emit(
                json!({"event": "udp_send_error", "port": port, "to": from.to_string(), "error": e.to_string()}),
            );
        }
    }
}

async fn tcp_echo(listener: TcpListener, port: u16) -> Result<()> {
    loop {
        let (mut stream, from) = listener.accept().await?;
        emit(json!({"event": "tcp_accept", "port": port, "from": from.to_string()}));
        tokio::spawn(async move {
            let line = format!("OBSERVED {from}\n");
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn tcp_sink(listener: TcpListener, port: u16) -> Result<()> {
    loop {
        let (mut stream, from) = listener.accept().await?;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total: u64 = 0;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) => {
                        emit(
                            json!({"event": "sink_error", "port": port, "from": from.to_string(), "error": e.to_string()}),
                        );
                        return;
                    }
                }
            }
            let millis = start.elapsed().as_millis() as u64;
            emit(
                json!({"event": "sink_done", "port": port, "from": from.to_string(), "bytes": total, "millis": millis}),
            );
            let _ = stream
                .write_all(format!("RECEIVED {total}\n").as_bytes())
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Sends `PROBE` to `target` until a reply from exactly that address arrives.
/// Datagrams from anyone else are reported and otherwise ignored.
async fn probe_once(
    sock: &UdpSocket,
    target: SocketAddr,
    per_try: Duration,
    attempts: u32,
) -> Result<Option<SocketAddr>> {
    let mut buf = vec![0u8; 2048];
    for _ in 0..attempts.max(1) {
        sock.send_to(b"PROBE", target).await?;
        let deadline = Instant::now() + per_try;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Ok(res) = timeout(left, sock.recv_from(&mut buf)).await else {
                break;
            };
            let (n, from) = res?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if from == target
                && let Some(mapped) = text.strip_prefix("OBSERVED ")
            {
                let mapped: SocketAddr = mapped
                    .trim()
                    .parse()
                    .with_context(|| format!("bad reply {text:?}"))?;
                return Ok(Some(mapped));
            }
            emit(json!({"event": "udp_received", "from": from.to_string(), "payload": text}));
        }
    }
    Ok(None)
}

async fn udp_probe(
    local_port: u16,
    targets: &[SocketAddr],
    per_try: Duration,
    attempts: u32,
    listen: Duration,
    stop_file: Option<&Path>,
    recheck: bool,
) -> Result<()> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, local_port))
        .await
        .with_context(|| format!("bind udp {local_port}"))?;
    let local = sock.local_addr()?;
    emit(json!({"event": "bound", "local": local.to_string()}));
    for &target in targets {
        match probe_once(&sock, target, per_try, attempts).await? {
            Some(mapped) => emit(json!({
                "event": "udp_mapping",
                "target": target.to_string(),
                "local": local.to_string(),
                "mapped": mapped.to_string(),
            })),
            None => emit(json!({"event": "udp_no_reply", "target": target.to_string()})),
        }
    }
    if !listen.is_zero() {
        emit(json!({"event": "listening", "millis": listen.as_millis() as u64}));
        let deadline = Instant::now() + listen;
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop_file.is_some_and(Path::exists) {
                break;
            }
            // Wake up regularly to look for the stop file.
            let Ok(res) = timeout(left.min(STOP_POLL), sock.recv_from(&mut buf)).await else {
                continue;
            };
            let (n, from) = res?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            emit(json!({"event": "udp_received", "from": from.to_string(), "payload": text}));
        }
    }
    if recheck && let Some(&first) = targets.first() {
        let mapped = probe_once(&sock, first, per_try, attempts).await?;
        emit(json!({
            "event": "udp_recheck",
            "target": first.to_string(),
            "mapped": mapped.map(|m| m.to_string()),
        }));
    }
    emit(json!({"event": "done"}));
    Ok(())
}

async fn udp_send(
    local_port: u16,
    target: SocketAddr,
    payload: &str,
    count: u32,
    interval_ms: u64,
) -> Result<()> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, local_port))
        .await
        .with_context(|| format!("bind udp {local_port}"))?;
    let local = sock.local_addr()?;
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        sock.send_to(payload.as_bytes(), target).await?;
    }
    emit(json!({
        "event": "udp_sent",
        "local": local.to_string(),
        "target": target.to_string(),
        "count": count,
    }));
    Ok(())
}

async fn tcp_probe(targets: &[SocketAddr], limit: Duration) {
    for &target in targets {
        let attempt = async {
            let stream = TcpStream::connect(target).await.context("connect")?;
            let local = stream.local_addr()?;
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .await
                .context("read reply")?;
            let mapped: SocketAddr = line
                .trim()
                .strip_prefix("OBSERVED ")
                .with_context(|| format!("bad reply {line:?}"))?
                .parse()
                .with_context(|| format!("bad reply {line:?}"))?;
            anyhow::Ok((local, mapped))
        };
        match timeout(limit, attempt).await {
            Ok(Ok((local, mapped))) => emit(json!({
                "event": "tcp_mapping",
                "target": target.to_string(),
                "local": local.to_string(),
                "mapped": mapped.to_string(),
            })),
            Ok(Err(e)) => emit(json!({
                "event": "tcp_failed",
                "target": target.to_string(),
                "error": format!("{e:#}"),
            })),
            Err(_) => emit(json!({
                "event": "tcp_failed",
                "target": target.to_string(),
                "error": format!("timed out after {} ms", limit.as_millis()),
            })),
        }
    }
}

async fn tcp_bulk(target: SocketAddr, bytes: u64, limit: Duration) -> Result<()> {
    let run = async {
        let socket = TcpSocket::new_v4()?;
        let mut stream = socket.connect(target).await.context("connect")?;
        let start = Instant::now();
        let chunk = vec![0x5au8; 16 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).await.context("write")?;
            left -= n as u64;
        }
        stream.shutdown().await.context("shutdown")?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .context("read sink reply")?;
        let millis = start.elapsed().as_millis().max(1) as u64;
        let received: u64 = reply
            .trim()
            .strip_prefix("RECEIVED ")
            .with_context(|| format!("bad sink reply {reply:?}"))?
            .parse()?;
        anyhow::Ok((received, millis))
    };
    match timeout(limit, run).await {
        Ok(Ok((received, millis))) => {
            let kbit_per_s = received * 8 / millis;
            emit(json!({
                "event": "tcp_bulk",
                "target": target.to_string(),
                "bytes": received,
                "millis": millis,
                "kbit_per_s": kbit_per_s,
            }));
        }
        Ok(Err(e)) => emit(json!({
            "event": "tcp_bulk_failed",
            "target": target.to_string(),
            "error": format!("{e:#}"),
        })),
        Err(_) => emit(json!({
            "event": "tcp_bulk_failed",
            "target": target.to_string(),
            "error": format!("timed out after {} ms", limit.as_millis()),
        })),
    }
    Ok(())
}
