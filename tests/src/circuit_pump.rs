//! Circuit pumps for the attack suite: libp2p identities in this process that push bytes
//! through a relay's circuits as fast as they can (or at a pace the test sets), and
//! identities behind the relay that count what arrives.
//!
//! A [`Sink`] holds a reservation on the relay and reads every stream opened to it on
//! [`PUMP_PROTOCOL`], counting the bytes per sending peer. A [`Pump`] dials the sink
//! through the relay (`<relay>/p2p-circuit/p2p/<sink>`) and writes into one stream
//! until dropped. Neither speaks DCUtR, so the circuit is never upgraded to a direct
//! connection: every byte crosses the relay.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use jantar_net::behaviour::PROTOCOL_VERSION;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, SwarmBuilder, identify, identity::Keypair,
    multiaddr::Protocol, noise, ping, relay, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp,
    yamux,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// The pumps' own protocol: raw bytes, never answered.
pub const PUMP_PROTOCOL: StreamProtocol = StreamProtocol::new("/jantar-test/pump/1");

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    relay_client: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

type Swarm = libp2p::Swarm<Behaviour>;

fn swarm() -> Result<Swarm> {
    let swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay_client| Behaviour {
            identify: identify::Behaviour::new(
                identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                    .with_agent_version("circuit-pump".into()),
            ),
            ping: ping::Behaviour::default(),
            relay_client,
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    Ok(swarm)
}

/// Bytes received per sending peer.
pub type Counts = Arc<Mutex<HashMap<PeerId, Arc<AtomicU64>>>>;

/// An identity behind the relay that counts what pumps send it.
pub struct Sink {
    pub peer_id: PeerId,
    counts: Counts,
    task: JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Reserves a slot on `relay` (`<address>/p2p/<relay id>`); returns once the relay
    /// accepted the reservation.
    pub async fn reserve(relay: &Multiaddr, timeout: Duration) -> Result<Sink> {
        let (mut swarm, mut incoming) = sink_swarm()?;
        let peer_id = *swarm.local_peer_id();
        let counts: Counts = Arc::default();
        swarm.listen_on(relay.clone().with(Protocol::P2pCircuit))?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                            relay::client::Event::ReservationReqAccepted { .. },
                        )) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(Err(anyhow!("reservation failed: {e}")));
                            }
                        }
                        _ => {}
                    },
                    Some((from, stream)) = incoming.next() => count_into(&c, from, stream),
                }
            }
        });
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Sink {
                peer_id,
                counts,
                task,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => bail!("the sink stopped before its reservation"),
            Err(_) => bail!("no reservation on {relay} within {timeout:?}"),
        }
    }

    /// A sink that listens on loopback for direct connections (the ceiling a relay is
    /// measured against); returns it and its address (`.../p2p/<sink>`).
    pub async fn listen(timeout: Duration) -> Result<(Sink, Multiaddr)> {
        let (mut swarm, mut incoming) = sink_swarm()?;
        let peer_id = *swarm.local_peer_id();
        let counts: Counts = Arc::default();
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let addr = tokio::time::timeout(timeout, async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    return address;
                }
            }
        })
        .await
        .map_err(|_| anyhow!("the sink did not listen within {timeout:?}"))?;
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    Some((from, stream)) = incoming.next() => count_into(&c, from, stream),
                }
            }
        });
        Ok((
            Sink {
                peer_id,
                counts,
                task,
            },
            addr.with(Protocol::P2p(peer_id)),
        ))
    }

    /// Bytes received from `pump` so far.
    pub fn received_from(&self, pump: &PeerId) -> u64 {
        self.counts
            .lock()
            .expect("counts lock")
            .get(pump)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A sink's swarm and the streams pumps open to it.
fn sink_swarm() -> Result<(Swarm, libp2p_stream::IncomingStreams)> {
    let swarm = swarm()?;
    let incoming = swarm
        .behaviour()
        .stream
        .new_control()
        .accept(PUMP_PROTOCOL)
        .map_err(|e| anyhow!("{e}"))?;
    Ok((swarm, incoming))
}

/// Reads `stream` to its end in a task of its own, counting the bytes under `from`.
fn count_into(counts: &Counts, from: PeerId, mut stream: libp2p::Stream) {
    let counter = counts
        .lock()
        .expect("counts lock")
        .entry(from)
        .or_default()
        .clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
}

/// How a pump writes.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// As fast as the circuit takes it.
    Greedy,
    /// `bytes` every `every`: a client that only needs a modest rate.
    Steady { bytes: usize, every: Duration },
}

