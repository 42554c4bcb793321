//! Applying a verified release: staging its binary, handing over to it, confirming it
//! once the node is ready, and rolling back one that is not.
//!
//! Everything lives in `<data_dir>/releases/`:
//!
//! | file | what |
//! |---|---|
//! | `newest.json` | the newest manifest this node verified (its sequence is the floor for replays) |
//! | `state.json` | the [`State`]: the staged binary that runs, a version on trial, what was applied and rolled back |
//! | `<sequence>-<version>/jantar-peer` | a staged binary (mode 0755) |
//!
//! Applying (see [`apply`]) goes in three steps. The running node shuts down, records a
//! [`Trial`], starts a watcher (`jantar-peer release update-watch`, the old binary) and executes
//! the new binary in its place, with the same arguments and process id. The new binary
//! confirms the trial once its node is ready ([`confirm`]). If it exits first, or is not
//! ready within `update.ready_timeout`, the watcher stops it, puts the previous binary
//! back and runs it ([`super::watch`]); under systemd it leaves that to the unit's
//! `Restart=on-failure`, and the next start finds the trial rolled back ([`at_start`]).
//!
//! The two ways a binary is put in place (`update.method`):
//! - `replace`: the installed binary is replaced atomically, the old one kept beside it
//!   as `<name>.previous` (a user's own install, `cargo install`);
//! - `stage`: the installed binary stays as it is (a read-only `/usr` under the system
//!   unit); each start hands over to the newest confirmed staged binary, unless the
//!   installed one is as new (a package upgrade wins).

use std::{
    fs::{self, File},
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Manifest;
use crate::{
    atomic::{self, Existing},
    config::UpdateMethod,
};

/// Set for a new version on trial: the sequence it was applied as.
pub const TRIAL_ENV: &str = "JANTAR_UPDATE_TRIAL";
/// Set when the installed binary hands over to a staged one: the installed binary's
/// path (a package upgrade replaces it, and wins over older staged ones).
pub const INSTALLED_ENV: &str = "JANTAR_INSTALLED_EXE";
/// Set for a new version on trial: the process id of its watcher, a child of the
/// process, which the new version reaps once it stands down.
pub const WATCHER_ENV: &str = "JANTAR_UPDATE_WATCHER";
/// Rolled-back releases remembered.
const MAX_ROLLED_BACK: usize = 16;
/// How long the watcher waits beyond `ready_timeout` for a version that is starting.
pub(super) const WATCH_SLACK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what} {path}: {error}")]
    Io {
        what: &'static str,
        path: String,
        error: io::Error,
    },
    #[error("{path} is not a release state file: {error}")]
    BadState { path: String, error: String },
    #[error("release {version} (sequence {sequence}) is not newer than the running {running}")]
    NotNewer {
        version: String,
        sequence: u64,
        running: String,
    },
}

pub(super) fn io_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> InstallError + use<> {
    let path = path.display().to_string();
    move |error| InstallError::Io { what, path, error }
}

/// A release's binary, where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binary {
    pub version: String,
    pub sequence: u64,
    pub path: PathBuf,
}

/// A new version that has not yet confirmed it is ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub binary: Binary,
    /// What runs again if it fails.
    pub previous: PathBuf,
    /// The installed binary it replaced (`replace`), restored from
    /// `<name>.previous` on a rollback.
    pub replaced: Option<PathBuf>,
    /// Unix seconds.
    pub started: u64,
}

/// What `state.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The confirmed staged binary that runs instead of the installed one (`stage`).
    pub active: Option<Binary>,
    pub trial: Option<Trial>,
    /// The highest sequence applied, confirmed or rolled back: never applied again.
    pub applied: Option<u64>,
    /// Releases rolled back, newest last.
    pub rolled_back: Vec<Binary>,
    /// Why the last rollback happened.
    pub rollback_reason: Option<String>,
}

/// `<data_dir>/releases/`.
#[derive(Clone, Debug)]
pub struct Releases {
    dir: PathBuf,
}

impl Releases {
    pub fn new(data_dir: &Path) -> Self {
        Releases {
            dir: data_dir.join("releases"),
        }
    }

