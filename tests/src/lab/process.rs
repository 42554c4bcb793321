//! Processes spawned inside a lab host's network namespace.

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// How often waits poll the child and its log.
const POLL: Duration = Duration::from_millis(25);

/// Lines of log included in error messages.
const LOG_TAIL_LINES: usize = 30;

/// A command to run inside a lab host: program, arguments, environment,
/// working directory and the file that receives its stdout and stderr.
///
/// ```no_run
/// # use jantar_tests::lab::ProcessSpec;
/// let spec = ProcessSpec::new("/usr/local/bin/jantar-peer")
///     .args(["--listen", "/ip4/0.0.0.0/udp/4001/quic-v1"])
///     .env("RUST_LOG", "info")
///     .log_file("/tmp/peer-a.log");
/// ```
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) env_remove: Vec<OsString>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) log: Option<PathBuf>,
}

impl ProcessSpec {
    /// A spec for `program` with no arguments. The child inherits this
    /// process's environment unless [`env_clear`](Self::env_clear) is called.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            env_clear: false,
            cwd: None,
            log: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets several environment variables for the child.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Removes one inherited environment variable (for example `RUST_LOG`,
    /// which would override a node's configured log filter).
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Starts the child with an empty environment (plus [`env`](Self::env)).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sends stdout and stderr to `path` (created or truncated; parent
    /// directories are created). Without this the lab picks
    /// `<log dir>/<host>/<program>-<n>.log`.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// The program to run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Shell-like rendering of the command line, for messages.
    pub fn command_line(&self) -> String {
        let mut out = self.program.display().to_string();
        for arg in &self.args {
            out.push(' ');
            out.push_str(&arg.to_string_lossy());
        }
        out
    }

    pub(crate) fn to_command(&self, log: &Path) -> Result<std::process::Command> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create log directory {}", parent.display()))?;
        }
        let stdout = std::fs::File::create(log)
            .with_context(|| format!("create log file {}", log.display()))?;
        let stderr = stdout.try_clone().context("clone log file handle")?;
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if self.env_clear {
            cmd.env_clear();
        }
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        Ok(cmd)
    }
}

/// A process running inside a lab host. Killed (and reaped) when dropped.
pub struct LabProcess {
    host: String,
    command_line: String,
    log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl fmt::Debug for LabProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabProcess")
            .field("host", &self.host)
            .field("pid", &self.child.id())
            .field("command", &self.command_line)
            .field("log", &self.log)
            .field("status", &self.status)
            .finish()
    }
}

impl LabProcess {
    pub(crate) fn new(host: &str, spec: &ProcessSpec, log: PathBuf, child: Child) -> Self {
        Self {
            host: host.to_string(),
            command_line: spec.command_line(),
            log,
            child,
            status: None,
        }
    }

    /// Name of the host the process runs on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Process id (in the host's pid namespace, which is the lab's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file receiving stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written so far (lossy UTF-8).
    pub fn read_log(&self) -> String {
        read_lossy(&self.log)
    }

    /// Returns the exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("poll {}", self.describe()))?;
        }
        Ok(self.status)
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {limit:?}\n{}",
                    self.describe(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a log line contains `needle` and returns that line.
    ///
    /// Fails when `limit` passes first or when the process exits without
    /// having written such a line.
    pub async fn wait_for_log(&mut self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            // Check for exit before reading, so a line written just before
            // exit is still found.
            let exited = self.try_wait()?;
            if let Some(line) = self.read_log().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = exited {
                bail!(
                    "{} exited ({status}) before logging {needle:?}\n{}",
                    self.describe(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {needle:?} within {limit:?}\n{}",
                    self.describe(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit; kills it
    /// when it does not. Returns the exit status and how long the exit took.
    pub async fn terminate(&mut self, grace: Duration) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        if let Some(status) = self.try_wait()? {
            return Ok((status, Duration::ZERO));
        }
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(self.child.id()).context("process id out of range")?,
        );
        // The process may have exited since the check; wait() below settles it.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() >= grace {
                let tail = self.log_tail();
                self.kill()?;
                bail!(
                    "{} did not exit within {grace:?} of SIGTERM; killed\n{tail}",
                    self.describe()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills the process (SIGKILL) and reaps it. A process that already
    /// exited is left as is.
    pub fn kill(&mut self) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // The process may exit between the check and the kill; that race only
        // makes kill fail with "no such process", which wait() settles.
        let _ = self.child.kill();
        self.status = Some(
            self.child
                .wait()
                .with_context(|| format!("reap {}", self.describe()))?,
        );
        Ok(())
    }

    /// The last lines of the log, prefixed with the log path, for messages.
    pub fn log_tail(&self) -> String {
        let text = self.read_log();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        let mut out = format!("--- last lines of {} ---\n", self.log.display());
        for line in &lines[start..] {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    fn describe(&self) -> String {
        format!(
            "process {} on {} ({})",
            self.child.id(),
            self.host,
            self.command_line
        )
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
