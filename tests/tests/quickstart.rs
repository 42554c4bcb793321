//! The README's quickstart: `local-network` brings up a bootstrap node, a relay and two
//! peers, shares a file on one peer and fetches it on the other, sends a message, prints
//! the commands to try by hand, and stops every node cleanly.

use std::{process::Command, time::Duration};

use anyhow::{Result, ensure};
use jantar_tests::harness::output_within;

#[test]
fn local_network_shows_files_and_messages_and_stops_cleanly() -> Result<()> {
    let d = tempfile::tempdir()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_local-network"));
    cmd.args(["--exit-after", "1", "--dir"]).arg(d.path());
    // A failure's diagnosis (every node's log tail) is more than a pipe holds: the
    // output is read while it runs.
    let (out, _) = output_within(cmd, Duration::from_secs(300))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "local-network failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for want in [
        "holds a relay reservation",
        "connected to alice through the relay",
        "shares ",
        "fetched it from alice",
        "hello from alice",
        "alias alice=",
        "bob get ID",
        "stopped (exit status: 0)",
    ] {
        ensure!(
            stdout.contains(want),
            "local-network did not print {want:?}:\n{stdout}\n{stderr}"
        );
    }
    let fetched = std::fs::read(d.path().join("bob/downloads/holiday-photos.tar"))?;
    let shared = std::fs::read(d.path().join("alice/holiday-photos.tar"))?;
    ensure!(fetched == shared, "bob's copy differs from alice's");
    Ok(())
}
