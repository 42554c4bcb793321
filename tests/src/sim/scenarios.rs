//! The scenarios `sim --scenario NAME` runs, each on a network that first joins
//! (`join`), each printing a figure per line and returning its figures for the last
//! JSON line.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, bail};
use jantar_net::{files::id::hash_file, node::FileCommand};
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    LookupFigures, Sim, percentile,
    regions::{self, NAMES},
};

/// The scenarios, in the order `all` runs them (churn and failover last: they stop
/// nodes).
pub const NAMES_ALL: [&str; 7] = [
    "join",
    "lookups",
    "gossip",
    "file",
    "partition",
    "failover",
    "churn",
];

/// Figures of one scenario, in the order they were printed.
pub type Figures = serde_json::Map<String, Value>;

fn figure(out: &mut Figures, scenario: &str, name: &str, value: Value) {
    println!("{scenario}: {name} = {value}");
    out.insert(name.to_string(), value);
}

fn lookup_figures(out: &mut Figures, scenario: &str, prefix: &str, f: &LookupFigures) {
    let Value::Object(map) = json!(f) else {
        return;
    };
    for (k, v) in map {
        figure(out, scenario, &format!("{prefix}{k}"), v);
    }
}

/// Lets simulated time pass, and at least `wall` of wall-clock time with it (for
/// libp2p's wall-clock timers, gossipsub's heartbeat among them).
pub async fn settle(sim_time: Duration, wall: Duration) {
    let started = std::time::Instant::now();
    let t0 = Instant::now();
    while t0.elapsed() < sim_time || started.elapsed() < wall {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `name` on `sim` (which has joined, except for `join` itself).
pub async fn run(sim: &mut Sim, name: &str) -> anyhow::Result<Figures> {
    match name {
        "join" => join(sim).await,
        "lookups" => lookups(sim).await,
        "gossip" => gossip(sim).await,
        "file" => file(sim).await,
        "partition" => partition(sim).await,
        "failover" => failover(sim).await,
        "churn" => churn(sim).await,
        other => bail!(
            "unknown scenario {other:?}; one of {} or all",
            NAMES_ALL.join(", ")
        ),
    }
}

/// Bootstrap nodes, then every peer in waves; figures on joining and routing tables
/// after a minute of simulated time.
pub async fn join(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "join";
    let mut out = Figures::new();
    let t0 = Instant::now();
    sim.start_bootstrap_nodes().await?;
    let peers = sim.opts.nodes.saturating_sub(sim.opts.bootstrap_nodes);
    let failed = sim.add_peers(peers).await?;
    figure(
        &mut out,
        s,
        "sim_s",
        json!(t0.elapsed().as_secs_f64().round()),
    );
    figure(&mut out, s, "joined", json!(peers - failed.len()));
    figure(&mut out, s, "not_joined", json!(failed.len()));
    let mut took: Vec<Duration> = sim.nodes.iter().filter_map(|n| n.joined_in).collect();
    figure(
        &mut out,
        s,
        "join_p50_ms",
        json!(percentile(&mut took, 0.5).as_millis()),
    );
    figure(
        &mut out,
        s,
        "join_p90_ms",
        json!(percentile(&mut took, 0.9).as_millis()),
    );
    settle(sim.opts.settle, Duration::from_secs(2)).await;
    routing_health(sim, s, &mut out).await;
    figure(&mut out, s, "open_links", json!(sim.net.open_links()));
    if let Some(&i) = failed.first() {
        let status = sim.nodes[i].client.status().await?;
        bail!(
            "{} of {peers} peers did not become ready; the first one's status: {}",
            failed.len(),
            serde_json::to_string_pretty(&status)?
        );
    }
    Ok(out)
}

/// Routing-table sizes and connections per live node.
async fn routing_health(sim: &Sim, s: &str, out: &mut Figures) {
    let mut sizes = vec![];
    let mut connected = vec![];
    for i in sim.alive() {
        let c = &sim.nodes[i].client;
        if let Ok(d) = c.dht_stats().await {
            sizes.push(d.routing_table_size);
        }
        if let Ok(st) = c.status().await {
            connected.push(st.connected_peers);
        }
    }
    let n = sizes.len().max(1);
    let full = sizes.iter().filter(|&&s| s >= super::K).count();
    figure(
        out,
        s,
        "routing_table_p10",
        json!(percentile(&mut sizes, 0.1)),
    );
    figure(
        out,
        s,
        "routing_table_p50",
        json!(percentile(&mut sizes, 0.5)),
    );
    figure(
        out,
        s,
        "routing_table_p90",
        json!(percentile(&mut sizes, 0.9)),
    );
    figure(
        out,
        s,
        "routing_table_at_least_k",
        json!(full as f64 / n as f64),
    );
    figure(
        out,
        s,
        "connected_p50",
        json!(percentile(&mut connected, 0.5)),
    );
    figure(
        out,
        s,
        "connected_p90",
        json!(percentile(&mut connected, 0.9)),
    );
}

/// What a peer's connections are, per live peer (median): counted against the
/// watermarks and still in their grace period, counted and past it, and released by
/// trimming but not yet closed. Peers at `max_peers` refuse newcomers, so this says
/// which of the connection manager's rules keeps them full.
async fn connection_breakdown(sim: &Sim, s: &str, out: &mut Figures) {
    // The default `connection_grace_period`: the simulator does not change it.
    let grace = 20;
    let (mut in_grace, mut settled, mut releasing) = (vec![], vec![], vec![]);
    for i in sim.alive_peers() {
        let Ok(peers) = sim.nodes[i].client.peers().await else {
            continue;
        };
        let connected = peers.iter().filter(|p| p.connected && !p.protected);
        let (mut g, mut k, mut r) = (0usize, 0usize, 0usize);
        for p in connected {
            match (p.released, p.connected_secs < grace) {
                (true, _) => r += 1,
                (false, true) => g += 1,
                (false, false) => k += 1,
            }
        }
        in_grace.push(g);
        settled.push(k);
        releasing.push(r);
    }
    for (name, v) in [
        ("peers_in_grace_p50", &mut in_grace),
        ("peers_past_grace_p50", &mut settled),
        ("peers_releasing_p50", &mut releasing),
    ] {
        figure(out, s, name, json!(percentile(v, 0.5)));
    }
}

/// `lookups` random FIND_NODE lookups from random peers.
pub async fn lookups(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "lookups";
    let mut out = Figures::new();
    let from = sim.alive_peers();
    let f = sim.lookups(&from, sim.opts.lookups).await;
    lookup_figures(&mut out, s, "", &f);
    connection_breakdown(sim, s, &mut out).await;
    let rtt = regions::median_rtt();
    figure(&mut out, s, "median_rtt_ms", json!(rtt.as_millis()));
    figure(
        &mut out,
        s,
        "latency_p50_rtts",
        json!((f.latency_p50_ms as f64 / rtt.as_millis() as f64 * 100.0).round() / 100.0),
    );
    Ok(out)
}

/// One message from a random peer to every peer; delivery share and latency.
pub async fn gossip(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "gossip";
    let mut out = Figures::new();
    // Meshes form on gossipsub's heartbeat, which runs on the wall clock.
    settle(Duration::from_secs(10), Duration::from_secs(5)).await;
    let peers = sim.alive_peers();
    let &from = peers.choose(&mut sim.rng).context("no peers")?;
    let text = format!("sim {}", rand::random::<u64>());
    let t0 = Instant::now();
    let sent = {
        let text = text.clone();
        sim.nodes[from]
            .client
            .files(|reply| FileCommand::Send { text, reply })
            .await?
    };
    sent.map_err(|e| anyhow::anyhow!("send failed: {e}"))?;
    let mut arrived: BTreeMap<usize, Duration> = BTreeMap::from([(from, Duration::ZERO)]);
    let deadline = Duration::from_secs(30);
    while arrived.len() < peers.len() && t0.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = t0.elapsed();
        for &i in &peers {
            if arrived.contains_key(&i) {
                continue;
            }
            let got = sim.nodes[i]
                .client
                .files(|reply| FileCommand::Messages { after: 0, reply })
                .await
                .unwrap_or_default();
            if got.iter().any(|m| m.text == text) {
                arrived.insert(i, now);
            }
        }
    }
    let mut lat: Vec<Duration> = arrived.values().copied().collect();
    figure(&mut out, s, "peers", json!(peers.len()));
    figure(
        &mut out,
        s,
        "delivered",
        json!(arrived.len() as f64 / peers.len() as f64),
    );
    figure(
        &mut out,
        s,
        "latency_p50_ms",
        json!(percentile(&mut lat, 0.5).as_millis()),
    );
    figure(
        &mut out,
        s,
        "latency_p99_ms",
        json!(percentile(&mut lat, 0.99).as_millis()),
    );
    figure(&mut out, s, "poll_interval_ms", json!(10));
    Ok(out)
}

/// A file shared by a peer in the first region, announced, and replicated by peers in
/// every region: when each region's peers hold it.
pub async fn file(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "file";
    let mut out = Figures::new();
    let peers = sim.alive_peers();
    let in_first: Vec<usize> = peers
        .iter()
        .copied()
        .filter(|&i| sim.nodes[i].region == 0)
        .collect();
    let &from = in_first
        .choose(&mut sim.rng)
        .context("no peer in the first region")?;
    let path = sim.nodes[from].dir.join("shared.bin");
    let size = 256 * 1024;
    let data: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&path, data)?;
    let manifest = hash_file(&path)?;
    let id = manifest.root().to_string();
    let t0 = Instant::now();
    sim.nodes[from]
        .client
        .files(|reply| FileCommand::Share {
            path: path.clone(),
            name: "shared.bin".into(),
            manifest,
            reply,
        })
        .await?
        .map_err(|e| anyhow::anyhow!("share failed: {e}"))?;
    let mut held: BTreeMap<usize, Duration> = BTreeMap::from([(from, Duration::ZERO)]);
    let deadline = Duration::from_secs(300);
    while held.len() < peers.len() && t0.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = t0.elapsed();
        for &i in &peers {
            if held.contains_key(&i) {
                continue;
            }
            if let Ok(list) = sim.nodes[i].client.files(FileCommand::List).await
                && list.files.iter().any(|f| f.id == id)
            {
                held.insert(i, now);
            }
        }
    }
    figure(&mut out, s, "size_kib", json!(size / 1024));
    figure(&mut out, s, "peers", json!(peers.len()));
    figure(
        &mut out,
        s,
        "delivered",
        json!(held.len() as f64 / peers.len() as f64),
    );
    let mut all: Vec<Duration> = held.values().copied().collect();
    figure(
        &mut out,
        s,
        "latency_p50_ms",
        json!(percentile(&mut all, 0.5).as_millis()),
    );
    figure(
        &mut out,
        s,
        "latency_p99_ms",
        json!(percentile(&mut all, 0.99).as_millis()),
    );
    for (r, name) in NAMES.iter().enumerate() {
        let in_region: Vec<usize> = peers
            .iter()
            .copied()
            .filter(|&i| usize::from(sim.nodes[i].region) == r)
            .collect();
        let mut t: Vec<Duration> = in_region
            .iter()
            .filter_map(|i| held.get(i).copied())
            .collect();
        let share = t.len() as f64 / in_region.len().max(1) as f64;
        figure(&mut out, s, &format!("{name}_delivered"), json!(share));
        figure(
            &mut out,
            s,
            &format!("{name}_p50_ms"),
            json!(percentile(&mut t, 0.5).as_millis()),
        );
    }
    Ok(out)
}

