//! Oversized WebSocket messages: a stranger completes the WebSocket handshake on a
//! node's `/ws` listener and announces a message of 256 MiB (libp2p's default limit),
//! then streams it. The node reads a message whole before handing it on, so without a
//! cap eight such connections would make it buffer 2 GiB; with the cap (256 KiB) it
//! closes each one at the frame header. An honest node still joins over the same
//! listener.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use jantar_tests::harness::{Node, Role};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use crate::{READY, memory_bounded};

/// What one attacker may write before the node must have closed the connection: the
/// kernel's socket buffers on both ends take a few MiB before the node reads anything.
const WRITE_LIMIT: usize = 64 << 20;
const ANNOUNCED: u64 = 256 << 20;

/// The host and port of a `/ip4/<ip>/tcp/<port>/ws` address.
fn host_port(ws: &str) -> Result<String> {
    let parts: Vec<&str> = ws.split('/').collect();
    match parts.as_slice() {
        ["", "ip4", ip, "tcp", port, "ws", ..] => Ok(format!("{ip}:{port}")),
        _ => bail!("{ws} is not /ip4/<ip>/tcp/<port>/ws"),
    }
}

/// Opens a WebSocket and streams one huge binary message; returns how many payload
/// bytes the node took before it closed the connection.
async fn oversized_message(host: &str) -> Result<usize> {
    let mut s = TcpStream::connect(host).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        ensure!(response.len() < 4096, "no end to the handshake answer");
        s.read_exact(&mut byte).await.context("handshake answer")?;
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response);
    ensure!(
        head.starts_with("HTTP/1.1 101"),
        "handshake refused: {head}"
    );
    // FIN + binary; masked (as a client must), 64-bit length; then the mask.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&ANNOUNCED.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).await?;
    let chunk = vec![0x55u8; 64 * 1024];
    let mut sent = 0;
    while sent < WRITE_LIMIT {
        match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            // Closed (reset or broken pipe), or no longer read at all: refused.
            Ok(Err(_)) | Err(_) => return Ok(sent),
        }
    }
    Ok(sent)
}

#[tokio::test]
async fn oversized_websocket_messages_are_refused_at_the_header() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let mut boot = Node::start(
        root,
        "boot",
        Role::Bootstrap,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0/ws\"]\n",
    )
    .await?;
    boot.wait_ready(READY).await?;
    let before = boot.memory()?;
    let ws = boot
        .listen
        .iter()
        .find(|a| a.ends_with("/ws"))
        .context("no /ws listener")?
        .clone();
    let host = host_port(&ws)?;

    let started = Instant::now();
    let mut attackers = JoinSet::new();
    for _ in 0..8 {
        let host = host.clone();
        attackers.spawn(async move { oversized_message(&host).await });
    }
    let mut taken = Vec::new();
    while let Some(r) = attackers.join_next().await {
        taken.push(r??);
    }
    eprintln!(
        "eight 256 MiB messages: the node took {:?} KiB of each before closing ({:?})",
        taken.iter().map(|b| b / 1024).collect::<Vec<_>>(),
        started.elapsed()
    );
    ensure!(
        taken.iter().all(|b| *b < WRITE_LIMIT),
        "a connection was still open after {} MiB of one message",
        WRITE_LIMIT >> 20
    );
    memory_bounded(&boot, before)?;

    // An honest node joins over the same listener.
    let mut peer = Node::start(
        root,
        "peer",
        Role::Peer,
        &format!(
            "network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{ws}/p2p/{}\"]\n",
            boot.peer_id
        ),
    )
    .await?;
    peer.wait_ready(READY).await?;
    Ok(())
}
