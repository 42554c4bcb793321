//! `/metrics` is scraped without error by a real Prometheus server (Debian's), and
//! passes `promtool check metrics`.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use jantar_tests::harness::{Node, Role};
use serde_json::Value;

fn tool(name: &str) -> Result<std::path::PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{name} not found: install the `prometheus` package (./scripts/setup does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_metrics() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut node = Node::start(
        root.path(),
        "relay",
        Role::Relay,
        "network:\n  listen_addresses: [\"/ip4/127.0.0.1/tcp/0\"]\n  external_addresses: [\"/ip4/127.0.0.1/tcp/1\"]\n",
    )
    .await?;
    node.wait_ready(Duration::from_secs(30)).await?;

    // promtool's linter accepts the exposition as it is.
    let text = node.metrics().await?;
    let mut check = Command::new(tool("promtool")?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    check
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = check.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = root.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: jantar\n    static_configs:\n      - targets: [\"{}\"]\n",
            node.admin
        ),
    )?;
    let log = root.path().join("prometheus.log");
    let mut prom = Command::new(tool("prometheus")?)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            root.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let result = wait_for_scrape(port).await;
    let _ = prom.kill();
    let _ = prom.wait();
    if let Err(e) = &result {
        eprintln!(
            "{e:#}\n--- prometheus log:\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            node.diagnose().await
        );
    }
    let series = result?;
    for name in [
        "jantar_peers",
        "jantar_build_info",
        "jantar_nat_status",
        "jantar_relay_reservations",
    ] {
        ensure!(
            series.iter().any(|s| s == name),
            "{name} missing from {series:?}"
        );
    }
    Ok(())
}

/// Waits until the target is up with no scrape error; returns the `jantar_*` series names.
async fn wait_for_scrape(port: u16) -> Result<Vec<String>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer from Prometheus yet");
    loop {
        if Instant::now() > deadline {
            bail!("Prometheus did not scrape the node within 60s; last targets answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(r) = http.get(format!("{base}/targets")).send().await else {
            continue;
        };
        let v: Value = r.json().await?;
        last = v.to_string();
        let Some(t) = v["data"]["activeTargets"].get(0) else {
            continue;
        };
        if t["health"] != "up" {
            ensure!(
                t["lastError"].as_str().unwrap_or("").is_empty() || t["health"] == "unknown",
                "scrape failed: {t}"
            );
            continue;
        }
        let names: Value = http
            .get(format!("{base}/label/__name__/values"))
            .send()
            .await?
            .json()
            .await?;
        let series: Vec<String> = names["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .filter(|s| s.starts_with("jantar_"))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if !series.is_empty() {
            return Ok(series);
        }
    }
}
