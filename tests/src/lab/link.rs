//! Link conditions (rate limiting, delay, loss) on a host's uplink.
//!
//! patchbay applies every [`LinkCondition`] as a `netem` root qdisc with a
//! `tbf` child for the rate cap. Kernels built without `sch_netem` reject the
//! netem qdisc, and patchbay drops that error, so nothing at all is shaped.
//! The lab therefore probes the kernel once per lab and, without netem,
//! installs the rate cap itself as a `tbf` root qdisc on the same interfaces
//! and reports the netem-only parts of the condition as ignored.

use std::fmt;

use anyhow::{Context, Result, bail};
pub use patchbay::{LinkCondition, LinkDirection};

use super::{
    host::LabHost,
    tool::{Ns, run, run_ok},
};

/// Queueing qdiscs the kernel supports, probed once when the lab starts.
#[derive(Clone, Debug)]
pub struct LinkCapabilities {
    /// `tc qdisc ... netem` works: delay, jitter, loss, reordering,
    /// duplication and corruption are available.
    pub netem: bool,
    /// `tc qdisc ... tbf` works: rate limiting is available.
    pub tbf: bool,
    /// What `tc` said when a probe failed.
    pub detail: String,
}

impl fmt::Display for LinkCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b| if b { "available" } else { "NOT available" };
        write!(
            f,
            "netem (delay/jitter/loss): {}; tbf (rate limit): {}",
            yes_no(self.netem),
            yes_no(self.tbf)
        )?;
        if !self.detail.is_empty() {
            write!(f, " [{}]", self.detail)?;
        }
        Ok(())
    }
}

/// Which mechanism ended up shaping the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkBackend {
    /// patchbay's netem qdisc (with a tbf child when a rate is set).
    Netem,
    /// A tbf root qdisc installed by the lab because netem is unavailable.
    Tbf,
    /// Nothing could be or needed to be applied.
    Unshaped,
}

/// What [`LabHost::set_link_condition`] actually installed.
#[derive(Clone, Debug)]
pub struct LinkReport {
    /// Mechanism used.
    pub backend: LinkBackend,
    /// Parts of the requested condition that this kernel cannot apply.
    pub ignored: Vec<&'static str>,
    /// `tc qdisc show` of every shaped interface, as `"<ns>/<iface>: <qdiscs>"`.
    pub qdiscs: Vec<String>,
}

/// Names of the set fields of `cond` that need netem.
fn netem_parts(cond: &LinkCondition) -> Vec<&'static str> {
    let mut parts = Vec::new();
    if cond.latency_ms > 0 {
        parts.push("latency");
    }
    if cond.jitter_ms > 0 {
        parts.push("jitter");
    }
    if cond.loss_pct > 0.0 {
        parts.push("loss");
    }
    if cond.reorder_pct > 0.0 {
        parts.push("reorder");
    }
    if cond.duplicate_pct > 0.0 {
        parts.push("duplicate");
    }
    if cond.corrupt_pct > 0.0 {
        parts.push("corrupt");
    }
    parts
}

