//! A simulated internet: N real Jantar nodes (the `jantar-net` node, its behaviour and
//! event loop, as the binaries run it) in one process, on a simulated network
//! ([`net`]) whose links have the latencies of a region model ([`regions`]).
//!
//! The simulator runs on a current-thread tokio runtime with a paused clock: simulated
//! time moves only when every node is waiting, so latencies are the model's and CPU
//! work costs no simulated time. Libp2p's own timers (Kademlia's request timeouts and
//! routing-table refresh, ping, idle timeouts, gossipsub's heartbeat) run on the wall
//! clock, so [`pace`] keeps simulated time from running ahead of it: while the machine
//! keeps up the two clocks agree, and when it falls behind, simulated time falls behind
//! with it (`sim_s` below `wall_s` in the report says by how much). For a simulation
//! larger than the thread keeps up with, [`clock`] slows the process's clocks instead.
//!
//! [`scenarios`] holds what `sim --scenario NAME` runs.

pub mod clock;
pub mod net;
pub mod regions;
pub mod scenarios;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, anyhow};
use futures::{StreamExt, stream};
use jantar_net::{
    config::{Config, Overrides, Role},
    node::{self, NodeClient, NodeHandle},
    transport::{boxed_bytes, build_swarm_over},
};
use libp2p::{PeerId, identity::Keypair, kad::KBucketKey};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tokio::time::Instant;

use self::{
    net::SimNet,
    regions::{COUNT as REGIONS, Region},
};

/// Kademlia's K: how many closest peers a lookup returns.
pub const K: usize = 20;

/// How long a node may take to become ready before the simulation gives up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Keeps simulated time from running ahead of the wall clock (see the module docs):
/// whenever it is ahead, a blocking task holds the paused clock's auto-advance (tokio
/// does not advance while one runs) until the wall clock has caught up. Runs until
/// aborted.
pub async fn pace() {
    let wall = std::time::Instant::now();
    let sim = Instant::now();
    loop {
        let ahead = sim.elapsed().saturating_sub(wall.elapsed());
        if ahead.is_zero() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(ahead)).await;
        }
    }
}

/// What every simulation takes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in all, bootstrap nodes included.
    pub nodes: usize,
    pub bootstrap_nodes: usize,
    pub seed: u64,
    /// Nodes started at once while joining.
    pub wave: usize,
    /// Lookups per measurement, and how many run at once.
    pub lookups: usize,
    pub concurrency: usize,
    /// Peers' `max_peers`, `high_water` and `low_water` (the default config's when
    /// `None`).
    pub max_peers: Option<u32>,
    pub high_water: Option<u32>,
    pub low_water: Option<u32>,
    /// Every node's `network.dht.parallelism` (the default config's when `None`).
    pub dht_parallelism: Option<usize>,
    /// Simulated time the churn scenario replaces half the nodes over, and in how
    /// many steps.
    pub churn_window: Duration,
    pub churn_steps: u32,
    /// How long the partition scenario keeps two regions apart.
    pub partition: Duration,
    /// Simulated time the network is left to settle after joining (and after a
    /// partition heals) before it is measured.
    pub settle: Duration,
    /// Where the nodes' data directories go (a temporary directory when `None`).
    pub dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 200,
            bootstrap_nodes: 3,
            seed: 1,
            wave: 100,
            lookups: 1000,
            concurrency: 16,
            max_peers: None,
            high_water: None,
            low_water: None,
            dht_parallelism: None,
            churn_window: Duration::from_secs(2 * 3600),
            churn_steps: 20,
            partition: Duration::from_secs(30),
            settle: Duration::from_secs(60),
            dir: None,
        }
    }
}

/// One simulated node.
pub struct SimNode {
    pub key: Keypair,
    pub peer: PeerId,
    pub port: u64,
    pub region: Region,
    pub role: Role,
    pub handle: Option<NodeHandle>,
    pub client: NodeClient,
    pub dir: PathBuf,
    /// Simulated time from start to ready, when it became ready.
    pub joined_in: Option<Duration>,
}

