//! Command-line output ends quietly when its reader has gone (`jantar-peer id | head -1`):
//! no panic, no backtrace, nothing on stderr about the pipe, and the status of a tool
//! ended by SIGPIPE (141), for every subcommand that prints.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use jantar_tests::harness::{LoopbackNet, Role};

/// Runs `role args...` with standard output a pipe whose reading end is already closed,
/// so the first line it prints meets a closed pipe.
fn run_into_closed_pipe(role: Role, args: &[&str]) -> Result<Output> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    Command::new(role.path())
        .args(args)
        .env_remove("JANTAR_CONFIG")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run {} {args:?}", role.binary()))
}

fn assert_quiet(role: Role, args: &[&str]) -> Result<()> {
    let out = run_into_closed_pipe(role, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stderr.contains("panicked")
            && !stderr.contains("Broken pipe")
            && !stderr.contains("backtrace"),
        "{} {args:?} complained about the closed pipe:\n{stderr}",
        role.binary()
    );
    ensure!(
        out.status.code() == Some(141),
        "{} {args:?}: status {}, expected 141 (ended by a closed pipe)\n{stderr}",
        role.binary(),
        out.status
    );
    Ok(())
}

#[test]
fn node_subcommands_end_quietly_on_a_closed_pipe() -> Result<()> {
    let d = tempfile::tempdir()?;
    for role in [Role::Bootstrap, Role::Relay, Role::Peer] {
        let data = d.path().join(role.binary());
        let cfg = data.join("node.cfg");
        std::fs::create_dir_all(&data)?;
        std::fs::write(
            &cfg,
            format!(
                "data_dir: {}\nadmin: {{listen: \"127.0.0.1:1\"}}\n",
                data.display()
            ),
        )?;
        let cfg = cfg.to_str().context("path")?;
        let gen_dir = data.join("generated");
        let gen_dir = gen_dir.to_str().context("path")?;
        for args in [
            vec!["-c", cfg, "id"],
            vec!["-c", cfg, "--check"],
            // Nothing listens on port 1: "not ready" goes to the closed pipe, and the
            // failure is not turned into success.
            vec!["-c", cfg, "healthcheck"],
            vec!["generate", "completions", gen_dir],
            vec!["generate", "man", gen_dir],
        ] {
            assert_quiet(role, &args)?;
        }
        if role == Role::Peer {
            let key = data.join("release.key");
            assert_quiet(
                role,
                &["release", "keygen", "--out", key.to_str().context("path")?],
            )?;
        }
        // clap's own output: help and version end quietly too (clap reports the
        // closed pipe to us, and we exit without a word).
        for args in [["--help"], ["--version"]] {
            let out = run_into_closed_pipe(role, &args)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
                "{} {args:?}: {stderr}",
                role.binary()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_end_quietly_on_a_closed_pipe() -> Result<()> {
    let d = tempfile::tempdir()?;
    let net = LoopbackNet::start(d.path(), "", Duration::from_secs(30)).await?;
    let mut a = net.peer("a", "").await?;
    let b = net.peer("b", "").await?;
    // `send` needs a peer subscribed to messages: wait until one is.
    a.wait_until(
        Duration::from_secs(60),
        "a peer that receives messages",
        async |n| Ok(n.cli(&["send", "warm-up"])?.0.success()),
    )
    .await?;
    let file = d.path().join("shared.txt");
    std::fs::write(&file, b"closed pipe test\n")?;
    let id = a.share(&file)?;
    let out_path = d.path().join("fetched.txt");
    let cfg = a.dir.join("node.cfg");
    let cfg = cfg.to_str().context("path")?;
    let file = file.to_str().context("path")?;
    let out_path = out_path.to_str().context("path")?;
    let base = ["-c", cfg, "--admin-listen", &a.admin];
    for cmd in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["peers"],
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["send", "hello"],
        // The messages sent above are in the log, so there is output to lose.
        vec!["messages"],
        vec!["messages", "--json"],
        vec!["share", file],
    ] {
        let args: Vec<&str> = base.iter().copied().chain(cmd).collect();
        assert_quiet(Role::Peer, &args)?;
    }
    // `get` on the other peer: it waits for the fetch, then prints the path.
    let b_cfg = b.dir.join("node.cfg");
    let b_cfg = b_cfg.to_str().context("path")?;
    assert_quiet(
        Role::Peer,
        &[
            "-c",
            b_cfg,
            "--admin-listen",
            &b.admin,
            "get",
            &id,
            "-o",
            out_path,
        ],
    )?;
    let args: Vec<&str> = base.iter().copied().chain(["rm", id.as_str()]).collect();
    assert_quiet(Role::Peer, &args)?;
    ensure!(
        Path::new(out_path).exists(),
        "get wrote nothing even though only its output was lost"
    );
    Ok(())
}
