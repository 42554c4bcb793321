//! Hole punching between pairs of real peers behind lab NATs, measured from
//! the peers' own logs and `/status`.
//!
//! A [`PunchLab`] is one relay in the datacenter plus, for each NAT kind, a
//! dialing peer `a-<kind>` and a listening peer `b-<kind>`, each behind its
//! own home network and each listening on one transport only. Peers run
//! without DHT and with `relay_reservations: always`, so nothing but the
//! measured dial connects them: for a pair, `a` dials `b`'s circuit address
//! with `POST /connect`, `b` starts DCUtR on the inbound relayed connection,
//! and the logs tell whether and when a direct connection replaced it.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{
    NatKind,
    net::{JantarNet, connections_to, relay_config, wait_ready, wait_reservation},
    node::{LabNode, NodeConfig, Transport, line_time},
};
use crate::harness::Role;

/// Log message of a successful DCUtR upgrade.
pub const PUNCH_OK: &str = "hole punch succeeded; direct connection";
/// Log message of a failed DCUtR upgrade.
pub const PUNCH_FAILED: &str = "hole punch failed; staying relayed";
/// libp2p-dcutr's debug line for each attempt on the listening side.
const ATTEMPT_AS_LISTENER: &str = "Attempting to hole-punch as listener";
/// Time after a pair resolved for the relayed connection to close: a hole punch keeps
/// it 2 s more (gossipsub's first messages finish), closed on the once-a-second tick.
const SETTLE: Duration = Duration::from_secs(5);

/// One relay and a dialing and a listening peer per NAT kind.
pub struct PunchLab {
    /// The transport every peer listens on.
    pub transport: Transport,
    /// The relay, on a datacenter host.
    pub relay: Arc<LabNode>,
    /// `a-<kind>` peers, which dial.
    pub dialers: Vec<(NatKind, Arc<LabNode>)>,
    /// `b-<kind>` peers with their circuit addresses, which are dialed.
    pub listeners: Vec<(NatKind, Arc<LabNode>, String)>,
}

impl std::fmt::Debug for PunchLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PunchLab")
            .field("transport", &self.transport)
            .field("dialers", &self.dialers.len())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

/// Config of a peer in a [`PunchLab`].
pub fn punch_peer_config(name: &str, transport: Transport, relay: &LabNode) -> NodeConfig {
    NodeConfig::new(Role::Peer, name)
        .only(transport)
        .set("network.enable_dht", false)
        .set("network.relay_reservations", "always")
        .relay_nodes(&[relay.addr(transport)])
}

impl PunchLab {
    /// Builds the relay and the peers, and waits until every listener holds
    /// an active reservation.
    pub async fn build(
        net: &JantarNet<'_>,
        dialer_kinds: &[NatKind],
        listener_kinds: &[NatKind],
        transport: Transport,
    ) -> Result<PunchLab> {
        Self::build_with(net, dialer_kinds, listener_kinds, transport, &[]).await
    }

    /// Like [`build`](Self::build), with extra relay settings (dotted key,
    /// value), for example circuit limits.
    pub async fn build_with(
        net: &JantarNet<'_>,
        dialer_kinds: &[NatKind],
        listener_kinds: &[NatKind],
        transport: Transport,
        relay_settings: &[(&str, Value)],
    ) -> Result<PunchLab> {
        let lab = net.lab();
        let host = lab.add_datacenter_host("relay").await?;
        let mut relay_cfg = relay_config("relay", &host, &[], false)
            .set("relay.max_circuits", 64)
            .set("relay.max_circuits_per_peer", 16);
        for (k, v) in relay_settings {
            relay_cfg = relay_cfg.set(k, v.clone());
        }
        let relay = net.start(&host, relay_cfg).await?;
        wait_ready(&relay).await?;
        let mut dialers = Vec::new();
        for kind in dialer_kinds {
            let name = format!("a-{kind}");
            let host = lab.add_home_host(*kind, &name).await?;
            let node = net
                .start(&host, punch_peer_config(&name, transport, &relay))
                .await?;
            dialers.push((*kind, node));
        }
        let mut pending = Vec::new();
        for kind in listener_kinds {
            let name = format!("b-{kind}");
            let host = lab.add_home_host(*kind, &name).await?;
            let node = net
                .start(&host, punch_peer_config(&name, transport, &relay))
                .await?;
            pending.push((*kind, node));
        }
        let mut listeners = Vec::new();
        for (kind, node) in pending {
            wait_reservation(&node, Duration::from_secs(30)).await?;
            // The relay announces all its addresses; dial over the pair's
            // transport so the whole path uses it.
            let circuit = format!(
                "{}/p2p-circuit/p2p/{}",
                relay.addr(transport),
                node.peer_id()
            );
            listeners.push((kind, node, circuit));
        }
        // Dialers hold reservations too: that is also how they learn their
        // observed addresses from the relay before the first dial.
        for (_, node) in &dialers {
            wait_reservation(node, Duration::from_secs(30)).await?;
        }
        Ok(PunchLab {
            transport,
            relay,
            dialers,
            listeners,
        })
    }