impl SimNode {
    pub fn alive(&self) -> bool {
        self.handle.is_some()
    }
}

/// The simulated internet and its nodes.
pub struct Sim {
    pub opts: Options,
    pub net: SimNet,
    pub nodes: Vec<SimNode>,
    pub rng: StdRng,
    /// Multiaddrs (with `/p2p/`) of the bootstrap nodes, as configs list them.
    pub bootstrap_addrs: Vec<String>,
    next_port: u64,
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Sim {
    pub fn new(opts: Options) -> anyhow::Result<Self> {
        let (root, tmp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("jantar-sim").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(Sim {
            rng: StdRng::seed_from_u64(opts.seed),
            opts,
            net: SimNet::new(),
            nodes: vec![],
            bootstrap_addrs: vec![],
            next_port: 1,
            root,
            _tmp: tmp,
        })
    }

    /// Starts the bootstrap nodes, one in each of the first regions.
    pub async fn start_bootstrap_nodes(&mut self) -> anyhow::Result<()> {
        let keys: Vec<(Keypair, u64)> = (0..self.opts.bootstrap_nodes)
            .map(|_| (Keypair::generate_ed25519(), self.port()))
            .collect();
        self.bootstrap_addrs = keys
            .iter()
            .map(|(k, port)| format!("/memory/{port}/p2p/{}", k.public().to_peer_id()))
            .collect();
        for (i, (key, port)) in keys.into_iter().enumerate() {
            let region = (i % REGIONS) as Region;
            self.start(Role::Bootstrap, region, key, port).await?;
        }
        Ok(())
    }

    fn port(&mut self) -> u64 {
        let p = self.next_port;
        self.next_port += 1;
        p
    }

    /// Starts a new peer in a random region; returns its index.
    pub async fn add_peer(&mut self) -> anyhow::Result<usize> {
        let region = self.rng.random_range(0..REGIONS) as Region;
        let port = self.port();
        self.start(Role::Peer, region, Keypair::generate_ed25519(), port)
            .await
    }

    /// Adds `n` peers, `wave` at a time, each wave waiting until its nodes are ready.
    /// Returns the indices of the peers that did not become ready.
    pub async fn add_peers(&mut self, n: usize) -> anyhow::Result<Vec<usize>> {
        let mut failed = vec![];
        let mut left = n;
        while left > 0 {
            let batch = left.min(self.opts.wave.max(1));
            let mut started = vec![];
            for _ in 0..batch {
                started.push(self.add_peer().await?);
            }
            failed.extend(self.wait_ready(&started).await);
            left -= batch;
        }
        Ok(failed)
    }

    /// Waits until each of `nodes` is ready (each within [`READY_TIMEOUT`]), recording
    /// how long it took; returns those that were not.
    pub async fn wait_ready(&mut self, nodes: &[usize]) -> Vec<usize> {
        let t0 = Instant::now();
        let waits = nodes.iter().map(|&i| {
            let mut c = self.nodes[i].client.clone();
            async move {
                let ok = tokio::time::timeout(READY_TIMEOUT, c.wait_ready())
                    .await
                    .is_ok_and(|r| r.is_ok());
                (i, ok.then(|| t0.elapsed()))
            }
        });
        let results = futures::future::join_all(waits).await;
        let mut failed = vec![];
        for (i, took) in results {
            match took {
                Some(d) => self.nodes[i].joined_in = Some(d),
                None => failed.push(i),
            }
        }
        failed
    }

    fn config(&self, role: Role, port: u64, dir: &Path) -> anyhow::Result<Arc<Config>> {
        let boot: Vec<String> = self
            .bootstrap_addrs
            .iter()
            .filter(|a| !a.starts_with(&format!("/memory/{port}/")))
            .map(|a| format!("\"{a}\""))
            .collect();
        // `max_memory` is the process's, and this process holds every node: off.
        let mut limits = String::new();
        if role == Role::Peer {
            for (key, value) in [
                ("max_peers", self.opts.max_peers),
                ("high_water", self.opts.high_water),
                ("low_water", self.opts.low_water),
            ] {
                if let Some(n) = value {
                    limits.push_str(&format!(", {key}: {n}"));
                }
            }
        }
        // Every node is a public DHT server at its simulated address; mDNS and UPnP
        // have nothing to find here. Lookups wait out the slowest answers rather than
        // give up on the wall clock (see the module docs).
        let text = format!(
            "admin: {{listen: \"off\"}}\n\
             data_dir: \"{dir}\"\n\
             log: {{level: warn}}\n\
             network:\n  enable_mdns: false\n  enable_upnp: false\n  \
             listen_addresses: [\"/memory/{port}\"]\n  \
             external_addresses: [\"/memory/{port}\"]\n  \
             bootstrap_nodes: [{boot}]\n  \
             dht: {{query_timeout: 600s{parallelism}}}\n  \
             connection_limits: {{max_memory: 0{limits}}}\n",
            dir = dir.display(),
            boot = boot.join(", "),
            parallelism = self
                .opts
                .dht_parallelism
                .map(|p| format!(", parallelism: {p}"))
                .unwrap_or_default(),
        );
        let env = HashMap::from([("HOME", dir.to_str().unwrap_or("/"))]);
        let loaded = Config::parse(role, &text, None, &Overrides::default(), &env)
            .map_err(|e| anyhow!("simulated node's config: {e}\n{text}"))?;
        Ok(Arc::new(loaded.config))
    }

    /// Starts a node of `role` in `region` with `key` at `port`; returns its index.
    async fn start(
        &mut self,
        role: Role,
        region: Region,
        key: Keypair,
        port: u64,
    ) -> anyhow::Result<usize> {
        let dir = self.root.join(format!("n{port}"));
        std::fs::create_dir_all(&dir)?;
        let i = self.nodes.len();
        let (handle, client) = self.launch(role, region, &key, port, &dir).await?;
        self.nodes.push(SimNode {
            peer: key.public().to_peer_id(),
            key,
            port,
            region,
            role,
            handle: Some(handle),
            client,
            dir,
            joined_in: None,
        });
        Ok(i)
    }

    async fn launch(
        &self,
        role: Role,
        region: Region,
        key: &Keypair,
        port: u64,
        dir: &Path,
    ) -> anyhow::Result<(NodeHandle, NodeClient)> {
        let config = self.config(role, port, dir)?;
        self.net.place(port, region);
        let swarm = build_swarm_over(&config, key.clone(), boxed_bytes(self.net.transport(port)))?;
        let handle = node::start_with_swarm(config, swarm).await?;
        let client = handle.client();
        Ok((handle, client))
    }

    /// Stops node `i` as if it vanished: its links are reset at once, dials to it time
    /// out, and its state (peer store included) is written as at a shutdown.
    pub async fn stop(&mut self, i: usize) {
        self.net.vanish(self.nodes[i].port);
        if let Some(h) = self.nodes[i].handle.take() {
            h.shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), h.join()).await;
        }
    }

