//! `bench`: file-transfer figures on loopback, each against a baseline measured in the
//! same run. Build with `--release` for meaningful numbers:
//!
//! ```text
//! cargo run --release -p jantar-tests --bin bench -- transfer --size-mib 256
//! cargo run --release -p jantar-tests --bin bench -- spread --peers 10 --size-mib 32
//! cargo run --release -p jantar-tests --bin bench -- memory --size-mib 1024
//! cargo run --release -p jantar-tests --bin bench -- peering --runs 3
//! cargo run --release -p jantar-tests --bin bench -- capacity --connections 10000
//! cargo run --release -p jantar-tests --bin bench -- relay --circuits 1 --runs 3
//! cargo run --release -p jantar-tests --bin bench -- update --peers 5 --runs 3
//! ```

use std::{
    io::{Read, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use jantar_tests::capacity::cpu_secs;
use jantar_tests::harness::{LoopbackNet, Node, Role};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Throughput of one peer fetching from another, against a plain TCP copy.
    Transfer {
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
        /// Peers that share the file (each over its own connection to the fetcher).
        #[arg(long, default_value_t = 1)]
        providers: usize,
    },
    /// Time for a shared file to reach every peer by replication.
    Spread {
        #[arg(long, default_value_t = 10)]
        peers: usize,
        #[arg(long, default_value_t = 32)]
        size_mib: usize,
    },
    /// Peak memory of a peer while it fetches a large file.
    Memory {
        #[arg(long, default_value_t = 1024)]
        size_mib: usize,
    },
    /// Connection management: slots held by the best-scored peers after churn, and
    /// the time to rejoin after a restart with the bootstrap node down.
    Peering {
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Circuit throughput through jantar-relay, through rust-libp2p's relay with its
    /// defaults, and over a direct connection, in the same run.
    Relay {
        /// Circuits at once (each its own pair of clients).
        #[arg(long, default_value_t = 1)]
        circuits: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        measure: Duration,
    },
    /// Signed releases: the time from `release publish` until every peer runs the new
    /// version, against the time for the same peers to fetch a file of the artifact's
    /// size from the publisher, in the same run.
    Update {
        #[arg(long, default_value_t = 5)]
        peers: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Bootstrap capacity: connections held by clients that keep querying, the accept
    /// rate, resident memory per connection, CPU, and FIND_NODE latency under load.
    Capacity {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Clients per source address (the bootstrap node's per-IP cap is 16).
        #[arg(long, default_value_t = 12)]
        per_ip: usize,
        /// Each client looks a random key up this often.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        query_interval: Duration,
        /// How long latencies and CPU are measured once every client is connected.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        measure: Duration,
        /// Then, for this long: clients that connect, ask once and leave, as fast as
        /// they are served (at most 512 at once); `0s` skips it.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        churn: Duration,
    },
}

/// Median and range of `v` (sorted in place).
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn write_random(path: &Path, size: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n])?;
        left -= n;
    }
    f.flush()?;
    Ok(())
}

/// Copies a file to another file through a loopback TCP connection, 1 MiB at a time
/// both ways, and syncs it to disk as `get` does: the baseline.
fn tcp_copy(src: &Path, dst: &Path) -> Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dst = dst.to_path_buf();
    let start = Instant::now();
    let receiver = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut out = std::fs::File::create(&dst)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf)? {
                0 => break,
                n => out.write_all(&buf[..n])?,
            }
        }
        out.sync_all()
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut f = std::fs::File::open(src)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
    }
    drop(s);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(start.elapsed())
}

/// Starts a loopback network under `root`. All peers share 127.0.0.1, so the
/// per-IP inbound connection limit is lifted.
async fn loopback_net(root: &Path) -> Result<LoopbackNet> {
    LoopbackNet::start(
        root,
        "  connection_limits: {max_connections_per_ip: 64}\n",
        Duration::from_secs(30),
    )
    .await
}

