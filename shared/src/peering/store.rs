//! The peer store: every peer the node has known, with its addresses and history, kept
//! in `<data_dir>/peers.json` so that a restart does not forget the network.
//!
//! - Bounded: at most `capacity` peers (beyond, a peer of the most crowded network
//!   group is forgotten, the worst-scored first, so that Sybil identities from a few
//!   networks cannot push out the rest), at most [`MAX_ADDRESSES`] addresses each.
//! - Written atomically (a crash leaves the old file or the new one), only when
//!   something changed; a file larger than [`MAX_FILE_SIZE`] or one that does not parse
//!   is moved aside to `peers.json.bad` with a warning, and the node starts empty: the
//!   store is what the node learned, never what it needs to start.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{
    geo::GeoInfo,
    group::NetGroup,
    score::{Inputs, Score},
};
use crate::atomic::{self, Existing};

/// Addresses kept per peer, newest first.
pub const MAX_ADDRESSES: usize = 8;
/// The largest store file read at start.
pub const MAX_FILE_SIZE: u64 = 16 << 20;
/// Weight of a new ping sample in the smoothed RTT.
const RTT_ALPHA: f64 = 0.2;
const FORMAT_VERSION: u32 = 1;

/// What the store knows about one peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Addresses to dial it at, newest first.
    #[serde(default)]
    pub addresses: Vec<Multiaddr>,
    /// Unix seconds.
    pub first_seen: u64,
    /// Unix seconds: last connected, or last heard of.
    pub last_seen: u64,
    #[serde(default)]
    pub dials_ok: u32,
    #[serde(default)]
    pub dials_failed: u32,
    /// Failed dials since the last success.
    #[serde(default)]
    pub failures_in_a_row: u32,
    /// Unix seconds of the last failed dial.
    #[serde(default)]
    pub last_failure: Option<u64>,
    /// Seconds connected, over past connections.
    #[serde(default)]
    pub connected_secs: u64,
    /// Smoothed ping round trip.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// File chunks it served this node (verified).
    #[serde(default)]
    pub chunks_served: u64,
    /// DHT answers it gave this node (providers found through it).
    #[serde(default)]
    pub lookups_served: u64,
    /// Chunks from it that failed verification.
    #[serde(default)]
    pub bad_data: u32,
    /// Unix seconds of the last useful answer.
    #[serde(default)]
    pub last_useful: Option<u64>,
    /// It offers circuit relay.
    #[serde(default)]
    pub relay: bool,
    /// It serves the DHT.
    #[serde(default)]
    pub dht_server: bool,
}

impl PeerRecord {
    /// Dialed at least once, whatever came of it.
    pub fn tried(&self) -> bool {
        self.dials_ok + self.dials_failed > 0
    }

    /// Whether a dial is worth trying at `now` (unix seconds): not within the backoff
    /// after a failure, which doubles with each failure in a row from 30 s up to an hour.
    pub fn dialable_at(&self, now: u64) -> bool {
        let Some(last) = self.last_failure.filter(|_| self.failures_in_a_row > 0) else {
            return true;
        };
        let backoff = (30u64 << self.failures_in_a_row.min(8).saturating_sub(1)).min(3600);
        now >= last.saturating_add(backoff)
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt_ms
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
    }

    /// The score from history alone; `current` is the present connection's age, and
    /// `group_peers` the connected peers in its group.
    pub fn score(&self, current: Option<Duration>, group_peers: usize) -> Score {
        Score::of(&Inputs {
            rtt: self.rtt(),
            dials_ok: self.dials_ok,
            dials_failed: self.dials_failed,
            connected: Duration::from_secs(self.connected_secs) + current.unwrap_or_default(),
            useful: self.chunks_served + self.lookups_served,
            bad_data: self.bad_data,
            group_peers,
        })
    }