/// Probes netem and tbf on the loopback device of `ix` (the lab's root
/// namespace), removing the test qdisc again.
pub(crate) async fn probe_capabilities(ix: &patchbay::Ix) -> Result<LinkCapabilities> {
    let mut detail = Vec::new();
    let mut supported = Vec::new();
    for (kind, extra) in [
        ("netem", &[][..]),
        (
            "tbf",
            &["rate", "1mbit", "burst", "4000", "latency", "100ms"][..],
        ),
    ] {
        let mut args = vec!["qdisc", "add", "dev", "lo", "root", "handle", "1:", kind];
        args.extend_from_slice(extra);
        let out = run(Ns::Ix(ix), "tc", &args).await?;
        if out.status.success() {
            run_ok(Ns::Ix(ix), "tc", &["qdisc", "del", "dev", "lo", "root"]).await?;
            supported.push(true);
        } else {
            detail.push(format!(
                "{kind}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            supported.push(false);
        }
    }
    Ok(LinkCapabilities {
        netem: supported[0],
        tbf: supported[1],
        detail: detail.join("; "),
    })
}

/// One side of a host's link: which namespace and interface to shape.
enum Side {
    /// The host's own interface: shapes what the host sends.
    Host(String),
    /// The router's end of the host's veth: shapes what the host receives.
    Router(String),
}

impl LabHost {
    /// Applies `cond` to this host's link in `direction`.
    ///
    /// With netem this is patchbay's `Iface::set_condition`. Without netem
    /// the rate cap (if any) is installed as a tbf qdisc on the same
    /// interfaces, a line on stderr says which parts were ignored, and the
    /// report lists them. A rate cap that cannot be installed is an error.
    pub async fn set_link_condition(
        &self,
        cond: LinkCondition,
        direction: LinkDirection,
    ) -> Result<LinkReport> {
        if cond.rate_kbit == Some(0) {
            bail!("a rate cap of 0 kbit/s cannot be expressed; leave the rate unset instead");
        }
        let caps = self.link_caps();
        let sides = self.sides(direction).await?;
        if caps.netem {
            let iface = self
                .patchbay()
                .default_iface()
                .context("host has no interface")?;
            iface.set_condition(cond, direction).await?;
            // patchbay swallows tc failures, so confirm the qdiscs are there.
            let mut qdiscs = Vec::new();
            for side in &sides {
                let shown = self.qdisc_show(side).await?;
                if !shown.contains("netem") || (cond.rate_kbit.is_some() && !shown.contains("tbf"))
                {
                    bail!(
                        "patchbay did not install the link condition on {}: {shown}",
                        self.side_label(side)
                    );
                }
                qdiscs.push(format!("{}: {}", self.side_label(side), shown.trim()));
            }
            return Ok(LinkReport {
                backend: LinkBackend::Netem,
                ignored: Vec::new(),
                qdiscs,
            });
        }

        let ignored = netem_parts(&cond);
        if !ignored.is_empty() {
            eprintln!(
                "lab: {}: tc netem is not available on this kernel; ignoring {} of the requested link condition{}",
                self.name(),
                ignored.join(", "),
                if cond.rate_kbit.is_some() {
                    " (the rate limit is applied with tbf)"
                } else {
                    ""
                }
            );
        }
        let Some(rate_kbit) = cond.rate_kbit else {
            return Ok(LinkReport {
                backend: LinkBackend::Unshaped,
                ignored,
                qdiscs: Vec::new(),
            });
        };
        if !caps.tbf {
            bail!(
                "rate limiting was requested but tc tbf is not available: {}",
                caps.detail
            );
        }
        // Burst: at least one full-size frame, or 10 ms at the given rate.
        let burst = (u64::from(rate_kbit) * 1000 / 8 / 100)
            .max(4000)
            .to_string();
        let latency = format!("{}ms", cond.buffer_ms.unwrap_or(400).max(1));
        let rate = format!("{rate_kbit}kbit");
        let mut qdiscs = Vec::new();
        for side in &sides {
            let args = [
                "qdisc",
                "replace",
                "dev",
                self.side_iface(side),
                "root",
                "handle",
                "1:",
                "tbf",
                "rate",
                &rate,
                "burst",
                &burst,
                "latency",
                &latency,
            ];
            self.tc(side, &args).await?;
            let shown = self.qdisc_show(side).await?;
            if !shown.contains("tbf") {
                bail!(
                    "tbf missing on {} after install: {shown}",
                    self.side_label(side)
                );
            }
            qdiscs.push(format!("{}: {}", self.side_label(side), shown.trim()));
        }
        Ok(LinkReport {
            backend: LinkBackend::Tbf,
            ignored,
            qdiscs,
        })
    }

    /// Removes any link condition from both directions of this host's link.
    pub async fn clear_link_condition(&self) -> Result<()> {
        if self.link_caps().netem {
            let iface = self
                .patchbay()
                .default_iface()
                .context("host has no interface")?;
            return iface.clear_condition(LinkDirection::Both).await;
        }
        for side in self.sides(LinkDirection::Both).await? {
            // Deleting a root qdisc that is not there fails; that is fine.
            let args = ["qdisc", "del", "dev", self.side_iface(&side), "root"];
            run(self.side_ns(&side), "tc", &args).await?;
        }
        Ok(())
    }

    async fn sides(&self, direction: LinkDirection) -> Result<Vec<Side>> {
        let mut sides = Vec::new();
        if matches!(direction, LinkDirection::Egress | LinkDirection::Both) {
            sides.push(Side::Host(self.iface_name()));
        }
        if matches!(direction, LinkDirection::Ingress | LinkDirection::Both) {
            sides.push(Side::Router(self.router_side_iface().await?));
        }
        Ok(sides)
    }

    /// Name of the router's end of this host's veth pair, found through the
    /// peer interface index that `ip link` prints as `eth0@ifN`.
    async fn router_side_iface(&self) -> Result<String> {
        let iface = self.iface_name();
        let args = ["-o", "link", "show", "dev", iface.as_str()];
        let line = run_ok(Ns::Device(self.patchbay()), "ip", &args).await?;
        let peer_index: u32 = line
            .split_once("@if")
            .and_then(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
            })
            .with_context(|| format!("no peer index in `ip link` output: {line}"))?;
        let links = run_ok(
            Ns::Router(self.uplink().patchbay()),
            "ip",
            &["-o", "link", "show"],
        )
        .await?;
        let prefix = format!("{peer_index}: ");
        links
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(['@', ':']).next())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "router {} has no interface with index {peer_index}",
                    self.uplink().name()
                )
            })
    }

    fn side_iface<'a>(&self, side: &'a Side) -> &'a str {
        match side {
            Side::Host(i) | Side::Router(i) => i,
        }
    }

    fn side_label(&self, side: &Side) -> String {
        match side {
            Side::Host(i) => format!("{}/{i}", self.name()),
            Side::Router(i) => format!("{}/{i}", self.uplink().name()),
        }
    }

    fn side_ns(&self, side: &Side) -> Ns<'_> {
        match side {
            Side::Host(_) => Ns::Device(self.patchbay()),
            Side::Router(_) => Ns::Router(self.uplink().patchbay()),
        }
    }

    async fn tc(&self, side: &Side, args: &[&str]) -> Result<String> {
        run_ok(self.side_ns(side), "tc", args).await
    }

    async fn qdisc_show(&self, side: &Side) -> Result<String> {
        self.tc(side, &["qdisc", "show", "dev", self.side_iface(side)])
            .await
    }
}
