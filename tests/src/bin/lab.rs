//! NAT lab driver.
//!
//! * `lab check` builds a topology with one host per NAT kind (plus a
//!   datacenter host as a baseline), probes each with plain UDP/TCP sockets
//!   and prints which behaviours were observed. It exits non-zero when a host
//!   does not behave as its NAT kind promises.
//! * `lab matrix` measures hole punching of the real binaries: NAT kind x NAT
//!   kind x transport, over several trials, each in a fresh lab.
//! * `lab demo` walks through two peers behind different NATs finding each
//!   other through the DHT, connecting through the relay and going direct.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use jantar_tests::lab::{
    JantarNet, Lab, LabNode, LabOptions, LinkCondition, LinkDirection, NatKind, NatObservation,
    ObservationServers, PUNCH_OK, PairOutcome, Prober, PunchLab, Topology, TopologySpec, Transport,
    check_environment, connections_to, discovered, observe_host, render_matrix, render_table,
    wait_ready, wait_reservation,
};

#[derive(Parser)]
#[command(about = "Jantar NAT lab (network namespaces, run as root)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build one host per NAT kind and print the NAT behaviour observed.
    Check(CheckArgs),
    /// Measure hole punching between the real binaries: NAT kind x NAT kind x
    /// transport, over several trials (a fresh lab each).
    Matrix(MatrixArgs),
    /// Show two peers behind different NATs finding each other through the
    /// DHT, connecting through the relay and going direct.
    Demo(DemoArgs),
}