    /// Every (dialer index, listener index) pair.
    pub fn all_pairs(&self) -> Vec<(usize, usize)> {
        (0..self.dialers.len())
            .flat_map(|d| (0..self.listeners.len()).map(move |l| (d, l)))
            .collect()
    }

    /// Dials every pair at once and waits until each has punched through,
    /// given up, or `limit` passed; then lets the relayed connections close
    /// and reads the outcome of each pair.
    pub async fn punch(
        &self,
        pairs: &[(usize, usize)],
        limit: Duration,
    ) -> Result<Vec<PairOutcome>> {
        let started = Instant::now();
        let dials = pairs.iter().map(|&(d, l)| {
            let dialer = Arc::clone(&self.dialers[d].1);
            let circuit = self.listeners[l].2.clone();
            async move { dialer.connect(&circuit).await }
        });
        let answers = futures::future::join_all(dials).await;
        let mut outcomes: Vec<PairOutcome> = Vec::new();
        for (&(d, l), answer) in pairs.iter().zip(answers) {
            let (dkind, dialer) = &self.dialers[d];
            let (lkind, listener, _) = &self.listeners[l];
            let connect = match answer {
                Ok((200, v)) => Ok(v["kind"].as_str().unwrap_or("?").to_string()),
                Ok((code, v)) => Err(format!("HTTP {code}: {v}")),
                Err(e) => Err(format!("{e:#}")),
            };
            outcomes.push(PairOutcome::new(
                *dkind,
                *lkind,
                self.transport,
                dialer,
                listener,
                connect,
            ));
        }
        // Wait for every pair to resolve.
        loop {
            let mut open = 0;
            for (o, &(d, l)) in outcomes.iter_mut().zip(pairs) {
                if !o.resolved {
                    o.read_logs(&self.dialers[d].1, &self.listeners[l].1);
                    open += usize::from(!o.resolved);
                }
            }
            if open == 0 || started.elapsed() >= limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(SETTLE).await;
        for (o, &(d, l)) in outcomes.iter_mut().zip(pairs) {
            let (dialer, listener) = (&self.dialers[d].1, &self.listeners[l].1);
            o.read_logs(dialer, listener);
            let ds = dialer.status().await.context("dialer status")?;
            let ls = listener.status().await.context("listener status")?;
            o.final_kinds = kinds(&connections_to(&ds, listener.peer_id()));
            o.listener_final_kinds = kinds(&connections_to(&ls, dialer.peer_id()));
        }
        Ok(outcomes)
    }
}

fn kinds(conns: &[(String, String)]) -> Vec<String> {
    let mut k: Vec<String> = conns.iter().map(|(k, _)| k.clone()).collect();
    k.sort();
    k
}

/// What happened to one dialer/listener pair.
#[derive(Clone, Debug)]
pub struct PairOutcome {
    /// NAT of the dialing peer.
    pub dialer_kind: NatKind,
    /// NAT of the dialed (listening) peer, which starts DCUtR.
    pub listener_kind: NatKind,
    /// Transport of both peers.
    pub transport: Transport,
    /// Dialer and listener names.
    pub names: (String, String),
    /// Answer of `POST /connect`: the connection kind, or the error.
    pub connect: Result<String, String>,
    /// When the dialer's relayed connection to the listener came up.
    pub relayed_at: Option<f64>,
    /// When the first direct connection between them came up (dialer's log).
    pub direct_at: Option<f64>,
    /// Remote address of that direct connection.
    pub direct_addr: Option<String>,
    /// Which side logged a hole-punch success (`dialer`, `listener`).
    pub succeeded_on: Vec<&'static str>,
    /// The hole-punch failure logged, if any.
    pub failure: Option<String>,
    /// DCUtR attempts the listener started until the direct connection (or
    /// in total, when none came).
    pub attempts: Option<u32>,
    /// The last failed dial between the two, from either log (evidence).
    pub last_dial_error: Option<String>,
    /// Kinds of the dialer's connections to the listener at the end.
    pub final_kinds: Vec<String>,
    /// Kinds of the listener's connections to the dialer at the end.
    pub listener_final_kinds: Vec<String>,
    /// Whether a success or a final failure was logged.
    pub resolved: bool,
}

impl PairOutcome {
    fn new(
        dialer_kind: NatKind,
        listener_kind: NatKind,
        transport: Transport,
        dialer: &LabNode,
        listener: &LabNode,
        connect: Result<String, String>,
    ) -> Self {
        let resolved = connect.is_err();
        Self {
            dialer_kind,
            listener_kind,
            transport,
            names: (dialer.name().to_string(), listener.name().to_string()),
            connect,
            relayed_at: None,
            direct_at: None,
            direct_addr: None,
            succeeded_on: Vec::new(),
            failure: None,
            attempts: None,
            last_dial_error: None,
            final_kinds: Vec::new(),
            listener_final_kinds: Vec::new(),
            resolved,
        }
    }

