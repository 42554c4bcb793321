//! The upload bounds (`serving.*`, `upload_rate_limit`): how many requests of one peer
//! and of all peers are accepted at once, the requests waiting for the upload budget
//! (a token bucket of bytes per second), taken in turn from each peer so that one
//! peer's pile cannot starve another's, and dropped once their requester has stopped
//! waiting.
//!
//! A waiting request holds no chunk: its data is read only when the budget lets it go,
//! so memory stays at the accepted requests' bookkeeping plus the chunks being read
//! or sent, whatever the requesters do.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use crate::{config::ServingConfig, files::id::CHUNK_SIZE};

/// Why a request was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The peer has `serving.max_concurrent_per_peer` requests accepted already.
    PerPeer,
    /// All peers together have `serving.max_queued` requests accepted already.
    Full,
}

impl Refusal {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refusal::PerPeer => "per_peer",
            Refusal::Full => "queue_full",
        }
    }
}

struct Waiting<K, T> {
    key: K,
    item: T,
    len: u64,
    at: Instant,
}

/// Accepted requests of one peer: `waiting` for the budget, the rest being read or
/// sent.
struct PeerUploads<K, T> {
    accepted: usize,
    waiting: VecDeque<Waiting<K, T>>,
}

/// The accepted requests, keyed by `K` (the inbound request's id), each carrying `T`
/// (what answering it needs) while it waits.
pub(super) struct UploadQueue<K, T> {
    per_peer: usize,
    max: usize,
    /// Bytes per second; 0: unlimited.
    rate: u64,
    tokens: u64,
    /// A waiting request older than this is dropped: its requester gave up on it.
    timeout: Duration,
    peers: HashMap<PeerId, PeerUploads<K, T>>,
    /// Peers with requests waiting, in the order they get their next turn.
    turns: VecDeque<PeerId>,
    /// Every accepted request and its peer, until [`release`](Self::release).
    accepted: HashMap<K, PeerId>,
    waiting_bytes: u64,
    expired: u64,
}

impl<K: Copy + Eq + Hash, T> UploadQueue<K, T> {
    pub(super) fn new(bounds: ServingConfig, rate: u64, timeout: Duration) -> Self {
        UploadQueue {
            per_peer: bounds.max_concurrent_per_peer,
            max: bounds.max_queued,
            rate,
            tokens: rate,
            timeout,
            peers: HashMap::new(),
            turns: VecDeque::new(),
            accepted: HashMap::new(),
            waiting_bytes: 0,
            expired: 0,
        }
    }

