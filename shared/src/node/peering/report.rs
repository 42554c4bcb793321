//! What the connection manager shows: `/status` (`peers`, `peer_management`),
//! `GET /peers`, and its gauges.

use std::collections::HashSet;

use libp2p::PeerId;

use super::Peering;
use crate::{
    metrics as m,
    peering::{
        group::NetGroup,
        score::{RttBand, Score},
        store::{PeerRecord, unix_now},
    },
    status::{PeerManagementStatus, PeerScoreStatus},
};

/// Connected peers listed in `/status` at most (best first); `GET /peers` has all.
const MAX_STATUS_PEERS: usize = 200;

impl Peering {
    pub(super) fn update_gauges(&self, busy: &HashSet<PeerId>) {
        metrics::gauge!(m::PEER_STORE_PEERS).set(self.store.len() as f64);
        let groups = self.group_sizes();
        metrics::gauge!(m::PEER_GROUPS).set(groups.len() as f64);
        let protected = self
            .live
            .keys()
            .filter(|p| self.is_protected(p, busy))
            .count();
        metrics::gauge!(m::PEERS_PROTECTED).set(protected as f64);
        let scores: Vec<Score> = self
            .live
            .keys()
            .map(|p| self.score_of(p, &groups))
            .collect();
        if scores.is_empty() {
            return;
        }
        let n = scores.len() as f64;
        for (component, f) in [
            ("total", (|s: &Score| s.total) as fn(&Score) -> f64),
            ("rtt", |s| s.rtt),
            ("uptime", |s| s.uptime),
            ("availability", |s| s.availability),
            ("diversity", |s| s.diversity),
        ] {
            let mean = scores.iter().map(f).sum::<f64>() / n;
            metrics::gauge!(m::PEER_SCORE, "component" => component).set(mean);
        }
    }

    /// The best connected peers with their scores, for `/status`.
    pub(in crate::node) fn status_peers(&self, busy: &HashSet<PeerId>) -> Vec<PeerScoreStatus> {
        let mut v = self.statuses(busy);
        v.truncate(MAX_STATUS_PEERS);
        v
    }

    /// Connected peers with their scores, best first.
    fn statuses(&self, busy: &HashSet<PeerId>) -> Vec<PeerScoreStatus> {
        let groups = self.group_sizes();
        let mut v: Vec<PeerScoreStatus> = self
            .live
            .iter()
            .map(|(p, l)| {
                let record = self.store.get(p);
                PeerScoreStatus {
                    peer_id: p.to_string(),
                    connected: true,
                    protected: self.is_protected(p, busy),
                    released: self.released.contains_key(p),
                    group: l.group.to_string(),
                    country: l.geo.country.clone(),
                    asn: l.geo.asn,
                    rtt_ms: record.and_then(|r| r.rtt_ms).map(round1),
                    rtt_band: RttBand::of(record.and_then(PeerRecord::rtt)),
                    connected_secs: l.since.elapsed().as_secs(),
                    score: self.score_of(p, &groups),
                    addresses: record
                        .map(|r| r.addresses.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    last_seen: record.map_or(0, |r| r.last_seen),
                }
            })
            .collect();
        sort(&mut v);
        v
    }

    pub(in crate::node) fn management(&self) -> PeerManagementStatus {
        PeerManagementStatus {
            low_water: self.low_water as u32,
            high_water: self.high_water as u32,
            max_peers: self.max_peers,
            counted_peers: self.counted(),
            releasing: self.released.len(),
            known_peers: self.store.len(),
            trimmed: self.trimmed,
        }
    }

    /// Every known peer (connected or not), best first.
    pub(in crate::node) fn known(&self, busy: &HashSet<PeerId>) -> Vec<PeerScoreStatus> {
        let connected = self.statuses(busy);
        let seen: HashSet<String> = connected.iter().map(|s| s.peer_id.clone()).collect();
        let mut v = connected;
        let now = unix_now();
        for (p, r) in self.store.iter() {
            if seen.contains(&p.to_string()) {
                continue;
            }
            let geo = r
                .addresses
                .first()
                .map(|a| self.geo_of(a))
                .unwrap_or_default();
            v.push(PeerScoreStatus {
                peer_id: p.to_string(),
                connected: false,
                protected: self.configured.contains(p),
                released: false,
                group: r
                    .addresses
                    .first()
                    .map_or(NetGroup::Unknown, |a| NetGroup::of(a, &geo))
                    .to_string(),
                country: geo.country,
                asn: geo.asn,
                rtt_ms: r.rtt_ms.map(round1),
                rtt_band: RttBand::of(r.rtt()),
                connected_secs: 0,
                score: r.score(None, 0),
                addresses: r.addresses.iter().map(ToString::to_string).collect(),
                last_seen: r.last_seen.min(now),
            });
        }
        sort(&mut v);
        v
    }
}

fn sort(v: &mut [PeerScoreStatus]) {
    v.sort_by(|a, b| {
        b.connected
            .cmp(&a.connected)
            .then(b.score.total.total_cmp(&a.score.total))
            .then(a.peer_id.cmp(&b.peer_id))
    });
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
