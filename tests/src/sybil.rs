//! Sybil identities for the attack suite: many libp2p identities in one process, each
//! its own swarm, whose connections leave from a source address the test chooses.
//!
//! libp2p's TCP transport binds its dials to the unspecified address (or to a listen
//! port with port reuse), so on loopback every dial would come from 127.0.0.1. A
//! Sybil dials with [`SourceTcp`] instead, which binds each socket to its source
//! address first: 200 identities from `127.0.66.1` look to the target like 200
//! identities from one machine, and identities spread over `127.0.66.0/24` like one
//! subnet. Sybils do not listen on TCP: they only dial (and, asked to, listen through a
//! relay reservation).
//!
//! Each Sybil speaks what a Jantar node needs to talk to it (Noise, Yamux, identify with
//! Jantar's protocol version, ping, Kademlia on Jantar's protocol in server mode, and the
//! circuit relay client) and claims whatever addresses the test gives it: they are its
//! external addresses, so identify and its provider records carry them. The test then
//! drives it: publish provider records, put records, ask a relay for a reservation, open
//! a circuit through a relay. The relay client does nothing until asked. What the Sybils
//! saw is counted in a shared [`Tally`].

use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use jantar_net::behaviour::{KAD_PROTOCOL, PROTOCOL_VERSION};
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, Transport,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, DialOpts, ListenerId, TransportError, TransportEvent},
        upgrade::Version,
    },
    identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    multiaddr::Protocol,
    noise, ping, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use tokio::{sync::mpsc, task::JoinHandle};

/// A dial-only TCP transport whose sockets are bound to `source` before they connect.
#[derive(Clone, Copy, Debug)]
pub struct SourceTcp {
    source: IpAddr,
}

impl SourceTcp {
    pub fn new(source: IpAddr) -> Self {
        SourceTcp { source }
    }