/// Two regions cut apart for `partition`, then healed: lookups from the cut-off
/// region during the cut, and from everywhere after it heals.
pub async fn partition(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "partition";
    let mut out = Figures::new();
    let (a, b) = (0, 2);
    figure(
        &mut out,
        s,
        "cut",
        json!(format!("{}|{}", NAMES[0], NAMES[2])),
    );
    let links_before = sim.net.open_links();
    sim.net.partition(a, b);
    figure(
        &mut out,
        s,
        "links_cut",
        json!(links_before - sim.net.open_links()),
    );
    let t0 = Instant::now();
    let in_a: Vec<usize> = sim
        .alive_peers()
        .into_iter()
        .filter(|&i| sim.nodes[i].region == a)
        .collect();
    let during = sim.lookups(&in_a, sim.opts.lookups / 4).await;
    lookup_figures(&mut out, s, "during_", &during);
    let left = sim.opts.partition.saturating_sub(t0.elapsed());
    tokio::time::sleep(left).await;
    sim.net.heal(a, b);
    figure(
        &mut out,
        s,
        "cut_for_s",
        json!(t0.elapsed().as_secs_f64().round()),
    );
    settle(sim.opts.settle / 2, Duration::from_secs(2)).await;
    let from = sim.alive_peers();
    let after = sim.lookups(&from, sim.opts.lookups).await;
    lookup_figures(&mut out, s, "", &after);
    Ok(out)
}