    fn check(&self, peer: &PeerId) -> Result<(), Refusal> {
        if self
            .peers
            .get(peer)
            .is_some_and(|p| p.accepted >= self.per_peer)
        {
            return Err(Refusal::PerPeer);
        }
        if self.accepted.len() >= self.max {
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Accepts a request that is answered at once (it needs no budget); its slot is
    /// held until [`release`](Self::release).
    pub(super) fn admit_now(&mut self, peer: PeerId, key: K) -> Result<(), Refusal> {
        self.check(&peer)?;
        self.peers
            .entry(peer)
            .or_insert_with(|| PeerUploads {
                accepted: 0,
                waiting: VecDeque::new(),
            })
            .accepted += 1;
        self.accepted.insert(key, peer);
        Ok(())
    }

    /// Accepts a request for `len` bytes to wait for its turn, or gives `item` back
    /// with the reason it is refused.
    pub(super) fn admit(
        &mut self,
        peer: PeerId,
        key: K,
        item: T,
        len: u64,
        now: Instant,
    ) -> Result<(), (Refusal, T)> {
        if let Err(r) = self.admit_now(peer, key) {
            return Err((r, item));
        }
        let p = self.peers.get_mut(&peer).expect("admitted just now");
        if p.waiting.is_empty() {
            self.turns.push_back(peer);
        }
        p.waiting.push_back(Waiting {
            key,
            item,
            len,
            at: now,
        });
        self.waiting_bytes += len;
        Ok(())
    }

    /// The next request whose turn it is and that the budget allows, taken from the
    /// peers in turn, one each. Requests that waited past the timeout are dropped on
    /// the way (their slots freed; see [`take_expired`](Self::take_expired)).
    pub(super) fn next(&mut self, now: Instant) -> Option<(PeerId, K, T)> {
        while let Some(&peer) = self.turns.front() {
            let Some(p) = self.peers.get_mut(&peer) else {
                self.turns.pop_front();
                continue;
            };
            let Some(front) = p.waiting.front() else {
                self.turns.pop_front();
                continue;
            };
            if now.duration_since(front.at) >= self.timeout {
                let w = p.waiting.pop_front().expect("front exists");
                self.waiting_bytes -= w.len;
                self.expired += 1;
                self.release(&w.key);
                continue;
            }
            if self.rate > 0 && self.tokens < front.len {
                return None;
            }
            let w = p.waiting.pop_front().expect("front exists");
            self.turns.pop_front();
            if !p.waiting.is_empty() {
                self.turns.push_back(peer);
            }
            self.waiting_bytes -= w.len;
            if self.rate > 0 {
                self.tokens -= w.len;
            }
            return Some((peer, w.key, w.item));
        }
        None
    }

    /// Frees the slot of request `key` (answered, failed, or dropped), wherever it is;
    /// a request still waiting is dropped. Releasing twice is harmless.
    pub(super) fn release(&mut self, key: &K) {
        let Some(peer) = self.accepted.remove(key) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.accepted = p.accepted.saturating_sub(1);
        if let Some(i) = p.waiting.iter().position(|w| w.key == *key)
            && let Some(w) = p.waiting.remove(i)
        {
            self.waiting_bytes -= w.len;
        }
        if p.accepted == 0 {
            self.peers.remove(&peer);
            self.turns.retain(|t| *t != peer);
        }
    }

    /// Every second: a second's worth of tokens (a burst of at most one second, or one
    /// chunk when the rate is below a chunk per second).
    pub(super) fn refill(&mut self) {
        if self.rate > 0 {
            self.tokens = (self.tokens + self.rate).min(self.rate.max(u64::from(CHUNK_SIZE)));
        }
    }

    /// Requests dropped for waiting too long since the last call.
    pub(super) fn take_expired(&mut self) -> u64 {
        std::mem::take(&mut self.expired)
    }

    /// Requests accepted and not yet released.
    /// Peers with an accepted request.
    pub(super) fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    pub(super) fn accepted(&self) -> usize {
        self.accepted.len()
    }

    /// Bytes of the chunks that wait for the budget.
    pub(super) fn waiting_bytes(&self) -> u64 {
        self.waiting_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn queue(per_peer: usize, max: usize, rate: u64) -> UploadQueue<u64, &'static str> {
        UploadQueue::new(
            ServingConfig {
                max_concurrent_per_peer: per_peer,
                max_queued: max,
            },
            rate,
            Duration::from_secs(30),
        )
    }

    #[test]
    fn per_peer_and_total_bounds_refuse_at_once() {
        let mut q = queue(2, 3, 0);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let now = Instant::now();
        assert!(q.admit(a, 1, "a1", MIB, now).is_ok());
        assert!(q.admit_now(a, 2).is_ok());
        assert_eq!(q.admit(a, 3, "a3", MIB, now), Err((Refusal::PerPeer, "a3")));
        assert!(q.admit(b, 4, "b1", MIB, now).is_ok());
        assert_eq!(q.admit_now(c, 5), Err(Refusal::Full));
        assert_eq!(q.accepted(), 3);
        // A slot freed (its response sent) takes another request.
        q.release(&2);
        q.release(&2);
        assert!(q.admit_now(c, 5).is_ok());
        assert_eq!(q.accepted(), 3);
    }

    #[test]
    fn the_budget_goes_round_robin_over_peers() {
        let mut q = queue(100, 100, 2 * MIB);
        let (greedy, honest) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        for k in 0..50 {
            q.admit(greedy, k, "greedy", MIB, now).unwrap();
        }
        q.admit(honest, 100, "honest", MIB, now).unwrap();
        q.admit(honest, 101, "honest", MIB, now).unwrap();
        assert_eq!(q.waiting_bytes(), 52 * MIB);
        let mut served = vec![];
        for _ in 0..3 {
            while let Some((_, key, who)) = q.next(now) {
                served.push((key, who));
                q.release(&key);
            }
            q.refill();
        }
        // 2 MiB per second: greedy, honest, greedy, honest, greedy, greedy.
        let who: Vec<&str> = served.iter().map(|(_, w)| *w).collect();
        assert_eq!(
            who,
            ["greedy", "honest", "greedy", "honest", "greedy", "greedy"]
        );
        assert_eq!(q.waiting_bytes(), 46 * MIB);
    }

    #[test]
    fn requests_that_waited_too_long_are_dropped() {
        let mut q = queue(10, 10, MIB);
        let p = PeerId::random();
        let start = Instant::now();
        for k in 0..4 {
            q.admit(p, k, "x", MIB, start).unwrap();
        }
        assert!(q.next(start).is_some());
        assert!(q.next(start).is_none(), "the budget is spent");
        q.refill();
        let late = start + Duration::from_secs(31);
        assert!(q.next(late).is_none());
        assert_eq!(q.take_expired(), 3);
        assert_eq!(q.accepted(), 1, "only the one being sent holds a slot");
        assert_eq!(q.waiting_bytes(), 0);
        // A waiting request whose requester went away frees its slot at once.
        q.admit(p, 9, "y", MIB, late).unwrap();
        q.release(&9);
        assert_eq!(q.accepted(), 1);
        assert!(q.next(late).is_none());
    }
}
