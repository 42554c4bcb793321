//! Handles for routers, home networks and hosts in a [`Lab`](super::Lab).

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context, Result};

use super::{
    LabShared, LinkCapabilities, NatKind,
    process::{LabProcess, ProcessSpec},
    tool::{Ns, run_ok},
};

/// What a router does in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterRole {
    /// The public datacenter router: no NAT, no firewall.
    Datacenter,
    /// The router of a home (or office) network, with the NAT of that kind.
    Home(NatKind),
    /// The carrier-grade NAT upstream of a [`NatKind::Cgnat`] home router.
    Carrier,
}

impl fmt::Display for RouterRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Datacenter => f.write_str("datacenter"),
            Self::Home(kind) => write!(f, "home/{kind}"),
            Self::Carrier => f.write_str("carrier-cgnat"),
        }
    }
}

/// A router in the lab.
#[derive(Clone)]
pub struct LabRouter {
    router: patchbay::Router,
    role: RouterRole,
}

impl fmt::Debug for LabRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabRouter")
            .field("name", &self.name())
            .field("role", &self.role)
            .field("wan_ip", &self.wan_ip())
            .finish()
    }
}

impl LabRouter {
    pub(crate) fn new(router: patchbay::Router, role: RouterRole) -> Self {
        Self { router, role }
    }

    /// Router name as given to the lab.
    pub fn name(&self) -> &str {
        self.router.name()
    }

    /// What this router does in the topology.
    pub fn role(&self) -> RouterRole {
        self.role
    }

    /// Address on the upstream (WAN) side: the public address for routers on
    /// the exchange, the carrier-side address for a router behind a CGNAT.
    pub fn wan_ip(&self) -> Option<Ipv4Addr> {
        self.router.uplink_ip()
    }

    /// Gateway address of the downstream (LAN) side.
    pub fn lan_gateway(&self) -> Option<Ipv4Addr> {
        self.router.downstream_gw()
    }

    /// Name of the upstream (WAN) interface inside the router's namespace.
    pub fn wan_iface(&self) -> String {
        self.router
            .interfaces()
            .first()
            .map(|i| i.name().to_string())
            .unwrap_or_else(|| "ix".to_string())
    }

    /// Takes the router's upstream link down, cutting every host behind it
    /// off the rest of the lab (their own LAN keeps working). NAT and
    /// conntrack state stay as they are, as on a real router whose uplink
    /// fails. Call [`UplinkCut::restore`] to bring the link back.
    pub async fn cut_uplink(&self) -> Result<UplinkCut> {
        let wan = self.wan_iface();
        // Linux drops the routes through an interface that goes down; keep
        // them to put them back afterwards.
        let routes = run_ok(
            Ns::Router(&self.router),
            "ip",
            &["-4", "route", "show", "dev", &wan],
        )
        .await?;
        let routes: Vec<String> = routes
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains("proto kernel"))
            .map(str::to_string)
            .collect();
        run_ok(
            Ns::Router(&self.router),
            "ip",
            &["link", "set", "dev", &wan, "down"],
        )
        .await?;
        Ok(UplinkCut {
            router: self.clone(),
            wan,
            routes,
        })
    }

    /// Makes the router silently drop new TCP and UDP traffic from its WAN
    /// side addressed to the router itself, as home routers and carrier NATs
    /// do (ICMP still passes, so the router answers pings).
    ///
    /// Without it the kernel answers such a packet with a TCP RST or an ICMP
    /// port-unreachable. That matters for TCP hole punching: the first
    /// simultaneous-open SYN to reach the other NAT finds no mapping yet and
    /// is delivered to the router itself; a refusing router kills the dial at
    /// once, a dropping one loses only that SYN, which has opened its own
    /// router's mapping for the other side's SYN.
    pub async fn drop_unsolicited_to_self(&self) -> Result<()> {
        let wan = self.wan_iface();
        let script = format!(
            "add table inet jantar_lab; \
             add chain inet jantar_lab input {{ type filter hook input priority filter; policy accept; }}; \
             add rule inet jantar_lab input iifname \"{wan}\" ct state established,related accept; \
             add rule inet jantar_lab input iifname \"{wan}\" meta l4proto {{ tcp, udp }} drop"
        );
        run_ok(Ns::Router(&self.router), "nft", &[&script]).await?;
        Ok(())
    }

    /// Output of `nft list ruleset` inside this router's namespace.
    pub async fn nft_ruleset(&self) -> Result<String> {
        run_ok(Ns::Router(&self.router), "nft", &["list", "ruleset"]).await
    }

    /// The underlying patchbay router, for anything this wrapper lacks.
    pub fn patchbay(&self) -> &patchbay::Router {
        &self.router
    }
}

/// A router whose upstream link is down, from [`LabRouter::cut_uplink`].
#[derive(Debug)]
#[must_use = "the uplink stays down until restore() is called"]
pub struct UplinkCut {
    router: LabRouter,
    wan: String,
    routes: Vec<String>,
}

impl UplinkCut {
    /// The routes through the WAN interface that Linux dropped with the link
    /// and [`restore`](Self::restore) puts back.
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    /// Brings the upstream link back up and restores its routes.
    pub async fn restore(self) -> Result<()> {
        let ns = Ns::Router(&self.router.router);
        run_ok(ns, "ip", &["link", "set", "dev", &self.wan, "up"]).await?;
        for route in &self.routes {
            let mut args = vec!["-4", "route", "replace"];
            args.extend(route.split_whitespace());
            args.extend(["dev", self.wan.as_str()]);
            run_ok(ns, "ip", &args)
                .await
                .with_context(|| format!("restore route `{route}` on {}", self.router.name()))?;
        }
        Ok(())
    }
}