/// Two of three bootstrap nodes down: new peers still join. All three down: peers
/// restarted from their peer stores rejoin, and their lookups succeed.
pub async fn failover(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "failover";
    let mut out = Figures::new();
    let boots: Vec<usize> = (0..sim.opts.bootstrap_nodes.min(sim.nodes.len())).collect();
    for &i in boots.iter().skip(1) {
        sim.stop(i).await;
    }
    let fresh = (sim.opts.nodes / 20).max(5);
    let failed = sim.add_peers(fresh).await?;
    figure(&mut out, s, "one_bootstrap_new_peers", json!(fresh));
    figure(
        &mut out,
        s,
        "one_bootstrap_joined",
        json!(fresh - failed.len()),
    );
    let from = sim.alive_peers();
    let f = sim.lookups(&from, sim.opts.lookups / 4).await;
    lookup_figures(&mut out, s, "one_bootstrap_", &f);

    // A node that stops writes its peer store, so the restarted ones start with theirs.
    sim.stop(boots[0]).await;
    let mut peers = sim.alive_peers();
    peers.shuffle(&mut sim.rng);
    peers.truncate((sim.opts.nodes / 10).max(10));
    for &i in &peers {
        sim.stop(i).await;
    }
    for &i in &peers {
        sim.restart(i).await?;
    }
    let failed = sim.wait_ready(&peers).await;
    figure(&mut out, s, "no_bootstrap_restarted", json!(peers.len()));
    figure(
        &mut out,
        s,
        "no_bootstrap_rejoined",
        json!(peers.len() - failed.len()),
    );
    if !failed.is_empty() {
        let mut seen = vec![];
        for &i in failed.iter().take(3) {
            seen.push(connections_of(sim, i).await);
        }
        figure(&mut out, s, "not_rejoined", json!(seen));
    }
    let mut took: Vec<Duration> = peers
        .iter()
        .filter_map(|&i| sim.nodes[i].joined_in)
        .collect();
    figure(
        &mut out,
        s,
        "no_bootstrap_rejoin_p50_ms",
        json!(percentile(&mut took, 0.5).as_millis()),
    );
    settle(sim.opts.settle / 2, Duration::from_secs(2)).await;
    let rejoined: Vec<usize> = peers
        .iter()
        .copied()
        .filter(|i| !failed.contains(i))
        .collect();
    let f = sim.lookups(&rejoined, sim.opts.lookups / 4).await;
    lookup_figures(&mut out, s, "", &f);
    for &i in &boots {
        sim.restart(i).await?;
    }
    Ok(out)
}

