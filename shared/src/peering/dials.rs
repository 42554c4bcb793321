//! Whom to dial when the node holds fewer peers than its low watermark.
//!
//! Dialing only the best peers already known would freeze the peer set: whoever got in
//! first stays forever, and a node that only ever learned of an attacker's peers never
//! finds anyone else. Dialing only fresh addresses would churn it and hand the choice to
//! whoever advertises the most addresses. So each plan mixes the two: most dials go to
//! peers tried before, best first, and a share goes to untried ones picked at random,
//! so the set changes slowly. A cap per network group keeps any one network (and so any
//! one operator of many addresses) from filling the node.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    time::Duration,
};

use rand::Rng;

/// A peer the node knows an address for and is not connected to.
#[derive(Debug, Clone)]
pub struct Known<K, G> {
    pub peer: K,
    /// The network group of the address it would be dialed at.
    pub group: G,
    /// Dialed before, successfully or not.
    pub tried: bool,
    /// Higher is better; NaN counts as the worst score.
    pub score: f64,
    /// Ping time measured on an earlier connection, if any.
    pub rtt: Option<Duration>,
}

/// How many peers to dial and how to mix them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DialPlan {
    /// How many dials at most.
    pub want: usize,
    /// Share (0 to 1) of the dials that go to untried peers, e.g. 0.25.
    pub untried_share: f64,
    /// Connections per network group, counting those the node already holds, that
    /// the plan may reach.
    pub max_per_group: usize,
}

/// Up to `plan.want` peers to dial, in the order chosen: the best tried ones, then the
/// untried draws, then any tried ones filling in for untried ones that ran short.
///
/// About `untried_share` of them are untried, rounded up (so at least one whenever the
/// share is above zero and an untried peer exists), the rest the best tried ones. A
/// group already holding `connected_per_group[g]` connections gets at most
/// `max_per_group` in total. When one kind runs out, the other fills its slots.
///
/// Tried peers are ranked by score, then by lower ping (close peers answer sooner and
/// cost less), then by id so the order never depends on the input's. Untried peers have
/// no record to rank them by, and any order a stranger could predict it could aim at
/// (by advertising identities that sort first); so they are drawn at random with `rng`,
/// first a group, then a peer in it, which gives a network advertising a thousand
/// addresses no better odds than one advertising a single address.
pub fn choose_dials<K, G>(
    known: &[Known<K, G>],
    connected_per_group: &HashMap<G, usize>,
    plan: &DialPlan,
    rng: &mut impl Rng,
) -> Vec<K>
where
    K: Copy + Eq + Hash + Ord,
    G: Clone + Eq + Hash,
{
    let mut tried: Vec<&Known<K, G>> = known.iter().filter(|k| k.tried).collect();
    tried.sort_by(|a, b| {
        rank(b.score)
            .total_cmp(&rank(a.score))
            .then_with(|| (a.rtt.is_none(), a.rtt).cmp(&(b.rtt.is_none(), b.rtt)))
            .then(a.peer.cmp(&b.peer))
    });
    let mut untried = Untried::new(known.iter().filter(|k| !k.tried));

    let untried_target = if plan.want == 0 || untried.is_empty() {
        0
    } else {
        let share = plan.untried_share.clamp(0.0, 1.0);
        ((plan.want as f64 * share).ceil() as usize).min(plan.want)
    };
    let tried_target = plan.want - untried_target;

    let mut pick = Picked {
        peers: Vec::new(),
        seen: HashSet::new(),
        quota: HashMap::new(),
        connected: connected_per_group,
        max_per_group: plan.max_per_group,
    };
    let mut tried = tried.into_iter();
    pick.tried(&mut tried, tried_target);
    // Untried peers take their share, and the slots of any tried ones that ran short;
    // then tried ones take the slots of any untried ones that ran short.
    pick.untried(&mut untried, plan.want, rng);
    pick.tried(&mut tried, plan.want);
    pick.peers
}

/// A score to compare: NaN ranks below every number.
fn rank(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score
    }
}

/// The dials chosen so far, and what each group may still take.
struct Picked<'a, K, G> {
    peers: Vec<K>,
    seen: HashSet<K>,
    quota: HashMap<&'a G, usize>,
    connected: &'a HashMap<G, usize>,
    max_per_group: usize,
}