    /// Dials from `source` with Noise and Yamux, as every attack tool's identity does.
    pub fn upgraded(
        source: IpAddr,
        key: &Keypair,
    ) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(SourceTcp::new(source)
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed())
    }
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = it.next()? else {
        return None;
    };
    match it.next() {
        None | Some(Protocol::P2p(_)) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

impl Transport for SourceTcp {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Pending<io::Result<Self::Output>>;
    type Dial = BoxFuture<'static, io::Result<Self::Output>>;

    fn listen_on(
        &mut self,
        _id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _id: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(remote) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if remote.is_ipv4() != self.source.is_ipv4() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let source = self.source;
        Ok(async move {
            let socket = if source.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(source, 0))?;
            let stream = socket.connect(remote).await?;
            stream.set_nodelay(true)?;
            Ok(tcp::tokio::TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Poll::Pending
    }
}

/// What the Sybils of one test saw, summed over all of them.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections established.
    pub connected: AtomicUsize,
    /// Connections closed.
    pub disconnected: AtomicUsize,
    /// Dials that failed.
    pub dial_failed: AtomicUsize,
    /// Provider records published (`start_providing` reached at least one node).
    pub provided: AtomicUsize,
    /// `start_providing` that failed.
    pub provide_failed: AtomicUsize,
    /// Records put (`put_record` reached the quorum).
    pub put: AtomicUsize,
    /// `put_record` that failed.
    pub put_failed: AtomicUsize,
    /// Reservations a relay accepted (renewals not counted).
    pub reserved: AtomicUsize,
    /// Reservations a relay refused (it answered `RESERVATION_REFUSED` or
    /// `RESOURCE_LIMIT_EXCEEDED`).
    pub reservation_refused: AtomicUsize,
    /// Reservations that failed otherwise (no connection to the relay, no answer).
    pub reservation_failed: AtomicUsize,
    /// Circuits a relay opened to their destination.
    pub circuits: AtomicUsize,
}

impl Tally {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// Which counter of a [`Tally`] an event adds to.
type Counter = fn(&Tally) -> &AtomicUsize;

/// The tally of all Sybils of a test and that of one Sybil, counted together.
struct Tallies {
    all: Arc<Tally>,
    own: Arc<Tally>,
}

impl Tallies {
    fn add(&self, counter: Counter) {
        for t in [&*self.all, &*self.own] {
            counter(t).fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a test asks a Sybil to do.
#[derive(Debug)]
pub enum Command {
    /// Publish a provider record for the key (the Sybil's claimed addresses in it).
    Provide(kad::RecordKey),
    /// Put a record.
    PutRecord(kad::Record),
    /// Ask the relay at this address (ending in `/p2p/<relay id>`) for a reservation:
    /// listen on its `/p2p-circuit` address. The Sybil dials the relay if it is not
    /// connected yet.
    Reserve(Multiaddr),
    /// Dial an address: `<relay>/p2p/<relay id>/p2p-circuit/p2p/<target>` asks the relay
    /// for a circuit to the target.
    Dial(Multiaddr),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
}

/// One Sybil identity, running in its own task until dropped.
pub struct Sybil {
    pub peer_id: PeerId,
    /// What this identity alone saw.
    pub tally: Arc<Tally>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Drop for Sybil {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sybil {
    /// Starts an identity that dials from `source` to each of `dial` (addresses ending
    /// in `/p2p/<peer id>`, which become its only routing-table entries) and claims
    /// `claimed` as its addresses.
    pub fn spawn(
        source: IpAddr,
        claimed: &[Multiaddr],
        dial: &[Multiaddr],
        tally: Arc<Tally>,
    ) -> Result<Sybil> {
        Sybil::spawn_with_key(Keypair::generate_ed25519(), source, claimed, dial, tally)
    }

    /// Like [`Sybil::spawn`], with an identity the test made beforehand (so that a
    /// node's config can name its peer id).
    pub fn spawn_with_key(
        key: Keypair,
        source: IpAddr,
        claimed: &[Multiaddr],
        dial: &[Multiaddr],
        tally: Arc<Tally>,
    ) -> Result<Sybil> {
        let peer_id = key.public().to_peer_id();
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| SourceTcp::upgraded(source, key))?
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|key, relay| {
                let me = key.public().to_peer_id();
                let mut config = kad::Config::new(KAD_PROTOCOL);
                config.set_kbucket_inserts(kad::BucketInserts::Manual);
                let mut kad = kad::Behaviour::with_config(me, MemoryStore::new(me), config);
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    relay,
                    identify: identify::Behaviour::new(
                        identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                            .with_agent_version("sybil".into()),
                    ),
                    ping: ping::Behaviour::default(),
                    kad,
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        for addr in claimed {
            swarm.add_external_address(addr.clone());
        }
        for addr in dial {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                bail!("{addr} does not end in /p2p/<peer id>");
            };
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            swarm
                .dial(addr.clone())
                .with_context(|| format!("dial {addr}"))?;
        }
        let own = Arc::new(Tally::default());
        let tally = Tallies {
            all: tally,
            own: own.clone(),
        };
        let (commands, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(Command::Provide(key)) => {
                            if swarm.behaviour_mut().kad.start_providing(key).is_err() {
                                tally.add(|t| &t.provide_failed);
                            }
                        }
                        Some(Command::PutRecord(record)) => {
                            if swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One).is_err() {
                                tally.add(|t| &t.put_failed);
                            }
                        }
                        Some(Command::Reserve(relay)) => {
                            if swarm.listen_on(relay.with(Protocol::P2pCircuit)).is_err() {
                                tally.add(|t| &t.reservation_failed);
                            }
                        }
                        Some(Command::Dial(addr)) => {
                            if swarm.dial(addr).is_err() {
                                tally.add(|t| &t.dial_failed);
                            }
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => on_event(&tally, event),
                }
            }
        });
        Ok(Sybil {
            peer_id,
            tally: own,
            commands,
            task,
        })
    }

    pub fn command(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .map_err(|_| anyhow::anyhow!("sybil {} has stopped", self.peer_id))
    }
}

fn on_event(tally: &Tallies, event: SwarmEvent<BehaviourEvent>) {
    match event {
        SwarmEvent::ConnectionEstablished { .. } => tally.add(|t| &t.connected),
        SwarmEvent::ConnectionClosed { .. } => tally.add(|t| &t.disconnected),
        SwarmEvent::OutgoingConnectionError { .. } => tally.add(|t| &t.dial_failed),
        SwarmEvent::Behaviour(BehaviourEvent::Relay(
            relay::client::Event::ReservationReqAccepted { renewal: false, .. },
        )) => tally.add(|t| &t.reserved),
        SwarmEvent::Behaviour(BehaviourEvent::Relay(
            relay::client::Event::OutboundCircuitEstablished { .. },
        )) => tally.add(|t| &t.circuits),
        // A relay listener closes with an error when its reservation is not granted.
        SwarmEvent::ListenerClosed { reason: Err(e), .. } => tally.add(if refused_by_relay(&e) {
            |t| &t.reservation_refused
        } else {
            |t| &t.reservation_failed
        }),
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
            result,
            step,
            ..
        })) if step.last => match result {
            kad::QueryResult::StartProviding(r) => {
                tally.add(if r.is_ok() {
                    |t| &t.provided
                } else {
                    |t| &t.provide_failed
                });
            }
            kad::QueryResult::PutRecord(r) => {
                tally.add(if r.is_ok() {
                    |t| &t.put
                } else {
                    |t| &t.put_failed
                });
            }
            _ => {}
        },
        _ => {}
    }
}

/// Whether a relay listener's error is the relay's refusal (rather than a failure to
/// reach it or a missing answer).
fn refused_by_relay(e: &io::Error) -> bool {
    use relay::outbound::hop::ReserveError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<ReserveError>() {
            return matches!(
                r,
                ReserveError::Refused | ReserveError::ResourceLimitExceeded
            );
        }
        source = e.source();
    }
    false
}