/// What a node that is not ready is connected to: its connections by direction.
async fn connections_of(sim: &Sim, i: usize) -> String {
    match sim.nodes[i].client.status().await {
        Ok(st) => {
            let out = st
                .connections
                .iter()
                .filter(|c| c.direction == "outbound")
                .count();
            format!(
                "node {i}: {} peers, {out} outbound and {} inbound connections, dht {}, {} known peers",
                st.connected_peers,
                st.connections.len() - out,
                st.dht_mode.as_deref().unwrap_or("off"),
                st.peer_management.known_peers
            )
        }
        Err(e) => format!("node {i}: no status: {e}"),
    }
}

/// Half the peers replaced over `churn_window` of simulated time (half of new DHT
/// servers are gone within two hours in IPFS's measurements), in `churn_steps` steps;
/// lookups during and after.
pub async fn churn(sim: &mut Sim) -> anyhow::Result<Figures> {
    let s = "churn";
    let mut out = Figures::new();
    let steps = sim.opts.churn_steps.max(1);
    let step = sim.opts.churn_window / steps;
    let mut originals = sim.alive_peers();
    originals.shuffle(&mut sim.rng);
    let replace = originals.len() / 2;
    let per_step = replace.div_ceil(steps as usize);
    let t0 = Instant::now();
    let mut during: Vec<LookupFigures> = vec![];
    let mut not_joined = 0;
    for k in 0..steps as usize {
        let leaving: Vec<usize> = originals
            .iter()
            .copied()
            .skip(k * per_step)
            .take(per_step)
            .collect();
        if leaving.is_empty() {
            break;
        }
        for &i in &leaving {
            sim.stop(i).await;
        }
        not_joined += sim.add_peers(leaving.len()).await?.len();
        let from = sim.alive_peers();
        during.push(
            sim.lookups(&from, (sim.opts.lookups / steps as usize).max(5))
                .await,
        );
        let next = step * (k as u32 + 1);
        if let Some(wait) = next.checked_sub(t0.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    figure(&mut out, s, "replaced", json!(replace));
    figure(&mut out, s, "new_not_joined", json!(not_joined));
    figure(
        &mut out,
        s,
        "window_s",
        json!(t0.elapsed().as_secs_f64().round()),
    );
    let n: usize = during.iter().map(|f| f.lookups).sum();
    let ok: f64 = during
        .iter()
        .map(|f| f.lookup_success * f.lookups as f64)
        .sum();
    figure(&mut out, s, "during_lookups", json!(n));
    figure(
        &mut out,
        s,
        "during_lookup_success",
        json!(ok / n.max(1) as f64),
    );
    let mut p50s: Vec<u64> = during.iter().map(|f| f.latency_p50_ms).collect();
    figure(
        &mut out,
        s,
        "during_latency_p50_ms",
        json!(percentile(&mut p50s, 0.5)),
    );
    let from = sim.alive_peers();
    let after = sim.lookups(&from, sim.opts.lookups).await;
    lookup_figures(&mut out, s, "", &after);
    Ok(out)
}
