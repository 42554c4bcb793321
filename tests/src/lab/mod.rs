//! NAT lab: Linux network namespaces wired into a small internet with a
//! public datacenter and home networks behind different kinds of NAT, built
//! on the `patchbay` crate.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use jantar_tests::lab::{Lab, NatKind, ProcessSpec};
//! let lab = Lab::new().await?;
//! let bootstrap = lab.add_datacenter_host("bootstrap1").await?;
//! let peer = lab.add_home_host(NatKind::Moderate, "peerA").await?;
//! let mut proc = peer.spawn(
//!     ProcessSpec::new("/bin/ping").args(["-c1", &bootstrap.ip().to_string()]),
//! )?;
//! proc.wait(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! Addresses: datacenter hosts get addresses from 198.18.0.0/15 (the
//! benchmarking range patchbay uses as "public"), home hosts get 10.0.x.y
//! behind their router, and carrier-grade NAT customers sit in
//! 100.64.x.0/24. All traffic stays inside the lab's namespaces. The lab is
//! IPv4-only so NAT behaviour is not bypassed by routable IPv6.
//!
//! See `docs/nat-lab.md` for how each [`NatKind`] is configured.

mod echo;
mod env;
mod host;
mod link;
mod net;
mod node;
mod observe;
mod probe;
mod process;
mod punch;
mod tool;

use std::{
    fmt,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, ensure};
use patchbay::{Firewall, FirewallConfig, IpSupport, Ipv4Net, Nat, RouterPreset};

pub use self::{
    echo::{EchoOptions, run as run_echo},
    env::{Unavailable, check_environment},
    host::{HomeNetwork, LabHost, LabRouter, Placement, RouterRole, UplinkCut},
    link::{LinkBackend, LinkCapabilities, LinkCondition, LinkDirection, LinkReport},
    net::{
        JantarNet, READY_TIMEOUT, Topology, TopologySpec, active_circuit, bootstrap_config,
        connections_to, discovered, peer_config, relay_certificate, relay_config, wait_ready,
        wait_reservation,
    },
    node::{
        ADMIN_PORT, LOG_LEVEL, LabNode, NodeConfig, P2P_PORT, Transport, WSS_PORT, admin_request,
        diagnose_nodes, line_time, parse_log, parse_timestamp, strings,
    },
    observe::{Filtering, Mapping, NatObservation, ObservationServers, observe_host, render_table},
    probe::{
        BulkResult, EchoReport, ProbeServer, Prober, TcpResult, UdpProbeOptions, UdpProbeReport,
        UdpProbeSession,
    },
    process::{LabProcess, ProcessSpec},
    punch::{
        MatrixCell, PUNCH_FAILED, PUNCH_OK, PairOutcome, PunchLab, matrix, punch_peer_config,
        quantile, render_matrix,
    },
};

/// The NAT in front of a home host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering (full cone), no firewall.
    Open,
    /// Endpoint-independent mapping, address-and-port-dependent filtering
    /// (port-restricted cone): the usual home router.
    Moderate,
    /// Endpoint-dependent mapping with random ports (symmetric).
    Strict,
    /// Two NAT levels: a carrier-grade NAT upstream of a home router, both
    /// with endpoint-independent mapping.
    Cgnat,
    /// Enterprise firewall that lets only TCP 80 and 443 out, behind
    /// symmetric NAT.
    Corporate,
}

impl NatKind {
    /// Every kind, in order of increasing hostility.
    pub const ALL: [NatKind; 5] = [
        NatKind::Open,
        NatKind::Moderate,
        NatKind::Cgnat,
        NatKind::Strict,
        NatKind::Corporate,
    ];

    /// Short lowercase name, also accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Moderate => "moderate",
            Self::Strict => "strict",
            Self::Cgnat => "cgnat",
            Self::Corporate => "corporate",
        }
    }

    /// One-line description of the intended behaviour.
    pub fn summary(self) -> &'static str {
        match self {
            Self::Open => "EIM + endpoint-independent filtering (full cone)",
            Self::Moderate => "EIM + address-and-port-dependent filtering",
            Self::Strict => "endpoint-dependent mapping, random ports (symmetric)",
            Self::Cgnat => "CGNAT (EIM) upstream of a home NAT (EIM)",
            Self::Corporate => "firewall: only TCP 80/443 out",
        }
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NatKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        NatKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = NatKind::ALL.iter().map(|k| k.name()).collect();
                anyhow!(
                    "unknown NAT kind {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Options for [`Lab::with_options`].
#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    label: Option<String>,
    log_dir: Option<PathBuf>,
    keep_logs: bool,
}