    /// Re-reads both logs.
    fn read_logs(&mut self, dialer: &LabNode, listener: &LabNode) {
        let d_text = std::fs::read_to_string(dialer.log_path()).unwrap_or_default();
        let l_text = std::fs::read_to_string(listener.log_path()).unwrap_or_default();
        let (d_id, l_id) = (dialer.peer_id(), listener.peer_id());
        let d_lines = super::node::parse_log(&d_text);
        let l_lines = super::node::parse_log(&l_text);
        let conn = |lines: &[Value], peer: &str, kind: &str| -> Option<(f64, String)> {
            lines.iter().find_map(|v| {
                (v["message"] == "connection established" && v["peer"] == peer && v["kind"] == kind)
                    .then(|| {
                        Some((
                            line_time(v)?,
                            v["remote"].as_str().unwrap_or("?").to_string(),
                        ))
                    })
                    .flatten()
            })
        };
        self.relayed_at = conn(&d_lines, l_id, "relayed").map(|(t, _)| t);
        if let Some((t, addr)) = conn(&d_lines, l_id, "direct") {
            self.direct_at = Some(t);
            self.direct_addr = Some(addr);
        }
        let logged = |lines: &[Value], peer: &str, msg: &str| {
            lines
                .iter()
                .find(|v| v["message"] == msg && v["peer"] == peer)
                .cloned()
        };
        self.succeeded_on.clear();
        if logged(&d_lines, l_id, PUNCH_OK).is_some() {
            self.succeeded_on.push("dialer");
        }
        if logged(&l_lines, d_id, PUNCH_OK).is_some() {
            self.succeeded_on.push("listener");
        }
        self.failure = logged(&l_lines, d_id, PUNCH_FAILED)
            .or_else(|| logged(&d_lines, l_id, PUNCH_FAILED))
            .map(|v| v["error"].as_str().unwrap_or("?").to_string());
        // Attempts: the listener's DCUtR rounds for this dialer, up to the
        // direct connection. Matched on the raw text, because the JSON
        // formatter writes the attempt's `target` field and the event's
        // module `target` under the same key.
        let limit = self.direct_at.unwrap_or(f64::INFINITY);
        let attempts = l_text
            .lines()
            .filter(|l| l.contains(ATTEMPT_AS_LISTENER) && l.contains(d_id))
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| line_time(&v))
                    .is_some_and(|t| t <= limit)
            })
            .count();
        self.attempts = (attempts > 0).then_some(attempts as u32);
        self.last_dial_error = d_lines
            .iter()
            .filter(|v| {
                v["message"] == "dial failed"
                    && v["peer"].as_str().is_some_and(|p| p.contains(l_id))
            })
            .chain(l_lines.iter().filter(|v| {
                v["message"] == "dial failed"
                    && v["peer"].as_str().is_some_and(|p| p.contains(d_id))
            }))
            .filter_map(|v| v["error"].as_str().map(str::to_string))
            .next_back();
        self.resolved = self.connect.is_err()
            || !self.succeeded_on.is_empty()
            || self.direct_at.is_some()
            || self.failure.is_some();
    }

    /// A DCUtR success was logged and a direct connection came up.
    pub fn punched(&self) -> bool {
        !self.succeeded_on.is_empty() && self.direct_at.is_some()
    }

    /// Time from the relayed to the direct connection.
    pub fn upgrade_time(&self) -> Option<Duration> {
        match (self.relayed_at, self.direct_at) {
            (Some(r), Some(d)) if d >= r => Some(Duration::from_secs_f64(d - r)),
            _ => None,
        }
    }

    /// What connects the pair at the end, from the dialer's `/status`:
    /// `direct`, `relayed`, `direct+relayed` or `none`.
    pub fn final_kind(&self) -> String {
        let mut k = self.final_kinds.clone();
        k.dedup();
        if k.is_empty() {
            "none".to_string()
        } else {
            k.join("+")
        }
    }

    /// One line for humans.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} -> {} over {}: connect {}, ",
            self.names.0,
            self.names.1,
            self.transport,
            match &self.connect {
                Ok(k) => k.clone(),
                Err(e) => format!("FAILED ({e})"),
            }
        );
        if self.punched() {
            let _ = write!(
                s,
                "direct after {} ms (attempt {}, {}, success logged by {})",
                self.upgrade_time()
                    .map_or("?".into(), |d| d.as_millis().to_string()),
                self.attempts.map_or("?".into(), |a| a.to_string()),
                self.direct_addr.as_deref().unwrap_or("?"),
                self.succeeded_on.join("+"),
            );
        } else if let Some(f) = &self.failure {
            let _ = write!(s, "hole punch failed ({f})");
        } else {
            s.push_str("no hole-punch result");
        }
        let _ = write!(s, "; final: {}", self.final_kind());
        if !self.punched()
            && let Some(e) = &self.last_dial_error
        {
            let _ = write!(s, "; last direct dial error: {e}");
        }
        s
    }
}

