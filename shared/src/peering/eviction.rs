//! Which connected peers to close when the node holds more than its high watermark.
//!
//! The danger is takeover: a stranger who controls many addresses in a few networks
//! connects again and again, and a node that simply closed its youngest or worst peers
//! would soon hold nothing but the stranger's. So, as in Bitcoin Core's
//! `SelectNodeToEvict`, each round first sets aside peers that are hard to fake in
//! several independent ways, and only then evicts from what is left, taking from the
//! network group with the most connections. To push out a good peer an attacker has to
//! beat it on every count at once: come from a network the node's secret happens to
//! favour, answer pings faster, serve more useful data, and have been connected longer.

use std::{
    cmp::{Ordering, Reverse},
    collections::HashMap,
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

/// A connected peer that may be closed, with what the node knows about it.
#[derive(Debug, Clone)]
pub struct Candidate<K, G> {
    pub peer: K,
    /// The network group the peer's address belongs to (e.g. an IPv4 /16 or an AS).
    pub group: G,
    pub connected_since: Instant,
    /// Smoothed ping time; `None` when not measured yet.
    pub rtt: Option<Duration>,
    /// The last time the peer served us data we wanted; `None` if it never did.
    pub last_useful: Option<Instant>,
    /// Higher is better; NaN counts as the worst score.
    pub score: f64,
}

/// How many peers each round sets aside before choosing one to evict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protection {
    /// Peers kept from distinct network groups, picked by a keyed hash. Default 4.
    pub distinct_groups: usize,
    /// Peers kept for the lowest ping time. Default 8.
    pub lowest_rtt: usize,
    /// Peers kept for having served useful data most recently. Default 4.
    pub recently_useful: usize,
    /// Share (0 to 1) of the peers still unprotected kept for the longest uptime,
    /// rounded down. Default 0.5.
    pub longest_uptime_share: f64,
}

impl Default for Protection {
    fn default() -> Self {
        Protection {
            distinct_groups: 4,
            lowest_rtt: 8,
            recently_useful: 4,
            longest_uptime_share: 0.5,
        }
    }
}

/// Up to `n` peers to close, in the order they were chosen.
///
/// `candidates` are already filtered by the caller: no peers that must never be closed,
/// none still in their grace period. Peers are chosen one at a time, each round on the
/// candidates not chosen yet:
///
/// 1. Set aside the best-scored peer of each of the `distinct_groups` groups with the
///    lowest keyed hash. The hash is keyed with `secret`, which strangers do not know,
///    so they cannot pick the networks that get this protection; a node keeps peers in
///    several networks however many connections one network opens.
/// 2. Set aside the `lowest_rtt` peers with the lowest measured ping: nearby peers are
///    what an attacker far away cannot imitate (unmeasured peers are not protected).
/// 3. Set aside the `recently_useful` peers that most recently served useful data: an
///    attacker that merely holds connections open gains nothing here.
/// 4. Set aside `longest_uptime_share` of the rest by longest connection: peers that
///    were there before an attack began survive a flood of fresh connections.
/// 5. Of what is left, take the group with the most peers (tie: the one whose newest
///    connection is youngest), and evict its lowest-scored peer (tie: the youngest).
///    Connecting a lot from one network makes that network the one that loses peers.
///
/// If a round sets aside every candidate, nothing more is evicted and fewer than `n`
/// peers come back. The result depends only on the candidates and `secret`, not on
/// their order in the slice (barring a collision of two groups' 64-bit hashes).
pub fn choose_evictions<K, G>(
    candidates: &[Candidate<K, G>],
    n: usize,
    protection: &Protection,
    secret: u64,
) -> Vec<K>
where
    K: Copy + Eq + Hash + Ord,
    G: Clone + Eq + Hash,
{
    let key = group_key(secret);
    let group_hash: HashMap<&G, u64> = candidates
        .iter()
        .map(|c| (&c.group, keyed_hash(&key, &c.group)))
        .collect();
    let mut remaining: Vec<&Candidate<K, G>> = candidates.iter().collect();
    let mut evicted = Vec::new();
    while evicted.len() < n {
        let Some(peer) = choose_one(&remaining, protection, &group_hash) else {
            break;
        };
        remaining.retain(|c| c.peer != peer);
        evicted.push(peer);
    }
    evicted
}