impl LabOptions {
    /// Default options: label `lab`, logs in a fresh temporary directory that
    /// is removed when the lab is dropped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Label used in the log directory name and in patchbay's output.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Writes process logs under `dir` (never removed by the lab).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Keeps the temporary log directory after the lab is dropped. Setting
    /// `JANTAR_LAB_KEEP_LOGS=1` has the same effect.
    pub fn keep_logs(mut self) -> Self {
        self.keep_logs = true;
        self
    }
}

/// State shared by the lab and every host handle.
pub(crate) struct LabShared {
    pub(crate) log_dir: PathBuf,
    remove_log_dir: AtomicBool,
    pub(crate) spawn_seq: AtomicU64,
    pub(crate) link_caps: LinkCapabilities,
}

impl Drop for LabShared {
    fn drop(&mut self) {
        if self.remove_log_dir.load(Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Rules of one router, from [`Lab::dump_rules`].
#[derive(Clone, Debug)]
pub struct RouterRules {
    /// Router name.
    pub router: String,
    /// What the router does.
    pub role: RouterRole,
    /// `nft list ruleset` output, or why it could not be read.
    pub ruleset: Result<String, String>,
}

/// A running NAT lab. Dropping it tears down every namespace (processes
/// started with [`LabHost::spawn`] are killed when their handle drops).
pub struct Lab {
    pb: patchbay::Lab,
    shared: Arc<LabShared>,
    datacenter: LabRouter,
    routers: Mutex<Vec<LabRouter>>,
    hosts: Mutex<Vec<LabHost>>,
    carrier_seq: AtomicU8,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("log_dir", &self.shared.log_dir)
            .field("routers", &self.routers.lock().unwrap().len())
            .field("hosts", &self.hosts.lock().unwrap().len())
            .finish()
    }
}

static LAB_SEQ: AtomicU64 = AtomicU64::new(0);

fn effective_uid_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Lab {
    /// Builds an empty lab with just the datacenter router.
    pub async fn new() -> Result<Self> {
        Self::with_options(LabOptions::new()).await
    }

    /// Builds an empty lab with just the datacenter router.
    ///
    /// Fails with an [`Unavailable`] error (see [`check_environment`]) when
    /// the machine cannot run the lab at all, and with a plain error when
    /// `nft`/`tc`/`ip` are missing or setup fails.
    pub async fn with_options(opts: LabOptions) -> Result<Self> {
        check_environment()?;
        env::check_tools()?;
        let label = opts.label.unwrap_or_else(|| "lab".to_string());
        let (log_dir, remove_log_dir) = match opts.log_dir {
            Some(dir) => (dir, false),
            None => {
                let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
                let dir = std::env::temp_dir().join(format!(
                    "jantar-lab-{}-{}-{seq}",
                    sanitize(&label),
                    std::process::id()
                ));
                let keep = opts.keep_logs
                    || std::env::var_os("JANTAR_LAB_KEEP_LOGS").is_some_and(|v| v != "0");
                (dir, !keep)
            }
        };
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("create lab log directory {}", log_dir.display()))?;

        let mut builder = patchbay::Lab::builder()
            .outdir_from_env()
            .label(label.clone());
        if effective_uid_is_root() {
            // patchbay refuses real root unless told otherwise, because its
            // namespace workers bind-mount over /proc/net. Each worker first
            // unshares its own mount namespace and makes it private, so
            // nothing reaches the host's mount table.
            builder = builder.allow_real_root();
        }
        let pb = builder.build().await.context("create patchbay lab")?;
        pin_exchange_bridge_address(&pb.ix())
            .await
            .context("pin the exchange bridge's MAC address")?;
        let link_caps = link::probe_capabilities(&pb.ix())
            .await
            .context("probe tc qdisc support")?;
        announce_link_caps(&link_caps);

        let dc = pb
            .add_router("dc")
            .preset(RouterPreset::PublicV4)
            .build()
            .await
            .context("build datacenter router")?;
        let datacenter = LabRouter::new(dc, RouterRole::Datacenter);
        let shared = Arc::new(LabShared {
            log_dir,
            remove_log_dir: AtomicBool::new(remove_log_dir),
            spawn_seq: AtomicU64::new(0),
            link_caps,
        });
        Ok(Self {
            pb,
            shared,
            routers: Mutex::new(vec![datacenter.clone()]),
            datacenter,
            hosts: Mutex::new(Vec::new()),
            carrier_seq: AtomicU8::new(0),
        })
    }

    /// Directory holding process logs (one sub-directory per host).
    pub fn log_dir(&self) -> &Path {
        &self.shared.log_dir
    }

    /// Keeps the log directory when the lab is dropped.
    pub fn keep_logs(&self) {
        self.shared.remove_log_dir.store(false, Ordering::Relaxed);
    }

    /// What `tc` supports on this kernel.
    pub fn link_capabilities(&self) -> &LinkCapabilities {
        &self.shared.link_caps
    }

    /// The public datacenter router.
    pub fn datacenter(&self) -> &LabRouter {
        &self.datacenter
    }

    /// Every router built so far, datacenter first.
    pub fn routers(&self) -> Vec<LabRouter> {
        self.routers.lock().unwrap().clone()
    }

    /// Every host built so far.
    pub fn hosts(&self) -> Vec<LabHost> {
        self.hosts.lock().unwrap().clone()
    }

    /// The underlying patchbay lab, for anything this wrapper lacks.
    pub fn patchbay(&self) -> &patchbay::Lab {
        &self.pb
    }

    /// Adds a host on the datacenter router, with a public-like address and
    /// nothing in front of it.
    pub async fn add_datacenter_host(&self, name: &str) -> Result<LabHost> {
        let dc = self.datacenter.clone();
        self.add_host(name, dc, Placement::Datacenter).await
    }

    /// Adds a home network of `kind` (its routers are named `name` and, for
    /// [`NatKind::Cgnat`], `name-carrier`). Hosts join it with
    /// [`add_host_behind`](Self::add_host_behind).
    pub async fn add_home_network(&self, kind: NatKind, name: &str) -> Result<HomeNetwork> {
        let home = || {
            self.pb
                .add_router(name)
                .preset(RouterPreset::Home)
                .ip_support(IpSupport::V4Only)
        };
        let (gateway, carrier) = match kind {
            // The Home preset brings a block-inbound firewall, which would
            // turn the full cone back into a filtering NAT.
            NatKind::Open => (home().nat(Nat::Open).firewall(Firewall::None), None),
            NatKind::Moderate => (home().nat(Nat::Moderate), None),
            NatKind::Strict => (home().nat(Nat::Strict), None),
            NatKind::Cgnat => {
                let seq = self.carrier_seq.fetch_add(1, Ordering::Relaxed);
                let customers = Ipv4Net::new(Ipv4Addr::new(100, 64, seq, 0), 24)
                    .context("carrier customer subnet")?;
                let carrier = self
                    .pb
                    .add_router(&format!("{name}-carrier"))
                    .preset(RouterPreset::IspCgnat)
                    .ip_support(IpSupport::V4Only)
                    .downstream_cidr(customers)
                    .build()
                    .await
                    .with_context(|| format!("build carrier router for {name}"))?;
                let gateway = home().nat(Nat::Moderate).upstream(carrier.id());
                (gateway, Some(LabRouter::new(carrier, RouterRole::Carrier)))
            }
            NatKind::Corporate => {
                // The Corporate preset also lets UDP 53 out; the lab's
                // corporate network allows TCP 80 and 443 only.
                let firewall = FirewallConfig::builder()
                    .block_inbound()
                    .allow_tcp(&[80, 443])
                    .block_udp()
                    .build();
                let builder = self
                    .pb
                    .add_router(name)
                    .preset(RouterPreset::Corporate)
                    .ip_support(IpSupport::V4Only)
                    .firewall(Firewall::Custom(firewall));
                (builder, None)
            }
        };
        let gateway = gateway
            .build()
            .await
            .with_context(|| format!("build {kind} router {name}"))?;
        let gateway = LabRouter::new(gateway, RouterRole::Home(kind));
        for router in carrier.iter().chain([&gateway]) {
            router
                .drop_unsolicited_to_self()
                .await
                .with_context(|| format!("input filter of router {}", router.name()))?;
        }
        {
            let mut routers = self.routers.lock().unwrap();
            routers.extend(carrier.iter().cloned());
            routers.push(gateway.clone());
        }
        Ok(HomeNetwork::new(kind, gateway, carrier))
    }

    /// Adds a host to an existing home network.
    pub async fn add_host_behind(&self, network: &HomeNetwork, name: &str) -> Result<LabHost> {
        let gateway = network.gateway().clone();
        self.add_host(name, gateway, Placement::Home(network.clone()))
            .await
    }

    /// Adds a host behind its own new home network of `kind` (routers named
    /// `<name>-gw` and, for CGNAT, `<name>-gw-carrier`).
    pub async fn add_home_host(&self, kind: NatKind, name: &str) -> Result<LabHost> {
        let network = self.add_home_network(kind, &format!("{name}-gw")).await?;
        self.add_host_behind(&network, name).await
    }

    async fn add_host(
        &self,
        name: &str,
        uplink: LabRouter,
        placement: Placement,
    ) -> Result<LabHost> {
        let device = self
            .pb
            .add_device(name)
            .iface("eth0", uplink.patchbay().id())
            .build()
            .await
            .with_context(|| format!("build host {name}"))?;
        let host = LabHost::new(device, placement, uplink, Arc::clone(&self.shared))?;
        self.hosts.lock().unwrap().push(host.clone());
        Ok(host)
    }

    /// `nft list ruleset` of every router, for failure diagnostics.
    pub async fn dump_rules(&self) -> Vec<RouterRules> {
        let mut out = Vec::new();
        for router in self.routers() {
            let ruleset = router.nft_ruleset().await.map_err(|e| format!("{e:#}"));
            out.push(RouterRules {
                router: router.name().to_string(),
                role: router.role(),
                ruleset,
            });
        }
        out
    }

    /// [`dump_rules`](Self::dump_rules) as one printable text.
    pub async fn dump_rules_text(&self) -> String {
        let mut text = String::new();
        for rules in self.dump_rules().await {
            text.push_str(&format!(
                "===== nft ruleset of router {} ({}) =====\n",
                rules.router, rules.role
            ));
            match rules.ruleset {
                Ok(r) if r.trim().is_empty() => text.push_str("(empty ruleset)\n"),
                Ok(r) => text.push_str(&r),
                Err(e) => text.push_str(&format!("(could not read: {e})\n")),
            }
        }
        text
    }
}

/// Gives the exchange's bridge a fixed MAC address before any router joins it.
///
/// A Linux bridge without an assigned address takes the lowest MAC of its
/// ports, so it changes whenever a router with a lower (random) veth MAC is
/// added. Routers that had already resolved the exchange gateway keep sending
/// to the old MAC, which the bridge drops, until their neighbour entry goes
/// stale (15 to 45 s): every flow through them dies for that long. Seen as
/// relay connections going silent right after a later host was added. An
/// assigned address never changes.
async fn pin_exchange_bridge_address(ix: &patchbay::Ix) -> Result<()> {
    let links = tool::run_ok(
        tool::Ns::Ix(ix),
        "ip",
        &["-o", "link", "show", "type", "bridge"],
    )
    .await?;
    let bridges: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .collect();
    ensure!(
        !bridges.is_empty(),
        "no bridge in the exchange namespace: {links}"
    );
    for (i, br) in bridges.iter().enumerate() {
        // Locally administered, unicast.
        let mac = format!("02:4a:61:62:00:{:02x}", i + 1);
        tool::run_ok(
            tool::Ns::Ix(ix),
            "ip",
            &["link", "set", "dev", br, "address", &mac],
        )
        .await?;
    }
    Ok(())
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Prints the netem/tbf situation once per process.
fn announce_link_caps(caps: &LinkCapabilities) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !caps.netem {
            let _ = writeln!(
                std::io::stderr(),
                "lab: tc netem is not available on this kernel; link delay, jitter and loss are disabled{}",
                if caps.tbf {
                    ", rate limits are applied with tbf"
                } else {
                    " and tbf rate limiting is unavailable too"
                }
            );
        }
    });
}