    /// The releases directory itself (the watcher is given it).
    pub fn at(dir: PathBuf) -> Self {
        Releases { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn ensure_dir(&self) -> Result<(), InstallError> {
        make_dir(&self.dir)
    }

    /// Runs `f` on the state under an exclusive lock (the node and the watcher both
    /// change it) and saves what it returns.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, InstallError> {
        self.ensure_dir()?;
        let lock_path = self.dir.join("state.lock");
        let lock = File::create(&lock_path).map_err(io_err("cannot open", &lock_path))?;
        lock.lock().map_err(io_err("cannot lock", &lock_path))?;
        let mut state = self.load()?;
        let before = state.clone();
        let out = f(&mut state);
        if state != before {
            let path = self.state_path();
            let bytes = serde_json::to_vec_pretty(&state).unwrap_or_default();
            atomic::write(&path, &bytes, 0o600, Existing::Replace)
                .map_err(io_err("cannot write", &path))?;
        }
        Ok(out)
    }

    /// The state; none yet is the default state.
    pub fn load(&self) -> Result<State, InstallError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| InstallError::BadState {
                path: path.display().to_string(),
                error: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// The newest verified manifest, as it was signed.
    pub fn newest(&self) -> Option<Vec<u8>> {
        fs::read(self.dir.join("newest.json")).ok()
    }

    pub fn save_newest(&self, bytes: &[u8]) -> Result<(), InstallError> {
        self.ensure_dir()?;
        let path = self.dir.join("newest.json");
        atomic::write(&path, bytes, 0o644, Existing::Replace).map_err(io_err("cannot write", &path))
    }

    /// Where the artifact of `manifest` is fetched to (inside the releases directory,
    /// so a user's downloads never hold it).
    pub fn incoming(&self, manifest: &Manifest) -> Result<PathBuf, InstallError> {
        let dir = self.dir.join("incoming");
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        Ok(dir.join(format!("{}-{}", manifest.sequence, manifest.version)))
    }

    /// Copies a fetched and verified artifact to `<sequence>-<version>/jantar-peer`
    /// (mode 0755). A staged binary already there is kept: it came from the same
    /// verified manifest.
    pub fn stage(&self, manifest: &Manifest, fetched: &Path) -> Result<Binary, InstallError> {
        let dir = self
            .dir
            .join(format!("{}-{}", manifest.sequence, manifest.version));
        self.ensure_dir()?;
        make_dir(&dir)?;
        let path = dir.join("jantar-peer");
        if !path.exists() {
            atomic::copy(fetched, &path, 0o755, Existing::Keep)
                .map_err(io_err("cannot stage", &path))?;
        }
        Ok(Binary {
            version: manifest.version.clone(),
            sequence: manifest.sequence,
            path,
        })
    }

    /// Removes staged releases but the newest `keep` (by sequence) and any of
    /// `also`'s.
    pub fn prune(&self, keep: usize, also: &[&Path]) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut staged: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let (seq, _) = name.to_str()?.split_once('-')?;
                Some((seq.parse::<u64>().ok()?, e.path()))
            })
            .filter(|(_, dir)| dir.is_dir())
            .collect();
        staged.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        for (_, dir) in staged.into_iter().skip(keep) {
            if also.iter().any(|a| a.starts_with(&dir)) {
                continue;
            }
            if let Err(error) = fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), %error, "cannot remove an old staged release");
            }
        }
    }
}

/// Whether version `a` is newer than `b` (semantic versions; anything else is never
/// newer).
pub fn newer(a: &str, b: &str) -> bool {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}

/// Creates `dir` (and its parents) and makes it writable by its owner alone, whatever
/// the umask: [`runnable`] runs nothing from a directory others may write.
fn make_dir(dir: &Path) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_err("cannot set the permissions of", dir))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a starting `jantar-peer run` does.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Run this binary's node; `trial` when it is a new version to confirm.
    Run { trial: Option<u64> },
    /// Hand over to a confirmed staged binary.
    Exec(Binary),
}

