//! A lying AutoNAT server for the attack suite: an identity that dials a node from a
//! source address the test chooses ([`crate::sybil::SourceTcp`]) and answers every
//! AutoNAT v1 dial-back request with "reached you at `claim`", without dialing at all.
//!
//! The answer is written by hand (the AutoNAT v1 protobuf, length-prefixed) on a raw
//! stream of `/libp2p/autonat/1.0.0`: the library's server only ever reports what it
//! really dialed.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use jantar_net::behaviour::PROTOCOL_VERSION;
use libp2p::{
    Multiaddr, StreamProtocol, SwarmBuilder, autonat, identify,
    identity::Keypair,
    ping,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use tokio::task::JoinHandle;

use crate::sybil::SourceTcp;

const AUTONAT: StreamProtocol = autonat::DEFAULT_PROTOCOL_NAME;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// One lying server, running until dropped.
pub struct Liar {
    /// Dial-back requests it answered with its lie.
    pub answered: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An unsigned varint, as libp2p frames its protobuf messages.
fn uvarint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `Message { type: DIAL_RESPONSE, dialResponse: { status: OK, addr: claim } }`,
/// length-prefixed.
fn dial_response(claim: &Multiaddr) -> Vec<u8> {
    let addr = claim.to_vec();
    let mut response = vec![0x08, 0x00, 0x1a]; // status = OK; addr (field 3, bytes)
    uvarint(addr.len(), &mut response);
    response.extend_from_slice(&addr);
    let mut message = vec![0x08, 0x01, 0x1a]; // type = DIAL_RESPONSE; dialResponse (field 3)
    uvarint(response.len(), &mut message);
    message.extend_from_slice(&response);
    let mut framed = Vec::new();
    uvarint(message.len(), &mut framed);
    framed.extend_from_slice(&message);
    framed
}

/// Reads one length-prefixed message (at most 8 KiB) and drops it.
async fn read_request(stream: &mut libp2p::swarm::Stream) -> Result<()> {
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await?;
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        anyhow::ensure!(shift < 28, "length prefix too long");
    }
    anyhow::ensure!(len <= 8192, "request of {len} bytes");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(())
}

impl Liar {
    /// Dials each of `dial` (addresses ending in `/p2p/<peer id>`) from `source` and
    /// answers every dial-back request with `claim`.
    pub fn spawn(source: IpAddr, claim: Multiaddr, dial: &[Multiaddr]) -> Result<Liar> {
        let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_other_transport(|key| SourceTcp::upgraded(source, key))?
            .with_behaviour(|key| Behaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                        .with_agent_version("autonat-liar".into()),
                ),
                ping: ping::Behaviour::default(),
                stream: libp2p_stream::Behaviour::new(),
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        let mut incoming = swarm
            .behaviour()
            .stream
            .new_control()
            .accept(AUTONAT)
            .map_err(|e| anyhow!("{e}"))?;
        for addr in dial {
            swarm
                .dial(addr.clone())
                .with_context(|| format!("dial {addr}"))?;
        }
        let dial = dial.to_vec();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let lie = dial_response(&claim);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        // Stay connected: the target closes idle connections, and a
                        // liar is only asked while connected.
                        if let SwarmEvent::ConnectionClosed { num_established: 0, .. } = event {
                            for addr in &dial {
                                let _ = swarm.dial(addr.clone());
                            }
                        }
                    }
                    Some((_, mut stream)) = incoming.next() => {
                        let (lie, count) = (lie.clone(), count.clone());
                        tokio::spawn(async move {
                            if read_request(&mut stream).await.is_ok()
                                && stream.write_all(&lie).await.is_ok()
                                && stream.close().await.is_ok()
                            {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                }
            }
        });
        Ok(Liar { answered, task })
    }

    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lie_is_a_well_formed_dial_response() {
        let claim: Multiaddr = "/ip4/6.6.6.6/tcp/4001".parse().unwrap();
        let framed = dial_response(&claim);
        let addr = claim.to_vec();
        // length prefix, then type = 1, then the nested response ending in the address.
        assert_eq!(usize::from(framed[0]), framed.len() - 1);
        assert_eq!(&framed[1..4], &[0x08, 0x01, 0x1a]);
        assert!(framed.ends_with(&addr));
    }
}