/// The NAT gateway(s) in front of home hosts: one home router, plus a carrier
/// router for [`NatKind::Cgnat`].
#[derive(Clone, Debug)]
pub struct HomeNetwork {
    kind: NatKind,
    gateway: LabRouter,
    carrier: Option<LabRouter>,
}

impl HomeNetwork {
    pub(crate) fn new(kind: NatKind, gateway: LabRouter, carrier: Option<LabRouter>) -> Self {
        Self {
            kind,
            gateway,
            carrier,
        }
    }

    /// The NAT kind of this network.
    pub fn kind(&self) -> NatKind {
        self.kind
    }

    /// The home router the hosts are plugged into.
    pub fn gateway(&self) -> &LabRouter {
        &self.gateway
    }

    /// The carrier-grade NAT router upstream of the home router, if any.
    pub fn carrier(&self) -> Option<&LabRouter> {
        self.carrier.as_ref()
    }

    /// All routers of this network, home router first.
    pub fn routers(&self) -> Vec<&LabRouter> {
        std::iter::once(&self.gateway)
            .chain(self.carrier.as_ref())
            .collect()
    }

    /// The address the public side sees for hosts of this network: the WAN
    /// address of the outermost NAT.
    pub fn public_ip(&self) -> Option<Ipv4Addr> {
        self.carrier.as_ref().unwrap_or(&self.gateway).wan_ip()
    }
}

/// Where a host sits.
#[derive(Clone, Debug)]
pub enum Placement {
    /// Directly on the datacenter router, with a public-like address.
    Datacenter,
    /// Behind a home network's NAT.
    Home(HomeNetwork),
}

/// A host (a patchbay device with one interface) in the lab.
#[derive(Clone)]
pub struct LabHost {
    device: patchbay::Device,
    placement: Placement,
    uplink: LabRouter,
    ip: Ipv4Addr,
    shared: Arc<LabShared>,
}

impl fmt::Debug for LabHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabHost")
            .field("name", &self.name())
            .field("ip", &self.ip)
            .field("placement", &self.placement)
            .finish()
    }
}

impl LabHost {
    pub(crate) fn new(
        device: patchbay::Device,
        placement: Placement,
        uplink: LabRouter,
        shared: Arc<LabShared>,
    ) -> Result<Self> {
        let ip = device
            .ip()
            .with_context(|| format!("host {} has no IPv4 address", device.name()))?;
        Ok(Self {
            device,
            placement,
            uplink,
            ip,
            shared,
        })
    }

    /// Host name as given to the lab.
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The host's own IPv4 address (private for home hosts).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Where the host sits.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// NAT kind in front of the host; `None` for datacenter hosts.
    pub fn nat_kind(&self) -> Option<NatKind> {
        match &self.placement {
            Placement::Datacenter => None,
            Placement::Home(net) => Some(net.kind()),
        }
    }

    /// The home network the host belongs to, if any.
    pub fn home_network(&self) -> Option<&HomeNetwork> {
        match &self.placement {
            Placement::Datacenter => None,
            Placement::Home(net) => Some(net),
        }
    }

    /// The router this host is plugged into.
    pub fn uplink(&self) -> &LabRouter {
        &self.uplink
    }

    /// The address other hosts see this host's traffic come from: its own
    /// address in the datacenter, the outermost NAT's WAN address at home.
    pub fn public_ip(&self) -> Ipv4Addr {
        match &self.placement {
            Placement::Datacenter => self.ip,
            Placement::Home(net) => net.public_ip().unwrap_or(self.ip),
        }
    }

    /// Name of the host's network interface.
    pub fn iface_name(&self) -> String {
        self.device
            .default_iface()
            .map(|i| i.name().to_string())
            .unwrap_or_else(|| "eth0".to_string())
    }

    /// Directory for this host's process logs: `<lab log dir>/<host>/`.
    pub fn log_dir(&self) -> PathBuf {
        self.shared.log_dir.join(self.name())
    }

    /// Starts `spec` inside this host's network namespace, with stdout and
    /// stderr going to the spec's log file (or a fresh file in
    /// [`log_dir`](Self::log_dir)). The process is killed when the returned
    /// handle is dropped.
    pub fn spawn(&self, spec: ProcessSpec) -> Result<LabProcess> {
        let log = match &spec.log {
            Some(path) => path.clone(),
            None => self.default_log_path(spec.program()),
        };
        let cmd = spec.to_command(&log)?;
        let child = self
            .device
            .spawn_command_sync(cmd)
            .with_context(|| format!("spawn `{}` on {}", spec.command_line(), self.name()))?;
        Ok(LabProcess::new(self.name(), &spec, log, child))
    }

    fn default_log_path(&self, program: &Path) -> PathBuf {
        let stem = program
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".to_string());
        self.fresh_log_path(&stem)
    }

    /// What `tc` supports on this kernel.
    pub(crate) fn link_caps(&self) -> &LinkCapabilities {
        &self.shared.link_caps
    }

    /// A log path in [`log_dir`](Self::log_dir) no other process of this lab
    /// uses: `<stem>-<n>.log`.
    pub(crate) fn fresh_log_path(&self, stem: &str) -> PathBuf {
        let seq = self.shared.spawn_seq.fetch_add(1, Ordering::Relaxed);
        self.log_dir().join(format!("{stem}-{seq}.log"))
    }

    /// The underlying patchbay device, for anything this wrapper lacks.
    pub fn patchbay(&self) -> &patchbay::Device {
        &self.device
    }
}