/// Decides what a starting node runs: a version on trial runs (and confirms once
/// ready); a trial that ended without confirming is rolled back; a newer confirmed
/// staged binary is handed over to.
pub fn at_start(
    releases: &Releases,
    me: &Path,
    version: &str,
    trial_env: Option<u64>,
) -> Result<Start, InstallError> {
    if let Some(seq) = trial_env {
        let state = releases.load()?;
        if state
            .trial
            .as_ref()
            .is_some_and(|t| t.binary.sequence == seq)
        {
            return Ok(Start::Run { trial: Some(seq) });
        }
        // The watcher rolled it back already.
        return Ok(Start::Run { trial: None });
    }
    releases.update(|s| {
        if let Some(t) = s.trial.take() {
            warn!(
                version = %t.binary.version,
                sequence = t.binary.sequence,
                "the new version stopped before it was ready; rolling back"
            );
            roll_back(s, t, "it stopped before it was ready");
        }
        match &s.active {
            Some(a) if hands_over_to(a, me, version) => Start::Exec(a.clone()),
            Some(a) if a.path != me => {
                // The installed binary is as new (a package upgrade), or the staged
                // one is gone.
                info!(staged = %a.version, installed = version, "running the installed binary");
                s.active = None;
                Start::Run { trial: None }
            }
            _ => Start::Run { trial: None },
        }
    })
}

/// The confirmed staged release a start hands over to, without changing any state: for
/// `--check` and for a config this binary refuses (a newer release may know its keys).
/// `None` while a trial is open: only starting the node settles that ([`at_start`]).
pub fn staged_newer(releases: &Releases, me: &Path, version: &str) -> Option<Binary> {
    let s = releases.load().ok()?;
    if s.trial.is_some() {
        return None;
    }
    s.active.filter(|a| hands_over_to(a, me, version))
}

/// Whether a start of `me` (running `version`) hands over to the confirmed staged
/// binary `a`: another binary, newer, and still there.
fn hands_over_to(a: &Binary, me: &Path, version: &str) -> bool {
    a.path != me && newer(&a.version, version) && a.path.exists()
}