impl<'a, K: Copy + Eq + Hash + 'a, G: Eq + Hash> Picked<'a, K, G> {
    /// Room left in `group` for another dial.
    fn room(&mut self, group: &'a G) -> &mut usize {
        let held = self.connected.get(group).copied().unwrap_or(0);
        let max = self.max_per_group;
        self.quota
            .entry(group)
            .or_insert_with(|| max.saturating_sub(held))
    }

    /// Takes `peer` if it is new and its group has room.
    fn take(&mut self, peer: K, group: &'a G) {
        if self.seen.contains(&peer) || *self.room(group) == 0 {
            return;
        }
        *self.room(group) -= 1;
        self.seen.insert(peer);
        self.peers.push(peer);
    }

    /// Takes tried peers in order until `up_to` dials are chosen.
    fn tried(&mut self, tried: &mut impl Iterator<Item = &'a Known<K, G>>, up_to: usize) {
        while self.peers.len() < up_to {
            let Some(k) = tried.next() else { return };
            self.take(k.peer, &k.group);
        }
    }

    /// Draws untried peers until `up_to` dials are chosen or none can be taken.
    fn untried(&mut self, untried: &mut Untried<'a, K, G>, up_to: usize, rng: &mut impl Rng) {
        while self.peers.len() < up_to {
            untried
                .groups
                .retain(|(group, peers)| !peers.is_empty() && *self.room(group) > 0);
            if untried.groups.is_empty() {
                return;
            }
            let g = rng.random_range(0..untried.groups.len());
            let (group, peers) = &mut untried.groups[g];
            let peer = peers.swap_remove(rng.random_range(0..peers.len()));
            let group: &'a G = group;
            self.take(peer, group);
        }
    }
}

/// Untried peers by group, groups in the order they first appear (so that a seeded
/// `rng` gives the same draw every time).
struct Untried<'a, K, G> {
    groups: Vec<(&'a G, Vec<K>)>,
}

