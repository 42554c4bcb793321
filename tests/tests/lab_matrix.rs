//! The `lab matrix` command as a user runs it, with one trial: Moderate and
//! Strict peers over TCP and QUIC. Checks the printed matrix: a Moderate pair
//! punches through on both transports, any pair with a Strict peer stays
//! relayed, and no circuit dial fails. (`docs/nat-lab.md` records a full run.)
//!
//! Needs root; without it the test prints `SKIP <name>: <reason>` and passes.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use jantar_tests::lab::check_environment;

/// Both transports, one trial each (TCP waits out DCUtR on the Strict pairs).
const LIMIT: Duration = Duration::from_secs(300);

/// The matrix row for `transport dialer listener`: punched count, final
/// connection column.
fn row<'a>(out: &'a str, transport: &str, dialer: &str, listener: &str) -> Result<&'a str> {
    out.lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4 && f[0] == transport && f[1] == dialer && f[2] == listener
        })
        .with_context(|| format!("no row for {transport} {dialer} -> {listener} in:\n{out}"))
}

#[test]
fn lab_matrix_prints_the_expected_outcomes() -> Result<()> {
    if let Err(reason) = check_environment() {
        eprintln!("SKIP lab_matrix: {reason}");
        return Ok(());
    }
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args([
            "matrix",
            "--trials",
            "1",
            "--kinds",
            "moderate,strict",
            "--verbose",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the lab binary")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "lab matrix did not finish within {LIMIT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        status.success(),
        "lab matrix exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!("{stdout}");
    let diag = || format!("\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for transport in ["tcp", "quic"] {
        let r = row(&stdout, transport, "moderate", "moderate")?;
        ensure!(
            r.contains(" 1/1 ") && r.trim_end().ends_with("direct 1"),
            "{transport} moderate -> moderate did not punch through: {r}{}",
            diag()
        );
        for (d, l) in [
            ("moderate", "strict"),
            ("strict", "moderate"),
            ("strict", "strict"),
        ] {
            let r = row(&stdout, transport, d, l)?;
            ensure!(
                r.contains(" 0/1 ") && r.trim_end().ends_with("relayed 1"),
                "{transport} {d} -> {l} should stay relayed: {r}{}",
                diag()
            );
        }
    }
    eprintln!("lab matrix: {:?}", started.elapsed());
    Ok(())
}
