//! Link conditions in the NAT lab: rate limits must take effect, and parts
//! the kernel cannot do (netem delay/loss on kernels without `sch_netem`) are
//! reported instead of failing.

use std::time::Duration;

use anyhow::{Result, ensure};
use jantar_tests::lab::{LinkBackend, LinkCondition, LinkDirection, NatKind, Prober, run_scenario};

const LIMIT: Duration = Duration::from_secs(120);
const SINK: u16 = 5201;
const RATE_KBIT: u32 = 1000;

fn prober() -> Prober {
    Prober::new(env!("CARGO_BIN_EXE_lab-probe"))
}

/// A 1 Mbit/s limit in both directions caps uploads and downloads of a
/// datacenter host near 1 Mbit/s, and clearing it restores full speed.
#[tokio::test]
async fn rate_limit_caps_both_directions() -> Result<()> {
    run_scenario("rate_limit", LIMIT, async |lab| {
        let prober = prober();
        let limited = lab.add_datacenter_host("limited").await?;
        let other = lab.add_datacenter_host("other").await?;
        let sink_other = prober.serve(&other, &[], &[], &[SINK]).await?;
        let sink_limited = prober.serve(&limited, &[], &[], &[SINK]).await?;
        let bulk = Duration::from_secs(30);

        let fast = prober
            .tcp_bulk(&limited, sink_other.addr(SINK), 4_000_000, bulk)
            .await?;
        ensure!(
            fast.kbit_per_s > 20 * u64::from(RATE_KBIT),
            "unlimited link is already slow: {fast:?}"
        );

        let report = limited
            .set_link_condition(
                LinkCondition::new().rate_kbit(RATE_KBIT),
                LinkDirection::Both,
            )
            .await?;
        ensure!(report.backend != LinkBackend::Unshaped, "{report:?}");
        ensure!(
            report.qdiscs.len() == 2,
            "expected both sides shaped: {report:?}"
        );
        ensure!(report.ignored.is_empty(), "{report:?}");

        // About two seconds of traffic at the limit.
        let bytes = u64::from(RATE_KBIT) * 1000 / 8 * 2;
        let up = prober
            .tcp_bulk(&limited, sink_other.addr(SINK), bytes, bulk)
            .await?;
        let down = prober
            .tcp_bulk(&other, sink_limited.addr(SINK), bytes, bulk)
            .await?;
        for (what, r) in [("upload", up), ("download", down)] {
            let ratio = r.kbit_per_s as f64 / f64::from(RATE_KBIT);
            ensure!(
                (0.5..=1.25).contains(&ratio),
                "{what} ran at {} kbit/s with a {RATE_KBIT} kbit/s limit ({r:?}; {report:?})",
                r.kbit_per_s
            );
        }

        limited.clear_link_condition().await?;
        let restored = prober
            .tcp_bulk(&limited, sink_other.addr(SINK), 4_000_000, bulk)
            .await?;
        ensure!(
            restored.kbit_per_s > 20 * u64::from(RATE_KBIT),
            "clearing the limit did not restore speed: {restored:?}"
        );
        Ok(())
    })
    .await
}

/// Delay and loss need netem. Without it the request still succeeds, the
/// report names what was ignored, and any rate in it is applied; with it,
/// patchbay installs netem.
#[tokio::test]
async fn netem_conditions_degrade_gracefully() -> Result<()> {
    run_scenario("netem_report", LIMIT, async |lab| {
        let host = lab.add_home_host(NatKind::Moderate, "peer").await?;
        let delay_loss = LinkCondition::new().latency_ms(40).loss_pct(1.0);
        let report = host
            .set_link_condition(delay_loss, LinkDirection::Both)
            .await?;
        if lab.link_capabilities().netem {
            ensure!(report.backend == LinkBackend::Netem, "{report:?}");
            ensure!(report.ignored.is_empty(), "{report:?}");
        } else {
            eprintln!("netem unavailable here: {}", lab.link_capabilities());
            ensure!(report.backend == LinkBackend::Unshaped, "{report:?}");
            ensure!(report.ignored == ["latency", "loss"], "{report:?}");
            let with_rate = host
                .set_link_condition(delay_loss.rate_kbit(500), LinkDirection::Egress)
                .await?;
            ensure!(with_rate.backend == LinkBackend::Tbf, "{with_rate:?}");
            ensure!(
                with_rate.qdiscs.len() == 1 && with_rate.qdiscs[0].contains("tbf"),
                "{with_rate:?}"
            );
        }
        host.clear_link_condition().await?;
        Ok(())
    })
    .await
}
