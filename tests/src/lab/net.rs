//! A Jantar network in the lab: bootstrap nodes, a relay and peers, each the
//! real binary on its own lab host, plus diagnostics for failed scenarios.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{
    Lab, NatKind,
    host::LabHost,
    node::{LabNode, NodeConfig, P2P_PORT, Transport, WSS_PORT, diagnose_nodes, strings},
};
use crate::harness::Role;

/// Time a node gets to become ready after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The nodes of one lab scenario. Keeps every started node, so a failure can
/// print all of them.
pub struct JantarNet<'a> {
    lab: &'a Lab,
    nodes: Mutex<Vec<Arc<LabNode>>>,
}

impl std::fmt::Debug for JantarNet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JantarNet")
            .field("nodes", &self.nodes.lock().unwrap().len())
            .finish()
    }
}

impl<'a> JantarNet<'a> {
    /// An empty network in `lab`.
    pub fn new(lab: &'a Lab) -> Self {
        Self {
            lab,
            nodes: Mutex::new(Vec::new()),
        }
    }

    /// The lab the network lives in.
    pub fn lab(&self) -> &'a Lab {
        self.lab
    }

    /// Starts `config` on `host` and keeps the node for diagnostics.
    pub async fn start(&self, host: &LabHost, config: NodeConfig) -> Result<Arc<LabNode>> {
        let name = config.name().to_string();
        let node = Arc::new(
            LabNode::start(host, config)
                .await
                .with_context(|| format!("start {name} on {}", host.name()))?,
        );
        self.nodes.lock().unwrap().push(Arc::clone(&node));
        Ok(node)
    }

    /// Every node started so far.
    pub fn nodes(&self) -> Vec<Arc<LabNode>> {
        self.nodes.lock().unwrap().clone()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<Arc<LabNode>> {
        self.nodes().into_iter().find(|n| n.name() == name)
    }

    /// Log tail and `/status` of every node.
    pub async fn diagnose(&self) -> String {
        let nodes = self.nodes();
        let refs: Vec<&LabNode> = nodes.iter().map(|n| n.as_ref()).collect();
        diagnose_nodes(&refs).await
    }

    /// Runs `body`; when it fails, prints every node's diagnostics to stderr
    /// before returning the error (the routers' rules are printed by
    /// [`run_scenario`](super::run_scenario)).
    pub async fn checked<T>(&self, body: impl Future<Output = Result<T>>) -> Result<T> {
        let result = body.await;
        if let Err(e) = &result {
            eprintln!("scenario failed: {e:#}\n===== node diagnostics =====");
            eprintln!("{}", self.diagnose().await);
        }
        result
    }
}

/// Config of a bootstrap node on a datacenter host: TCP and QUIC on port
/// 4001, its lab address as external address, and `others` as the bootstrap
/// list (a bootstrap node skips its own entry).
pub fn bootstrap_config(name: &str, host: &LabHost, others: &[String]) -> NodeConfig {
    NodeConfig::new(Role::Bootstrap, name)
        .external(&datacenter_addrs(host.ip(), false))
        .bootstrap_nodes(others)
}

/// Config of a relay on a datacenter host: TCP and QUIC on port 4001 and,
/// with `wss`, secure WebSocket on 443 with a self-signed certificate; its
/// lab addresses as external addresses, so it serves at once.
pub fn relay_config(name: &str, host: &LabHost, bootstraps: &[String], wss: bool) -> NodeConfig {
    let mut listen = vec![
        Transport::Tcp.multiaddr(Ipv4Addr::UNSPECIFIED, P2P_PORT),
        Transport::Quic.multiaddr(Ipv4Addr::UNSPECIFIED, P2P_PORT),
    ];
    if wss {
        listen.push(format!("/ip4/0.0.0.0/tcp/{WSS_PORT}/tls/ws"));
    }
    NodeConfig::new(Role::Relay, name)
        .listen(&listen)
        .external(&datacenter_addrs(host.ip(), wss))
        .bootstrap_nodes(bootstraps)
}

/// Config of a peer that joins through `bootstraps`.
pub fn peer_config(name: &str, bootstraps: &[String]) -> NodeConfig {
    NodeConfig::new(Role::Peer, name).bootstrap_nodes(bootstraps)
}

fn datacenter_addrs(ip: Ipv4Addr, wss: bool) -> Vec<String> {
    let mut addrs = vec![
        Transport::Tcp.multiaddr(ip, P2P_PORT),
        Transport::Quic.multiaddr(ip, P2P_PORT),
    ];
    if wss {
        addrs.push(format!("/ip4/{ip}/tcp/{WSS_PORT}/tls/ws"));
    }
    addrs
}

