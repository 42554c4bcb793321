//! The simulated internet, small: every scenario of `sim` on 64 real nodes,
//! checking that it comes out right (lookups find the true closest peers, every peer
//! gets the message and the file, peers rejoin without bootstrap nodes, the network
//! heals after a partition). Timing is printed, never asserted.

use std::{process::Command, time::Duration};

use jantar_tests::{
    harness::output_within,
    sim::{self, Options, Sim},
};
use serde_json::Value;

/// The pace of the run's clocks, as a share of real time (`sim --clock-speed`): slow
/// enough that the simulator's one thread keeps up even on a busy machine, so libp2p's
/// wall-clock timers agree with simulated time (docs/scale.md). The run takes twice its
/// simulated time.
const CLOCK_SPEED: &str = "0.5";

/// Real-time limit of the whole run (the simulated clock cannot time itself out when
/// the machine is too busy to let it move).
const WALL_LIMIT: Duration = Duration::from_secs(25 * 60);

/// Runs `sim --scenario all` on `nodes` nodes with its clocks slowed; its last line of
/// JSON. On failure, prints everything the simulator wrote.
fn run_all(nodes: usize) -> Value {
    let n = nodes.to_string();
    let wave = (nodes - 3).to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sim"));
    cmd.args(["--nodes", &n, "--scenario", "all", "--wave", &wave])
        .args(["--lookups", "24", "--concurrency", "8"])
        .args(["--churn-window", "10s", "--churn-steps", "4"])
        .args(["--partition", "10s", "--settle", "10s"])
        .args(["--clock-speed", CLOCK_SPEED]);
    // In a process group of its own: the slowed child it starts goes with it on a
    // timeout.
    let (out, timed_out) = output_within(cmd, WALL_LIMIT).expect("running sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !timed_out,
        "simulation did not finish within {WALL_LIMIT:?}; its output:\n{all}"
    );
    assert!(
        out.status.success(),
        "simulation failed ({}); its output:\n{all}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("no report ({e}); its output:\n{all}"))
}

#[test]
fn a_small_internet_gets_every_scenario_right() {
    let nodes = 64;
    let report = run_all(nodes);
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

#[test]
fn a_slowed_run_that_fails_says_so() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sim"));
    cmd.args(["--scenario", "lookup", "--clock-speed", CLOCK_SPEED]);
    let (out, timed_out) = output_within(cmd, Duration::from_secs(60)).expect("running sim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!timed_out, "sim did not stop within 60 s: {stderr}");
    assert!(!out.status.success(), "a failed child must fail the run");
    assert!(stderr.contains("unknown scenario \"lookup\""), "{stderr}");
    assert!(stderr.contains("the simulation failed"), "{stderr}");
}