/// One round of [`choose_evictions`]: the peer to close, or `None` if all are protected.
fn choose_one<K, G>(
    remaining: &[&Candidate<K, G>],
    protection: &Protection,
    group_hash: &HashMap<&G, u64>,
) -> Option<K>
where
    K: Copy + Eq + Hash + Ord,
    G: Clone + Eq + Hash,
{
    let hash = |c: &Candidate<K, G>| group_hash[&c.group];

    // 1. The best peer of each of the groups with the lowest keyed hash: sorted by
    // hash, each group's peers are adjacent and its best comes first.
    let mut group_keepers = remaining.to_vec();
    group_keepers.sort_by(|a, b| hash(a).cmp(&hash(b)).then_with(|| better(a, b)));
    group_keepers.dedup_by(|a, b| a.group == b.group);
    group_keepers.truncate(protection.distinct_groups);
    let mut open: Vec<&Candidate<K, G>> = remaining
        .iter()
        .copied()
        .filter(|c| !group_keepers.iter().any(|k| k.peer == c.peer))
        .collect();

    // 2. Lowest measured ping.
    set_aside(&mut open, protection.lowest_rtt, |c| {
        c.rtt.map(|r| (r, c.peer))
    });
    // 3. Most recently useful.
    set_aside(&mut open, protection.recently_useful, |c| {
        c.last_useful.map(|t| (Reverse(t), c.peer))
    });
    // 4. Longest uptime, a share of what is still open.
    let share = protection.longest_uptime_share.clamp(0.0, 1.0);
    let by_uptime = (open.len() as f64 * share).floor() as usize;
    set_aside(&mut open, by_uptime, |c| Some((c.connected_since, c.peer)));

    // 5. The lowest-scored peer of the group with the most peers left: per group its
    // count, its newest connection and its worst peer.
    let mut groups: HashMap<&G, (usize, Instant, &Candidate<K, G>)> = HashMap::new();
    for &c in &open {
        let (count, newest, worst) = groups.entry(&c.group).or_insert((0, c.connected_since, c));
        *count += 1;
        *newest = (*newest).max(c.connected_since);
        if better(c, worst) == Ordering::Greater {
            *worst = c;
        }
    }
    groups
        .into_values()
        .max_by_key(|&(count, newest, worst)| (count, newest, hash(worst)))
        .map(|(_, _, worst)| worst.peer)
}

/// Orders peers best first: higher score, then the older connection, then the lower id
/// (only so that the order never depends on the input's).
fn better<K: Ord, G>(a: &Candidate<K, G>, b: &Candidate<K, G>) -> Ordering {
    rank(b.score)
        .total_cmp(&rank(a.score))
        .then(a.connected_since.cmp(&b.connected_since))
        .then(a.peer.cmp(&b.peer))
}

/// A score to compare: NaN ranks below every number.
fn rank(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score
    }
}

/// Removes from `open` the first `count` peers by `key`; a peer whose key is `None` is
/// not eligible.
fn set_aside<K, G, O: Ord>(
    open: &mut Vec<&Candidate<K, G>>,
    count: usize,
    key: impl Fn(&Candidate<K, G>) -> Option<O>,
) {
    open.sort_by_key(|c| {
        let k = key(c);
        (k.is_none(), k)
    });
    let kept = open.iter().take(count).filter(|c| key(c).is_some()).count();
    open.drain(..kept);
}

/// The key of [`keyed_hash`], derived from the node's secret.
fn group_key(secret: u64) -> [u8; 32] {
    blake3::derive_key("jantar peering eviction group order", &secret.to_le_bytes())
}