/// Where the relay keeps its self-signed certificate.
pub fn relay_certificate(relay: &LabNode) -> PathBuf {
    relay.data_dir().join("tls").join("cert.pem")
}

/// What [`Topology::build`] creates.
#[derive(Clone, Debug)]
pub struct TopologySpec {
    /// Number of bootstrap nodes (at least one).
    pub bootstraps: usize,
    /// A peer in the datacenter, without NAT.
    pub public_peer: bool,
    /// One peer behind its own home network per entry.
    pub nat_peers: Vec<NatKind>,
    /// Relay config edits, as dotted key and value.
    pub relay_settings: Vec<(String, Value)>,
    /// Peer config edits applied to every peer.
    pub peer_settings: Vec<(String, Value)>,
    /// Config edits for the corporate peer only, after `peer_settings`.
    pub corporate_settings: Vec<(String, Value)>,
    /// Peers listen on their host's own address instead of every interface,
    /// so they have no loopback listen address to advertise.
    pub listen_on_host_ip: bool,
    /// Transport of the bootstrap addresses every node is given.
    pub bootstrap_transport: Transport,
}

impl TopologySpec {
    /// The topology: two bootstrap nodes, a relay with WSS, a public
    /// peer, and one peer behind each of Open, Moderate, Strict, CGNAT and
    /// Corporate.
    pub fn standard() -> Self {
        Self {
            bootstraps: 2,
            public_peer: true,
            nat_peers: vec![
                NatKind::Open,
                NatKind::Moderate,
                NatKind::Strict,
                NatKind::Cgnat,
                NatKind::Corporate,
            ],
            relay_settings: Vec::new(),
            peer_settings: Vec::new(),
            // `always` is the documented setting for a peer known to be
            // unreachable; the default `auto` has its own test.
            corporate_settings: vec![(
                "network.relay_reservations".to_string(),
                Value::from("always"),
            )],
            listen_on_host_ip: false,
            bootstrap_transport: Transport::Tcp,
        }
    }

    /// Adds a relay config edit.
    pub fn relay_setting(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.relay_settings.push((key.to_string(), value.into()));
        self
    }

    /// Adds a config edit for every peer.
    pub fn peer_setting(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.peer_settings.push((key.to_string(), value.into()));
        self
    }
}

/// A started [`TopologySpec`].
#[derive(Debug)]
pub struct Topology {
    /// Bootstrap nodes, `boot1`, `boot2`, ...
    pub bootstraps: Vec<Arc<LabNode>>,
    /// The relay (`relay`), with WSS on 443.
    pub relay: Arc<LabNode>,
    /// The datacenter peer (`public`), if asked for.
    pub public_peer: Option<Arc<LabNode>>,
    /// Peers behind NATs, in the order of [`TopologySpec::nat_peers`], each
    /// named after its kind (`open`, `moderate`, ...; `open-2` for a second).
    pub nat_peers: Vec<(NatKind, Arc<LabNode>)>,
    /// The relay's self-signed certificate, trusted by every peer.
    pub relay_cert: PathBuf,
    /// Transport of [`bootstrap_addrs`](Self::bootstrap_addrs).
    pub bootstrap_transport: Transport,
}

