//! A hostile client of a Jantar peer's file protocol, for the attack tests.
//!
//! It connects straight to one target like a peer would (TCP with Noise and Yamux,
//! identify and ping, gossipsub on the files topic, `/jantar/file/1.0.0`), under one
//! or more fresh identities, and then does one of:
//!
//! * `flood`: keeps `--concurrent` chunk requests in flight per identity for
//!   `--duration`, asking again as soon as one is answered (after a refusal, 50 ms
//!   later), reading every answer;
//! * `announce`: announces `--count` files per identity that do not exist, signed
//!   like any publisher; it never answers the target's requests for them (they wait
//!   until they time out), or, with `--lie-size`, serves manifests that hash to the
//!   announced IDs but describe another size;
//! * `garbage`: sends malformed and hostile requests on the file protocol (bytes
//!   that are not CBOR, oversized requests, truncated ones, chunk indexes out of
//!   range, unknown IDs) and records how each was met.
//!
//! Each step is one JSON line on stdout with an `event` field (`started`,
//! `connected`, `announced`, `flood_done`, `garbage_done`, `done`).

use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use jantar_net::{
    behaviour::PROTOCOL_VERSION,
    files::{
        FileId, Manifest, codec,
        id::CHUNK_SIZE,
        protocol::{self, Announcement, FILES_TOPIC, MAX_GOSSIP_SIZE, Request, Response},
    },
};
use libp2p::{
    Multiaddr, StreamProtocol, SwarmBuilder, gossipsub, identify,
    identity::Keypair,
    noise, ping,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
    tcp, yamux,
};
use serde_json::json;

