//! A peer's score: how much the node gains from keeping it. Four components in [0, 1]
//! and a penalty, combined with fixed weights:
//!
//! | component | from | 1.0 means |
//! |-----------|------|-----------|
//! | `rtt` | ping, smoothed | a round trip of 0 ms (50 ms gives 0.5; unknown 0.5) |
//! | `uptime` | how often dials to it succeeded, and how long it stayed connected | always reachable, connected an hour or more |
//! | `availability` | file chunks and lookups it answered | many answers (16 give 0.5) |
//! | `diversity` | peers the node holds in the peer's network group | alone in its group (0 while not connected) |
//! | `penalty` | bad data it sent (chunks that failed verification) | subtracted: 0.2 each, at most 1 |
//!
//! "Prefer close peers": among peers otherwise equal, the one with the lower RTT scores
//! higher. Without a GeoIP database, RTT bands ([`RttBand`]) stand in for distance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const W_RTT: f64 = 0.25;
const W_UPTIME: f64 = 0.30;
const W_AVAILABILITY: f64 = 0.30;
const W_DIVERSITY: f64 = 0.15;

/// The RTT at which the `rtt` component is one half.
const RTT_HALF: f64 = 50.0;
/// Answers at which `availability` is one half.
const USEFUL_HALF: f64 = 16.0;
/// Time connected, in total, for full marks on that half of `uptime`.
const UPTIME_FULL: f64 = 3600.0;
const PENALTY_PER_BAD: f64 = 0.2;

/// What a score is computed from.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub rtt: Option<Duration>,
    pub dials_ok: u32,
    pub dials_failed: u32,
    /// Time connected in total, the current connection included.
    pub connected: Duration,
    pub useful: u64,
    pub bad_data: u32,
    /// Connected peers in its network group, itself included (0 when not connected).
    pub group_peers: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub total: f64,
    pub rtt: f64,
    pub uptime: f64,
    pub availability: f64,
    pub diversity: f64,
    pub penalty: f64,
}

impl Score {
    pub fn of(i: &Inputs) -> Score {
        let rtt = i
            .rtt
            .map_or(0.5, |d| RTT_HALF / (RTT_HALF + d.as_secs_f64() * 1e3));
        // Laplace's rule: a peer never dialed counts as reachable half the time.
        let reliability = (f64::from(i.dials_ok) + 1.0)
            / (f64::from(i.dials_ok) + f64::from(i.dials_failed) + 2.0);
        let time = (i.connected.as_secs_f64() / UPTIME_FULL).min(1.0);
        let uptime = 0.5 * reliability + 0.5 * time;
        let useful = i.useful as f64;
        let availability = useful / (useful + USEFUL_HALF);
        // Diversity is a property of the connected set: a peer not connected adds none.
        let diversity = match i.group_peers {
            0 => 0.0,
            n => 1.0 / n as f64,
        };
        let penalty = (f64::from(i.bad_data) * PENALTY_PER_BAD).min(1.0);
        let total = (W_RTT * rtt
            + W_UPTIME * uptime
            + W_AVAILABILITY * availability
            + W_DIVERSITY * diversity
            - penalty)
            .clamp(0.0, 1.0);
        Score {
            total: round(total),
            rtt: round(rtt),
            uptime: round(uptime),
            availability: round(availability),
            diversity: round(diversity),
            penalty: round(penalty),
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Distance told by round-trip time, for when no GeoIP database says where a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RttBand {
    /// Under 10 ms: the same city or data centre.
    Local,
    /// Under 50 ms: the same region.
    Regional,
    /// Under 150 ms: the same continent, or across one ocean.
    Continental,
    /// 150 ms or more.
    Distant,
    Unknown,
}

impl RttBand {
    pub fn of(rtt: Option<Duration>) -> RttBand {
        match rtt.map(|d| d.as_millis()) {
            None => RttBand::Unknown,
            Some(ms) if ms < 10 => RttBand::Local,
            Some(ms) if ms < 50 => RttBand::Regional,
            Some(ms) if ms < 150 => RttBand::Continental,
            Some(_) => RttBand::Distant,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RttBand::Local => "local",
            RttBand::Regional => "regional",
            RttBand::Continental => "continental",
            RttBand::Distant => "distant",
            RttBand::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_closer_peer_scores_higher_when_all_else_is_equal() {
        let near = Score::of(&Inputs {
            rtt: ms(5),
            ..Inputs::default()
        });
        let far = Score::of(&Inputs {
            rtt: ms(180),
            ..Inputs::default()
        });
        assert!(near.total > far.total, "{near:?} vs {far:?}");
        assert!(
            (Score::of(&Inputs {
                rtt: ms(50),
                ..Inputs::default()
            })
            .rtt - 0.5)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn useful_and_reliable_peers_score_higher_and_bad_data_costs() {
        let base = Inputs {
            rtt: ms(20),
            group_peers: 1,
            ..Inputs::default()
        };
        let useful = Inputs {
            useful: 40,
            ..base.clone()
        };
        let reliable = Inputs {
            dials_ok: 9,
            connected: Duration::from_secs(7200),
            ..base.clone()
        };
        let flaky = Inputs {
            dials_failed: 9,
            ..base.clone()
        };
        let liar = Inputs {
            useful: 40,
            bad_data: 3,
            ..base.clone()
        };
        let s = |i: &Inputs| Score::of(i).total;
        assert!(s(&useful) > s(&base));
        assert!(s(&reliable) > s(&base));
        assert!(s(&flaky) < s(&base));
        assert!(s(&liar) < s(&useful));
        assert!(
            Score::of(&Inputs {
                bad_data: 50,
                ..base
            })
            .total
                >= 0.0
        );
    }

    #[test]
    fn crowded_groups_lower_diversity() {
        let alone = Score::of(&Inputs {
            group_peers: 1,
            ..Inputs::default()
        });
        let crowded = Score::of(&Inputs {
            group_peers: 10,
            ..Inputs::default()
        });
        assert_eq!(alone.diversity, 1.0);
        assert!((crowded.diversity - 0.1).abs() < 1e-9);
        assert!(alone.total > crowded.total);
    }

    #[test]
    fn bands() {
        assert_eq!(RttBand::of(ms(3)), RttBand::Local);
        assert_eq!(RttBand::of(ms(30)), RttBand::Regional);
        assert_eq!(RttBand::of(ms(90)), RttBand::Continental);
        assert_eq!(RttBand::of(ms(300)), RttBand::Distant);
        assert_eq!(RttBand::of(None), RttBand::Unknown);
    }
}
