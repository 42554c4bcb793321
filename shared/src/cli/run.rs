//! `run`: a node and its admin endpoint, supervised until SIGTERM or SIGINT.
//!
//! The node's tasks (its event loop and the admin endpoint) are watched together: when
//! one ends on its own, by a panic or a bug, the others are stopped and the process
//! exits with status 1 and an error line naming the task and the cause, so that
//! systemd's `Restart=on-failure` and a container's health check act instead of a
//! half-dead process answering on its admin port.

use std::{os::unix::process::CommandExt, process::ExitCode, sync::Arc, time::Duration};

use libp2p::identity::Keypair;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::exit::{EXIT_CONFIG, EXIT_FAILURE, runtime};
use crate::{
    admin::{Access, Admin, AdminBindError, token::TokenError},
    config::{Config, Role, Warning},
    logging, metrics,
    node::{self, NodeError},
    release::install::{self, Binary, Handover, Releases, Start},
};

/// Errors that end a running node.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Admin(#[from] AdminBindError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// One of the node's tasks ended while the node was meant to run.
    #[error("the node's {task} task failed: {cause}")]
    TaskFailed { task: &'static str, cause: String },
}

/// Runs the node on `config` and returns the process's exit code.
pub(super) fn run_node(config: Config, warnings: Vec<Warning>, key: Keypair) -> ExitCode {
    let bin = config.role.binary();
    logging::init(&config.log);
    for w in &warnings {
        warn!("{w}");
    }
    hand_over(&config);
    let runtime = match runtime(bin, true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let update = config.update.clone();
    let releases = Releases::new(&config.data_dir);
    let result = runtime.block_on(run(Arc::new(config), key));
    // Background threads (DNS, interface watching) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::Apply(staged)) => {
            // Returns only when the new version could not be started; it is rolled back,
            // and this version starts again in its place.
            let e = match Handover::current() {
                Ok(h) => {
                    let e =
                        install::apply(&releases, &staged, update.method, update.ready_timeout, &h);
                    error!(error = %e, "cannot run the new version; running this one again");
                    let again = std::process::Command::new(&h.me)
                        .args(&h.args)
                        .env_remove(install::TRIAL_ENV)
                        .env_remove(install::WATCHER_ENV)
                        .env_remove(install::WATCHER_ENV)
                        .exec();
                    again.to_string()
                }
                Err(e) => e.to_string(),
            };
            error!(error = %e, "cannot restart");
            eprintln!("{bin}: cannot restart after an update: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e @ (RunError::Node(NodeError::Tls(_)) | RunError::Token(_))) => {
            error!(error = %e, "cannot start");
            eprintln!("{bin}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            error!(error = %e, "stopped with an error");
            eprintln!("{bin}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// How a node that ran without error ended.
#[derive(Debug)]
pub enum Outcome {
    /// SIGTERM or SIGINT.
    Stopped,
    /// A release was staged to run in this process's place.
    Apply(Binary),
}

/// Before the node starts: a peer hands over to a newer confirmed staged release, and a
/// version that stopped on trial is rolled back. (A version on trial runs; its node
/// confirms it once ready.)
fn hand_over(config: &Config) {
    let trial_env = std::env::var(install::TRIAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let releases = Releases::new(&config.data_dir);
    if config.role != Role::Peer || (trial_env.is_none() && !releases.dir().exists()) {
        return;
    }
    let h = match Handover::current() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot tell which binary runs; staged releases are not considered");
            return;
        }
    };
    match install::at_start(&releases, &h.me, crate::version::version(), trial_env) {
        Ok(Start::Run { .. }) => {}
        Ok(Start::Exec(b)) => {
            if let Err(why) = install::runnable(&releases, &b) {
                warn!(binary = %b.path.display(), reason = %why, "not running the staged release; running the installed binary");
                return;
            }
            info!(version = %b.version, binary = %b.path.display(), "running the staged release");
            let e = h.exec_staged(&b);
            warn!(binary = %b.path.display(), error = %e, "cannot run the staged release; running the installed binary");
        }
        Err(e) => warn!(error = %e, "release state unusable; running this binary"),
    }
}

/// `--check`, or a config this binary refuses: a peer with a newer confirmed staged
/// release hands over to it (it is what a start would run, and it may know keys this
/// binary does not). Returns when there is none, or it cannot be run.
pub(super) fn hand_over_to_check(role: Role, data_dir: &std::path::Path) {
    if role != Role::Peer
        || install::running_staged().is_some()
        || std::env::var_os(install::TRIAL_ENV).is_some()
    {
        return;
    }
    let Ok(h) = Handover::current() else {
        return;
    };
    let releases = Releases::new(data_dir);
    if let Some(b) = install::staged_newer(&releases, &h.me, crate::version::version()) {
        if let Err(why) = install::runnable(&releases, &b) {
            eprintln!(
                "{}: not handing over to the staged release {}: {why}; this binary checks the config",
                role.binary(),
                b.version
            );
            return;
        }
        let e = h.exec_staged(&b);
        eprintln!(
            "{}: cannot run the staged release {} ({e}); this binary checks the config",
            role.binary(),
            b.path.display()
        );
    }
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down within the grace period.
/// Returns [`RunError::TaskFailed`] when one of its tasks ends before that, and
/// [`Outcome::Apply`] when a staged release is to run in its place.
pub async fn run(config: Arc<Config>, key: Keypair) -> Result<Outcome, RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;

    let admin = match config.admin_listen {
        Some(addr) => {
            let access = match &config.admin_token {
                Some(t) => Access::new(t.clone(), true, addr.ip()),
                None => Access::new(
                    crate::admin::token::load_or_create(&config.data_dir)?,
                    false,
                    addr.ip(),
                ),
            };
            Some((Admin::bind(addr).await?, access))
        }
        None => None,
    };
    let metrics = metrics::install();
    let handle = node::start(config.clone(), key).await?;
    let admin_addr = admin.as_ref().map(|(a, _)| a.local_addr());
    if let Some(a) = admin_addr
        && !a.ip().is_loopback()
    {
        warn!(admin = %a, "the admin endpoint is not on loopback: anyone who can reach it can read status and make this node dial");
    }
    let stop_admin = CancellationToken::new();
    let mut admin_task = admin.map(|(a, access)| {
        tokio::spawn(a.serve(handle.client(), metrics, access, stop_admin.clone()))
    });
    let listen: Vec<String> = handle
        .listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    crate::systemd::ready(&format!("peer id {}", handle.peer_id()));
    info!(
        version = crate::version::version(),
        pid = std::process::id(),
        role = config.role.as_str(),
        name = %config.name,
        peer_id = %handle.peer_id(),
        listen = %listen.join(" "),
        admin = %admin_addr.map_or("off".to_string(), |a| a.to_string()),
        "jantar started"
    );
    let mut staged = handle.staged_release();
    let stop_node = handle.shutdown_token();
    let mut event_loop = handle.into_task();

    let mut apply = None;
    let failed = tokio::select! {
        _ = sigterm.recv() => { info!("received SIGTERM"); None }
        _ = sigint.recv() => { info!("received SIGINT"); None }
        Ok(b) = next_staged(&mut staged) => {
            info!(version = %b.version, "stopping to run the new version");
            apply = Some(b);
            None
        }
        r = &mut event_loop => Some(("event loop", ended(r.map(|_clean| Ok(()))))),
        r = finished(admin_task.as_mut()) => {
            admin_task = None;
            Some(("admin endpoint", ended(r.map(|served| served.map_err(|e| e.to_string())))))
        }
    };
    crate::systemd::stopping();
    stop_admin.cancel();
    stop_node.cancel();
    let grace = config.shutdown_grace_period;
    let clean = match failed {
        Some(("event loop", _)) => false,
        _ => event_loop.await.unwrap_or(false),
    };
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(grace, t).await;
    }
    if let Some((task, cause)) = failed {
        error!(task, error = %cause, "a node task failed; stopped the others");
        return Err(RunError::TaskFailed { task, cause });
    }
    if clean {
        info!("stopped");
    } else {
        warn!(
            ?grace,
            "stopped with connections still open after the grace period"
        );
    }
    Ok(apply.map_or(Outcome::Stopped, Outcome::Apply))
}

/// The next staged release the node hands over; never, once the node is gone.
async fn next_staged(rx: &mut tokio::sync::watch::Receiver<Option<Binary>>) -> Result<Binary, ()> {
    loop {
        if let Some(b) = rx.borrow_and_update().clone() {
            return Ok(b);
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Waits for an optional task; never, without one.
async fn finished<T>(task: Option<&mut JoinHandle<T>>) -> Result<T, JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// Why a task that should still run has ended.
fn ended(r: Result<Result<(), String>, JoinError>) -> String {
    match r {
        Ok(Ok(())) => "it stopped unexpectedly".into(),
        Ok(Err(e)) => format!("it failed: {e}"),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            format!("it panicked: {msg}")
        }
        Err(e) => format!("it was cancelled: {e}"),
    }
}
