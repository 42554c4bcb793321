//! A provider that serves corrupt chunks is detected, dropped as a source and
//! penalized, and the file still completes, identical, from an honest provider.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use jantar_net::{
    behaviour::KAD_PROTOCOL,
    config::{Config, Overrides, Role},
    files::{
        FileId,
        id::hash_file,
        protocol::{self, Request, Response},
    },
    node::{self, FileCommand, NodeHandle},
    transport::build_memory_swarm,
};
use libp2p::{
    Multiaddr, SwarmBuilder, Transport,
    core::{transport::MemoryTransport, upgrade::Version},
    identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    noise, request_response,
    swarm::{NetworkBehaviour, SwarmEvent},
    yamux,
};

const FAST: &str =
    "  autonat: {only_global_ips: false, boot_delay: 1s}\n  dht: {discovery_interval: 500ms}\n";

fn memory_addr() -> String {
    format!("/memory/{}", rand::random::<u64>())
}

async fn start(role: Role, name: &str, yaml: &str, dir: &std::path::Path) -> NodeHandle {
    let env = HashMap::from([("HOME", dir.to_str().unwrap())]);
    let text = format!(
        "admin: {{listen: \"off\"}}\ndata_dir: {}\n{yaml}",
        dir.join(name).display()
    );
    let cfg = Arc::new(
        Config::parse(role, &text, None, &Overrides::default(), &env)
            .unwrap()
            .config,
    );
    let swarm = build_memory_swarm(&cfg, Keypair::generate_ed25519()).unwrap();
    node::start_with_swarm(cfg, swarm).await.unwrap()
}

#[derive(NetworkBehaviour)]
struct Liar {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    files: protocol::Behaviour,
}

/// A provider that answers the manifest truthfully and every chunk with one bit flipped.
async fn run_liar(
    boot: Multiaddr,
    id: FileId,
    manifest: jantar_net::files::Manifest,
    data: Vec<u8>,
) -> libp2p::PeerId {
    let key = Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|k| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(k)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .unwrap()
        .with_behaviour(|k| {
            let mut kad = kad::Behaviour::with_config(
                k.public().to_peer_id(),
                MemoryStore::new(k.public().to_peer_id()),
                kad::Config::new(KAD_PROTOCOL),
            );
            kad.set_mode(Some(kad::Mode::Server));
            Liar {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/jantar/1.0.0".into(),
                    k.public(),
                )),
                kad,
                files: protocol::behaviour(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let own: Multiaddr = memory_addr().parse().unwrap();
    swarm.listen_on(own.clone()).unwrap();
    swarm.add_external_address(own);
    let boot_peer = match boot.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("bootstrap address without peer id"),
    };
    swarm
        .behaviour_mut()
        .kad
        .add_address(&boot_peer, boot.clone());
    swarm.dial(boot).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        let mut provided = false;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } if !provided => {
                    provided = true;
                    swarm
                        .behaviour_mut()
                        .kad
                        .start_providing(id.dht_key())
                        .unwrap();
                }
                SwarmEvent::Behaviour(LiarEvent::Kad(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::StartProviding(_),
                    ..
                })) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                SwarmEvent::Behaviour(LiarEvent::Files(request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    let resp = match request {
                        Request::Manifest(_) => Response::Manifest(manifest.clone()),
                        Request::Chunk { index, .. } => {
                            let start = index as usize * manifest.chunk_size as usize;
                            let end = (start + manifest.chunk_size as usize).min(data.len());
                            let mut chunk = data[start..end].to_vec();
                            chunk[0] ^= 1;
                            Response::Chunk(serde_bytes::ByteBuf::from(chunk))
                        }
                    };
                    let _ = swarm.behaviour_mut().files.send_response(channel, resp);
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("liar published")
        .unwrap();
    peer_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_provider_is_dropped_and_file_completes() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(
        Role::Bootstrap,
        "boot",
        &format!(
            "network:\n  listen_addresses: [\"{}\"]\n{FAST}",
            memory_addr()
        ),
        dir.path(),
    )
    .await;
    let boot_addr = format!("{}/p2p/{}", boot.listen_addrs()[0], boot.peer_id());
    // A relay: a DHT server that stores provider records (the bootstrap node stores none).
    let relay_addr = memory_addr();
    let relay = start(
        Role::Relay,
        "relay",
        &format!("network:\n  listen_addresses: [\"{relay_addr}\"]\n  external_addresses: [\"{relay_addr}\"]\n  bootstrap_nodes: [\"{boot_addr}\"]\n{FAST}"),
        dir.path(),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), relay.client().wait_ready())
        .await
        .unwrap()
        .unwrap();
    // Peers with a declared public address, so provider records carry it.
    let peer_yaml = |extra: &str| {
        let addr = memory_addr();
        format!(
            "{extra}network:\n  enable_mdns: false\n  enable_upnp: false\n  listen_addresses: [\"{addr}\"]\n  external_addresses: [\"{addr}\"]\n  bootstrap_nodes: [\"{boot_addr}\"]\n{FAST}"
        )
    };

    // The file: 6 chunks of a pattern that does not repeat.
    let src = dir.path().join("doc.bin");
    let data: Vec<u8> = (0..6 * 1024 * 1024 + 99)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let manifest = hash_file(&src).unwrap();
    let id = manifest.root();

    let liar = run_liar(
        boot_addr.parse().unwrap(),
        id,
        manifest.clone(),
        data.clone(),
    )
    .await;

    // The honest provider shares it; the fetcher replicates nothing on its own.
    let honest = start(Role::Peer, "honest", &peer_yaml(""), dir.path()).await;
    let mut hc = honest.client();
    tokio::time::timeout(Duration::from_secs(30), hc.wait_ready())
        .await
        .unwrap()
        .unwrap();
    let m = manifest.clone();
    let shared = hc
        .files(|reply| FileCommand::Share {
            path: src.clone(),
            name: "doc.bin".into(),
            manifest: m,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shared.id, id.to_string());

    let fetcher = start(
        Role::Peer,
        "fetcher",
        &peer_yaml("min_file_size: 1TiB\n"),
        dir.path(),
    )
    .await;
    let mut fc = fetcher.client();
    tokio::time::timeout(Duration::from_secs(30), fc.wait_ready())
        .await
        .unwrap()
        .unwrap();
    let out = dir.path().join("out.bin");
    fc.files(|reply| FileCommand::Get {
        id,
        out: Some(out.clone()),
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let p = fc
            .files(|reply| FileCommand::Progress { id, reply })
            .await
            .unwrap()
            .expect("fetch known");
        if p.state != "fetching" {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fetch did not finish: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(progress.state, "complete", "{progress:?}");
    assert_eq!(std::fs::read(&out).unwrap(), data, "identical bytes");
    assert_eq!(
        progress.bad_providers,
        vec![liar.to_string()],
        "the liar was caught: {progress:?}"
    );
    for h in [fetcher, honest, relay, boot] {
        h.shutdown();
        h.join().await;
    }
}
