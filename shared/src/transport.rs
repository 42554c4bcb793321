//! The swarm: TCP (Noise + Yamux), QUIC v1 and secure WebSocket (`/tls/ws`) on IPv4 and
//! IPv6, DNS resolution of `/dns4`, `/dns6` and `/dnsaddr` addresses, and the
//! relay-client transport for `/p2p-circuit` addresses.

use libp2p::{
    Swarm, SwarmBuilder, Transport,
    core::{transport::MemoryTransport, upgrade::Version},
    dns,
    identity::Keypair,
    noise, tcp, websocket, yamux,
};

use tracing::warn;

use crate::{behaviour::Behaviour, config::Config};

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
/// `/tls/ws` connections (see [`crate::tls::load`]).
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
    let (resolver, resolver_opts) = resolver_config();
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| err("TCP")(&e))?
        .with_quic()
        .with_other_transport(|key| {
            // DNS inside the websocket transport, so TLS sees the host name (SNI).
            let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
            let mut ws = websocket::Config::new(dns::tokio::Transport::custom(
                tcp,
                resolver.clone(),
                resolver_opts.clone(),
            ));
            ws.set_tls_config(tls);
            ws.set_max_data_size(MAX_WS_MESSAGE);
            let noise = noise::Config::new(key)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                ws.upgrade(Version::V1)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default()),
            )
        })
        .map_err(|e| err("WebSocket")(&e))?
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

/// Builds a swarm on the in-memory transport (`/memory/<n>` addresses) for tests that
/// run several nodes in one process.
pub fn build_memory_swarm(
    config: &Config,
    key: Keypair,
) -> Result<Swarm<Behaviour>, TransportError> {
    let idle = config.network.limits.idle_timeout;
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(MemoryTransport::default()
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
