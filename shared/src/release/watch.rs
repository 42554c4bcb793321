//! `jantar-peer release update-watch`: the old binary, watching a new version on trial
//! (see [`super::install`]). It stands down once the trial is confirmed; if the new
//! version exits first or is not ready in time, it records the rollback, stops it, and
//! runs the previous version in its place (under systemd it leaves the restart to the
//! unit).

use std::{
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use tracing::warn;

use super::install::{
    InstallError, Releases, TRIAL_ENV, WATCH_SLACK, WATCHER_ENV, io_err, roll_back,
};

/// How long a stopped version has to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `jantar-peer release update-watch`: waits for the version on trial (process `pid`) to
/// confirm; if it exits first or is not ready within `timeout`, stops it, rolls back,
/// and runs the previous binary with `args` (or, under systemd, leaves the restart to
/// the unit).
pub fn watch(
    releases: &Releases,
    pid: u32,
    sequence: u64,
    timeout: Duration,
    args: &[std::ffi::OsString],
) -> Result<(), InstallError> {
    let deadline = Instant::now() + timeout;
    let reason = loop {
        std::thread::sleep(Duration::from_millis(200));
        let state = releases.load()?;
        if state
            .trial
            .as_ref()
            .is_none_or(|t| t.binary.sequence != sequence)
        {
            return Ok(());
        }
        if !alive(pid) {
            break "it exited before it was ready".to_string();
        }
        if Instant::now() >= deadline {
            break format!(
                "it was not ready within {}",
                humantime::format_duration(timeout.saturating_sub(WATCH_SLACK))
            );
        }
    };
    let under_systemd = std::env::var_os("NOTIFY_SOCKET").is_some();
    // The rollback is recorded (and the previous binary put back) before the trial is
    // stopped: under systemd, stopping it ends the unit, this watcher with it.
    let previous = releases.update(|s| {
        let t = s.trial.take_if(|t| t.binary.sequence == sequence)?;
        warn!(version = %t.binary.version, sequence, %reason, "rolling back the new version");
        let previous = t.previous.clone();
        roll_back(s, t, &reason);
        Some(previous)
    })?;
    let Some(previous) = previous else {
        // Confirmed just now.
        return Ok(());
    };
    stop(pid, under_systemd);
    if under_systemd {
        // The unit restarts the service (it was killed), and the start finds the trial
        // rolled back.
        return Ok(());
    }
    let error = Command::new(&previous)
        .args(args)
        .env_remove(TRIAL_ENV)
        .env_remove(WATCHER_ENV)
        .exec();
    Err(io_err("cannot execute", &previous)(error))
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Stops `pid`: SIGKILL under systemd (an unclean end, so `Restart=on-failure` acts),
/// else SIGTERM and SIGKILL after [`STOP_GRACE`].
fn stop(pid: u32, kill: bool) {
    use nix::{sys::signal, unistd::Pid};
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid_t = Pid::from_raw(raw);
    if kill {
        let _ = signal::kill(pid_t, signal::Signal::SIGKILL);
        return;
    }
    let _ = signal::kill(pid_t, signal::Signal::SIGTERM);
    let until = Instant::now() + STOP_GRACE;
    while alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        let _ = signal::kill(pid_t, signal::Signal::SIGKILL);
    }
}
