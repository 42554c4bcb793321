//! A relay's bandwidth: circuits that pump as fast as they can through a real relay
//! ([`jantar_tests::circuit_pump`]). The relay's budget (`relay.max_bytes_per_second`
//! in total, `relay.circuit_bytes_per_second` per direction of a circuit) holds, the
//! greedy circuits share the total evenly, and a circuit that needs only a modest rate
//! still gets all of it.
//!
//! Rates are measured at the receiving end over several seconds; the bounds are checked
//! with room for the budget's burst (a quarter second) and for timing on a loaded
//! machine. Without a budget a loopback circuit moves tens of MiB per second, so the
//! bounds below are far from what an unbounded relay would show.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use jantar_tests::{
    circuit_pump::{Pace, Pump, Sink},
    harness::{LOOPBACK, Node, metric_sum, start_serving_relay},
};
use libp2p::Multiaddr;

use crate::memory_bounded;

const MIB: f64 = 1024.0 * 1024.0;
/// The relay's budget in this test.
const TOTAL: f64 = 2.0 * MIB;
const PER_CIRCUIT: f64 = 1.0 * MIB;
const SETUP: Duration = Duration::from_secs(20);
const MEASURE: Duration = Duration::from_secs(8);

async fn relay(root: &std::path::Path) -> Result<Node> {
    start_serving_relay(
        root,
        "relay",
        LOOPBACK,
        "",
        &format!(
            "  max_bytes_per_second: {}\n  circuit_bytes_per_second: {}\n  max_circuit_bytes: 1GiB\n  max_circuit_duration: 10m\n",
            TOTAL as u64, PER_CIRCUIT as u64
        ),
    )
    .await
}

/// Bytes per second each pump delivered to its sink over `MEASURE`.
async fn rates(pairs: &[(Sink, Pump)]) -> Vec<f64> {
    let start: Vec<u64> = pairs
        .iter()
        .map(|(s, p)| s.received_from(&p.peer_id))
        .collect();
    let t0 = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let secs = t0.elapsed().as_secs_f64();
    pairs
        .iter()
        .zip(start)
        .map(|((s, p), b)| (s.received_from(&p.peer_id) - b) as f64 / secs)
        .collect()
}

async fn pair(relay: &Multiaddr, pace: Pace) -> Result<(Sink, Pump)> {
    let sink = Sink::reserve(relay, SETUP).await?;
    let pump = Pump::start(relay, sink.peer_id, pace, SETUP).await?;
    Ok((sink, pump))
}

fn mib(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{:.2}", r / MIB))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn greedy_circuits_are_held_to_the_relay_budget_and_share_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = relay(dir.path()).await?;
    let before = relay.memory()?;
    let addr: Multiaddr = relay.addr().parse()?;

    // One greedy circuit alone: its own rate is the bound.
    let alone = vec![pair(&addr, Pace::Greedy).await?];
    let r = rates(&alone).await;
    eprintln!("one greedy circuit: {} MiB/s", mib(&r));
    ensure!(
        r[0] <= PER_CIRCUIT * 1.3 && r[0] >= PER_CIRCUIT * 0.5,
        "one circuit moved {} MiB/s; its rate is {} MiB/s\n{}",
        mib(&r),
        PER_CIRCUIT / MIB,
        relay.diagnose().await
    );
    drop(alone);

    // Four greedy circuits and one that needs 128 KiB/s: the total holds, the greedy
    // ones share evenly, the modest one gets its rate.
    let mut pairs = Vec::new();
    for _ in 0..4 {
        pairs.push(pair(&addr, Pace::Greedy).await?);
    }
    pairs.push(
        pair(
            &addr,
            Pace::Steady {
                bytes: 16 * 1024,
                every: Duration::from_millis(125),
            },
        )
        .await?,
    );
    // Let the modest circuit's writes settle into their pace.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = rates(&pairs).await;
    let (greedy, modest) = (&r[..4], r[4]);
    let total: f64 = r.iter().sum();
    eprintln!(
        "four greedy circuits: {} MiB/s; modest: {:.3} MiB/s; total {:.2} MiB/s (budget {:.2})",
        mib(greedy),
        modest / MIB,
        total / MIB,
        TOTAL / MIB
    );
    let diag = relay.diagnose().await;
    ensure!(
        total <= TOTAL * 1.3,
        "{:.2} MiB/s crossed a relay with a budget of {:.2} MiB/s\n{diag}",
        total / MIB,
        TOTAL / MIB
    );
    let (min, max) = greedy
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    ensure!(
        max <= min * 1.6,
        "greedy circuits did not share evenly: {} MiB/s\n{diag}",
        mib(greedy)
    );
    let wanted = 128.0 * 1024.0;
    ensure!(
        modest >= wanted * 0.8,
        "the modest circuit got {:.0} KiB/s of the {:.0} it needs\n{diag}",
        modest / 1024.0,
        wanted / 1024.0
    );
    let metrics = relay.metrics().await?;
    let waits = metric_sum(&metrics, "jantar_relay_budget_waits_total", &[]);
    ensure!(waits > 0.0, "no budget waits counted:\n{metrics}");
    memory_bounded(&relay, before)?;
    Ok(())
}
