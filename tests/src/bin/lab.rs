//! NAT lab driver.
//!
//! `lab check` builds a topology with one host per NAT kind (plus a
//! datacenter host as a baseline), probes each with plain UDP/TCP sockets and
//! prints which behaviours were observed. It exits non-zero when a host does
//! not behave as its NAT kind promises.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use jantar_tests::lab::{
    Lab, LabOptions, LinkCondition, LinkDirection, NatKind, NatObservation, ObservationServers,
    Prober, check_environment, observe_host, render_table,
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