impl<'a, K: Copy + 'a, G: Eq + Hash> Untried<'a, K, G> {
    fn new(known: impl Iterator<Item = &'a Known<K, G>>) -> Self {
        let mut index: HashMap<&G, usize> = HashMap::new();
        let mut groups: Vec<(&G, Vec<K>)> = Vec::new();
        for k in known {
            let i = *index.entry(&k.group).or_insert_with(|| {
                groups.push((&k.group, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(k.peer);
        }
        Untried { groups }
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn tried(peer: u32, group: u32, score: f64, rtt_ms: Option<u64>) -> Known<u32, u32> {
        Known {
            peer,
            group,
            tried: true,
            score,
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    fn untried(peer: u32, group: u32) -> Known<u32, u32> {
        Known {
            peer,
            group,
            tried: false,
            score: 0.0,
            rtt: None,
        }
    }

    fn plan(want: usize, untried_share: f64) -> DialPlan {
        DialPlan {
            want,
            untried_share,
            max_per_group: 100,
        }
    }

    /// Twenty tried peers (ids 0..20, score = id) and twenty untried (ids 100..120),
    /// each in its own group.
    fn mixed() -> Vec<Known<u32, u32>> {
        let t = (0..20).map(|i| tried(i, i, f64::from(i), Some(50)));
        let u = (100..120).map(|i| untried(i, i));
        t.chain(u).collect()
    }

    fn dial(known: &[Known<u32, u32>], connected: &HashMap<u32, usize>, p: DialPlan) -> Vec<u32> {
        let dials = choose_dials(known, connected, &p, &mut StdRng::seed_from_u64(7));
        let distinct: HashSet<_> = dials.iter().collect();
        assert_eq!(distinct.len(), dials.len(), "dialed twice: {dials:?}");
        dials
    }

    fn untried_count(dials: &[u32]) -> usize {
        dials.iter().filter(|&&p| p >= 100).count()
    }

    #[test]
    fn want_zero_dials_nobody() {
        assert!(dial(&mixed(), &HashMap::new(), plan(0, 0.25)).is_empty());
    }

    #[test]
    fn a_share_goes_to_untried_peers_the_rest_to_the_best_tried() {
        let known = mixed();
        let dials = dial(&known, &HashMap::new(), plan(8, 0.25));
        assert_eq!(dials.len(), 8);
        assert_eq!(untried_count(&dials), 2, "{dials:?}");
        assert_eq!(dials[..6], [19, 18, 17, 16, 15, 14]);

        // A quarter of five is rounded up to two.
        let dials = dial(&known, &HashMap::new(), plan(5, 0.25));
        assert_eq!((dials.len(), untried_count(&dials)), (5, 2), "{dials:?}");
        // Even a single dial may go to an untried peer.
        let dials = dial(&known, &HashMap::new(), plan(1, 0.25));
        assert_eq!(untried_count(&dials), 1, "{dials:?}");
        // No share, no untried peers.
        let dials = dial(&known, &HashMap::new(), plan(8, 0.0));
        assert_eq!(dials, [19, 18, 17, 16, 15, 14, 13, 12]);
    }

    #[test]
    fn a_group_gets_no_more_than_its_quota() {
        // The best tried peers all sit in group 1, which already holds two connections.
        let mut known: Vec<_> = (0..6).map(|i| tried(i, 1, 10.0, Some(50))).collect();
        known.extend((10..16).map(|i| tried(i, i, 1.0, Some(50))));
        known.extend((100..110).map(|i| untried(i, 2)));
        let connected = HashMap::from([(1, 2), (2, 3)]);
        let p = DialPlan {
            want: 6,
            untried_share: 0.5,
            max_per_group: 3,
        };
        let dials = dial(&known, &connected, p);
        // One more for group 1, none for group 2 (full), the rest elsewhere.
        assert_eq!(dials, [0, 10, 11, 12, 13, 14]);
    }

    #[test]
    fn untried_draws_count_against_the_quota_too() {
        let known: Vec<_> = (100..110).map(|i| untried(i, 1)).collect();
        let p = DialPlan {
            want: 5,
            untried_share: 1.0,
            max_per_group: 2,
        };
        assert_eq!(dial(&known, &HashMap::new(), p).len(), 2);
        assert_eq!(dial(&known, &HashMap::from([(1, 1)]), p).len(), 1);
    }

    #[test]
    fn one_kind_fills_in_for_the_other() {
        // No untried peers: every dial goes to a tried one.
        let only_tried: Vec<_> = mixed().into_iter().filter(|k| k.tried).collect();
        let dials = dial(&only_tried, &HashMap::new(), plan(8, 0.25));
        assert_eq!(dials, [19, 18, 17, 16, 15, 14, 13, 12]);

        // Two tried peers: untried ones take the other six slots.
        let mut few_tried: Vec<_> = mixed().into_iter().filter(|k| !k.tried).collect();
        few_tried.extend([tried(0, 0, 1.0, None), tried(1, 1, 2.0, None)]);
        let dials = dial(&few_tried, &HashMap::new(), plan(8, 0.25));
        assert_eq!((dials.len(), untried_count(&dials)), (8, 6), "{dials:?}");
        assert_eq!(dials[..2], [1, 0]);

        // Fewer peers than wanted: all of them, once each.
        let dials = dial(&mixed()[15..25], &HashMap::new(), plan(100, 0.25));
        assert_eq!(dials.len(), 10);
    }

    #[test]
    fn among_equal_scores_the_closer_peer_comes_first() {
        let known = [
            tried(1, 1, 5.0, Some(30)),
            tried(2, 2, 5.0, None),
            tried(3, 3, 5.0, Some(10)),
            tried(4, 4, 5.0, Some(20)),
            tried(5, 5, 6.0, Some(500)),
            tried(6, 6, f64::NAN, Some(1)),
        ];
        // A better score still beats a lower ping; NaN ranks last.
        assert_eq!(
            dial(&known, &HashMap::new(), plan(6, 0.25)),
            [5, 3, 4, 1, 2, 6]
        );
    }

    #[test]
    fn untried_draws_are_random_and_spread_over_groups() {
        // One network advertises 200 addresses, ten others one each.
        let mut known: Vec<_> = (1000..1200).map(|i| untried(i, 0)).collect();
        known.extend((100..110).map(|i| untried(i, i)));
        let p = plan(5, 1.0);
        let mut flooder = 0;
        let mut draws = HashSet::new();
        for seed in 0..100 {
            let dials = choose_dials(
                &known,
                &HashMap::new(),
                &p,
                &mut StdRng::seed_from_u64(seed),
            );
            assert_eq!(dials.len(), 5);
            flooder += dials.iter().filter(|&&d| d >= 1000).count();
            draws.insert(dials);
        }
        // Drawing addresses uniformly would give the flooder about 476 of 500 dials;
        // drawing a group first, about one in eleven.
        assert!(flooder < 150, "{flooder} of 500 dials went to one network");
        assert!(draws.len() > 50, "only {} different draws", draws.len());
    }

    #[test]
    fn the_same_seed_gives_the_same_dials() {
        let known = mixed();
        let p = plan(10, 0.5);
        let a = choose_dials(&known, &HashMap::new(), &p, &mut StdRng::seed_from_u64(3));
        let b = choose_dials(&known, &HashMap::new(), &p, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
    }
}
