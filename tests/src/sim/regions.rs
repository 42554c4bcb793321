//! The region model: six regions and the round-trip times between them.
//!
//! Between regions, the average round trips measured between AWS regions (N. Virginia,
//! Oregon, Frankfurt, Tokyo, Singapore, São Paulo) as published in "Latency Between AWS
//! Global Regions" (2017, reproduced in `docs/scale.md` with its source), rounded to
//! the millisecond. Within a region, 20 ms: the round trip between neighbouring regions
//! of one continent in the same measurements (Ireland–Frankfurt 19.6 ms, N. California–
//! Oregon 19.5 ms), standing in for two home connections in one part of the world.

use std::time::Duration;

/// A region, an index into [`NAMES`].
pub type Region = u8;

pub const NAMES: [&str; 6] = [
    "us-east",
    "us-west",
    "eu-central",
    "ap-northeast",
    "ap-southeast",
    "sa-east",
];

pub const COUNT: usize = NAMES.len();

/// Round trip within a region, in milliseconds.
pub const WITHIN_REGION_MS: u32 = 20;

/// Round trips between regions in milliseconds, in the order of [`NAMES`].
const RTT_MS: [[u32; COUNT]; COUNT] = [
    // us-east us-west eu-central ap-northeast ap-southeast sa-east
    [0, 88, 89, 145, 217, 120],
    [88, 0, 160, 89, 161, 183],
    [89, 160, 0, 237, 326, 195],
    [145, 89, 237, 0, 74, 257],
    [217, 161, 326, 74, 0, 328],
    [120, 183, 195, 257, 328, 0],
];

/// The round trip between a host in `a` and one in `b`.
pub fn rtt(a: Region, b: Region) -> Duration {
    let ms = if a == b {
        WITHIN_REGION_MS
    } else {
        RTT_MS[usize::from(a)][usize::from(b)]
    };
    Duration::from_millis(u64::from(ms))
}

/// The median round trip between two hosts drawn uniformly from the regions (pairs in
/// one region included), the unit of the lookup-latency goal.
pub fn median_rtt() -> Duration {
    let mut all: Vec<Duration> = (0..COUNT as Region)
        .flat_map(|a| (0..COUNT as Region).map(move |b| rtt(a, b)))
        .collect();
    all.sort();
    all[all.len() / 2]
}

/// The region named `name`.
pub fn by_name(name: &str) -> Option<Region> {
    NAMES.iter().position(|n| *n == name).map(|i| i as Region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_positive() {
        for a in 0..COUNT as Region {
            for b in 0..COUNT as Region {
                assert_eq!(rtt(a, b), rtt(b, a));
                assert!(rtt(a, b) >= Duration::from_millis(20));
            }
        }
        assert_eq!(median_rtt(), Duration::from_millis(160));
        assert_eq!(by_name("eu-central"), Some(2));
    }
}
