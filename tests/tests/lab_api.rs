//! The lab's general-purpose API: spawning arbitrary commands in a host's
//! namespace, addressing, and rule dumps.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use jantar_tests::lab::{NatKind, ProcessSpec, RouterRole, run_scenario};

const LIMIT: Duration = Duration::from_secs(60);

/// A spawned command runs in the host's namespace (it sees the host's
/// address), gets its arguments and environment, writes to the chosen log
/// file, and is killed when its handle is dropped.
#[tokio::test]
async fn spawned_command_runs_inside_the_host() -> Result<()> {
    run_scenario("spawn_api", LIMIT, async |lab| {
        let host = lab.add_home_host(NatKind::Moderate, "peerA").await?;
        let log = lab.log_dir().join("custom").join("addr.log");
        let script = "ip -4 -o addr show; echo \"arg=$1 env=$LAB_TEST_VALUE\"";
        let mut proc = host.spawn(
            ProcessSpec::new("/bin/sh")
                .args(["-c", script, "sh", "first"])
                .env("LAB_TEST_VALUE", "42")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .log_file(&log),
        )?;
        let status = proc.wait(Duration::from_secs(10)).await?;
        ensure!(status.success(), "{status}\n{}", proc.log_tail());
        let out = std::fs::read_to_string(&log).context("read log")?;
        ensure!(
            out.contains(&format!("inet {}/", host.ip())),
            "host address {} not visible inside the namespace:\n{out}",
            host.ip()
        );
        ensure!(out.contains("arg=first env=42"), "{out}");
        ensure!(
            !out.contains("inet 198.18."),
            "a home host sees a public address:\n{out}"
        );

        let mut sleeper =
            host.spawn(ProcessSpec::new("/bin/sh").args(["-c", "echo started; exec sleep 600"]))?;
        sleeper
            .wait_for_log("started", Duration::from_secs(10))
            .await?;
        let pid = sleeper.pid();
        ensure!(sleeper.try_wait()?.is_none(), "sleeper exited early");
        drop(sleeper);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        ensure!(
            stat.is_empty(),
            "process {pid} still exists after its handle was dropped: {stat}"
        );
        Ok(())
    })
    .await
}

/// `dump_rules` returns every router's nft ruleset, which shows the NAT and
/// firewall configuration of each kind.
#[tokio::test]
async fn dump_rules_shows_each_router() -> Result<()> {
    run_scenario("dump_rules", LIMIT, async |lab| {
        lab.add_home_host(NatKind::Moderate, "m").await?;
        lab.add_home_host(NatKind::Corporate, "c").await?;
        lab.add_home_host(NatKind::Cgnat, "g").await?;
        let rules = lab.dump_rules().await;
        let names: Vec<&str> = rules.iter().map(|r| r.router.as_str()).collect();
        ensure!(
            names == ["dc", "m-gw", "c-gw", "g-gw-carrier", "g-gw"],
            "routers: {names:?}"
        );
        for r in &rules {
            let text = r.ruleset.as_deref().map_err(|e| anyhow::anyhow!("{e}"))?;
            match r.role {
                RouterRole::Datacenter => ensure!(!text.contains("nat"), "{text}"),
                RouterRole::Home(NatKind::Moderate) | RouterRole::Carrier => {
                    ensure!(text.contains("map fullcone"), "{}: {text}", r.router);
                }
                RouterRole::Home(NatKind::Corporate) => {
                    ensure!(text.contains("masquerade random"), "{text}");
                    ensure!(text.contains("tcp dport { 80, 443 } accept"), "{text}");
                    ensure!(text.contains("meta l4proto udp drop"), "{text}");
                }
                _ => {}
            }
        }
        let text = lab.dump_rules_text().await;
        ensure!(text.contains("===== nft ruleset of router c-gw"), "{text}");
        Ok(())
    })
    .await
}