/// A 64-bit keyed hash of a group: BLAKE3 in keyed mode, a keyed pseudorandom function,
/// so without the key nobody can tell which groups come first. (std's `DefaultHasher`
/// has a fixed key and an algorithm that may change between Rust releases.)
fn keyed_hash<G: Hash>(key: &[u8; 32], group: &G) -> u64 {
    struct Keyed(blake3::Hasher);
    impl Hasher for Keyed {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let mut first = [0; 8];
            first.copy_from_slice(&self.0.finalize().as_bytes()[..8]);
            u64::from_le_bytes(first)
        }
    }
    let mut hasher = Keyed(blake3::Hasher::new_keyed(key));
    group.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::OnceLock};

    use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

    use super::*;

    /// `secs` seconds after a fixed start.
    fn at(secs: u64) -> Instant {
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    fn ms(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    /// A peer in `group` connected at `since` seconds, with nothing else known.
    fn peer(peer: u32, group: u32, since: u64) -> Candidate<u32, u32> {
        Candidate {
            peer,
            group,
            connected_since: at(since),
            rtt: None,
            last_useful: None,
            score: 0.0,
        }
    }

    fn protect(groups: usize, rtt: usize, useful: usize, uptime: f64) -> Protection {
        Protection {
            distinct_groups: groups,
            lowest_rtt: rtt,
            recently_useful: useful,
            longest_uptime_share: uptime,
        }
    }

    /// The ids in `0..total` not evicted, in order; fails if one was evicted twice.
    fn survivors(total: u32, evicted: &[u32]) -> Vec<u32> {
        let set: HashSet<_> = evicted.iter().collect();
        assert_eq!(set.len(), evicted.len(), "evicted twice: {evicted:?}");
        (0..total).filter(|p| !set.contains(p)).collect()
    }

    /// Ten established honest peers (ids 0..10), one per network, with good pings,
    /// four of them recently useful; then thirty attacker connections (ids 10..40)
    /// from two networks, younger, slower and never useful.
    fn under_attack() -> Vec<Candidate<u32, u32>> {
        let honest = (0..10).map(|i| Candidate {
            rtt: ms(20 + u64::from(i)),
            last_useful: (i < 4).then(|| at(1000 + u64::from(i))),
            score: 1.0,
            ..peer(i, 100 + i, u64::from(i))
        });
        let attackers = (10..40).map(|i| Candidate {
            rtt: ms(80 + u64::from(i)),
            ..peer(i, 1 + i % 2, 100 + u64::from(i))
        });
        honest.chain(attackers).collect()
    }

    #[test]
    fn a_flood_from_two_networks_evicts_only_the_flood() {
        let candidates = under_attack();
        for secret in 0..32 {
            let evicted = choose_evictions(&candidates, 30, &Protection::default(), secret);
            let left = survivors(40, &evicted);
            // Four group slots and eight ping slots protect twelve peers, so two
            // attackers stay and the trim stops there.
            assert_eq!(left.len(), 12, "secret {secret}: {evicted:?}");
            assert_eq!(left[..10], (0..10).collect::<Vec<_>>(), "secret {secret}");
        }
    }

    #[test]
    fn an_attacker_winning_on_ping_and_usefulness_still_loses_the_group_slots() {
        let mut candidates = under_attack();
        for c in candidates.iter_mut().filter(|c| c.peer >= 10) {
            c.rtt = ms(1);
            c.last_useful = Some(at(5000 + u64::from(c.peer)));
        }
        for secret in 0..32 {
            let evicted = choose_evictions(&candidates, 30, &Protection::default(), secret);
            let honest_left = survivors(10, &evicted).len();
            // At most two of the four protected groups can be the attacker's.
            assert!(honest_left >= 2, "secret {secret}: {evicted:?}");
        }
    }

    #[test]
    fn the_secret_decides_which_group_keeps_its_best_peer() {
        // Eight groups of two: ids 0..8 score 1, ids 8..16 score 0.
        let candidates: Vec<_> = (0..16)
            .map(|i| Candidate {
                score: if i < 8 { 1.0 } else { 0.0 },
                ..peer(i, i % 8, 0)
            })
            .collect();
        let mut kept = HashSet::new();
        for secret in 0..32 {
            let evicted = choose_evictions(&candidates, 16, &protect(1, 0, 0, 0.0), secret);
            let key = group_key(secret);
            let lowest = (0..8u32).min_by_key(|g| keyed_hash(&key, g)).unwrap();
            assert_eq!(survivors(16, &evicted), [lowest], "secret {secret}");
            kept.insert(lowest);
        }
        assert!(kept.len() > 1, "the same group won for every secret");
    }

    #[test]
    fn lowest_rtt_peers_survive() {
        // Ids 0..8 answer fastest but are the youngest and worst-scored: nothing else
        // would keep them. Id 29 was never measured.
        let candidates: Vec<_> = (0..30)
            .map(|i| Candidate {
                rtt: if i == 29 { None } else { ms(10 + u64::from(i)) },
                score: if i < 8 { -1.0 } else { 1.0 },
                ..peer(i, i % 3, 100 - u64::from(i))
            })
            .collect();
        let evicted = choose_evictions(&candidates, 15, &Protection::default(), 9);
        assert_eq!(evicted.len(), 15);
        assert!(evicted.iter().all(|&p| p >= 8), "{evicted:?}");

        // Only the ping counts: exactly the eight lowest stay, the unmeasured one goes.
        let evicted = choose_evictions(&candidates, 100, &protect(0, 8, 0, 0.0), 9);
        assert_eq!(survivors(30, &evicted), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn recently_useful_peers_survive() {
        // Ids 0..4 served data last, ids 4..8 a little earlier; all eight are young,
        // badly scored and slower than the rest.
        let candidates: Vec<_> = (0..30)
            .map(|i| Candidate {
                rtt: ms(200 - u64::from(i)),
                last_useful: (i < 8).then(|| at(1000 - u64::from(i))),
                score: if i < 8 { -1.0 } else { 1.0 },
                ..peer(i, i % 3, 100 - u64::from(i))
            })
            .collect();
        let evicted = choose_evictions(&candidates, 15, &Protection::default(), 4);
        assert_eq!(evicted.len(), 15);
        assert!(evicted.iter().all(|&p| p >= 4), "{evicted:?}");
        // Four slots only: the next most recently useful are not kept for it.
        assert!((4..8).all(|p| evicted.contains(&p)), "{evicted:?}");
    }

    #[test]
    fn evicts_from_the_biggest_group_worst_score_first() {
        let mut candidates: Vec<_> = (0..5)
            .map(|i| Candidate {
                score: f64::from(5 - i),
                ..peer(i, 1, u64::from(i))
            })
            .collect();
        candidates.extend([peer(10, 2, 0), peer(11, 2, 50)]);
        candidates.push(Candidate {
            score: f64::NAN,
            ..peer(12, 3, 0)
        });
        // Group 1 has five peers: its worst three go until it is even with group 2;
        // then group 2, whose newest connection (id 11, at 50 s) is the youngest.
        let evicted = choose_evictions(&candidates, 5, &protect(0, 0, 0, 0.0), 0);
        assert_eq!(evicted, [4, 3, 2, 11, 1]);
    }

    #[test]
    fn longest_connected_share_survives() {
        let candidates: Vec<_> = (0..10).map(|i| peer(i, 1, u64::from(i))).collect();
        // Ten open: five kept, the youngest evicted; nine: four kept; ...; one: none.
        let evicted = choose_evictions(&candidates, 10, &protect(0, 0, 0, 0.5), 0);
        assert_eq!(evicted, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn stops_early_when_everything_left_is_protected_or_nothing_is_asked() {
        let candidates: Vec<_> = (0..20)
            .map(|i| Candidate {
                rtt: ms(10 + u64::from(i)),
                ..peer(i, 1, u64::from(i))
            })
            .collect();
        let evicted = choose_evictions(&candidates, 100, &Protection::default(), 5);
        // The group keeps its oldest (id 0), the ping slots ids 1..9, and half of the
        // rest is kept by uptime: a round evicts only while at least ten remain.
        assert_eq!(survivors(20, &evicted), (0..9).collect::<Vec<_>>());

        let none: &[Candidate<u32, u32>] = &[];
        assert!(choose_evictions(none, 5, &Protection::default(), 1).is_empty());
        assert!(choose_evictions(&candidates, 0, &Protection::default(), 1).is_empty());
    }

    #[test]
    fn the_same_input_in_any_order_gives_the_same_evictions() {
        let mut candidates = under_attack();
        let first = choose_evictions(&candidates, 20, &Protection::default(), 77);
        assert_eq!(first.len(), 20);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..10 {
            candidates.shuffle(&mut rng);
            let again = choose_evictions(&candidates, 20, &Protection::default(), 77);
            assert_eq!(again, first);
        }
    }
}
