//! `local-network`: builds and runs a small Jantar network on 127.0.0.1 (one bootstrap
//! node, one relay, two peers), shows them connecting, shares a file on one peer and
//! fetches it on the other, sends a message, prints the commands to try by hand, and
//! stops every node on Ctrl-C.
//!
//! Every node runs on its role's embedded default config; the generated files only add
//! what a local network needs (loopback addresses, the bootstrap node's address).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use jantar_tests::harness::{Node, Role, bin_dir, diagnose_all};

#[derive(Parser)]
#[command(about = "Run a local Jantar network: bootstrap, relay and two peers on loopback")]
struct Args {
    /// Stop by itself after this many seconds once the network is up (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
    /// Keep node directories (configs, keys, logs) here instead of a temporary directory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const LOCAL: &str =
    "  autonat: {only_global_ips: false, boot_delay: 2s}\n  dht: {discovery_interval: 2s}\n";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!("building the Jantar binaries (cargo build)...");
    let bins = bin_dir();
    println!("binaries in {}", bins.display());
    let tmp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;

    let mut boot = Node::start(
        &root,
        "bootstrap",
        Role::Bootstrap,
        &format!("network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\", \"/ip4/127.0.0.1/udp/0/quic-v1\"]\n{LOCAL}"),
    )
    .await?;
    boot.wait_ready(Duration::from_secs(30)).await?;
    say(
        &boot,
        &format!(
            "bootstrap node up at {} (admin http://{})",
            boot.addr(),
            boot.admin
        ),
    );

    let relay_port = free_port()?;
    let relay_addr = format!("/ip4/127.0.0.1/tcp/{relay_port}");
    let mut relay = Node::start(
        &root,
        "relay",
        Role::Relay,
        &format!(
            "network:\n  listen_addresses: [\"{relay_addr}\"]\n  external_addresses: [\"{relay_addr}\"]\n  bootstrap_nodes: [\"{}\"]\n{LOCAL}",
            boot.addr()
        ),
    )
    .await?;
    relay.wait_ready(Duration::from_secs(30)).await?;
    say(
        &relay,
        &format!(
            "relay serving at {} (admin http://{})",
            relay.addr(),
            relay.admin
        ),
    );

    let mut peers = Vec::new();
    for (name, mode) in [("alice", "always"), ("bob", "auto")] {
        let p = Node::start(
            &root,
            name,
            Role::Peer,
            &format!(
                "network:\n  enable_mdns: false\n  relay_reservations: {mode}\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  bootstrap_nodes: [\"{}\"]\n{LOCAL}",
                boot.addr()
            ),
        )
        .await?;
        say(&p, &format!("peer started, admin http://{}", p.admin));
        peers.push(p);
    }

    let mut result = show_network(&mut peers).await;
    if result.is_ok() {
        result = show_files_and_messages(&mut peers, &root).await;
    }
    if let Err(e) = &result {
        let mut all = vec![&boot, &relay];
        all.extend(peers.iter());
        eprintln!("{e:#}\n{}", diagnose_all(&all).await);
    }
    result?;

