//! Greedy AutoNAT clients for the attack suite: identities that dial a node from a source
//! address the test chooses ([`crate::sybil::SourceTcp`]) and ask it for dial-backs as
//! often as the protocol lets them, to take its whole dial-back budget.
//!
//! Each one runs libp2p's AutoNAT v1 client with the target as its only server and
//! counts the target's answers (`answered`: it dialed back, or tried) and refusals
//! (`refused`: the target did not speak AutoNAT on this connection, or said no); a
//! refused client stops.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use jantar_net::behaviour::PROTOCOL_VERSION;
use libp2p::{
    Multiaddr, SwarmBuilder, autonat, identify,
    identity::Keypair,
    multiaddr::Protocol,
    ping,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use tokio::task::JoinHandle;

use crate::sybil::SourceTcp;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    autonat: autonat::Behaviour,
}

/// What the clients of one test saw, summed over all of them.
#[derive(Debug, Default)]
pub struct Answers {
    pub answered: AtomicUsize,
    pub refused: AtomicUsize,
}

impl Answers {
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One greedy client, running until dropped.
pub struct Asker {
    task: JoinHandle<()>,
}

impl Drop for Asker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Asker {
    /// Dials `target` (`<address>/p2p/<peer id>`) from `source` and asks it for a
    /// dial-back every `every`.
    pub fn spawn(
        source: IpAddr,
        target: &Multiaddr,
        every: Duration,
        answers: Arc<Answers>,
    ) -> Result<Asker> {
        let Some(Protocol::P2p(server)) = target.iter().last() else {
            bail!("{target} does not end in /p2p/<peer id>");
        };
        let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_other_transport(|key| SourceTcp::upgraded(source, key))?
            .with_behaviour(|key| {
                let me = key.public().to_peer_id();
                let mut autonat = autonat::Behaviour::new(
                    me,
                    autonat::Config {
                        boot_delay: Duration::from_millis(200),
                        retry_interval: every,
                        refresh_interval: every,
                        throttle_server_period: Duration::ZERO,
                        use_connected: false,
                        only_global_ips: false,
                        ..Default::default()
                    },
                );
                autonat.add_server(server, Some(target.clone()));
                // Something to ask about: a dead port on the client's own address.
                autonat.probe_address(
                    format!("/ip4/{source}/tcp/9")
                        .parse()
                        .expect("a dial-back address"),
                );
                Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                            .with_agent_version("autonat-asker".into()),
                    ),
                    ping: ping::Behaviour::default(),
                    autonat,
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        swarm
            .dial(target.clone())
            .with_context(|| format!("dial {target}"))?;
        let task = tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(BehaviourEvent::Autonat(
                    autonat::Event::OutboundProbe(probe),
                )) = swarm.select_next_some().await
                {
                    match probe {
                        autonat::OutboundProbeEvent::Response { .. }
                        | autonat::OutboundProbeEvent::Error {
                            error:
                                autonat::OutboundProbeError::Response(autonat::ResponseError::DialError),
                            ..
                        } => {
                            answers.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        autonat::OutboundProbeEvent::Error {
                            error:
                                autonat::OutboundProbeError::Response(_)
                                | autonat::OutboundProbeError::OutboundRequest(_),
                            ..
                        } => {
                            // Refused: this connection gets no service. It leaves (the
                            // library would ask again at once, and again).
                            answers.refused.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok(Asker { task })
    }
}
