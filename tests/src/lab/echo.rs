//! A minimal libp2p client that exchanges data with a Jantar node over any
//! address, relay circuits included, using the node's own ping protocol
//! (`/ipfs/ping/1.0.0`): the node echoes every 32-byte payload it reads on a
//! ping stream. The Jantar binaries have no bulk-transfer protocol, so a long
//! pipelined run of echoes is the bulk transfer: it crosses the relay in both
//! directions and counts against the relay's circuit limits like any other
//! traffic.
//!
//! The client opens exactly one ping stream; it does not run the ping
//! behaviour (a node keeps one inbound ping stream per connection and would
//! drop the older one) and does not support DCUtR, so a connection over a
//! circuit stays relayed. It does answer the node's own pings: libp2p's ping
//! handler stops echoing on a connection whose peer refuses its outbound
//! ping stream. Used by `lab-probe p2p-echo`.

use std::{
    collections::VecDeque,
    convert::Infallible,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol, SwarmBuilder,
    core::{Endpoint, transport::PortUse, upgrade::ReadyUpgrade},
    multiaddr::Protocol,
    noise, relay,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, SwarmEvent, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
    },
    tcp, yamux,
};
use serde_json::{Value, json};

/// The protocol whose echo carries the data.
const PING: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");
/// Size of one ping payload.
const PAYLOAD: usize = 32;
/// Bytes written per write call during the bulk transfer.
const BULK_CHUNK: usize = 4096;

/// What to do once connected.
#[derive(Clone, Debug)]
pub struct EchoOptions {
    /// Address to dial, ending in `/p2p/<peer id>`.
    pub target: Multiaddr,
    /// Single round trips to time first.
    pub pings: u32,
    /// Bytes to send (rounded up to whole payloads) and receive back.
    pub bulk_bytes: u64,
    /// Limit for the whole run.
    pub timeout: Duration,
}

/// Runs the client; every step is reported through `emit` as one JSON
/// object with an `event` field.
pub async fn run(opts: EchoOptions, emit: impl Fn(Value)) -> Result<()> {
    let peer = match opts.target.iter().last() {
        Some(Protocol::P2p(p)) => p,
        _ => bail!("target {} does not end in /p2p/<peer id>", opts.target),
    };
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_, relay| Behaviour {
            relay,
            opener: Opener::new(peer),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let start = Instant::now();
    swarm
        .dial(opts.target.clone())
        .with_context(|| format!("dial {}", opts.target))?;

    // Drive the swarm until the stream is open; afterwards it keeps running
    // in its own task and reports when the connection closes.
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let stream = loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| anyhow!("no ping stream within {:?}", opts.timeout))?;
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } if peer_id == peer => emit(json!({
                "event": "p2p_connected",
                "peer": peer_id.to_string(),
                "address": endpoint.get_remote_address().to_string(),
                "relayed": endpoint.is_relayed(),
                "millis": start.elapsed().as_millis() as u64,
            })),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } if peer_id == Some(peer) => {
                bail!("cannot connect to {}: {error}", opts.target)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Opener(Ok(stream))) => break stream,
            SwarmEvent::Behaviour(BehaviourEvent::Opener(Err(e))) => {
                bail!("cannot open a ping stream: {e}")
            }
            _ => {}
        }
    };
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<String>();
    let driver = tokio::spawn(async move {
        let mut closed_tx = Some(closed_tx);
        loop {
            if let SwarmEvent::ConnectionClosed { peer_id, cause, .. } =
                swarm.select_next_some().await
                && peer_id == peer
                && let Some(tx) = closed_tx.take()
            {
                let _ = tx.send(cause.map_or("closed".to_string(), |c| c.to_string()));
            }
        }
    });
    let result = tokio::time::timeout_at(deadline, exchange(stream, &opts, &emit))
        .await
        .unwrap_or_else(|_| Err(anyhow!("exchange unfinished after {:?}", opts.timeout)));
    if let Err(e) = &result {
        // Give the connection-closed event a moment to explain the failure.
        let cause = tokio::time::timeout(Duration::from_secs(2), closed_rx)
            .await
            .ok()
            .and_then(Result::ok);
        emit(json!({"event": "p2p_failed", "error": format!("{e:#}"), "connection_closed": cause}));
    }
    driver.abort();
    emit(json!({"event": "done"}));
    Ok(())
}