#[derive(Parser)]
#[command(about = "A hostile client of a Jantar peer's file protocol")]
struct Args {
    /// The target, ending in `/p2p/<peer id>`.
    #[arg(long)]
    dial: Multiaddr,
    /// Identities to attack with, each on its own connection.
    #[arg(long, default_value_t = 1)]
    identities: usize,
    /// How long to attack, in seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Clone)]
enum Mode {
    /// Chunk requests, many at once.
    Flood {
        /// The file to ask for.
        #[arg(long)]
        id: FileId,
        /// Its number of chunks.
        #[arg(long)]
        chunks: u32,
        /// Requests in flight per identity.
        #[arg(long, default_value_t = 64)]
        concurrent: usize,
    },
    /// Announcements of files that do not exist.
    Announce {
        /// Files announced per identity.
        #[arg(long, default_value_t = 3)]
        count: usize,
        /// Announced size of each, in bytes.
        #[arg(long)]
        size: u64,
        /// Serve manifests that hash to the ID but describe one chunk more.
        #[arg(long)]
        lie_size: bool,
    },
    /// Malformed and hostile requests.
    Garbage {
        /// A file the target holds.
        #[arg(long)]
        id: FileId,
        /// Times each kind of request is sent.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

/// Bytes in, bytes out: requests written as given, responses read whole (up to 4 MiB).
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut v = vec![];
        io.take(1024).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut v = vec![];
        io.take(4 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    files: Toggle<protocol::Behaviour>,
    raw: Toggle<request_response::Behaviour<RawCodec>>,
}

fn build_behaviour(key: &Keypair, raw: bool) -> Result<Behaviour> {
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub::ConfigBuilder::default()
            .max_transmit_size(MAX_GOSSIP_SIZE)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .build()?,
    )
    .map_err(anyhow::Error::msg)?;
    gossipsub.subscribe(&gossipsub::IdentTopic::new(FILES_TOPIC))?;
    let rr_config = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(60))
        .with_max_concurrent_streams(1024);
    let files = (!raw).then(|| {
        request_response::Behaviour::with_codec(
            codec::Codec::new(),
            [
                (protocol::PROTOCOL, ProtocolSupport::Full),
                (protocol::PROTOCOL_CBOR, ProtocolSupport::Full),
            ],
            rr_config.clone(),
        )
    });
    let raw = raw.then(|| {
        request_response::Behaviour::with_codec(
            RawCodec,
            [(protocol::PROTOCOL_CBOR, ProtocolSupport::Outbound)],
            rr_config,
        )
    });
    Ok(Behaviour {
        identify: identify::Behaviour::new(
            identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                .with_agent_version("evil-fetcher".into()),
        ),
        ping: ping::Behaviour::default(),
        gossipsub,
        files: files.into(),
        raw: raw.into(),
    })
}

/// A swarm under a fresh identity, dialing `target`.
fn swarm(target: &Multiaddr, raw: bool) -> Result<libp2p::Swarm<Behaviour>> {
    let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            build_behaviour(key, raw)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    swarm.dial(target.clone())?;
    Ok(swarm)
}

fn target_peer(addr: &Multiaddr) -> Result<libp2p::PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => Ok(p),
        _ => bail!("{addr} does not end in /p2p/<peer id>"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let target = target_peer(&args.dial)?;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    println!(
        "{}",
        json!({"event": "started", "identities": args.identities})
    );
    let mut tasks = vec![];
    for n in 0..args.identities {
        let (mode, dial) = (args.mode.clone(), args.dial.clone());
        tasks.push(tokio::spawn(async move {
            match mode {
                Mode::Flood {
                    id,
                    chunks,
                    concurrent,
                } => flood(n, &dial, target, id, chunks, concurrent, deadline).await,
                Mode::Announce {
                    count,
                    size,
                    lie_size,
                } => announce(n, &dial, count, size, lie_size, deadline).await,
                Mode::Garbage { id, rounds } => {
                    garbage(n, &dial, target, id, rounds, deadline).await
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await? {
            println!("{}", json!({"event": "error", "error": format!("{e:#}")}));
        }
    }
    println!("{}", json!({"event": "done"}));
    Ok(())
}

async fn flood(
    n: usize,
    dial: &Multiaddr,
    target: libp2p::PeerId,
    id: FileId,
    chunks: u32,
    concurrent: usize,
    deadline: Instant,
) -> Result<()> {
    let mut swarm = swarm(dial, false)?;
    let me = swarm.local_peer_id().to_string();
    let (mut chunk_ok, mut refused, mut failed) = (0u64, 0u64, 0u64);
    let mut in_flight = 0usize;
    let mut next_index = 0u32;
    let mut connected = false;
    let mut retry = tokio::time::interval(Duration::from_millis(50));
    let mut send = |swarm: &mut libp2p::Swarm<Behaviour>, in_flight: &mut usize| {
        if let Some(f) = swarm.behaviour_mut().files.as_mut() {
            f.send_request(
                &target,
                Request::Chunk {
                    id,
                    index: next_index % chunks.max(1),
                },
            );
            next_index = next_index.wrapping_add(1);
            *in_flight += 1;
        }
    };
    while Instant::now() < deadline {
        tokio::select! {
            _ = retry.tick() => {
                if connected {
                    while in_flight < concurrent {
                        send(&mut swarm, &mut in_flight);
                    }
                }
            }
            e = swarm.select_next_some() => match e {
                SwarmEvent::ConnectionEstablished { .. } => {
                    connected = true;
                    println!("{}", json!({"event": "connected", "identity": n, "peer": me}));
                }
                SwarmEvent::ConnectionClosed { .. } => {
                    connected = false;
                    in_flight = 0;
                    let _ = swarm.dial(dial.clone());
                }
                SwarmEvent::Behaviour(BehaviourEvent::Files(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                })) => {
                    in_flight = in_flight.saturating_sub(1);
                    match response {
                        Response::Chunk(_) => {
                            chunk_ok += 1;
                            send(&mut swarm, &mut in_flight);
                        }
                        // Asked again at the next 50 ms tick.
                        _ => refused += 1,
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Files(request_response::Event::OutboundFailure { .. })) => {
                    in_flight = in_flight.saturating_sub(1);
                    failed += 1;
                }
                _ => {}
            }
        }
    }
    println!(
        "{}",
        json!({"event": "flood_done", "identity": n, "peer": me, "chunks": chunk_ok, "refused": refused, "failed": failed})
    );
    Ok(())
}

/// A manifest of `chunks` made-up leaves; its root is a file that exists nowhere.
fn fake_manifest(size: u64) -> Manifest {
    let chunks = size.div_ceil(u64::from(CHUNK_SIZE)).max(1);
    Manifest {
        size,
        chunk_size: CHUNK_SIZE,
        leaves: (0..chunks).map(|_| rand_leaf()).collect(),
    }
}

fn rand_leaf() -> [u8; 32] {
    *Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_bytes()
        .last_chunk::<32>()
        .expect("a peer id has 32 bytes of key")
}

async fn announce(
    n: usize,
    dial: &Multiaddr,
    count: usize,
    size: u64,
    lie_size: bool,
    deadline: Instant,
) -> Result<()> {
    let mut swarm = swarm(dial, false)?;
    let me = swarm.local_peer_id().to_string();
    // The manifests served when lying: one chunk more than announced.
    let mut manifests: HashMap<FileId, Manifest> = HashMap::new();
    let mut files = vec![];
    for k in 0..count {
        let m = fake_manifest(if lie_size {
            size + u64::from(CHUNK_SIZE)
        } else {
            size
        });
        let id = m.root();
        files.push(Announcement {
            id,
            name: format!("fake-{n}-{k}.bin"),
            size,
        });
        manifests.insert(id, m);
    }
    let topic = gossipsub::IdentTopic::new(FILES_TOPIC);
    let mut held = vec![];
    let mut announced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while Instant::now() < deadline {
        tokio::select! {
            _ = tick.tick() => {}
            e = swarm.select_next_some() => match e {
                SwarmEvent::ConnectionEstablished { .. } => {
                    println!("{}", json!({"event": "connected", "identity": n, "peer": me}));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic: t, .. }))
                    if t == topic.hash() && !announced =>
                {
                    announced = true;
                    for a in &files {
                        let r = swarm.behaviour_mut().gossipsub.publish(topic.clone(), serde_json::to_vec(a)?);
                        println!("{}", json!({"event": "announced", "identity": n, "id": a.id.to_string(), "size": a.size, "error": r.err().map(|e| e.to_string())}));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Files(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                })) => match request {
                    Request::Manifest(id) if lie_size && manifests.contains_key(&id) => {
                        if let Some(f) = swarm.behaviour_mut().files.as_mut() {
                            let _ = f.send_response(channel, Response::Manifest(manifests[&id].clone()));
                        }
                    }
                    // Never answered: the target waits until its request times out.
                    _ => held.push(channel),
                },
                _ => {}
            }
        }
    }
    println!(
        "{}",
        json!({"event": "announce_done", "identity": n, "peer": me, "held_requests": held.len()})
    );
    Ok(())
}

/// CBOR text string header and bytes.
fn cbor_text(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 24 {
        out.push(0x60 | len as u8);
    } else {
        out.push(0x78);
        out.push(len as u8);
    }
    out.extend_from_slice(s.as_bytes());
}

/// `Request::Chunk { id, index }` as the codec writes it: `{"Chunk": {"id": .., "index": ..}}`.
fn chunk_request(id: &FileId, index: u32) -> Vec<u8> {
    let mut v = vec![0xa1];
    cbor_text(&mut v, "Chunk");
    v.push(0xa2);
    cbor_text(&mut v, "id");
    cbor_text(&mut v, &id.to_string());
    cbor_text(&mut v, "index");
    v.push(0x1a);
    v.extend_from_slice(&index.to_be_bytes());
    v
}

fn manifest_request(id: &FileId) -> Vec<u8> {
    let mut v = vec![0xa1];
    cbor_text(&mut v, "Manifest");
    cbor_text(&mut v, &id.to_string());
    v
}

async fn garbage(
    n: usize,
    dial: &Multiaddr,
    target: libp2p::PeerId,
    id: FileId,
    rounds: usize,
    deadline: Instant,
) -> Result<()> {
    let mut swarm = swarm(dial, true)?;
    let me = swarm.local_peer_id().to_string();
    let unknown = FileId([0xee; 32]);
    let valid = chunk_request(&id, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not_cbor",
            b"\xff\xfe this is not CBOR at all \x00\x01".repeat(8),
        ),
        ("oversized", vec![0xa1; 2 << 20]),
        ("truncated", valid[..valid.len() / 2].to_vec()),
        // An array header that claims 2^64-1 elements.
        (
            "huge_length",
            vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        ("wrong_shape", b"\xa1\x65Chunk\x63abc".to_vec()),
        ("empty", vec![]),
        ("index_out_of_range", chunk_request(&id, u32::MAX)),
        ("unknown_chunk", chunk_request(&unknown, 0)),
        ("unknown_manifest", manifest_request(&unknown)),
        ("valid_chunk", valid.clone()),
    ];
    let mut results: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let mut pending: HashMap<request_response::OutboundRequestId, &str> = HashMap::new();
    let mut queue: Vec<(&str, Vec<u8>)> = (0..rounds).flat_map(|_| cases.iter().cloned()).collect();
    queue.reverse();
    let mut connected = false;
    while Instant::now() < deadline && (!queue.is_empty() || !pending.is_empty()) {
        if connected {
            while pending.len() < 16
                && let Some((name, bytes)) = queue.pop()
                && let Some(raw) = swarm.behaviour_mut().raw.as_mut()
            {
                pending.insert(raw.send_request(&target, bytes), name);
            }
        }
        let e = tokio::select! {
            e = swarm.select_next_some() => e,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        match e {
            SwarmEvent::ConnectionEstablished { .. } => connected = true,
            SwarmEvent::ConnectionClosed { .. } => {
                connected = false;
                let _ = swarm.dial(dial.clone());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Raw(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            })) => {
                if let Some(name) = pending.remove(&request_id) {
                    let r = results.entry(name.to_string()).or_default();
                    // A chunk is a CBOR map {"Chunk": bytes}; "not found" the text.
                    if response.windows(8).any(|w| w == b"NotFound") {
                        r.1 += 1;
                    } else if !response.is_empty() {
                        r.0 += 1;
                    } else {
                        r.2 += 1;
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Raw(
                request_response::Event::OutboundFailure { request_id, .. },
            )) => {
                if let Some(name) = pending.remove(&request_id) {
                    results.entry(name.to_string()).or_default().2 += 1;
                }
            }
            _ => {}
        }
    }
    let summary: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(k, (data, not_found, failed))| {
            (
                k,
                json!({"data": data, "not_found": not_found, "failed": failed}),
            )
        })
        .collect();
    println!(
        "{}",
        json!({"event": "garbage_done", "identity": n, "peer": me, "cases": summary, "unsent": queue.len()})
    );
    Ok(())
}