    /// Starts node `i` again with its key, address and data directory.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.nodes[i];
        let (handle, client) = self
            .launch(n.role, n.region, &n.key.clone(), n.port, &n.dir.clone())
            .await?;
        let n = &mut self.nodes[i];
        n.handle = Some(handle);
        n.client = client;
        n.joined_in = None;
        Ok(())
    }

    /// The live nodes' indices.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive())
            .collect()
    }

    /// The live peers' indices (bootstrap nodes left out).
    pub fn alive_peers(&self) -> Vec<usize> {
        self.alive()
            .into_iter()
            .filter(|&i| self.nodes[i].role == Role::Peer)
            .collect()
    }

    /// The K live nodes closest to `key`, other than `asker`: what a lookup should
    /// find.
    pub fn closest(&self, key: &PeerId, asker: PeerId) -> Vec<PeerId> {
        let target = KBucketKey::from(*key);
        let mut all: Vec<(libp2p::kad::KBucketDistance, PeerId)> = self
            .nodes
            .iter()
            .filter(|n| n.alive() && n.peer != asker)
            .map(|n| (target.distance(&KBucketKey::from(n.peer)), n.peer))
            .collect();
        all.sort_unstable_by_key(|a| a.0);
        all.truncate(K);
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// Runs `count` lookups of random keys from random live nodes among `from`,
    /// `concurrency` at a time.
    pub async fn lookups(&mut self, from: &[usize], count: usize) -> LookupFigures {
        let jobs: Vec<(usize, PeerId)> = (0..count)
            .filter_map(|_| from.choose(&mut self.rng).map(|&i| (i, PeerId::random())))
            .collect();
        let this = &*self;
        let results: Vec<LookupOutcome> = stream::iter(jobs)
            .map(|(i, key)| async move {
                let n = &this.nodes[i];
                let t0 = Instant::now();
                let lookup = n.client.find_node(key).await;
                let took = t0.elapsed();
                let truth = this.closest(&key, n.peer);
                match lookup {
                    Ok(l) => {
                        let found = truth.iter().filter(|p| l.peers.contains(p)).count();
                        let success = l.complete && found == truth.len();
                        let failure = (!success).then(|| this.describe_miss(i, &truth, &l));
                        LookupOutcome {
                            success,
                            found_share: found as f64 / truth.len().max(1) as f64,
                            requests: l.requests,
                            latency: took,
                            failure,
                        }
                    }
                    Err(e) => LookupOutcome {
                        success: false,
                        found_share: 0.0,
                        requests: 0,
                        latency: took,
                        failure: Some(format!("node {i}: {e:#}")),
                    },
                }
            })
            .buffer_unordered(self.opts.concurrency.max(1))
            .collect()
            .await;
        LookupFigures::from(&results)
    }

    /// What a failed lookup from node `from` missed: which of the true closest it did
    /// not return (their rank, node index, region, and whether they are connected to
    /// the asker), and how the query went.
    fn describe_miss(&self, from: usize, truth: &[PeerId], l: &node::Lookup) -> String {
        let index: HashMap<PeerId, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.peer, i))
            .collect();
        let missed: Vec<String> = truth
            .iter()
            .enumerate()
            .filter(|(_, p)| !l.peers.contains(p))
            .take(5)
            .map(|(rank, p)| match index.get(p) {
                Some(&j) => format!(
                    "#{} node {j} ({}{})",
                    rank + 1,
                    regions::NAMES[self.nodes[j].region as usize],
                    if self.net.linked(self.nodes[from].port, self.nodes[j].port) {
                        ", linked"
                    } else {
                        ""
                    }
                ),
                None => format!("#{} {p}", rank + 1),
            })
            .collect();
        format!(
            "node {from} ({}): complete {}, {} requests ({} answered, {} failed), missed {}",
            regions::NAMES[self.nodes[from].region as usize],
            l.complete,
            l.requests,
            l.answered,
            l.failed,
            missed.join(", ")
        )
    }

    /// Shuts every node down.
    pub async fn shutdown(&mut self) {
        for n in &self.nodes {
            if let Some(h) = &n.handle {
                h.shutdown();
            }
        }
        for n in &mut self.nodes {
            if let Some(h) = n.handle.take() {
                let _ = tokio::time::timeout(Duration::from_secs(60), h.join()).await;
            }
        }
    }
}