/// An identity that writes into a stream to a [`Sink`] through the relay.
pub struct Pump {
    pub peer_id: PeerId,
    task: JoinHandle<()>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pump {
    /// Dials `sink` through `relay` and starts writing; returns once the stream is
    /// open.
    pub async fn start(
        relay: &Multiaddr,
        sink: PeerId,
        pace: Pace,
        timeout: Duration,
    ) -> Result<Pump> {
        let circuit = relay
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(sink));
        Pump::start_at(circuit, sink, pace, timeout).await
    }

    /// Dials `sink` at `addr` directly (a sink from [`Sink::listen`]) and writes as
    /// fast as the connection takes it.
    pub async fn start_direct(addr: &Multiaddr, sink: PeerId, timeout: Duration) -> Result<Pump> {
        Pump::start_at(addr.clone(), sink, Pace::Greedy, timeout).await
    }

    /// Dials `sink` at `addr` directly and writes `chunk` bytes per stream, one fresh
    /// stream after another, `streams` at once: the shape of a file fetch's chunk
    /// requests, without their disk, hashing and requests.
    pub async fn start_chunked(
        addr: &Multiaddr,
        sink: PeerId,
        streams: usize,
        chunk: usize,
        timeout: Duration,
    ) -> Result<Pump> {
        let (peer_id, control, driver) = dialing(addr)?;
        let mut probe = control.clone();
        tokio::time::timeout(timeout, async {
            while probe.open_stream(sink, PUMP_PROTOCOL).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .map_err(|_| anyhow!("no stream to {sink} at {addr} within {timeout:?}"))?;
        let task = tokio::spawn(async move {
            let _driver = AbortOnDrop(driver);
            let data = vec![0x5au8; chunk];
            let writers = (0..streams.max(1)).map(|_| {
                let (mut control, data) = (control.clone(), &data);
                async move {
                    while let Ok(mut s) = control.open_stream(sink, PUMP_PROTOCOL).await {
                        if s.write_all(data).await.is_err() || s.close().await.is_err() {
                            return;
                        }
                    }
                }
            });
            futures::future::join_all(writers).await;
        });
        Ok(Pump { peer_id, task })
    }

    async fn start_at(
        circuit: Multiaddr,
        sink: PeerId,
        pace: Pace,
        timeout: Duration,
    ) -> Result<Pump> {
        let relay = circuit.clone();
        let (peer_id, mut control, driver) = dialing(&circuit)?;
        let stream = tokio::time::timeout(timeout, async {
            loop {
                match control.open_stream(sink, PUMP_PROTOCOL).await {
                    Ok(s) => return Ok(s),
                    Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(p)) => {
                        return Err(anyhow!("the sink does not speak {p}"));
                    }
                    // Not connected yet: the circuit is still being set up.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no stream to {sink} at {relay} within {timeout:?}"))??;
        let task = tokio::spawn(async move {
            let _driver = AbortOnDrop(driver);
            let mut stream = stream;
            let chunk = vec![0x5au8; 64 * 1024];
            loop {
                let written = match pace {
                    Pace::Greedy => stream.write_all(&chunk).await,
                    Pace::Steady { bytes, every } => {
                        let r = stream.write_all(&chunk[..bytes.min(chunk.len())]).await;
                        tokio::time::sleep(every).await;
                        r
                    }
                };
                if written.is_err() {
                    return;
                }
            }
        });
        Ok(Pump { peer_id, task })
    }
}

/// A pump's swarm, dialing `addr` and driven by a task of its own: its identity, its
/// stream control, and the task.
fn dialing(addr: &Multiaddr) -> Result<(PeerId, libp2p_stream::Control, JoinHandle<()>)> {
    let mut swarm = swarm()?;
    let peer_id = *swarm.local_peer_id();
    let control = swarm.behaviour().stream.new_control();
    swarm
        .dial(addr.clone())
        .with_context(|| format!("dial {addr}"))?;
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    Ok((peer_id, control, driver))
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
