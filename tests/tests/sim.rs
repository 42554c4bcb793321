//! The simulated internet, small: every scenario of `sim` on a few dozen real nodes,
//! checking that it comes out right (lookups find the true closest peers, every peer
//! gets the message and the file, peers rejoin without bootstrap nodes, the network
//! heals after a partition). Timing is printed, never asserted.

use std::{sync::mpsc, time::Duration};

use jantar_tests::sim::{self, Options, Sim};
use serde_json::Value;

/// Wall-clock limit of the whole run (the simulated clock cannot time itself out when
/// the machine is too busy to let it move).
const WALL_LIMIT: Duration = Duration::from_secs(20 * 60);

fn run_all(opts: Options) -> Value {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let report = rt.block_on(async move {
            let mut sim = Sim::new(opts)?;
            let report = sim::run(&mut sim, "all").await;
            sim.shutdown().await;
            report
        });
        let _ = tx.send(report.map_err(|e| format!("{e:#}")));
    });
    match rx.recv_timeout(WALL_LIMIT) {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => panic!("simulation failed: {e}"),
        Err(_) => panic!("simulation did not finish within {WALL_LIMIT:?} of wall time"),
    }
}

#[test]
fn a_small_internet_gets_every_scenario_right() {
    let nodes = 64;
    let report = run_all(Options {
        nodes,
        wave: 61,
        lookups: 24,
        concurrency: 8,
        churn_window: Duration::from_secs(10),
        churn_steps: 4,
        partition: Duration::from_secs(10),
        settle: Duration::from_secs(10),
        ..Options::default()
    });
    let pretty = serde_json::to_string_pretty(&report).unwrap_or_default();
    println!("{pretty}");
    let num = |path: &str| {
        report
            .pointer(&format!("/{}", path.replace('.', "/")))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("no figure {path} in the report:\n{pretty}"))
    };
    let check = |path: &str, want: f64| {
        assert_eq!(num(path), want, "{path}; report:\n{pretty}");
    };
    let peers = (nodes - 3) as f64;
    check("join.joined", peers);
    check("join.routing_table_at_least_k", 1.0);
    check("lookups.lookup_success", 1.0);
    check("gossip.delivered", 1.0);
    check("file.delivered", 1.0);
    check("partition.lookup_success", 1.0);
    check(
        "failover.one_bootstrap_joined",
        num("failover.one_bootstrap_new_peers"),
    );
    check(
        "failover.no_bootstrap_rejoined",
        num("failover.no_bootstrap_restarted"),
    );
    check("churn.new_not_joined", 0.0);
    // With departed nodes in the network, lookups miss some of the true closest peers
    // (docs/scale.md: the goal of 100% under churn is not reached yet). Here they must
    // run to the end; how much they find is printed above.
    for path in [
        "failover.one_bootstrap_lookups",
        "failover.lookups",
        "churn.lookups",
    ] {
        assert!(num(path) >= 5.0, "{path}; report:\n{pretty}");
    }
    // While two regions are cut apart, lookups from one of them cannot reach the
    // other's peers: if they all succeeded, the cut did not happen.
    assert!(
        num("partition.during_lookup_success") < 1.0,
        "lookups across the cut succeeded; report:\n{pretty}"
    );
}

#[tokio::test]
async fn an_unknown_scenario_is_named_before_anything_starts() {
    let mut sim = Sim::new(Options::default()).expect("sim");
    let e = sim::run(&mut sim, "lookup")
        .await
        .expect_err("no such scenario")
        .to_string();
    assert!(e.contains("unknown scenario \"lookup\""), "{e}");
    assert!(e.contains("lookups"), "{e}");
    assert!(sim.nodes.is_empty(), "nodes started for nothing");
}