struct LookupOutcome {
    success: bool,
    found_share: f64,
    requests: u32,
    latency: Duration,
    /// What went wrong, for a lookup that did not succeed.
    failure: Option<String>,
}

/// What a batch of lookups measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LookupFigures {
    pub lookups: usize,
    /// Share of lookups that found exactly the true K closest live nodes.
    pub lookup_success: f64,
    /// Mean share of the true K closest found.
    pub closest_found: f64,
    pub requests_p50: u32,
    pub requests_p90: u32,
    pub latency_p50_ms: u64,
    pub latency_p90_ms: u64,
    /// The first few failed lookups, described (absent when none failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl LookupFigures {
    fn from(r: &[LookupOutcome]) -> Self {
        if r.is_empty() {
            return LookupFigures::default();
        }
        let mut req: Vec<u32> = r.iter().map(|o| o.requests).collect();
        let mut lat: Vec<Duration> = r.iter().map(|o| o.latency).collect();
        LookupFigures {
            lookups: r.len(),
            lookup_success: r.iter().filter(|o| o.success).count() as f64 / r.len() as f64,
            closest_found: r.iter().map(|o| o.found_share).sum::<f64>() / r.len() as f64,
            requests_p50: percentile(&mut req, 0.5),
            requests_p90: percentile(&mut req, 0.9),
            latency_p50_ms: percentile(&mut lat, 0.5).as_millis() as u64,
            latency_p90_ms: percentile(&mut lat, 0.9).as_millis() as u64,
            failures: r.iter().filter_map(|o| o.failure.clone()).take(3).collect(),
        }
    }
}