#[derive(Args)]
struct MatrixArgs {
    /// Trials per transport (each builds a fresh lab with every pair).
    #[arg(long, default_value_t = 3)]
    trials: u32,
    /// Transports, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "tcp,quic")]
    transports: Vec<Transport>,
    /// NAT kinds, comma separated (dialers and listeners).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "open,moderate,cgnat,strict"
    )]
    kinds: Vec<NatKind>,
    /// Time one trial's pairs get to punch through or give up.
    #[arg(long, default_value_t = 45)]
    pair_timeout_secs: u64,
    /// Print every pair's outcome, not just the matrix.
    #[arg(long)]
    verbose: bool,
    /// Keep every trial's logs (printed per trial).
    #[arg(long)]
    keep_logs: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// NAT of the first peer.
    #[arg(long, default_value = "moderate")]
    first: NatKind,
    /// NAT of the second peer.
    #[arg(long, default_value = "cgnat")]
    second: NatKind,
    /// Keep the logs.
    #[arg(long)]
    keep_logs: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Directory for process logs (kept). Default: a temporary directory,
    /// removed on success.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Keep the temporary log directory even on success.
    #[arg(long)]
    keep_logs: bool,
    /// Path of the lab-probe binary. Default: next to this binary.
    #[arg(long, env = "JANTAR_LAB_PROBE")]
    probe: Option<PathBuf>,
    /// Rate (kbit/s) used to verify link rate limiting; 0 skips the check.
    #[arg(long, default_value_t = 2000)]
    rate_kbit: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Without root, patchbay can still work inside a user namespace, but
    // that has to be entered before any thread exists.
    if !nix::unistd::geteuid().is_root()
        && let Err(e) = patchbay::init_userns()
    {
        eprintln!("lab: could not enter a user namespace: {e:#}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lab: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => check(args).await,
            Command::Matrix(args) => matrix(args).await,
            Command::Demo(args) => demo(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(args: CheckArgs) -> Result<ExitCode> {
    if let Err(reason) = check_environment() {
        eprintln!("lab check: cannot run here: {reason}");
        return Ok(ExitCode::from(2));
    }
    let prober = match args.probe {
        Some(path) => Prober::new(path),
        None => Prober::locate()?,
    };
    let mut opts = LabOptions::new().label("check");
    if let Some(dir) = args.log_dir {
        opts = opts.log_dir(dir);
    }
    if args.keep_logs {
        opts = opts.keep_logs();
    }
    let lab = Lab::with_options(opts).await?;
    println!("link conditions: {}", lab.link_capabilities());

    let outcome = tokio::time::timeout(
        Duration::from_secs(300),
        run_checks(&lab, &prober, args.rate_kbit),
    )
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("check timed out after 300 s")));
    match outcome {
        Ok(true) => {
            println!("\nall NAT kinds behave as specified");
            Ok(ExitCode::SUCCESS)
        }
        Ok(false) | Err(_) => {
            if let Err(e) = outcome {
                eprintln!("lab check failed: {e:#}");
            }
            lab.keep_logs();
            eprintln!("{}", lab.dump_rules_text().await);
            eprintln!("process logs kept in {}", lab.log_dir().display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Returns whether everything matched the specification.
async fn run_checks(lab: &Lab, prober: &Prober, rate_kbit: u32) -> Result<bool> {
    let servers = ObservationServers::start(lab, prober).await?;
    let mut hosts = vec![lab.add_datacenter_host("dc-host").await?];
    for kind in NatKind::ALL {
        hosts.push(lab.add_home_host(kind, &format!("{kind}-host")).await?);
    }

    let mut rows: Vec<NatObservation> = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let port = 40_000 + i as u16;
        let row = observe_host(prober, &servers, host, port)
            .await
            .with_context(|| format!("observe {}", host.name()))?;
        rows.push(row);
    }

    println!("\nobserved NAT behaviour (A, B, C are datacenter echo servers):");
    print!("{}", render_table(&rows));
    println!();
    for kind in NatKind::ALL {
        println!("  {:<10} {}", kind.name(), kind.summary());
    }

    let mut ok = true;
    for row in &rows {
        let violations = row.violations();
        if !violations.is_empty() {
            ok = false;
            println!("\n{} does not behave as specified:", row.host);
            for v in violations {
                println!("  - {v}");
            }
        }
    }

    if rate_kbit > 0 {
        ok &= check_rate_limit(lab, prober, &servers, rate_kbit).await?;
    }
    Ok(ok)
}

/// Uploads through a rate-limited link and compares the achieved rate with
/// the requested one.
async fn check_rate_limit(
    lab: &Lab,
    prober: &Prober,
    servers: &ObservationServers,
    rate_kbit: u32,
) -> Result<bool> {
    const SINK: u16 = 5201;
    let sink = prober.serve(servers.b.host(), &[], &[], &[SINK]).await?;
    let host = lab.add_datacenter_host("link-host").await?;
    // Ask for a delay too, to show what happens to netem-only parts.
    let cond = LinkCondition::new().rate_kbit(rate_kbit).latency_ms(20);
    let report = host.set_link_condition(cond, LinkDirection::Egress).await?;
    // About two seconds of traffic at the requested rate.
    let bytes = u64::from(rate_kbit) * 1000 / 8 * 2;
    let result = prober
        .tcp_bulk(&host, sink.addr(SINK), bytes, Duration::from_secs(60))
        .await?;
    let ratio = result.kbit_per_s as f64 / f64::from(rate_kbit);
    println!("\nlink condition check (upload from a datacenter host):");
    println!(
        "  requested {rate_kbit} kbit/s + 20 ms delay; backend {:?}; ignored: {}",
        report.backend,
        if report.ignored.is_empty() {
            "nothing".to_string()
        } else {
            report.ignored.join(", ")
        }
    );
    for q in &report.qdiscs {
        println!("  qdisc {q}");
    }
    println!(
        "  measured {} kbit/s over {} bytes in {} ms ({:.0}% of the requested rate)",
        result.kbit_per_s,
        result.bytes,
        result.millis,
        ratio * 100.0
    );
    if !(0.5..=1.25).contains(&ratio) {
        println!("  rate limit NOT effective");
        return Ok(false);
    }
    if result.bytes != bytes {
        bail!("sink confirmed {} of {bytes} bytes", result.bytes);
    }
    Ok(true)
}

async fn matrix(args: MatrixArgs) -> Result<ExitCode> {
    if let Err(reason) = check_environment() {
        eprintln!("lab matrix: cannot run here: {reason}");
        return Ok(ExitCode::from(2));
    }
    let limit = Duration::from_secs(args.pair_timeout_secs);
    let mut outcomes: Vec<PairOutcome> = Vec::new();
    let started = Instant::now();
    for trial in 1..=args.trials {
        for &transport in &args.transports {
            let mut opts = LabOptions::new().label(format!("matrix-{transport}-{trial}"));
            if args.keep_logs {
                opts = opts.keep_logs();
            }
            let lab = Lab::with_options(opts).await?;
            let net = JantarNet::new(&lab);
            let run = async {
                let pl = PunchLab::build(&net, &args.kinds, &args.kinds, transport).await?;
                pl.punch(&pl.all_pairs(), limit).await
            };
            let result = tokio::time::timeout(limit + Duration::from_secs(120), run)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("trial timed out")));
            match result {
                Ok(trial_outcomes) => {
                    let ok = trial_outcomes.iter().filter(|o| o.punched()).count();
                    println!(
                        "trial {trial}/{} {transport}: {ok}/{} pairs punched through ({:.0?} so far){}",
                        args.trials,
                        trial_outcomes.len(),
                        started.elapsed(),
                        if args.keep_logs {
                            format!("; logs in {}", lab.log_dir().display())
                        } else {
                            String::new()
                        }
                    );
                    if args.verbose {
                        for o in &trial_outcomes {
                            println!("  {}", o.describe());
                        }
                    }
                    outcomes.extend(trial_outcomes);
                }
                Err(e) => {
                    lab.keep_logs();
                    eprintln!(
                        "trial {trial} {transport} failed: {e:#}\n{}\nlogs kept in {}",
                        net.diagnose().await,
                        lab.log_dir().display()
                    );
                }
            }
        }
    }
    println!(
        "\nhole punching, {} trial(s) per cell; dialer dials the listener's relay circuit, the listener starts DCUtR",
        args.trials
    );
    println!(
        "(punched = DCUtR success with a direct connection; times from the relayed to the direct connection; attempt = DCUtR round that succeeded: count)\n"
    );
    print!("{}", render_matrix(&outcomes));
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> Result<ExitCode> {
    if let Err(reason) = check_environment() {
        eprintln!("lab demo: cannot run here: {reason}");
        return Ok(ExitCode::from(2));
    }
    let mut opts = LabOptions::new().label("demo");
    if args.keep_logs {
        opts = opts.keep_logs();
    }
    let lab = Lab::with_options(opts).await?;
    let net = JantarNet::new(&lab);
    let result = tokio::time::timeout(Duration::from_secs(240), run_demo(&lab, &net, &args)).await;
    let outcome = match result {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("demo timed out")),
    };
    match outcome {
        Ok(()) => {
            for n in net.nodes() {
                let _ = n.stop(Duration::from_secs(5)).await;
            }
            println!("\n8. stopped every node; the lab's namespaces go away with it");
            if args.keep_logs {
                println!("   logs: {}", lab.log_dir().display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            lab.keep_logs();
            eprintln!("demo failed: {e:#}\n{}", net.diagnose().await);
            eprintln!(
                "{}\nlogs kept in {}",
                lab.dump_rules_text().await,
                lab.log_dir().display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run_demo(lab: &Lab, net: &JantarNet<'_>, args: &DemoArgs) -> Result<()> {
    let wait = Duration::from_secs(60);
    let mut spec = TopologySpec::standard();
    spec.bootstraps = 1;
    spec.public_peer = false;
    spec.nat_peers = vec![args.first, args.second];
    println!(
        "1. building the lab: a datacenter with a bootstrap node and a relay, and two home networks ({} and {})",
        args.first, args.second
    );
    let topo = Topology::build(net, &spec).await?;
    let boot = &topo.bootstraps[0];
    println!(
        "   bootstrap {} at {}",
        boot.peer_id(),
        boot.addr(Transport::Tcp)
    );
    println!(
        "   relay     {} at {}",
        topo.relay.peer_id(),
        topo.relay.addr(Transport::Tcp)
    );
    let (a, b) = (&topo.nat_peers[0].1, &topo.nat_peers[1].1);
    for p in [a, b] {
        let net_info = p.host().home_network().map(|n| n.public_ip());
        println!(
            "   peer {:<9} {} on {} behind {} NAT (public address {:?})",
            p.name(),
            p.peer_id(),
            p.ip(),
            p.host().nat_kind().map_or("no", |k| k.name()),
            net_info.flatten()
        );
    }

    println!("\n2. both peers join the DHT through the bootstrap node");
    for p in [a, b] {
        let took = wait_ready(p).await?;
        println!("   {} connected to a DHT server after {took:.1?}", p.name());
    }

    println!("\n3. AutoNAT tells each peer it is not reachable from outside");
    for p in [a, b] {
        let took = p
            .wait_until(wait, "a NAT status", async |n: &LabNode| {
                Ok(n.status().await?["nat_status"] != "unknown")
            })
            .await?;
        let st = p.status().await?;
        println!(
            "   {}: NAT status {} (DHT {}) after {took:.1?}",
            p.name(),
            st["nat_status"],
            st["dht_mode"]
        );
    }

    println!("\n4. private peers reserve a slot on the relay they found in the DHT");
    for p in [a, b] {
        if p.status().await?["nat_status"] == "private" {
            let circuit = wait_reservation(p, wait).await?;
            println!("   {} is reachable at {circuit}", p.name());
        }
    }

    println!("\n5. they find each other in the DHT");
    for (p, q) in [(a, b), (b, a)] {
        let qid = q.peer_id().to_string();
        let took = p
            .wait_until(wait, "discovery of the other peer", async |n: &LabNode| {
                Ok(discovered(&n.status().await?).contains(&qid))
            })
            .await?;
        println!("   {} found {} after {took:.1?}", p.name(), q.name());
    }

    println!("\n6. a connection through the relay, then DCUtR hole punching");
    let bid = b.peer_id().to_string();
    let aid = a.peer_id().to_string();
    a.wait_until(
        wait,
        "a hole punch between the peers",
        async |n: &LabNode| {
            let punched = |node: &LabNode, other: &str| {
                node.log_lines()
                    .iter()
                    .any(|v| v["message"] == PUNCH_OK && v["peer"] == other)
            };
            Ok(punched(n, &bid) || punched(b, &aid))
        },
    )
    .await?;
    for (p, other) in [(a, &bid), (b, &aid)] {
        for v in p.log_lines() {
            let about_other = v["peer"] == other.as_str();
            let msg = v["message"].as_str().unwrap_or_default();
            if about_other && (msg == "connection established" || msg.starts_with("hole punch")) {
                println!(
                    "   {} {:<13} {} {}",
                    v["timestamp"]
                        .as_str()
                        .unwrap_or("")
                        .get(11..23)
                        .unwrap_or(""),
                    p.name(),
                    msg,
                    [
                        v["kind"].as_str(),
                        v["direction"].as_str(),
                        v["remote"].as_str()
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ")
                );
            }
        }
    }

    println!("\n7. what connects them now");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (p, other) in [(a, &bid), (b, &aid)] {
        let conns = connections_to(&p.status().await?, other);
        for (kind, addr) in &conns {
            println!("   {} -> {kind} {addr}", p.name());
        }
        if conns.is_empty() {
            println!("   {}: no connection", p.name());
        }
    }
    let _ = lab;
    Ok(())
}
