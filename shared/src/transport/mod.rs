//! The swarm: TCP (Noise + Yamux), QUIC v1 and secure WebSocket (`/tls/ws`) on IPv4 and
//! IPv6, DNS resolution of `/dns4`, `/dns6` and `/dnsaddr` addresses, and the
//! relay-client transport for `/p2p-circuit` addresses.

mod reuse_fallback;
mod throttle;

use std::sync::Arc;

use futures::future::Either;
use libp2p::{
    PeerId, Swarm, SwarmBuilder, Transport,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade::Version,
    },
    dns,
    identity::Keypair,
    noise, quic, tcp, websocket, yamux,
};
use tracing::warn;

use self::reuse_fallback::ReuseFallback;
pub use self::throttle::{Budget, Throttled, ThrottledMuxer};
use crate::{
    behaviour::Behaviour,
    config::{Config, Role},
};

/// The system's resolver configuration. Without one (a container image with no
/// `/etc/resolv.conf`) the node still starts and dials IP addresses; `/dns`
/// addresses then fail to resolve, and a warning says why.
fn resolver_config() -> (dns::ResolverConfig, dns::ResolverOpts) {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok(conf) => conf,
        Err(e) => {
            warn!(
                error = %e,
                "cannot read the system's DNS configuration (/etc/resolv.conf); /dns addresses \
                 will not resolve, IP addresses work"
            );
            (dns::ResolverConfig::default(), dns::ResolverOpts::default())
        }
    }
}

/// The largest WebSocket message accepted (the library's default is 256 MiB, which one
/// stranger per connection could make the node buffer). A message carries one Noise
/// frame, at most 64 KiB.
const MAX_WS_MESSAGE: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot set up the {what} transport: {reason}")]
    Setup { what: &'static str, reason: String },
}

/// Builds the swarm for `config` with identity `key`; `tls` serves and verifies
/// `/tls/ws` connections (see [`crate::tls::load`]). A relay's streams read through its
/// bandwidth budget ([`throttle`]).
pub fn build_swarm(
    config: &Config,
    key: Keypair,
    tls: websocket::tls::Config,
) -> Result<Swarm<Behaviour>, TransportError> {
    let err = |what| {
        move |e: &dyn std::fmt::Display| TransportError::Setup {
            what,
            reason: e.to_string(),
        }
    };
    let idle = config.network.limits.idle_timeout;
    let budget = if config.role == Role::Relay {
        let r = &config.relay;
        for (scope, rate) in [
            ("total", r.max_bytes_per_second),
            ("stream", r.circuit_bytes_per_second),
        ] {
            metrics::gauge!(crate::metrics::RELAY_BUDGET, "scope" => scope).set(rate as f64);
        }
        Budget::new(r.max_bytes_per_second, r.circuit_bytes_per_second)
    } else {
        None
    };
    let (resolver, resolver_opts) = resolver_config();
    let ws_resolver = (resolver.clone(), resolver_opts.clone());
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| direct(key, tls, ws_resolver, budget))
        .map_err(|e| err("TCP, QUIC and WebSocket")(&e))?
        .with_dns_config(resolver, resolver_opts)
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| err("relay client")(&e))?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(config, key, relay_client)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| err("behaviour")(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The direct transports: TCP (Noise + Yamux, falling back to a fresh port when reusing
/// the listen port clashes), QUIC v1, and secure WebSocket with DNS inside it so that
/// TLS sees the host name (SNI). With a budget, every connection's streams read
/// through it.
fn direct(
    key: &Keypair,
    tls: websocket::tls::Config,
    (resolver, resolver_opts): (dns::ResolverConfig, dns::ResolverOpts),
    budget: Option<Arc<Budget>>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    let tcp = ReuseFallback(tcp::tokio::Transport::new(tcp_config()))
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let quic = quic::tokio::Transport::new(quic::Config::new(key))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let mut ws = websocket::Config::new(dns::tokio::Transport::custom(
        tcp::tokio::Transport::new(tcp_config()),
        resolver,
        resolver_opts,
    ));
    ws.set_tls_config(tls);
    ws.set_max_data_size(MAX_WS_MESSAGE);
    let ws = ws
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let all = tcp
        .or_transport(quic)
        .or_transport(ws)
        .map(|either, _| match either {
            Either::Left(Either::Left(conn) | Either::Right(conn)) | Either::Right(conn) => conn,
        });
    Ok(match budget {
        Some(budget) => all
            .map(move |(peer, muxer), _| (peer, ThrottledMuxer::wrap(muxer, budget.clone())))
            .boxed(),
        None => all.boxed(),
    })
}

fn tcp_config() -> tcp::Config {
    tcp::Config::default().nodelay(true)
}

/// Builds a swarm on the in-memory transport (`/memory/<n>` addresses) for tests that
/// run several nodes in one process.
pub fn build_memory_swarm(
    config: &Config,
    key: Keypair,
) -> Result<Swarm<Behaviour>, TransportError> {
    build_swarm_over(config, key, boxed_bytes(MemoryTransport::default()))
}

/// A connection of a caller's byte transport, behind a pointer.
pub trait ByteStream: futures::AsyncRead + futures::AsyncWrite + Send + Unpin {}

impl<T: futures::AsyncRead + futures::AsyncWrite + Send + Unpin> ByteStream for T {}

/// `raw` with its connections boxed, as [`build_swarm_over`] takes it.
pub fn boxed_bytes<T>(raw: T) -> Boxed<Box<dyn ByteStream>>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: ByteStream + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    raw.map(|conn, _| Box::new(conn) as Box<dyn ByteStream>)
        .boxed()
}

/// Builds a swarm whose connections run Noise and Yamux over `raw`, a byte transport
/// of the caller's (the memory transport, or a simulated network that adds latency
/// and cuts links), with the relay-client transport beside it.
///
/// `raw`'s connections are boxed ([`boxed_bytes`]) so that Noise and Yamux over them
/// are compiled here, with this crate's optimization level, and not again (unoptimized)
/// in every crate that brings a transport: a simulation of many nodes spends most of
/// its time in that code.
pub fn build_swarm_over(
    config: &Config,
    key: Keypair,
    raw: Boxed<Box<dyn ByteStream>>,
) -> Result<Swarm<Behaviour>, TransportError> {
    let idle = config.network.limits.idle_timeout;
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(raw
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| TransportError::Setup {
            what: "memory",
            reason: e.to_string(),
        })?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| TransportError::Setup {
            what: "relay client",
            reason: e.to_string(),
        })?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(config, key, relay_client)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| TransportError::Setup {
            what: "behaviour",
            reason: e.to_string(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}
