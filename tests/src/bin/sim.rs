//! `sim --nodes N --scenario NAME`: a simulated internet of real Jantar nodes (see
//! `jantar_tests::sim`). Prints a figure per line, then one line of JSON.

use std::time::Duration;

use clap::Parser;
use jantar_tests::sim::{Options, Sim, clock};

#[derive(Parser, Debug)]
#[command(about = "Runs N Jantar nodes on a simulated internet and measures a scenario")]
struct Args {
    /// Nodes in all, the bootstrap nodes included.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// join, lookups, gossip, file, partition, failover, churn, or all.
    #[arg(long, default_value = "lookups")]
    scenario: String,
    #[arg(long, default_value_t = 3)]
    bootstrap_nodes: usize,
    /// Lookups per measurement.
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// Lookups in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Peers started at once while joining.
    #[arg(long, default_value_t = 100)]
    wave: usize,
    /// Peers' `max_peers` (the default config's when not given).
    #[arg(long)]
    max_peers: Option<u32>,
    /// Peers' `high_water` (the default config's when not given).
    #[arg(long)]
    high_water: Option<u32>,
    /// Peers' `low_water` (the default config's when not given).
    #[arg(long)]
    low_water: Option<u32>,
    /// Every node's `network.dht.parallelism` (the default config's when not given).
    #[arg(long)]
    dht_parallelism: Option<usize>,
    /// Simulated time over which churn replaces half the peers.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    churn_window: Duration,
    /// Steps in which churn replaces them.
    #[arg(long, default_value_t = 20)]
    churn_steps: u32,
    /// How long the partition keeps two regions apart.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    partition: Duration,
    /// Simulated time left to settle after joining, before measuring.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs with the process's clocks at this share of the real pace (needs libfaketime),
    /// so that a simulation larger than one thread keeps up with stays right, taking
    /// longer: see `docs/scale.md`.
    #[arg(long, default_value_t = 1.0, value_parser = clock::parse_speed)]
    clock_speed: f64,
    /// Writes every node's metrics, summed, to this file (Prometheus text) at the end.
    #[arg(long)]
    metrics: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.clock_speed < 1.0 && clock::speed_in_effect().is_none() {
        return clock::run_slowed(a.clock_speed);
    }
    // Every node logs into this one process: only what `RUST_LOG` asks for, on stderr
    // (`RUST_LOG=libp2p_kad=debug` shows why requests of a lookup failed).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let opts = Options {
        nodes: a.nodes,
        bootstrap_nodes: a.bootstrap_nodes,
        seed: a.seed,
        wave: a.wave,
        lookups: a.lookups,
        concurrency: a.concurrency,
        max_peers: a.max_peers,
        high_water: a.high_water,
        low_water: a.low_water,
        dht_parallelism: a.dht_parallelism,
        churn_window: a.churn_window,
        churn_steps: a.churn_steps,
        partition: a.partition,
        settle: a.settle,
        dir: None,
    };
    let metrics = match &a.metrics {
        Some(path) => Some((
            path.clone(),
            metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?,
        )),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let report = rt.block_on(async move {
        let mut sim = Sim::new(opts)?;
        let report = jantar_tests::sim::run(&mut sim, &a.scenario).await;
        sim.shutdown().await;
        report
    })?;
    if let Some((path, handle)) = metrics {
        std::fs::write(&path, handle.render())?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