/// The peer's CLI against its daemon; stdout, or the error output on failure.
fn cli(node: &Node, args: &[&str]) -> Result<String> {
    let (status, out, err) = node.cli(args)?;
    if !status.success() {
        bail!("jantar-peer {args:?}: {err}");
    }
    Ok(out)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    jantar_tests::capacity::status_kib(pid, "VmHWM:")
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

async fn wait_connected(n: &mut Node, count: u64) -> Result<()> {
    n.wait_until(Duration::from_secs(60), "connections", async |n: &Node| {
        Ok(n.status().await?["connected_peers"].as_u64() >= Some(count))
    })
    .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let profile = jantar_tests::harness::bin_dir().display().to_string();
    println!("binaries: {profile}");
    match args.bench {
        Bench::Transfer {
            size_mib,
            providers,
        } => {
            let size = size_mib << 20;
            let src = root.join("data.bin");
            write_random(&src, size)?;
            // The copy runs on this process's threads while nothing else here does.
            let own = std::process::id();
            let cpu_before = cpu_secs(own).context("own CPU time")?;
            let base = tcp_copy(&src, &root.join("tcp-copy.bin"))?;
            let base_cpu = cpu_secs(own).context("own CPU time")? - cpu_before;
            let net = loopback_net(root).await?;
            let mut sharing = vec![];
            for i in 0..providers.max(1) {
                sharing.push(net.peer(&format!("a{i}"), "").await?);
            }
            let mut b = net
                .peer("b", "min_file_size: 1TiB\nmax_storage_size: 64GiB\n")
                .await?;
            wait_connected(&mut b, 1 + sharing.len() as u64).await?;
            let mut id = String::new();
            for a in &sharing {
                id = a.share(&src)?;
            }
            let nodes_cpu = || -> Result<(f64, f64)> {
                let fetcher = cpu_secs(b.pid().context("pid")?).context("fetcher CPU")?;
                let mut providers = 0.0;
                for a in &sharing {
                    providers += cpu_secs(a.pid().context("pid")?).context("provider CPU")?;
                }
                Ok((fetcher, providers))
            };
            let (fetcher_before, providers_before) = nodes_cpu()?;
            let start = Instant::now();
            cli(&b, &["get", &id])?;
            let took = start.elapsed();
            let (fetcher_after, providers_after) = nodes_cpu()?;
            let fetcher_cpu = fetcher_after - fetcher_before;
            let providers_cpu = providers_after - providers_before;
            let get_cpu = fetcher_cpu + providers_cpu;
            // The ceilings of a libp2p transfer here, over Noise and Yamux on TCP with
            // no disk, no hashing and no requests: one stream, and one fresh stream
            // per 1 MiB chunk, eight at once, as a fetch asks.
            let stream = jantar_tests::relay_bench::throughput(
                None,
                1,
                Duration::from_secs(1),
                Duration::from_secs(3),
            )
            .await?;
            let chunked = jantar_tests::relay_bench::chunked_throughput(
                8,
                1 << 20,
                Duration::from_secs(1),
                Duration::from_secs(3),
            )
            .await?;
            println!("file size:            {size_mib} MiB");
            println!("providers:            {}", sharing.len());
            println!(
                "plain TCP copy:       {:>8.1} MiB/s ({:.2} s)",
                mib_s(size, base),
                base.as_secs_f64()
            );
            println!(
                "jantar get:           {:>8.1} MiB/s ({:.2} s, includes provider lookup)",
                mib_s(size, took),
                took.as_secs_f64()
            );
            println!(
                "ratio jantar/TCP:     {:>8.2}",
                base.as_secs_f64() / took.as_secs_f64()
            );
            println!("libp2p stream:        {stream:>8.1} MiB/s (one stream, in memory)");
            println!(
                "libp2p chunk streams: {chunked:>8.1} MiB/s (a fresh stream per MiB, 8 at once)"
            );
            println!("ratio jantar/stream:  {:>8.2}", mib_s(size, took) / stream);
            // CPU per GiB moved: what a transfer costs wherever it runs. On a machine
            // whose cores both ends share, it bounds the rate: cores / CPU per byte.
            let gib = size as f64 / f64::from(1u32 << 30);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            println!(
                "CPU, TCP copy:        {:>8.2} core-s per GiB",
                base_cpu / gib
            );
            println!(
                "CPU, jantar get:      {:>8.2} core-s per GiB (fetcher {:.2}, providers {:.2})",
                get_cpu / gib,
                fetcher_cpu / gib,
                providers_cpu / gib
            );
            println!("ratio CPU TCP/jantar: {:>8.2}", base_cpu / get_cpu);
            println!(
                "jantar get at {cores} cores busy: {:>6.1} MiB/s (the rate its CPU per byte allows)",
                cores * 1024.0 / (get_cpu / gib)
            );
        }
        Bench::Spread { peers, size_mib } => {
            let size = size_mib << 20;
            let src = root.join("data.bin");
            write_random(&src, size)?;
            let net = loopback_net(root).await?;
            let mut nodes = vec![];
            for i in 0..peers {
                nodes.push(
                    net.peer(&format!("p{i}"), "max_storage_size: 64GiB\n")
                        .await?,
                );
            }
            for n in nodes.iter_mut() {
                wait_connected(n, 2).await?;
            }
            let id = nodes[0].share(&src)?;
            let start = Instant::now();
            let mut times = vec![];
            for n in nodes[1..].iter_mut() {
                let id = id.clone();
                n.wait_until(Duration::from_secs(600), "replica", async |n: &Node| {
                    let v: serde_json::Value = serde_json::from_str(&cli(n, &["ls", "--json"])?)?;
                    Ok(v["files"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f["id"] == id.as_str())))
                })
                .await?;
                times.push(start.elapsed());
            }
            let last = times.iter().max().copied().unwrap_or_default();
            let single = tcp_copy(&src, &root.join("tcp-copy.bin"))?;
            println!("peers:                {peers} (1 publisher)");
            println!("file size:            {size_mib} MiB");
            println!("all peers have it:    {:.2} s", last.as_secs_f64());
            println!(
                "first / median:       {:.2} s / {:.2} s",
                times.iter().min().unwrap().as_secs_f64(),
                {
                    let mut t = times.clone();
                    t.sort();
                    t[t.len() / 2].as_secs_f64()
                }
            );
            println!(
                "baseline: one TCP copy {:.2} s; {} sequential copies {:.2} s",
                single.as_secs_f64(),
                peers - 1,
                single.as_secs_f64() * (peers - 1) as f64
            );
        }
        Bench::Peering { runs } => {
            let runs = runs.max(1);
            let (mut top, mut random, mut without, mut with) = (vec![], vec![], vec![], vec![]);
            let (mut steady, mut all_peers) = (vec![], vec![]);
            for run in 0..runs {
                let dir = root.join(format!("run{run}"));
                std::fs::create_dir_all(dir.join("churn"))?;
                let c = jantar_tests::peering_bench::churn(&dir.join("churn")).await?;
                println!(
                    "run {run}: churn: the 20 best-scored peers hold {:.2} of {} slots ({} of them connected; random: {:.2}); {} of 20 steady peers kept; {} trimmed",
                    c.top20_share,
                    c.counted,
                    c.top20_connected,
                    c.random_share,
                    c.steady_kept,
                    c.trimmed
                );
                std::fs::create_dir_all(dir.join("rejoin"))?;
                let r = jantar_tests::peering_bench::rejoin(&dir.join("rejoin")).await?;
                println!(
                    "run {run}: rejoin: ready {:.2} s with the bootstrap node down ({:.2} s to all 4 old peers), {:.2} s with it up",
                    r.without_bootstrap.as_secs_f64(),
                    r.all_peers_without_bootstrap.as_secs_f64(),
                    r.with_bootstrap.as_secs_f64()
                );
                top.push(c.top20_share);
                steady.push(c.steady_kept as f64);
                all_peers.push(r.all_peers_without_bootstrap.as_secs_f64());
                random.push(c.random_share);
                without.push(r.without_bootstrap.as_secs_f64());
                with.push(r.with_bootstrap.as_secs_f64());
            }
            let (t, t_lo, t_hi) = spread(&mut top);
            let (rnd, _, _) = spread(&mut random);
            let (w, w_lo, w_hi) = spread(&mut without);
            let (b, b_lo, b_hi) = spread(&mut with);
            let (k, k_lo, k_hi) = spread(&mut steady);
            let (a, a_lo, a_hi) = spread(&mut all_peers);
            println!("steady peers kept of 20: median {k} ({k_lo} to {k_hi})");
            println!(
                "all 4 old peers back, bootstrap down: median {a:.2} s ({a_lo:.2} to {a_hi:.2})"
            );
            println!(
                "top-20 share of slots: median {t:.2} ({t_lo:.2} to {t_hi:.2}); random slots would give {rnd:.2}"
            );
            println!(
                "rejoin, bootstrap down: median {w:.2} s ({w_lo:.2} to {w_hi:.2}); bootstrap up: {b:.2} s ({b_lo:.2} to {b_hi:.2})"
            );
            println!(
                "{}",
                serde_json::json!({
                    "runs": runs,
                    "top20_share": t,
                    "steady_kept": k,
                    "rejoin_all_peers_s": a,
                    "random_share": rnd,
                    "rejoin_without_bootstrap_s": w,
                    "rejoin_with_bootstrap_s": b,
                })
            );
        }
        Bench::Relay {
            circuits,
            runs,
            measure,
        } => relay(root, circuits, runs, measure).await?,
        Bench::Update { peers, runs } => update(root, peers, runs).await?,
        Bench::Capacity {
            connections,
            per_ip,
            query_interval,
            measure,
            churn,
        } => capacity(root, connections, per_ip, query_interval, measure, churn).await?,
        Bench::Memory { size_mib } => {
            let size = size_mib << 20;
            let src = root.join("data.bin");
            write_random(&src, size)?;
            let net = loopback_net(root).await?;
            let a = net.peer("a", "").await?;
            let mut b = net
                .peer("b", "min_file_size: 1TiB\nmax_storage_size: 64GiB\n")
                .await?;
            wait_connected(&mut b, 2).await?;
            let idle_b = peak_rss_kib(b.pid().context("pid")?).unwrap_or(0);
            let id = a.share(&src)?;
            cli(&b, &["get", &id])?;
            let peak_b = peak_rss_kib(b.pid().context("pid")?).unwrap_or(0);
            let peak_a = peak_rss_kib(a.pid().context("pid")?).unwrap_or(0);
            println!("file size:            {size_mib} MiB");
            println!(
                "fetcher peak RSS:     {} MiB (before the fetch: {} MiB)",
                peak_b / 1024,
                idle_b / 1024
            );
            println!("provider peak RSS:    {} MiB", peak_a / 1024);
            println!(
                "ratio peak/file size: {:.3}",
                (peak_b as f64 / 1024.0) / size_mib as f64
            );
        }
    }
    Ok(())
}