impl Topology {
    /// Starts the bootstrap nodes, the relay and the peers, and waits until
    /// each bootstrap node and the relay are ready (peers are only started).
    pub async fn build(net: &JantarNet<'_>, spec: &TopologySpec) -> Result<Topology> {
        let lab = net.lab();
        let mut bootstraps = Vec::new();
        let mut boot_addrs: Vec<String> = Vec::new();
        for i in 1..=spec.bootstraps.max(1) {
            let name = format!("boot{i}");
            let host = lab.add_datacenter_host(&name).await?;
            let node = net
                .start(&host, bootstrap_config(&name, &host, &boot_addrs))
                .await?;
            wait_ready(&node).await?;
            boot_addrs.push(node.addr(spec.bootstrap_transport));
            bootstraps.push(node);
        }

        let host = lab.add_datacenter_host("relay").await?;
        let mut cfg = relay_config("relay", &host, &boot_addrs, true);
        for (k, v) in &spec.relay_settings {
            cfg = cfg.set(k, v.clone());
        }
        let relay = net.start(&host, cfg).await?;
        wait_ready(&relay).await?;
        let relay_cert = relay_certificate(&relay);
        anyhow::ensure!(
            relay_cert.is_file(),
            "the relay serves /tls/ws but did not write its self-signed certificate to {}",
            relay_cert.display()
        );

        let peer = |name: &str, host: &LabHost| {
            let mut cfg = peer_config(name, &boot_addrs)
                .trusted_certificates(std::slice::from_ref(&relay_cert));
            if spec.listen_on_host_ip {
                cfg = cfg.listen(&[
                    Transport::Tcp.multiaddr(host.ip(), P2P_PORT),
                    Transport::Quic.multiaddr(host.ip(), P2P_PORT),
                ]);
            }
            for (k, v) in &spec.peer_settings {
                cfg = cfg.set(k, v.clone());
            }
            cfg
        };
        let public_peer = if spec.public_peer {
            let host = lab.add_datacenter_host("public").await?;
            Some(net.start(&host, peer("public", &host)).await?)
        } else {
            None
        };
        let mut nat_peers = Vec::new();
        for kind in &spec.nat_peers {
            let same = nat_peers.iter().filter(|(k, _)| k == kind).count();
            let name = if same == 0 {
                kind.name().to_string()
            } else {
                format!("{}-{}", kind.name(), same + 1)
            };
            let host = lab.add_home_host(*kind, &name).await?;
            let mut cfg = peer(&name, &host);
            if *kind == NatKind::Corporate {
                // Only TCP 80 and 443 get out: the relay's WSS listener is
                // the way in. The bootstrap nodes stay configured (and
                // unreachable), as a real deployment would have them.
                cfg = if spec.listen_on_host_ip {
                    cfg.listen(&[Transport::Tcp.multiaddr(host.ip(), P2P_PORT)])
                } else {
                    cfg.only(Transport::Tcp)
                }
                .relay_nodes(&[relay.wss_addr()]);
                for (k, v) in &spec.corporate_settings {
                    cfg = cfg.set(k, v.clone());
                }
            }
            nat_peers.push((*kind, net.start(&host, cfg).await?));
        }
        Ok(Topology {
            bootstraps,
            relay,
            public_peer,
            nat_peers,
            relay_cert,
            bootstrap_transport: spec.bootstrap_transport,
        })
    }

    /// The bootstrap list every node was given.
    pub fn bootstrap_addrs(&self) -> Vec<String> {
        self.bootstraps
            .iter()
            .map(|b| b.addr(self.bootstrap_transport))
            .collect()
    }

    /// Every peer: the public one first, then those behind NATs.
    pub fn peers(&self) -> Vec<Arc<LabNode>> {
        self.public_peer
            .iter()
            .cloned()
            .chain(self.nat_peers.iter().map(|(_, p)| Arc::clone(p)))
            .collect()
    }

    /// The peer behind `kind` (the first one).
    pub fn nat_peer(&self, kind: NatKind) -> Option<Arc<LabNode>> {
        self.nat_peers
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| Arc::clone(p))
    }
}

/// Waits for `/readyz` to answer 200.
pub async fn wait_ready(node: &LabNode) -> Result<Duration> {
    node.wait_until(READY_TIMEOUT, "/readyz 200", async |n: &LabNode| {
        Ok(n.get("/readyz")
            .await
            .map(|(c, _)| c == 200)
            .unwrap_or(false))
    })
    .await
}

/// The circuit address of `node`'s first active reservation, if any.
pub fn active_circuit(status: &Value) -> Option<String> {
    status["reservations"].as_array()?.iter().find_map(|r| {
        (r["state"] == "active")
            .then(|| r["address"].as_str().map(str::to_string))
            .flatten()
    })
}

/// Waits until `node` holds an active reservation and returns its circuit
/// address.
pub async fn wait_reservation(node: &LabNode, limit: Duration) -> Result<String> {
    node.wait_until(limit, "an active relay reservation", async |n: &LabNode| {
        Ok(active_circuit(&n.status().await?).is_some())
    })
    .await?;
    active_circuit(&node.status().await?).context("reservation vanished")
}

/// Connections of `status` to `peer`, as `(kind, address)`.
pub fn connections_to(status: &Value, peer: &str) -> Vec<(String, String)> {
    status["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["peer_id"] == peer)
                .map(|c| {
                    (
                        c["kind"].as_str().unwrap_or("?").to_string(),
                        c["address"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Peer ids in `status["discovered_peers"]`.
pub fn discovered(status: &Value) -> Vec<String> {
    strings(&status["discovered_peers"])
}
