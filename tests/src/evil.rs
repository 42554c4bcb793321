//! The `evil-provider` helper binary, driven from tests: a provider that serves a true
//! manifest and corrupt chunks, and can publish a release manifest as is.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The `evil-provider` helper: a provider that serves a true manifest and corrupt
/// chunks, printing what it does as JSON lines into its log.
pub struct EvilProvider {
    pub peer_id: String,
    log: PathBuf,
    child: Child,
}

impl EvilProvider {
    /// Starts `exe` (the test's `CARGO_BIN_EXE_evil-provider`) for `file`, joining the
    /// DHT through `bootstrap` and connecting to `peers`, and waits for its start-up
    /// line. With `release` (a file, a gossipsub topic and a count), it also publishes
    /// that file on that topic, that many times, to every peer that joins it.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        file: &Path,
        bootstrap: &str,
        peers: &[&str],
        release: Option<(&Path, &str, usize)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("evil-provider.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(exe);
        cmd.arg("--file").arg(file).args(["--bootstrap", bootstrap]);
        for p in peers {
            cmd.args(["--dial", p]);
        }
        if let Some((file, topic, times)) = release {
            cmd.arg("--release")
                .arg(file)
                .args(["--release-topic", topic])
                .args(["--release-repeat", &times.to_string()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn evil-provider")?;
        let mut evil = EvilProvider {
            peer_id: String::new(),
            log,
            child,
        };
        let started = evil
            .wait_for(Duration::from_secs(30), "its start-up line", |e| {
                e["event"] == "started"
            })
            .await?;
        evil.peer_id = started["peer_id"].as_str().unwrap_or_default().to_string();
        Ok(evil)
    }

    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for an event matching `pred`, failing early if the process exits.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "evil-provider exited ({status}) before {what}\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "evil-provider: no {what} within {timeout:?}\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EvilProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