/// Pings, then the bulk transfer, on one stream.
async fn exchange(stream: Stream, opts: &EchoOptions, emit: &impl Fn(Value)) -> Result<()> {
    let (mut rx, mut tx) = stream.split();
    let mut buf = [0u8; PAYLOAD];
    for seq in 0..opts.pings {
        let payload = pattern(u64::from(seq) * PAYLOAD as u64, PAYLOAD);
        let t = Instant::now();
        tx.write_all(&payload).await.context("write ping")?;
        tx.flush().await.context("flush ping")?;
        rx.read_exact(&mut buf).await.context("read pong")?;
        if buf[..] != payload[..] {
            bail!("ping {seq}: echo differs from what was sent");
        }
        emit(json!({"event": "p2p_ping", "seq": seq, "rtt_us": t.elapsed().as_micros() as u64}));
    }
    if opts.bulk_bytes == 0 {
        return Ok(());
    }
    let total = opts.bulk_bytes.div_ceil(PAYLOAD as u64) * PAYLOAD as u64;
    let offset = u64::from(opts.pings) * PAYLOAD as u64;
    let t = Instant::now();
    let send = async {
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(BULK_CHUNK as u64) as usize;
            tx.write_all(&pattern(offset + sent, n))
                .await
                .context("write bulk")?;
            sent += n as u64;
        }
        tx.flush().await.context("flush bulk")?;
        anyhow::Ok(())
    };
    let mut echoed = 0u64;
    let receive = async {
        let mut chunk = vec![0u8; BULK_CHUNK];
        while echoed < total {
            let n = (total - echoed).min(BULK_CHUNK as u64) as usize;
            rx.read_exact(&mut chunk[..n])
                .await
                .context("read bulk echo")?;
            if chunk[..n] != pattern(offset + echoed, n)[..] {
                bail!("bulk echo differs from what was sent at byte {echoed}");
            }
            echoed += n as u64;
        }
        anyhow::Ok(())
    };
    let (sent, received) = futures::join!(send, receive);
    let millis = t.elapsed().as_millis().max(1) as u64;
    match sent.and(received) {
        Ok(()) => {
            emit(json!({
                "event": "p2p_bulk",
                "bytes": total,
                "millis": millis,
                "kbit_per_s": total * 8 / millis,
            }));
            Ok(())
        }
        Err(e) => {
            emit(
                json!({"event": "p2p_bulk_failed", "bytes_echoed": echoed, "millis": millis, "error": format!("{e:#}")}),
            );
            Err(e)
        }
    }
}

/// Deterministic payload bytes for stream offset `from`.
fn pattern(from: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((from + i).wrapping_mul(31) % 251) as u8)
        .collect()
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    relay: relay::client::Behaviour,
    opener: Opener,
}

/// Opens one outbound ping stream on the first connection to `target`.
struct Opener {
    target: PeerId,
    requested: bool,
    events: VecDeque<Result<Stream, String>>,
}

impl Opener {
    fn new(target: PeerId) -> Self {
        Self {
            target,
            requested: false,
            events: VecDeque::new(),
        }
    }
}

impl NetworkBehaviour for Opener {
    type ConnectionHandler = OpenerHandler;
    type ToSwarm = Result<Stream, String>;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(OpenerHandler::new(false))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let want = peer == self.target && !self.requested;
        self.requested |= want;
        Ok(OpenerHandler::new(want))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.events.push_back(event);
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(e) => Poll::Ready(ToSwarm::GenerateEvent(e)),
            None => Poll::Pending,
        }
    }
}

struct OpenerHandler {
    want: bool,
    out: Option<Result<Stream, String>>,
}

impl OpenerHandler {
    fn new(want: bool) -> Self {
        Self { want, out: None }
    }
}

impl ConnectionHandler for OpenerHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Result<Stream, String>;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<ReadyUpgrade<StreamProtocol>, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(PING), ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if self.want {
            self.want = false;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PING), ()),
            });
        }
        match self.out.take() {
            Some(r) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(r)),
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<ReadyUpgrade<StreamProtocol>, ReadyUpgrade<StreamProtocol>, (), ()>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                // Answer the node's pings for as long as it sends them.
                tokio::spawn(async move {
                    let (mut rx, mut tx) = stream.split();
                    let mut buf = [0u8; PAYLOAD];
                    while rx.read_exact(&mut buf).await.is_ok() {
                        if tx.write_all(&buf).await.is_err() || tx.flush().await.is_err() {
                            break;
                        }
                    }
                });
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol, ..
            }) => self.out = Some(Ok(protocol)),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.out = Some(Err(error.to_string()));
            }
            _ => {}
        }
    }
}