async fn capacity(
    root: &Path,
    connections: usize,
    per_ip: usize,
    query_interval: Duration,
    measure: Duration,
    churn: Duration,
) -> Result<()> {
    use std::sync::{Arc, atomic::Ordering};

    use jantar_tests::capacity::{Client, Shared, percentile, rss_kib, source};

    let config = format!(
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  connection_limits: {{max_peers: {}, high_water: {}, low_water: {}, max_pending_connections: 1024}}\n",
        connections + 100,
        connections + 100,
        connections + 50
    );
    println!("bootstrap config (besides the defaults):\n{config}");
    let mut boot = Node::start(root, "boot", Role::Bootstrap, &config).await?;
    boot.wait_ready(Duration::from_secs(30)).await?;
    let pid = boot.pid().context("pid")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_rss = rss_kib(pid).unwrap_or(0);
    let target: libp2p::Multiaddr = boot.addr().parse()?;
    let shared = Arc::new(Shared::default());

    // Ramp up: every client dials at once, in batches as fast as they are accepted.
    let start = Instant::now();
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(Client::spawn(
            source(i, per_ip),
            &target,
            query_interval,
            shared.clone(),
        )?);
        // Keep the handshakes in flight under the bootstrap node's pending limit.
        while clients.len()
            - shared.connected.load(Ordering::Relaxed)
            - shared.dial_failed.load(Ordering::Relaxed)
            > 512
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.connected.load(Ordering::Relaxed) + shared.dial_failed.load(Ordering::Relaxed)
        < connections
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp = start.elapsed();
    let connected = shared.connected.load(Ordering::Relaxed);
    let accept_per_s = connected as f64 / ramp.as_secs_f64();

    // Hold: every client queries every `query_interval`; measure.
    tokio::time::sleep(query_interval).await;
    let cpu_before = cpu_secs(pid).unwrap_or(0.0);
    let queries_before = shared.queries_ok.load(Ordering::Relaxed);
    shared.start_sampling();
    let held_start = Instant::now();
    tokio::time::sleep(measure).await;
    let held = held_start.elapsed().as_secs_f64();
    let samples = shared.take_samples();
    let cpu = cpu_secs(pid).unwrap_or(0.0) - cpu_before;
    let queries = shared.queries_ok.load(Ordering::Relaxed) - queries_before;
    let loaded_rss = rss_kib(pid).unwrap_or(0);
    let st = boot.status().await?;
    let held_conns = st["connected_peers"].as_u64().unwrap_or(0) as usize;
    let per_conn = (loaded_rss.saturating_sub(base_rss)) as f64 / held_conns.max(1) as f64;
    let p50 = percentile(&samples, 0.5);
    let p99 = percentile(&samples, 0.99);
    let failed = shared.queries_failed.load(Ordering::Relaxed);
    let dropped = shared.disconnected.load(Ordering::Relaxed);
    drop(clients);
    let visits = if churn.is_zero() {
        None
    } else {
        Some(visitors(&boot, &target, per_ip, churn).await?)
    };
    println!("clients asked to connect:   {connections} ({per_ip} per source address)");
    println!(
        "connected:                  {connected} in {:.1} s; dial failures {}",
        ramp.as_secs_f64(),
        shared.dial_failed.load(Ordering::Relaxed)
    );
    println!("accept rate:                {accept_per_s:.0} connections/s");
    println!("held by the bootstrap node: {held_conns} (clients dropped: {dropped})");
    println!(
        "resident memory:            {} KiB idle, {} KiB loaded",
        base_rss, loaded_rss
    );
    println!("memory per connection:      {per_conn:.1} KiB");
    println!(
        "bootstrap CPU while held:   {:.2} cores ({cpu:.1} s over {held:.1} s)",
        cpu / held
    );
    println!(
        "FIND_NODE answered:         {:.0}/s ({} failed in all)",
        queries as f64 / held,
        failed
    );
    println!(
        "FIND_NODE latency:          p50 {p50:.1} ms, p99 {p99:.1} ms ({} samples)",
        samples.len()
    );
    if let Some(v) = &visits {
        println!(
            "visitors (connect, ask once, leave): {:.0}/s for {:.0} s; their FIND_NODE p50 {:.1} ms, p99 {:.1} ms; bootstrap CPU {:.2} cores",
            v.per_s, v.secs, v.p50, v.p99, v.cpu
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "visitors_per_s": visits.as_ref().map(|v| v.per_s.round()),
            "visitors_find_node_p99_ms": visits.as_ref().map(|v| (v.p99 * 10.0).round() / 10.0),
            "connections": held_conns,
            "rss_per_connection_kib": (per_conn * 10.0).round() / 10.0,
            "accept_per_s": accept_per_s.round(),
            "find_node_p50_ms": (p50 * 10.0).round() / 10.0,
            "find_node_p99_ms": (p99 * 10.0).round() / 10.0,
            "find_node_per_s": (queries as f64 / held).round(),
            "cpu_cores": (cpu / held * 100.0).round() / 100.0,
            "rss_idle_kib": base_rss,
            "rss_loaded_kib": loaded_rss,
        })
    );
    Ok(())
}