/// The `q` quantile (nearest rank) of `v`, sorting it.
pub fn percentile<T: Ord + Copy + Default>(v: &mut [T], q: f64) -> T {
    if v.is_empty() {
        return T::default();
    }
    v.sort_unstable();
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Joins the network, then runs `scenario` (or every scenario, for `all`); returns the
/// figures as the last JSON line reports them: `nodes`, `wall_s`, `sim_s`, and the
/// scenario's figures (for `all`, each scenario's under its name, with the lookup and
/// gossip figures also at the top).
pub async fn run(sim: &mut Sim, scenario: &str) -> anyhow::Result<serde_json::Value> {
    let names: Vec<&str> = match scenario {
        "all" => scenarios::NAMES_ALL.to_vec(),
        "join" => vec!["join"],
        other if scenarios::NAMES_ALL.contains(&other) => vec!["join", other],
        // Named before a network joins for nothing.
        other => anyhow::bail!(
            "unknown scenario {other:?}; one of {} or all",
            scenarios::NAMES_ALL.join(", ")
        ),
    };
    let wall = std::time::Instant::now();
    let t0 = Instant::now();
    let pacer = tokio::spawn(pace());
    let mut report = serde_json::Map::new();
    report.insert("nodes".into(), serde_json::json!(sim.opts.nodes));
    report.insert("scenario".into(), serde_json::json!(scenario));
    let mut each = serde_json::Map::new();
    let ran = async {
        for name in names {
            let figures = scenarios::run(sim, name).await?;
            each.insert(name.into(), serde_json::Value::Object(figures));
        }
        anyhow::Ok(())
    }
    .await;
    pacer.abort();
    ran?;
    let main = if scenario == "all" {
        "lookups"
    } else {
        scenario
    };
    if let Some(serde_json::Value::Object(f)) = each.get(main) {
        report.extend(f.clone());
    }
    if scenario == "all" {
        if let Some(d) = each.get("gossip").and_then(|g| g.get("delivered")) {
            report.insert("delivered".into(), d.clone());
        }
        report.extend(each);
    }
    report.insert(
        "sim_s".into(),
        serde_json::json!(t0.elapsed().as_secs_f64().round()),
    );
    report.insert(
        "wall_s".into(),
        serde_json::json!(wall.elapsed().as_secs_f64().round()),
    );
    Ok(serde_json::Value::Object(report))
}