    /// Its network group by its newest address (no GeoIP: the store is grouped by
    /// address block only).
    fn group(&self) -> NetGroup {
        self.addresses
            .first()
            .map_or(NetGroup::Unknown, |a| NetGroup::of(a, &GeoInfo::default()))
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    peers: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    peer_id: PeerId,
    #[serde(flatten)]
    record: PeerRecord,
}

/// A store file that could not be used; the node starts without it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the peer store {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the peer store {} is {size} bytes, over the {MAX_FILE_SIZE}-byte limit; moved aside to {}", path.display(), aside.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        aside: PathBuf,
    },
    #[error("the peer store {} does not parse (line {line}, column {column}: {reason}); moved aside to {}", path.display(), aside.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
        aside: PathBuf,
    },
    #[error("the peer store {} has format version {version}, this build reads {FORMAT_VERSION}; moved aside to {}", path.display(), aside.display())]
    Version {
        path: PathBuf,
        version: u32,
        aside: PathBuf,
    },
}

#[derive(Debug)]
pub struct PeerStore {
    me: Option<PeerId>,
    records: HashMap<PeerId, PeerRecord>,
    capacity: usize,
    path: Option<PathBuf>,
    dirty: bool,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PeerStore {
    /// A store that lives in memory only.
    pub fn in_memory(me: PeerId, capacity: usize) -> PeerStore {
        PeerStore {
            me: Some(me),
            records: HashMap::new(),
            capacity: capacity.max(1),
            path: None,
            dirty: false,
        }
    }

    /// Loads the store at `path` (empty if there is none). A file that cannot be used
    /// is moved aside and reported; the store then starts empty.
    pub fn open(me: PeerId, path: PathBuf, capacity: usize) -> (PeerStore, Option<LoadError>) {
        let mut store = PeerStore::in_memory(me, capacity);
        let problem = store.load(&path).err();
        store.path = Some(path);
        (store, problem)
    }

    fn load(&mut self, path: &Path) -> Result<(), LoadError> {
        let read = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let size = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(read(e)),
        };
        let aside = aside_path(path);
        if size > MAX_FILE_SIZE {
            move_aside(path, &aside).map_err(read)?;
            return Err(LoadError::TooLarge {
                path: path.to_owned(),
                size,
                aside,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let file: File = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                move_aside(path, &aside).map_err(read)?;
                return Err(LoadError::Parse {
                    path: path.to_owned(),
                    line: e.line(),
                    column: e.column(),
                    reason: e.to_string(),
                    aside,
                });
            }
        };
        if file.version != FORMAT_VERSION {
            move_aside(path, &aside).map_err(read)?;
            return Err(LoadError::Version {
                path: path.to_owned(),
                version: file.version,
                aside,
            });
        }
        for Entry {
            peer_id,
            mut record,
        } in file.peers
        {
            if Some(peer_id) == self.me {
                continue;
            }
            record.addresses.truncate(MAX_ADDRESSES);
            self.records.insert(peer_id, record);
        }
        self.bound();
        self.dirty = false;
        Ok(())
    }

    /// Writes the store if it changed since the last write.
    pub fn save(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let mut peers: Vec<Entry> = self
            .records
            .iter()
            .filter(|(_, r)| !r.addresses.is_empty())
            .map(|(p, r)| Entry {
                peer_id: *p,
                record: r.clone(),
            })
            .collect();
        peers.sort_by_key(|e| std::cmp::Reverse(e.record.last_seen));
        let file = File {
            version: FORMAT_VERSION,
            peers,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        atomic::write(path, &bytes, 0o600, Existing::Replace)?;
        self.dirty = false;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.records.get(peer)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerRecord)> {
        self.records.iter()
    }

    /// The record of `peer`, created if new (and the store bounded again). `None` for
    /// this node itself.
    pub fn entry(&mut self, peer: PeerId) -> Option<&mut PeerRecord> {
        if Some(peer) == self.me {
            return None;
        }
        self.dirty = true;
        if let std::collections::hash_map::Entry::Vacant(e) = self.records.entry(peer) {
            let now = unix_now();
            e.insert(PeerRecord {
                first_seen: now,
                last_seen: now,
                ..PeerRecord::default()
            });
            self.bound_keeping(Some(peer));
        }
        self.records.get_mut(&peer)
    }

    /// Adds addresses `peer` can be dialed at, newest first.
    pub fn add_addresses(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if let Some(r) = self.entry(peer) {
            for a in addrs {
                r.addresses.retain(|x| *x != a);
                r.addresses.insert(0, a);
            }
            r.addresses.truncate(MAX_ADDRESSES);
        }
    }

    /// A dial to `peer` ended: it succeeded or failed.
    pub fn dialed(&mut self, peer: PeerId, ok: bool) {
        if let Some(r) = self.entry(peer) {
            if ok {
                r.dials_ok = r.dials_ok.saturating_add(1);
                r.failures_in_a_row = 0;
            } else {
                r.dials_failed = r.dials_failed.saturating_add(1);
                r.failures_in_a_row = r.failures_in_a_row.saturating_add(1);
                r.last_failure = Some(unix_now());
            }
        }
    }

    /// `peer` was seen (connected, or still connected).
    pub fn seen(&mut self, peer: PeerId) {
        if let Some(r) = self.entry(peer) {
            r.last_seen = unix_now();
        }
    }

    /// A connection to `peer` that lasted `held` closed.
    pub fn disconnected(&mut self, peer: PeerId, held: Duration) {
        if let Some(r) = self.entry(peer) {
            r.connected_secs = r.connected_secs.saturating_add(held.as_secs());
            r.last_seen = unix_now();
        }
    }

    /// A ping to `peer` took `rtt`.
    pub fn ping(&mut self, peer: PeerId, rtt: Duration) {
        if let Some(r) = self.entry(peer) {
            let sample = rtt.as_secs_f64() * 1e3;
            r.rtt_ms = Some(match r.rtt_ms {
                Some(old) if old.is_finite() => old + RTT_ALPHA * (sample - old),
                _ => sample,
            });
        }
    }

    /// `peer` served a verified chunk (or a lookup, `chunk` false).
    pub fn useful(&mut self, peer: PeerId, chunk: bool) {
        if let Some(r) = self.entry(peer) {
            if chunk {
                r.chunks_served = r.chunks_served.saturating_add(1);
            } else {
                r.lookups_served = r.lookups_served.saturating_add(1);
            }
            r.last_useful = Some(unix_now());
        }
    }

    /// `peer` sent data that failed verification.
    pub fn bad_data(&mut self, peer: PeerId) {
        if let Some(r) = self.entry(peer) {
            r.bad_data = r.bad_data.saturating_add(1);
        }
    }

    /// What `peer` offers: circuit relay, the DHT.
    pub fn offers(&mut self, peer: PeerId, relay: bool, dht_server: bool) {
        let changed = self
            .records
            .get(&peer)
            .is_none_or(|r| r.relay != relay || r.dht_server != dht_server);
        if changed && let Some(r) = self.entry(peer) {
            r.relay = relay;
            r.dht_server = dht_server;
        }
    }

    /// Known peers with addresses, best history first.
    pub fn best(&self) -> Vec<(PeerId, &PeerRecord)> {
        let mut v: Vec<(PeerId, &PeerRecord)> = self
            .records
            .iter()
            .filter(|(_, r)| !r.addresses.is_empty())
            .map(|(p, r)| (*p, r))
            .collect();
        v.sort_by(|a, b| {
            b.1.score(None, 0)
                .total
                .total_cmp(&a.1.score(None, 0).total)
                .then(b.1.last_seen.cmp(&a.1.last_seen))
                .then(a.0.cmp(&b.0))
        });
        v
    }

    fn bound(&mut self) {
        self.bound_keeping(None);
    }

    /// Forgets peers beyond the capacity: from the network group with the most
    /// records, the worst-scored (then least recently seen), never `keep`.
    fn bound_keeping(&mut self, keep: Option<PeerId>) {
        while self.records.len() > self.capacity {
            let mut groups: HashMap<NetGroup, Vec<PeerId>> = HashMap::new();
            for (p, r) in &self.records {
                if Some(*p) != keep {
                    groups.entry(r.group()).or_default().push(*p);
                }
            }
            let Some((_, members)) = groups
                .into_iter()
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))
            else {
                return;
            };
            let worst = members.into_iter().min_by(|a, b| {
                let (ra, rb) = (&self.records[a], &self.records[b]);
                ra.score(None, 0)
                    .total
                    .total_cmp(&rb.score(None, 0).total)
                    .then(ra.last_seen.cmp(&rb.last_seen))
                    .then(a.cmp(b))
            });
            if let Some(w) = worst {
                self.records.remove(&w);
            }
        }
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bad");
    path.with_file_name(name)
}

fn move_aside(path: &Path, aside: &Path) -> io::Result<()> {
    std::fs::rename(path, aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn records_survive_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let me = PeerId::random();
        let (mut s, problem) = PeerStore::open(me, path.clone(), 100);
        assert!(problem.is_none());
        let p = PeerId::random();
        s.add_addresses(p, [addr("/ip4/45.76.1.2/tcp/4001")]);
        s.dialed(p, true);
        s.ping(p, Duration::from_millis(40));
        s.ping(p, Duration::from_millis(90));
        s.useful(p, true);
        s.offers(p, true, true);
        s.entry(me);
        s.save().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let (t, problem) = PeerStore::open(me, path, 100);
        assert!(problem.is_none());
        assert_eq!(t.len(), 1, "only the other peer is kept");
        let r = t.get(&p).unwrap();
        assert_eq!(r, s.get(&p).unwrap());
        assert!(
            (r.rtt_ms.unwrap() - 50.0).abs() < 1e-9,
            "smoothed: {:?}",
            r.rtt_ms
        );
        assert!(r.relay && r.dht_server && r.tried());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        std::fs::write(&path, "{\"version\": 1,\n \"peers\": [ nope ]}").unwrap();
        let (s, problem) = PeerStore::open(PeerId::random(), path.clone(), 100);
        let msg = problem.unwrap().to_string();
        assert!(
            msg.contains("peers.json") && msg.contains("line 2"),
            "{msg}"
        );
        assert!(s.is_empty());
        assert!(!path.exists());
        assert!(
            dir.path().join("peers.json.bad").exists(),
            "the bad file is kept"
        );
    }

    #[test]
    fn another_format_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        std::fs::write(&path, r#"{"version": 9, "peers": []}"#).unwrap();
        let (_, problem) = PeerStore::open(PeerId::random(), path, 100);
        assert!(problem.unwrap().to_string().contains("version 9"));
    }

    #[test]
    fn failed_dials_back_off_doubling_up_to_an_hour() {
        let mut r = PeerRecord::default();
        assert!(r.dialable_at(0));
        r.failures_in_a_row = 1;
        r.last_failure = Some(1000);
        assert!(!r.dialable_at(1029) && r.dialable_at(1030));
        r.failures_in_a_row = 3;
        assert!(!r.dialable_at(1119) && r.dialable_at(1120));
        r.failures_in_a_row = 40;
        assert!(!r.dialable_at(4599) && r.dialable_at(4600));
    }

    #[test]
    fn addresses_are_capped_newest_first() {
        let mut s = PeerStore::in_memory(PeerId::random(), 10);
        let p = PeerId::random();
        for port in 0..20 {
            s.add_addresses(p, [addr(&format!("/ip4/45.76.1.2/tcp/{port}"))]);
        }
        let r = s.get(&p).unwrap();
        assert_eq!(r.addresses.len(), MAX_ADDRESSES);
        assert_eq!(r.addresses[0], addr("/ip4/45.76.1.2/tcp/19"));
    }

    #[test]
    fn sybils_from_one_network_cannot_push_out_the_rest() {
        let mut s = PeerStore::in_memory(PeerId::random(), 20);
        let honest: Vec<PeerId> = (0..10)
            .map(|i| {
                let p = PeerId::random();
                s.add_addresses(p, [addr(&format!("/ip4/{}.1.1.1/tcp/4001", 10 + i))]);
                p
            })
            .collect();
        for i in 0..1000 {
            let p = PeerId::random();
            s.add_addresses(
                p,
                [addr(&format!("/ip4/66.6.{}.{}/tcp/4001", i / 250, i % 250))],
            );
        }
        assert_eq!(s.len(), 20);
        for p in honest {
            assert!(s.get(&p).is_some(), "an honest peer was forgotten");
        }
    }

    #[test]
    fn best_puts_useful_reliable_peers_first() {
        let mut s = PeerStore::in_memory(PeerId::random(), 10);
        let a = PeerId::random();
        let b = PeerId::random();
        s.add_addresses(a, [addr("/ip4/45.76.1.2/tcp/4001")]);
        s.add_addresses(b, [addr("/ip4/45.77.1.2/tcp/4001")]);
        s.dialed(a, false);
        s.dialed(b, true);
        s.useful(b, true);
        let best: Vec<PeerId> = s.best().into_iter().map(|(p, _)| p).collect();
        assert_eq!(best, vec![b, a]);
    }
}
