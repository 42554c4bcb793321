//! Relay throughput for `bench relay`: bytes pushed through a circuit of the real
//! `jantar-relay`, through a reference relay built here from rust-libp2p's
//! `relay::Behaviour` with its default configuration (as its relay-server example
//! runs it), and over a direct connection between the same kind of clients: the
//! ceiling. Both relays get the same limits raised for bulk data (circuit bytes and
//! duration; on Jantar's relay also its bandwidth budget), so neither cuts the
//! circuit during the measurement.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, identify, identity::Keypair, multiaddr::Protocol, noise, ping,
    relay, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp, yamux,
};
use tokio::task::JoinHandle;

use crate::circuit_pump::{Pace, Pump, Sink};

/// Limits both relays get for bulk data.
pub const CIRCUIT_DURATION: Duration = Duration::from_secs(3600);
pub const CIRCUIT_BYTES: u64 = 1 << 40;

#[derive(NetworkBehaviour)]
struct ReferenceBehaviour {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// rust-libp2p's relay server with its defaults, limits raised as above.
pub struct ReferenceRelay {
    pub addr: Multiaddr,
    task: JoinHandle<()>,
}

impl Drop for ReferenceRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReferenceRelay {
    pub async fn start(max_circuits: usize) -> Result<ReferenceRelay> {
        let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|key| {
                let peer = key.public().to_peer_id();
                ReferenceBehaviour {
                    relay: relay::Behaviour::new(
                        peer,
                        relay::Config {
                            max_circuit_duration: CIRCUIT_DURATION,
                            max_circuit_bytes: CIRCUIT_BYTES,
                            max_circuits: max_circuits.max(16),
                            max_circuits_per_peer: max_circuits.max(16),
                            ..relay::Config::default()
                        },
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/reference-relay/0.1.0".to_string(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        let peer = *swarm.local_peer_id();
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        // The relay serves reservations only with an address to put in them.
        swarm.add_external_address(addr.clone());
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        Ok(ReferenceRelay {
            addr: addr.with(Protocol::P2p(peer)),
            task,
        })
    }
}

/// MiB/s that `pumps` greedy writers each push to their own sink through `relay`
/// (`None`: directly), summed, measured over `measure` after `warmup`.
pub async fn throughput(
    relay: Option<&Multiaddr>,
    pumps: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<f64> {
    let timeout = Duration::from_secs(30);
    let mut pairs: Vec<(Sink, Pump)> = Vec::new();
    for _ in 0..pumps.max(1) {
        let (sink, via) = match relay {
            Some(r) => (Sink::reserve(r, timeout).await?, r.clone()),
            None => {
                let (sink, addr) = Sink::listen(timeout).await?;
                (sink, addr)
            }
        };
        let pump = match relay {
            Some(_) => Pump::start(&via, sink.peer_id, Pace::Greedy, timeout).await?,
            None => Pump::start_direct(&via, sink.peer_id, timeout).await?,
        };
        pairs.push((sink, pump));
    }
    tokio::time::sleep(warmup).await;
    let total = |pairs: &[(Sink, Pump)]| -> u64 {
        pairs.iter().map(|(s, p)| s.received_from(&p.peer_id)).sum()
    };
    let before = total(&pairs);
    let start = Instant::now();
    tokio::time::sleep(measure).await;
    let bytes = total(&pairs) - before;
    let took = start.elapsed();
    if bytes == 0 {
        bail!("nothing arrived in {took:?}");
    }
    Ok(bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64())
}

/// MiB/s of one pump writing `chunk` bytes per fresh stream, `streams` at once, to
/// its own sink over a direct connection, measured over `measure` after `warmup`.
pub async fn chunked_throughput(
    streams: usize,
    chunk: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<f64> {
    let timeout = Duration::from_secs(30);
    let (sink, addr) = Sink::listen(timeout).await?;
    let pump = Pump::start_chunked(&addr, sink.peer_id, streams, chunk, timeout).await?;
    tokio::time::sleep(warmup).await;
    let before = sink.received_from(&pump.peer_id);
    let start = Instant::now();
    tokio::time::sleep(measure).await;
    let bytes = sink.received_from(&pump.peer_id) - before;
    let took = start.elapsed();
    if bytes == 0 {
        bail!("nothing arrived in {took:?}");
    }
    Ok(bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64())
}

/// The relay section of Jantar's config with the same limits raised (1 TiB is
/// [`CIRCUIT_BYTES`]) and no bandwidth budget.
pub fn jantar_relay_config(max_circuits: usize) -> String {
    format!(
        "  max_circuit_duration: {}s\n  max_circuit_bytes: 1TiB\n  max_circuits: {}\n  max_circuits_per_peer: {}\n  max_circuits_per_ip: {}\n  max_circuits_per_subnet: {}\n  max_bytes_per_second: 0\n  circuit_bytes_per_second: 0\n",
        CIRCUIT_DURATION.as_secs(),
        max_circuits.max(16),
        max_circuits.max(16),
        max_circuits.max(16),
        max_circuits.max(16),
    )
}

/// `peer`'s address as `<addr>/p2p/<peer>`.
pub fn with_peer(addr: &str, peer: &str) -> Result<Multiaddr> {
    let peer: PeerId = peer.parse().context("peer id")?;
    Ok(addr.parse::<Multiaddr>()?.with(Protocol::P2p(peer)))
}