/// Outcomes of one cell of the matrix (dialer NAT x listener NAT x
/// transport) over all trials.
#[derive(Clone, Debug, Default)]
pub struct MatrixCell {
    /// Every trial's outcome.
    pub outcomes: Vec<PairOutcome>,
}

impl MatrixCell {
    /// Trials with a DCUtR success.
    pub fn successes(&self) -> usize {
        self.outcomes.iter().filter(|o| o.punched()).count()
    }

    /// Relayed-to-direct times of the successes, sorted.
    pub fn times(&self) -> Vec<Duration> {
        let mut t: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.punched())
            .filter_map(PairOutcome::upgrade_time)
            .collect();
        t.sort();
        t
    }

    /// `n` successes by the attempt they succeeded on, like `1:18 2:2`.
    pub fn attempts_histogram(&self) -> String {
        let mut h: BTreeMap<String, usize> = BTreeMap::new();
        for o in self.outcomes.iter().filter(|o| o.punched()) {
            *h.entry(o.attempts.map_or("?".into(), |a| a.to_string()))
                .or_default() += 1;
        }
        h.iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Final connection kinds with counts, like `direct 19, relayed 1`.
    pub fn final_kinds(&self) -> String {
        let mut h: BTreeMap<String, usize> = BTreeMap::new();
        for o in &self.outcomes {
            *h.entry(o.final_kind()).or_default() += 1;
        }
        h.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `q` quantile (nearest rank) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Groups outcomes into matrix cells.
pub fn matrix(outcomes: &[PairOutcome]) -> BTreeMap<(String, String, String), MatrixCell> {
    let mut cells: BTreeMap<(String, String, String), MatrixCell> = BTreeMap::new();
    for o in outcomes {
        cells
            .entry((
                o.transport.name().to_string(),
                o.dialer_kind.name().to_string(),
                o.listener_kind.name().to_string(),
            ))
            .or_default()
            .outcomes
            .push(o.clone());
    }
    cells
}

/// The matrix as a text table.
pub fn render_matrix(outcomes: &[PairOutcome]) -> String {
    let cells = matrix(outcomes);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<10} {:<10} {:>9} {:>10} {:>10} {:<12} final connection",
        "transport", "dialer", "listener", "punched", "median ms", "p95 ms", "attempt"
    );
    let _ = writeln!(out, "{}", "-".repeat(96));
    for ((transport, dialer, listener), cell) in &cells {
        let times = cell.times();
        let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| d.as_millis().to_string());
        let _ = writeln!(
            out,
            "{:<9} {:<10} {:<10} {:>9} {:>10} {:>10} {:<12} {}",
            transport,
            dialer,
            listener,
            format!("{}/{}", cell.successes(), cell.outcomes.len()),
            ms(quantile(&times, 0.5)),
            ms(quantile(&times, 0.95)),
            if cell.successes() == 0 {
                "-".to_string()
            } else {
                cell.attempts_histogram()
            },
            cell.final_kinds(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let t = ms(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(quantile(&t, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&t, 0.95), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&ms(&[7]), 0.95), Some(Duration::from_millis(7)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