/// Whether this process may run the staged binary `b`: it must lie inside this node's
/// releases directory, and that directory, the state file, the binary and every
/// directory between must belong to this process's user and be writable by no one else.
/// What another user could have written is never run: root checking a peer's config
/// does not run what the peer's own (dynamic) user staged.
pub fn runnable(releases: &Releases, b: &Binary) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let canonical = |p: &Path| fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()));
    let dir = canonical(releases.dir())?;
    let path = canonical(&b.path)?;
    if !path.starts_with(&dir) || path == dir {
        return Err(format!(
            "{} is not inside {}",
            path.display(),
            dir.display()
        ));
    }
    let state = releases.state_path();
    let mut checked: Vec<&Path> = path
        .ancestors()
        .take_while(|a| a.starts_with(&dir))
        .collect();
    if state.exists() {
        checked.push(&state);
    }
    for p in checked {
        let m = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if m.uid() != euid {
            return Err(format!(
                "{} belongs to uid {}, not to this process's uid {euid}",
                p.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} may be written by other users (mode {:o})",
                p.display(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Records `t` as rolled back (and restores the binary it replaced).
pub(super) fn roll_back(s: &mut State, t: Trial, reason: &str) {
    if let Some(installed) = &t.replaced {
        let previous = previous_of(installed);
        if let Err(error) = atomic::copy(&previous, installed, 0o755, Existing::Replace) {
            warn!(installed = %installed.display(), %error, "cannot restore the previous binary");
        }
    }
    s.applied = Some(s.applied.unwrap_or(0).max(t.binary.sequence));
    s.rolled_back.push(t.binary);
    let excess = s.rolled_back.len().saturating_sub(MAX_ROLLED_BACK);
    s.rolled_back.drain(..excess);
    s.rollback_reason = Some(reason.into());
}

fn previous_of(installed: &Path) -> PathBuf {
    let mut name = installed.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    installed.with_file_name(name)
}

/// Marks the trial of `sequence` confirmed: its node became ready. Returns the binary
/// now running.
pub fn confirm(releases: &Releases, sequence: u64) -> Result<Option<Binary>, InstallError> {
    releases.update(|s| {
        let t = s.trial.take_if(|t| t.binary.sequence == sequence)?;
        s.applied = Some(s.applied.unwrap_or(0).max(sequence));
        // A replaced binary is the installed one now; a staged one runs from the
        // releases directory from now on.
        s.active = t.replaced.is_none().then(|| t.binary.clone());
        Some(t.binary)
    })
}

/// Reaps the watcher of this process's trial (a child it inherited with the process)
/// once it has stood down, on a thread of its own: it exits within a poll of the
/// confirmation.
pub fn reap_watcher() {
    let Some(pid) = std::env::var(WATCHER_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("update-watcher-reaper".into())
        .spawn(move || {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        });
}

/// How applying a staged release goes on from the running process.
#[derive(Debug)]
pub struct Handover {
    /// The binary this process runs as (its installed path, or a staged one).
    pub me: PathBuf,
    /// The installed binary (differs from `me` when a staged one runs).
    pub installed: PathBuf,
    /// The arguments the process was started with (after the program name).
    pub args: Vec<std::ffi::OsString>,
}

impl Handover {
    /// This process's.
    pub fn current() -> io::Result<Self> {
        // A binary replaced under the running process (a package upgrade) shows as
        // "<path> (deleted)"; the path itself holds the binary to run now.
        let me = std::env::current_exe()?;
        let me = match me.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(p) => PathBuf::from(p),
            None => me,
        };
        let installed = std::env::var_os(INSTALLED_ENV).map_or_else(|| me.clone(), PathBuf::from);
        Ok(Handover {
            me,
            installed,
            args: std::env::args_os().skip(1).collect(),
        })
    }

    /// Runs the confirmed staged release `b` in this process's place, with the same
    /// arguments; returns only when it cannot.
    pub fn exec_staged(&self, b: &Binary) -> io::Error {
        Command::new(&b.path)
            .args(&self.args)
            .env(INSTALLED_ENV, &self.installed)
            .env_remove(TRIAL_ENV)
            .exec()
    }
}

/// The installed binary that handed over to this process, when this process is a
/// staged release.
pub fn running_staged() -> Option<PathBuf> {
    std::env::var_os(INSTALLED_ENV).map(PathBuf::from)
}

/// `auto`: replace when the installed binary's directory takes a new file.
fn method_for(method: UpdateMethod, installed: &Path) -> UpdateMethod {
    match method {
        UpdateMethod::Auto => {
            let dir = installed.parent().unwrap_or(Path::new("."));
            if tempfile::tempfile_in(dir).is_ok() {
                UpdateMethod::Replace
            } else {
                UpdateMethod::Stage
            }
        }
        m => m,
    }
}

/// Applies `staged` (the node has shut down): records the trial, starts the watcher and
/// executes the new version in this process's place. Returns only on failure, with the
/// trial rolled back.
pub fn apply(
    releases: &Releases,
    staged: &Binary,
    method: UpdateMethod,
    ready_timeout: Duration,
    h: &Handover,
) -> InstallError {
    match try_apply(releases, staged, method, ready_timeout, h) {
        Ok(e) | Err(e) => {
            let _ = releases.update(|s| {
                if let Some(t) = s.trial.take_if(|t| t.binary.sequence == staged.sequence) {
                    roll_back(s, t, &e.to_string());
                }
            });
            e
        }
    }
}

fn try_apply(
    releases: &Releases,
    staged: &Binary,
    method: UpdateMethod,
    ready_timeout: Duration,
    h: &Handover,
) -> Result<InstallError, InstallError> {
    let trial = match method_for(method, &h.installed) {
        UpdateMethod::Replace => {
            let previous = previous_of(&h.installed);
            atomic::copy(&h.me, &previous, 0o755, Existing::Replace)
                .map_err(io_err("cannot keep the previous binary as", &previous))?;
            atomic::copy(&staged.path, &h.installed, 0o755, Existing::Replace)
                .map_err(io_err("cannot replace", &h.installed))?;
            Trial {
                binary: Binary {
                    path: h.installed.clone(),
                    ..staged.clone()
                },
                previous: h.installed.clone(),
                replaced: Some(h.installed.clone()),
                started: now_secs(),
            }
        }
        _ => Trial {
            binary: staged.clone(),
            previous: h.me.clone(),
            replaced: None,
            started: now_secs(),
        },
    };
    let sequence = trial.binary.sequence;
    let run = trial.binary.path.clone();
    // The watcher runs the old binary (for `replace`, its copy kept aside).
    let watcher = match &trial.replaced {
        Some(installed) => previous_of(installed),
        None => h.me.clone(),
    };
    releases.update(|s| s.trial = Some(trial))?;
    let pid = std::process::id();
    let watcher_process = Command::new(&watcher)
        .args(["release", "update-watch"])
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--sequence")
        .arg(sequence.to_string())
        .arg("--releases")
        .arg(releases.dir())
        .arg("--timeout")
        .arg(humantime::format_duration(ready_timeout + WATCH_SLACK).to_string())
        .arg("--")
        .args(&h.args)
        .env_remove(TRIAL_ENV)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(io_err("cannot start the update watcher", &watcher))?;
    info!(version = %staged.version, sequence, binary = %run.display(), "running the new version");
    let error = Command::new(&run)
        .args(&h.args)
        .env(TRIAL_ENV, sequence.to_string())
        .env(INSTALLED_ENV, &h.installed)
        .env(WATCHER_ENV, watcher_process.id().to_string())
        .exec();
    Ok(io_err("cannot execute", &run)(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(seq: u64, version: &str, path: &Path) -> Binary {
        Binary {
            version: version.into(),
            sequence: seq,
            path: path.into(),
        }
    }

    #[test]
    fn versions_compare_as_semver() {
        assert!(newer("0.10.0", "0.9.1"));
        assert!(newer("1.0.0", "1.0.0-rc.1"));
        assert!(!newer("0.2.0", "0.2.0"));
        assert!(!newer("garbage", "0.1.0"));
    }

    #[test]
    fn a_confirmed_staged_binary_runs_until_the_installed_one_is_as_new() {
        let d = tempfile::tempdir().unwrap();
        let r = Releases::new(d.path());
        let staged = d.path().join("staged");
        fs::write(&staged, b"x").unwrap();
        let installed = d.path().join("installed");
        r.update(|s| {
            s.trial = Some(Trial {
                binary: binary(7, "0.2.0", &staged),
                previous: installed.clone(),
                replaced: None,
                started: 0,
            });
        })
        .unwrap();
        assert_eq!(
            confirm(&r, 6).unwrap(),
            None,
            "another trial's confirmation"
        );
        assert_eq!(
            staged_newer(&r, &installed, "0.1.0"),
            None,
            "a check never hands over to a version on trial"
        );
        assert_eq!(confirm(&r, 7).unwrap(), Some(binary(7, "0.2.0", &staged)));
        let s = r.load().unwrap();
        assert_eq!(s.applied, Some(7));
        assert_eq!(s.active, Some(binary(7, "0.2.0", &staged)));
        // The installed 0.1.0 hands over (a check too, which changes nothing); the
        // staged binary itself runs.
        let before = fs::read(r.dir().join("state.json")).unwrap();
        assert_eq!(
            staged_newer(&r, &installed, "0.1.0"),
            Some(binary(7, "0.2.0", &staged))
        );
        assert_eq!(staged_newer(&r, &staged, "0.2.0"), None);
        assert_eq!(staged_newer(&r, &installed, "0.2.0"), None);
        assert_eq!(fs::read(r.dir().join("state.json")).unwrap(), before);
        assert_eq!(
            at_start(&r, &installed, "0.1.0", None).unwrap(),
            Start::Exec(binary(7, "0.2.0", &staged))
        );
        assert_eq!(
            at_start(&r, &staged, "0.2.0", None).unwrap(),
            Start::Run { trial: None }
        );
        // A package upgrade to 0.2.0 or later wins, and the staged binary is forgotten.
        assert_eq!(
            at_start(&r, &installed, "0.2.0", None).unwrap(),
            Start::Run { trial: None }
        );
        assert_eq!(r.load().unwrap().active, None);
    }

    #[test]
    fn only_staged_binaries_no_other_user_could_write_are_run() {
        use std::os::unix::fs::{PermissionsExt, chown};
        let d = tempfile::tempdir().unwrap();
        let r = Releases::new(d.path());
        r.update(|_| ()).unwrap();
        let dir = r.dir().join("1-0.2.0");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(r.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let staged = dir.join("jantar-peer");
        fs::write(&staged, b"x").unwrap();
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
        let b = binary(1, "0.2.0", &staged);
        assert_eq!(runnable(&r, &b), Ok(()));

        fs::set_permissions(&staged, fs::Permissions::from_mode(0o777)).unwrap();
        let e = runnable(&r, &b).unwrap_err();
        assert!(
            e.contains("may be written by other users (mode 777)"),
            "{e}"
        );
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).unwrap();
        let e = runnable(&r, &b).unwrap_err();
        assert!(e.contains("1-0.2.0 may be written by other users"), "{e}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();

        // A state file pointing outside the releases directory.
        let outside = d.path().join("jantar-peer");
        fs::write(&outside, b"x").unwrap();
        let e = runnable(&r, &binary(1, "0.2.0", &outside)).unwrap_err();
        assert!(e.contains("is not inside"), "{e}");

        // Another user's binary (when this test may hand it to one).
        if nix::unistd::geteuid().is_root() {
            chown(&staged, Some(4242), None).unwrap();
            let e = runnable(&r, &b).unwrap_err();
            assert!(e.contains("belongs to uid 4242"), "{e}");
        }
    }

    #[test]
    fn a_trial_that_stopped_unconfirmed_is_rolled_back_and_its_binary_restored() {
        let d = tempfile::tempdir().unwrap();
        let r = Releases::new(d.path());
        let installed = d.path().join("jantar-peer");
        fs::write(&installed, b"new").unwrap();
        fs::write(previous_of(&installed), b"old").unwrap();
        r.update(|s| {
            s.trial = Some(Trial {
                binary: binary(9, "0.3.0", &installed),
                previous: installed.clone(),
                replaced: Some(installed.clone()),
                started: 0,
            });
        })
        .unwrap();
        // The trial itself runs, to confirm once ready.
        assert_eq!(
            at_start(&r, &installed, "0.3.0", Some(9)).unwrap(),
            Start::Run { trial: Some(9) }
        );
        // A plain start finds the trial unconfirmed: it stopped before it was ready.
        assert_eq!(
            at_start(&r, &installed, "0.3.0", None).unwrap(),
            Start::Run { trial: None }
        );
        assert_eq!(fs::read(&installed).unwrap(), b"old");
        let s = r.load().unwrap();
        assert_eq!(s.trial, None);
        assert_eq!(s.applied, Some(9));
        assert_eq!(s.rolled_back, vec![binary(9, "0.3.0", &installed)]);
        assert!(s.rollback_reason.unwrap().contains("before it was ready"));
    }

    #[test]
    fn staging_copies_executable_and_keeps_what_is_there() {
        let d = tempfile::tempdir().unwrap();
        let r = Releases::new(d.path());
        let fetched = d.path().join("fetched");
        fs::write(&fetched, b"binary").unwrap();
        let m = crate::release::manifest::tests_support::manifest(4, "0.2.0");
        let b = r.stage(&m, &fetched).unwrap();
        assert!(b.path.ends_with("releases/4-0.2.0/jantar-peer"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&b.path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(runnable(&r, &b), Ok(()));
        // Directories a permissive umask left writable by the group are tightened
        // when staged into again, so the staged binary can be run.
        let staged_dir = b.path.parent().unwrap();
        fs::set_permissions(staged_dir, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(runnable(&r, &b).is_err());
        fs::write(&fetched, b"other").unwrap();
        r.stage(&m, &fetched).unwrap();
        assert_eq!(fs::read(&b.path).unwrap(), b"binary");
        assert_eq!(runnable(&r, &b), Ok(()));
        let newer = r
            .stage(
                &crate::release::manifest::tests_support::manifest(5, "0.3.0"),
                &fetched,
            )
            .unwrap();
        r.prune(1, &[]);
        assert!(!b.path.exists());
        assert!(newer.path.exists());
        r.prune(0, &[&newer.path]);
        assert!(newer.path.exists(), "a path to keep was removed");
    }

    #[test]
    fn a_corrupt_state_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let r = Releases::new(d.path());
        fs::create_dir_all(r.dir()).unwrap();
        fs::write(r.dir().join("state.json"), b"{nope").unwrap();
        let e = r.load().unwrap_err().to_string();
        assert!(e.contains("state.json is not a release state file"), "{e}");
    }
}
