//! Bootstrap capacity: thousands of clients, each its own libp2p identity and swarm,
//! connect to one real `jantar-bootstrap` process and ask it FIND_NODE.
//!
//! Clients dial from many loopback source addresses (the attack suite's [`SourceTcp`]),
//! at most `per_ip` from each, so the bootstrap node's per-IP limits apply as they would
//! on the internet; its `max_peers` and pending limits are raised to the target in the
//! benchmark's config (printed). Each client speaks Noise, Yamux, identify and Kademlia
//! in client mode on Jantar's protocol, and while it holds its connection it looks up a
//! random key every `query_interval` (which also keeps the connection from idling out).
//! A lookup's latency is from the query's start to its end: with the bootstrap node the
//! only server known, one request and its answer.

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures::StreamExt;
use jantar_net::behaviour::{KAD_PROTOCOL, PROTOCOL_VERSION};
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    multiaddr::Protocol,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use tokio::task::JoinHandle;

use crate::sybil::SourceTcp;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
}

/// Counters and samples all clients share.
#[derive(Default)]
pub struct Shared {
    pub connected: AtomicUsize,
    pub disconnected: AtomicUsize,
    pub dial_failed: AtomicUsize,
    pub queries_ok: AtomicUsize,
    pub queries_failed: AtomicUsize,
    /// Clients that asked once and left (see [`Client::spawn_once`]).
    pub sessions_done: AtomicUsize,
    /// Lookup latencies, ms, while sampling is on.
    samples: Mutex<Vec<f64>>,
    sampling: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn start_sampling(&self) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.sampling.store(true, Ordering::Relaxed);
    }

    /// The samples since [`Shared::start_sampling`], sorted.
    pub fn take_samples(&self) -> Vec<f64> {
        self.sampling.store(false, Ordering::Relaxed);
        let mut v = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        v.sort_by(f64::total_cmp);
        v
    }
}

/// One client identity, running until dropped.
pub struct Client {
    pub peer_id: PeerId,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// A client that dials `target` (ending in `/p2p/<peer id>`) from `source` and looks
    /// up a random key every `query_interval`.
    pub fn spawn(
        source: IpAddr,
        target: &Multiaddr,
        query_interval: Duration,
        shared: Arc<Shared>,
    ) -> Result<Client> {
        Client::start(source, target, query_interval, false, shared)
    }

    /// A client that connects, looks up one random key and leaves, as most of a
    /// bootstrap node's visitors do.
    pub fn spawn_once(source: IpAddr, target: &Multiaddr, shared: Arc<Shared>) -> Result<Client> {
        Client::start(source, target, Duration::from_millis(1), true, shared)
    }

    fn start(
        source: IpAddr,
        target: &Multiaddr,
        query_interval: Duration,
        once: bool,
        shared: Arc<Shared>,
    ) -> Result<Client> {
        let key = Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let Some(Protocol::P2p(server)) = target.iter().last() else {
            anyhow::bail!("{target} does not end in /p2p/<peer id>");
        };
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| SourceTcp::upgraded(source, key))?
            .with_behaviour(|key| {
                let me = key.public().to_peer_id();
                let mut config = kad::Config::new(KAD_PROTOCOL);
                config.set_kbucket_inserts(kad::BucketInserts::Manual);
                config.set_periodic_bootstrap_interval(None);
                let mut kad = kad::Behaviour::with_config(me, MemoryStore::new(me), config);
                kad.set_mode(Some(kad::Mode::Client));
                Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                            .with_agent_version("capacity-client".into()),
                    ),
                    kad,
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        swarm
            .behaviour_mut()
            .kad
            .add_address(&server, target.clone());
        swarm.dial(target.clone()).context("dial")?;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(query_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut started: Option<(kad::QueryId, Instant)> = None;
            let mut connected = false;
            loop {
                tokio::select! {
                    _ = tick.tick(), if connected && started.is_none() => {
                        let id = swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
                        started = Some((id, Instant::now()));
                    }
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { .. } => {
                            connected = true;
                            shared.connected.fetch_add(1, Ordering::Relaxed);
                        }
                        SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                            shared.disconnected.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        SwarmEvent::OutgoingConnectionError { .. } => {
                            shared.dial_failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Kad(
                            kad::Event::OutboundQueryProgressed { id, result, step, .. },
                        )) if step.last => {
                            if let Some((_, at)) = started.take_if(|(q, _)| *q == id) {
                                let ok = matches!(result, kad::QueryResult::GetClosestPeers(Ok(_)));
                                let counter = if ok { &shared.queries_ok } else { &shared.queries_failed };
                                counter.fetch_add(1, Ordering::Relaxed);
                                if ok && shared.sampling.load(Ordering::Relaxed) {
                                    let ms = at.elapsed().as_secs_f64() * 1e3;
                                    shared.samples.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                                }
                                if once {
                                    shared.sessions_done.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                            }
                        }
                        _ => {}
                    },
                }
            }
        });
        Ok(Client { peer_id, task })
    }
}

/// The `i`-th source address when each holds `per_ip` clients: `127.x.y.1` with
/// `x.y` counting up from 100.0, one /24 per address so that no subnet cap is in play.
pub fn source(i: usize, per_ip: usize) -> IpAddr {
    let n = i / per_ip.max(1);
    IpAddr::from([127, 100 + (n / 256) as u8, (n % 256) as u8, 1])
}

/// Percentile `p` (0 to 1) of sorted `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// A KiB field of `/proc/<pid>/status`, such as `VmRSS:` (resident now) or `VmHWM:`
/// (the peak).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory of a process.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// CPU seconds (user + system) a process used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