/// Runs `body` against a fresh lab named `name`, bounded by `limit`.
///
/// * If [`check_environment`] says the lab cannot run here, prints
///   `SKIP <name>: <reason>` and returns `Ok(())`.
/// * If `body` fails or times out, prints the error, every router's nft
///   ruleset and the kept log directory, then returns the error.
pub async fn run_scenario(
    name: &str,
    limit: Duration,
    body: impl AsyncFnOnce(&Lab) -> Result<()>,
) -> Result<()> {
    if let Err(reason) = check_environment() {
        // Written to stderr directly so the test harness does not swallow it.
        let _ = writeln!(std::io::stderr(), "SKIP {name}: {reason}");
        return Ok(());
    }
    let lab = Lab::with_options(LabOptions::new().label(name))
        .await
        .with_context(|| format!("{name}: build lab"))?;
    let outcome = match tokio::time::timeout(limit, body(&lab)).await {
        Ok(result) => result,
        Err(_) => Err(anyhow!("{name}: timed out after {limit:?}")),
    };
    if let Err(e) = &outcome {
        lab.keep_logs();
        eprintln!("{name} FAILED: {e:#}");
        eprintln!("{}", lab.dump_rules_text().await);
        eprintln!("process logs kept in {}", lab.log_dir().display());
    }
    outcome
}
