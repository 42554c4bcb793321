//! A malicious file provider for the file-transfer tests.
//!
//! It joins a Jantar network like a peer that shares one file: TCP with Noise and
//! Yamux, identify and ping, Kademlia on Jantar's DHT protocol (in server mode, with
//! its listen address as its external address so provider records carry it),
//! gossipsub on the files topic and the `/jantar/file/1.0.0` transfer protocol,
//! all with `jantar_net`'s own protocol names, types and codec. Ping is not
//! optional: a Jantar node closes every connection on which ping fails, and to
//! libp2p a peer without the protocol is a failed ping. It then lies about the
//! content:
//!
//! * it publishes a DHT provider record for the file's key (again every few
//!   seconds, so DHT servers that appear later get it too);
//! * it announces the file on the files topic to every peer that subscribes to it,
//!   signed with its own key like any publisher;
//! * it answers manifest requests truthfully, so a fetcher accepts it as a source,
//!   but every chunk it serves has one byte flipped: the right length, the wrong
//!   hash;
//! * with `--release FILE`, it publishes that file's bytes as a release manifest on
//!   the release topic to every peer that subscribes to it (forged, expired, replayed
//!   or otherwise bad manifests, for the update tests).
//!
//! Every step is printed to stdout as one JSON object per line with an `event`
//! field (`started`, `connected`, `disconnected`, `dial_failed`, `announced`,
//! `provider_record_published`, `manifest_served`, `corrupt_chunk_served`,
//! `release_published`), so a
//! test can tell from the log that the lie was actually told. It runs until killed.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use jantar_net::{
    behaviour::{KAD_PROTOCOL, PROTOCOL_VERSION},
    files::{
        FileId, Manifest,
        id::hash_file,
        protocol::{self, Announcement, FILES_TOPIC, MAX_GOSSIP_SIZE, Request, Response},
    },
};
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, gossipsub, identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    multiaddr::Protocol,
    noise, ping, request_response,
    swarm::dial_opts::DialOpts,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use serde_json::{Value, json};

/// How often the provider record is published again.
const REPUBLISH: Duration = Duration::from_secs(3);

#[derive(Parser)]
#[command(about = "A Jantar file provider that serves corrupt chunks")]
struct Args {
    /// The file to offer. Its manifest is served as is; its chunks are corrupted.
    #[arg(long)]
    file: PathBuf,
    /// Bootstrap node to join the DHT through, ending in `/p2p/<peer id>` (repeatable).
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Peer to connect to directly, ending in `/p2p/<peer id>` (repeatable).
    #[arg(long)]
    dial: Vec<Multiaddr>,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
    /// A release manifest to publish, as is, on the release topic.
    #[arg(long)]
    release: Option<PathBuf>,
    /// The release topic.
    #[arg(long, default_value = "jantar/releases/v1/stable")]
    release_topic: String,
    /// How many times the release is published to each peer that joins (a flood).
    #[arg(long, default_value_t = 1)]
    release_repeat: usize,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    files: protocol::Behaviour,
}

fn emit(value: Value) {
    println!("{value}");
}

fn peer_of(addr: &Multiaddr) -> Result<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => Ok(p),
        _ => bail!("{addr} does not end in /p2p/<peer id>"),
    }
}

/// Chunk `index` of the file with one byte flipped, or `None` past the end.
fn corrupt_chunk(file: &File, manifest: &Manifest, index: u32) -> Result<Option<Vec<u8>>> {
    if index >= manifest.chunks() {
        return Ok(None);
    }
    let mut data = vec![0u8; manifest.chunk_len(index) as usize];
    file.read_exact_at(&mut data, u64::from(index) * u64::from(manifest.chunk_size))?;
    let middle = data.len() / 2;
    if let Some(b) = data.get_mut(middle) {
        *b ^= 0xff;
    }
    Ok(Some(data))
}

