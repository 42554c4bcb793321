//! A slowed clock, for simulations larger than one thread keeps up with.
//!
//! libp2p's own timers read the wall clock, and [`super::pace`] never lets simulated
//! time run ahead of it. When the simulator's one thread cannot keep up, simulated time
//! falls behind the wall clock, and those timers then expire early in simulated terms:
//! Kademlia gives up on requests the model would have answered, and lookups come out
//! wrong rather than slow.
//!
//! `sim --clock-speed F` runs the simulation in a child process whose clocks run at `F`
//! times the real pace: libfaketime, preloaded, answers every clock read of the process
//! (the standard library's `Instant` and `SystemTime` included) and stretches its sleeps
//! to match. Every timer, libp2p's and the simulator's, then agrees with the simulated
//! clock again as long as the thread keeps up with the slowed pace; the simulation takes
//! `1 / F` times longer in real time. The parent passes the child's output on, and adds
//! `clock_speed` and `real_s` (real seconds) to its last JSON line, whose `wall_s` is
//! then the slowed clock's.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Set in the child: the speed its clocks run at.
pub const SPEED_ENV: &str = "JANTAR_SIM_CLOCK_SPEED";
/// Where libfaketime is, when not in one of [`LIBFAKETIME`]'s places.
pub const LIB_ENV: &str = "JANTAR_LIBFAKETIME";

/// Where Debian's `faketime` package (and a build from source) puts the thread-safe
/// library.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
];

/// Checks a `--clock-speed` argument: a share of real time, above 0 and at most 1.
pub fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a number: {e}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "`{s}` is out of range: the clock can only be slowed (above 0, at most 1)"
        ))
    }
}

/// The speed this process's clocks were slowed to, when it is the child of
/// [`run_slowed`].
pub fn speed_in_effect() -> Option<f64> {
    std::env::var(SPEED_ENV).ok()?.parse().ok()
}

/// The library to preload: `$JANTAR_LIBFAKETIME`, or the first of the usual places.
pub fn libfaketime() -> Result<PathBuf> {
    find_library(std::env::var_os(LIB_ENV).map(PathBuf::from), LIBFAKETIME)
}

/// `given` if it is a file, else the first of `places` that is one.
fn find_library(given: Option<PathBuf>, places: &[&str]) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("{LIB_ENV}={}: no such file", p.display());
        }
        return Ok(p);
    }
    places
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "--clock-speed needs libfaketime (Debian: `apt install libfaketime`), or its \
                 path in {LIB_ENV}; looked in {}",
                places.join(", ")
            )
        })
}

/// Runs this program again with the same arguments, its clocks slowed to `speed`;
/// passes its output on, and adds `clock_speed` and `real_s` to its last line of JSON.
/// Fails when the child fails, or when its clock turns out not to have been slowed.
pub fn run_slowed(speed: f64) -> Result<()> {
    let lib = libfaketime()?;
    let exe = std::env::current_exe().context("finding this program to run it again")?;
    let mut preload = OsString::from(&lib);
    if let Some(other) = std::env::var_os("LD_PRELOAD") {
        preload.push(":");
        preload.push(other);
    }
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("LD_PRELOAD", preload)
        // Relative to the child's start, at `speed` times the real pace.
        .env("FAKETIME", format!("+0 x{speed}"))
        .env(SPEED_ENV, speed.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} under {}", exe.display(), lib.display()))?;
    let out = child.stdout.take().context("the child's output")?;
    let mut last: Option<String> = None;
    for line in BufReader::new(out).lines() {
        let line = line.context("reading the child's output")?;
        if let Some(prev) = last.replace(line) {
            println!("{prev}");
        }
    }
    let status = child.wait().context("waiting for the child")?;
    let real = start.elapsed().as_secs_f64();
    if !status.success() {
        if let Some(last) = last {
            println!("{last}");
        }
        bail!("the simulation failed ({status})");
    }
    let Some(last) = last else {
        bail!("the simulation printed nothing ({status})");
    };
    let Ok(Value::Object(mut report)) = serde_json::from_str::<Value>(&last) else {
        println!("{last}");
        return Ok(());
    };
    let slowed = report.get("wall_s").and_then(Value::as_f64);
    report.insert("clock_speed".into(), speed.into());
    report.insert("real_s".into(), real.round().into());
    println!("{}", Value::Object(report));
    check_slowed(slowed, real, speed, &lib)
}

/// The child's clock must have run near `speed` times the real pace: a child whose
/// clock was not slowed would report as much wall time as really passed, and its
/// figures would be those of an unslowed run.
fn check_slowed(slowed_s: Option<f64>, real_s: f64, speed: f64, lib: &Path) -> Result<()> {
    let Some(slowed_s) = slowed_s else {
        return Ok(());
    };
    // Start-up and shutdown run at the real pace, hence the allowance.
    if slowed_s > 2.0 * speed * real_s + 2.0 {
        bail!(
            "the clock was not slowed: the simulation's clock read {slowed_s:.0} s in {real_s:.0} s \
             of real time, at a speed of {speed} (is {} the thread-safe libfaketime?)",
            lib.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_speed_is_a_share_of_real_time() {
        assert_eq!(parse_speed("0.25"), Ok(0.25));
        assert_eq!(parse_speed("1"), Ok(1.0));
        for bad in ["0", "-0.5", "1.5", "fast", "NaN"] {
            let e = parse_speed(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_missing_library_is_named() {
        let e = find_library(Some("/nonexistent/libfaketimeMT.so.1".into()), LIBFAKETIME)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(LIB_ENV) && e.contains("/nonexistent/libfaketimeMT.so.1"),
            "{e}"
        );
        let e = find_library(None, &["/nonexistent/a.so", "/nonexistent/b.so"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs libfaketime") && e.contains("/nonexistent/b.so"),
            "{e}"
        );
        let here = std::env::current_exe().unwrap();
        let found = find_library(None, &["/nonexistent/a.so", here.to_str().unwrap()]).unwrap();
        assert_eq!(found, here);
    }

    #[test]
    fn a_clock_that_ran_at_the_real_pace_is_caught() {
        let lib = Path::new("/lib/x.so");
        // 100 s at a tenth of the pace read 10 s: slowed.
        assert!(check_slowed(Some(10.0), 100.0, 0.1, lib).is_ok());
        // It read 100 s: not slowed.
        let e = check_slowed(Some(100.0), 100.0, 0.1, lib).unwrap_err();
        assert!(e.to_string().contains("not slowed"), "{e}");
        // No figure to judge by.
        assert!(check_slowed(None, 100.0, 0.1, lib).is_ok());
    }
}