async fn relay(root: &Path, circuits: usize, runs: usize, measure: Duration) -> Result<()> {
    use jantar_tests::relay_bench::{ReferenceRelay, jantar_relay_config, throughput, with_peer};

    let warmup = Duration::from_secs(2);
    let jantar = jantar_tests::harness::start_serving_relay(
        root,
        "relay",
        jantar_tests::harness::LOOPBACK,
        "  connection_limits: {max_connections_per_ip: 1024}\n",
        &jantar_relay_config(circuits),
    )
    .await?;
    let jantar_addr = with_peer(&jantar.listen[0], &jantar.peer_id)?;
    let reference = ReferenceRelay::start(circuits).await?;
    println!("circuits at once: {circuits}; measured over {measure:?} after {warmup:?}");
    let (mut j, mut r, mut d) = (vec![], vec![], vec![]);
    for run in 0..runs.max(1) {
        let direct = throughput(None, circuits, warmup, measure).await?;
        let reference_mib = throughput(Some(&reference.addr), circuits, warmup, measure).await?;
        let jantar_mib = throughput(Some(&jantar_addr), circuits, warmup, measure).await?;
        println!(
            "run {run}: jantar-relay {jantar_mib:.1} MiB/s, reference relay {reference_mib:.1} MiB/s, direct {direct:.1} MiB/s"
        );
        j.push(jantar_mib);
        r.push(reference_mib);
        d.push(direct);
    }
    let (jm, jlo, jhi) = spread(&mut j);
    let (rm, rlo, rhi) = spread(&mut r);
    let (dm, dlo, dhi) = spread(&mut d);
    println!("jantar-relay:    median {jm:.1} MiB/s ({jlo:.1} to {jhi:.1})");
    println!("reference relay: median {rm:.1} MiB/s ({rlo:.1} to {rhi:.1})");
    println!("direct:          median {dm:.1} MiB/s ({dlo:.1} to {dhi:.1})");
    println!(
        "jantar/reference {:.2}, jantar/direct {:.2}",
        jm / rm,
        jm / dm
    );
    println!(
        "{}",
        serde_json::json!({
            "circuits": circuits,
            "runs": runs.max(1),
            "jantar_mib_s": (jm * 10.0).round() / 10.0,
            "reference_mib_s": (rm * 10.0).round() / 10.0,
            "direct_mib_s": (dm * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

/// What the steady state of visitors (connect, ask once, leave) gave.
struct Visits {
    per_s: f64,
    secs: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
}

/// Clients that connect, look up one key and leave, as fast as the bootstrap node
/// serves them (at most 512 at once), for `churn`; sessions completed per second.
async fn visitors(
    boot: &Node,
    target: &libp2p::Multiaddr,
    per_ip: usize,
    churn: Duration,
) -> Result<Visits> {
    use std::sync::{Arc, atomic::Ordering};

    use jantar_tests::capacity::{Client, Shared, cpu_secs, percentile, source};

    let pid = boot.pid().context("pid")?;
    // Let the held connections go first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shared = Arc::new(Shared::default());
    shared.start_sampling();
    let cpu_before = cpu_secs(pid).unwrap_or(0.0);
    let start = Instant::now();
    let mut live: Vec<Client> = Vec::new();
    let mut i = 0usize;
    while start.elapsed() < churn {
        let finished = shared.sessions_done.load(Ordering::Relaxed)
            + shared.dial_failed.load(Ordering::Relaxed)
            + shared.disconnected.load(Ordering::Relaxed);
        if i - finished.min(i) < 512 {
            // Source addresses cycle, so the per-IP cap sees at most `per_ip` at once.
            live.push(Client::spawn_once(
                source(i % 60_000, per_ip),
                target,
                shared.clone(),
            )?);
            i += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if live.len() > 4096 {
            live.drain(..2048);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let done = shared.sessions_done.load(Ordering::Relaxed);
    let cpu = cpu_secs(pid).unwrap_or(0.0) - cpu_before;
    let samples = shared.take_samples();
    drop(live);
    Ok(Visits {
        per_s: done as f64 / secs,
        secs,
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        cpu: cpu / secs,
    })
}

/// `bench update`: per run, a fresh network of a bootstrap node, a publisher and
/// `peers` peers; first every peer fetches a file of the artifact's size from the
/// publisher (the baseline), then a release is published and every peer runs it.
async fn update(root: &Path, peers: usize, runs: usize) -> Result<()> {
    use jantar_tests::update::{UpdateNet, propagate};
    let (mut updated, mut fetched, mut ratios) = (vec![], vec![], vec![]);
    for run in 0..runs.max(1) {
        let dir = root.join(format!("update{run}"));
        std::fs::create_dir_all(&dir)?;
        let mut u = UpdateNet::start(&dir, peers, Duration::from_secs(60)).await?;
        // Both measured on a settled network: every peer connected to the publisher.
        let n = peers as u64;
        u.publisher
            .wait_until(
                Duration::from_secs(60),
                "every peer connected",
                async |p: &Node| Ok(p.status().await?["connected_peers"].as_u64() >= Some(n + 1)),
            )
            .await?;
        // The baseline file has the size of the artifact as it will travel.
        let probe = dir.join("probe");
        jantar_tests::update::stamp(&Role::Peer.path(), "99.0.0", &probe)?;
        let size = std::fs::metadata(&probe)?.len() as usize;
        let file = dir.join(format!("baseline-{run}.bin"));
        write_random(&file, size)?;
        let out = cli(&u.publisher, &["share", file.to_str().context("path")?])?;
        let id = out
            .lines()
            .nth(1)
            .context("no ID from share")?
            .trim()
            .to_string();
        let start = Instant::now();
        let gets = u.peers.iter().map(|p| {
            let out = p.dir.join("baseline.bin");
            let args = ["get", id.as_str(), "-o", out.to_str().unwrap_or_default()];
            let cfg = p.dir.join("node.cfg");
            let mut cmd = tokio::process::Command::new(Role::Peer.path());
            cmd.arg("-c")
                .arg(cfg)
                .args(["--admin-listen", &p.admin])
                .args(args);
            async move { cmd.output().await }
        });
        for o in futures::future::join_all(gets).await {
            let o = o?;
            if !o.status.success() {
                bail!(
                    "baseline get failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        let baseline = start.elapsed().as_secs_f64();
        let p = propagate(&mut u, "99.0.0", 1, Duration::from_secs(300)).await?;
        let all = p.confirmed.last().map_or(0.0, Duration::as_secs_f64);
        println!(
            "run {run}: {} peers run the release {all:.2} s after publishing (first {:.2} s); fetching {} MiB to all of them: {baseline:.2} s; ratio {:.2}",
            p.peers,
            p.confirmed.first().map_or(0.0, Duration::as_secs_f64),
            size >> 20,
            all / baseline
        );
        updated.push(all);
        fetched.push(baseline);
        ratios.push(all / baseline);
    }
    let (a, a_lo, a_hi) = spread(&mut updated);
    let (f, f_lo, f_hi) = spread(&mut fetched);
    let (r, r_lo, r_hi) = spread(&mut ratios);
    println!("publish to every peer running it: median {a:.2} s ({a_lo:.2} to {a_hi:.2})");
    println!("the artifact's size fetched by every peer: median {f:.2} s ({f_lo:.2} to {f_hi:.2})");
    println!("ratio: median {r:.2} ({r_lo:.2} to {r_hi:.2})");
    println!(
        "{}",
        serde_json::json!({
            "peers": peers,
            "runs": runs,
            "publish_to_all_s": a,
            "fetch_baseline_s": f,
            "ratio": r,
        })
    );
    Ok(())
}