fn build_behaviour(key: &Keypair, release_topic: Option<&str>) -> Result<Behaviour> {
    let peer_id = key.public().to_peer_id();
    let mut kad = kad::Behaviour::with_config(
        peer_id,
        MemoryStore::new(peer_id),
        kad::Config::new(KAD_PROTOCOL),
    );
    kad.set_mode(Some(kad::Mode::Server));
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub::ConfigBuilder::default()
            .max_transmit_size(MAX_GOSSIP_SIZE)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .build()?,
    )
    .map_err(anyhow::Error::msg)?;
    gossipsub.subscribe(&gossipsub::IdentTopic::new(FILES_TOPIC))?;
    if let Some(t) = release_topic {
        gossipsub.subscribe(&gossipsub::IdentTopic::new(t))?;
    }
    Ok(Behaviour {
        identify: identify::Behaviour::new(
            identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                .with_agent_version("evil-provider".into()),
        ),
        ping: ping::Behaviour::default(),
        kad,
        gossipsub,
        files: protocol::behaviour(),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let manifest =
        hash_file(&args.file).with_context(|| format!("hash {}", args.file.display()))?;
    let id: FileId = manifest.root();
    let file = File::open(&args.file)?;
    let name = jantar_net::files::protocol::share_name(&args.file).map_err(anyhow::Error::msg)?;
    let announcement = serde_json::to_vec(&Announcement {
        id,
        name,
        size: manifest.size,
    })?;

    let release = match &args.release {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("read {}", p.display()))?),
        None => None,
    };
    let release_topic = gossipsub::IdentTopic::new(args.release_topic.clone());
    let key = Keypair::generate_ed25519();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            build_behaviour(key, release.as_ref().map(|_| args.release_topic.as_str()))
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    swarm.listen_on(args.listen.clone())?;
    // Dialed from a new port, not the listen port: on a busy loopback the port the
    // kernel picked for listening can be some other connection's source port, and a
    // dial that reuses it is refused (the nodes fall back; this test peer need not
    // reuse at all).
    let dial = |addr: &Multiaddr| {
        DialOpts::unknown_peer_id()
            .address(addr.clone())
            .allocate_new_port()
            .build()
    };
    for addr in &args.bootstrap {
        let peer = peer_of(addr)?;
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        swarm.dial(dial(addr))?;
    }
    for addr in &args.dial {
        peer_of(addr)?;
        swarm.dial(dial(addr))?;
    }

    let topic = gossipsub::IdentTopic::new(FILES_TOPIC);
    let mut started = false;
    let mut published = false;
    let mut last_publish: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let event = tokio::select! {
            e = swarm.select_next_some() => e,
            _ = tick.tick() => {
                let due = last_publish.is_none_or(|t| t.elapsed() >= REPUBLISH);
                if started && due && swarm.connected_peers().next().is_some() {
                    last_publish = Some(Instant::now());
                    swarm.behaviour_mut().kad.start_providing(id.dht_key())?;
                }
                continue;
            }
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // Declared like a public peer's address, so provider records and
                // identify carry it.
                swarm.add_external_address(address.clone());
                if !started {
                    started = true;
                    emit(json!({
                        "event": "started",
                        "peer_id": swarm.local_peer_id().to_string(),
                        "listen": address.to_string(),
                        "id": id.to_string(),
                        "chunks": manifest.chunks(),
                    }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => emit(json!({
                "event": "connected",
                "peer": peer_id.to_string(),
                "address": endpoint.get_remote_address().to_string(),
            })),
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => emit(json!({
                "event": "disconnected",
                "peer": peer_id.to_string(),
                "cause": cause.map(|c| c.to_string()),
            })),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => emit(json!({
                "event": "dial_failed",
                "peer": peer_id.map(|p| p.to_string()),
                "error": error.to_string(),
            })),
            // Like a Jantar node: DHT servers go into the routing table.
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&KAD_PROTOCOL) => {
                for addr in info.listen_addrs {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic: t,
            })) if t == release_topic.hash() => {
                if let Some(bytes) = &release {
                    let mut result = Ok(());
                    for _ in 0..args.release_repeat {
                        if let Err(e) = swarm
                            .behaviour_mut()
                            .gossipsub
                            .publish(release_topic.clone(), bytes.clone())
                        {
                            result = Err(e);
                        }
                    }
                    emit(json!({
                        "event": "release_published",
                        "to": peer_id.to_string(),
                        "times": args.release_repeat,
                        "error": result.err().map(|e| e.to_string()),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic: t,
            })) if t == topic.hash() => {
                let result = swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic.clone(), announcement.clone());
                emit(json!({
                    "event": "announced",
                    "to": peer_id.to_string(),
                    "error": result.err().map(|e| e.to_string()),
                }));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(r),
                ..
            })) if !published => {
                published = r.is_ok();
                emit(json!({
                    "event": "provider_record_published",
                    "error": r.err().map(|e| e.to_string()),
                }));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Files(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let response = match request {
                    Request::Manifest(want) if want == id => {
                        emit(json!({"event": "manifest_served", "peer": peer.to_string()}));
                        Response::Manifest(manifest.clone())
                    }
                    Request::Chunk { id: want, index } if want == id => {
                        match corrupt_chunk(&file, &manifest, index)? {
                            Some(data) => {
                                emit(json!({
                                    "event": "corrupt_chunk_served",
                                    "peer": peer.to_string(),
                                    "index": index,
                                }));
                                Response::Chunk(serde_bytes::ByteBuf::from(data))
                            }
                            None => Response::NotFound,
                        }
                    }
                    _ => Response::NotFound,
                };
                let _ = swarm.behaviour_mut().files.send_response(channel, response);
            }
            _ => {}
        }
    }
}