    println!("\nthe network is up. Try it by hand (another terminal):");
    let peer_bin = bins.join("jantar-peer");
    for p in &peers {
        println!(
            "  alias {}='{} -c {} --admin-listen {}'",
            p.name,
            peer_bin.display(),
            p.dir.join("node.cfg").display(),
            p.admin
        );
    }
    println!("  alice status              # peer id, NAT status, relay reservation");
    println!("  bob peers                 # connections, direct or relayed");
    println!("  alice share FILE          # prints the file's ID");
    println!("  bob get ID                # fetches it, with progress");
    println!("  bob ls                    # files held and fetches running");
    println!("  alice send \"hi bob\"       # a message to every peer");
    println!("  bob messages --follow     # received messages");
    println!("  curl -s http://{}/dht/stats", boot.admin);
    println!(
        "  curl -s http://{}/metrics | grep jantar_relay",
        relay.admin
    );
    println!("node directories (config, key, log): {}", root.display());
    if args.exit_after > 0 {
        println!("stopping in {}s", args.exit_after);
        tokio::time::sleep(Duration::from_secs(args.exit_after)).await;
    } else {
        println!("press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    println!();
    for n in peers.iter_mut().chain([&mut relay, &mut boot]) {
        let (status, took) = n.terminate(Duration::from_secs(15)).await?;
        say(n, &format!("stopped ({status}) in {} ms", took.as_millis()));
        if !status.success() {
            bail!("{} exited with {status}", n.name);
        }
    }
    Ok(())
}

fn say(n: &Node, msg: &str) {
    println!("[{:<9}] {msg}", n.name);
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn show_network(peers: &mut [Node]) -> Result<()> {
    let (alice, bob) = (peers[0].peer_id.clone(), peers[1].peer_id.clone());
    peers[0]
        .wait_until(
            Duration::from_secs(60),
            "alice's relay reservation",
            async |n: &Node| {
                let st = n.status().await?;
                Ok(st["reservations"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["state"] == "active")))
            },
        )
        .await?;
    let st = peers[0].status().await?;
    let circuit = st["reservations"][0]["address"]
        .as_str()
        .context("no circuit address")?
        .to_string();
    say(
        &peers[0],
        &format!("holds a relay reservation; reachable at {circuit}"),
    );

    let start = Instant::now();
    for (i, other) in [(0, &bob), (1, &alice)] {
        peers[i]
            .wait_until(
                Duration::from_secs(60),
                "discovery through the DHT",
                async |n: &Node| {
                    let st = n.status().await?;
                    Ok(st["discovered_peers"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|p| p == other.as_str())))
                },
            )
            .await?;
        say(
            &peers[i],
            &format!("found {} through the DHT", short(other)),
        );
    }
    let (code, conn) = peers[1]
        .post_json("/connect", &[("addr", &circuit)])
        .await?;
    if code != 200 {
        bail!("bob could not reach alice through the relay: {conn}");
    }
    say(
        &peers[1],
        &format!(
            "connected to alice through the relay ({} connection, {} ms after the peers started looking for each other)",
            conn["kind"].as_str().unwrap_or("?"),
            start.elapsed().as_millis()
        ),
    );
    Ok(())
}

/// What Jantar is for: alice shares a file and bob fetches it through the network,
/// with the progress `jantar-peer get` shows; then alice sends a message and bob reads
/// it. Every step runs the real `jantar-peer` client commands.
async fn show_files_and_messages(peers: &mut [Node], root: &Path) -> Result<()> {
    let file = root.join("alice").join("holiday-photos.tar");
    // 24 MiB of incompressible bytes: 24 chunks, enough to watch the progress.
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data)?;
    let id = peers[0].share(&file)?;
    say(
        &peers[0],
        &format!(
            "shares {} ({} MiB) as {}",
            file.display(),
            data.len() >> 20,
            short_id(&id)
        ),
    );
    let out = root
        .join("bob")
        .join("downloads")
        .join("holiday-photos.tar");
    let cfg = peers[1].dir.join("node.cfg");
    say(&peers[1], &format!("$ jantar-peer get {}", short_id(&id)));
    let start = Instant::now();
    // stderr is the terminal's: the user sees `get`'s own progress line.
    let status = Command::new(Role::Peer.path())
        .args(["-c", cfg.to_str().context("path")?])
        .args(["--admin-listen", &peers[1].admin, "get", &id])
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()?;
    if !status.success() {
        bail!("bob could not fetch the file: jantar-peer get exited with {status}");
    }
    let fetched = std::fs::read(&out).with_context(|| format!("read {}", out.display()))?;
    if fetched != data {
        bail!("bob's copy of the file differs from alice's");
    }
    say(
        &peers[1],
        &format!(
            "fetched it from alice in {} ms, verified chunk by chunk: {}",
            start.elapsed().as_millis(),
            out.display()
        ),
    );

    let text = "hello from alice";
    peers[0]
        .wait_until(
            Duration::from_secs(60),
            "a peer that receives messages",
            async |n: &Node| Ok(n.cli(&["send", text])?.0.success()),
        )
        .await?;
    say(&peers[0], &format!("$ jantar-peer send \"{text}\""));
    peers[1]
        .wait_until(
            Duration::from_secs(30),
            "alice's message",
            async |n: &Node| Ok(n.cli(&["messages"])?.1.contains(text)),
        )
        .await?;
    let (_, shown, _) = peers[1].cli(&["messages"])?;
    let line = shown.lines().find(|l| l.contains(text)).unwrap_or_default();
    say(&peers[1], &format!("$ jantar-peer messages  ->  {line}"));
    Ok(())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn short(id: &str) -> &str {
    &id[id.len().saturating_sub(8)..]
}
