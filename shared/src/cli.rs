//! The command line shared by the three executables, and their `main`.
//!
//! Exit codes: 0 success, 1 runtime failure (a port in use, a node that died),
//! 64 bad command line, 78 bad configuration or identity key.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use libp2p::{identity::Keypair, multiaddr::Protocol};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    admin::Admin,
    config::{Config, Loaded, Overrides, ProcessEnv, Role},
    identity, logging, metrics, node,
};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_CONFIG: u8 = 78;

/// Options every role takes; each also reads a `JANTAR_*` environment variable.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// YAML config file; without it the embedded default config is used.
    #[arg(short, long, env = "JANTAR_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Validate the config (and identity key, if it exists) and exit: 0 valid, 78 not.
    #[arg(long, global = true)]
    pub check: bool,
    /// Port for TCP and QUIC (overrides `port`).
    #[arg(long, env = "JANTAR_PORT", global = true)]
    pub port: Option<u16>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, env = "JANTAR_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin endpoint address, or `off` (overrides `admin.listen`).
    #[arg(long, env = "JANTAR_ADMIN_LISTEN", global = true, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Log level or filter (overrides `log.level`; RUST_LOG wins over both).
    #[arg(long, env = "JANTAR_LOG", global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// `text` or `json` (overrides `log.format`).
    #[arg(long, env = "JANTAR_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl CommonArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            port: self.port,
            data_dir: self.data_dir.clone(),
            admin_listen: self.admin_listen.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CommonCommand {
    /// Run the node (the default).
    Run,
    /// Print the peer id, then the addresses to give to others (one per line). Creates
    /// the identity key if there is none yet.
    Id,
    /// Ask the running node's admin endpoint whether it is ready: exit 0 if so, 1 if not
    /// (for container health checks).
    Healthcheck,
    /// Write shell completions or man pages.
    Generate {
        #[arg(value_enum)]
        what: Generate,
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generate {
    /// bash, zsh and fish completions
    Completions,
    /// man pages for the command and its subcommands
    Man,
}

#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Option<CommonCommand>,
}

/// Parses the command line for `role` and runs it.
pub fn main(role: Role, about: &'static str) -> ExitCode {
    if role == Role::Peer {
        return peer_main(about);
    }
    match parse::<Cli>(command(role, about)) {
        Ok(cli) => dispatch(role, about, cli.common, cli.command),
        Err(code) => code,
    }
}

fn parse<T: FromArgMatches>(cmd: clap::Command) -> Result<T, ExitCode> {
    cmd.try_get_matches()
        .and_then(|m| T::from_arg_matches(&m))
        .map_err(|e| {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        })
}

/// `jantar-peer`: the common subcommands plus the client commands that talk to the
/// running daemon.
#[derive(Debug, Parser)]
#[command(version)]
pub struct PeerCli {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print JSON instead of text (client commands).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<PeerCommand>,
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    #[command(flatten)]
    Common(CommonCommand),
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

fn peer_main(about: &'static str) -> ExitCode {
    let role = Role::Peer;
    let cmd = PeerCli::command()
        .name(role.binary())
        .bin_name(role.binary())
        .about(about);
    let cli: PeerCli = match parse(cmd) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        None => dispatch(role, about, cli.common, None),
        Some(PeerCommand::Common(c)) => dispatch(role, about, cli.common, Some(c)),
        Some(PeerCommand::Client(c)) => {
            let config = match Config::load(
                role,
                cli.common.config.as_deref(),
                &cli.common.overrides(),
                &ProcessEnv,
            ) {
                Ok(l) => l.config,
                Err(e) => {
                    eprintln!("{}: config error: {e}", role.binary());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            crate::client::run(&config, c, cli.json)
        }
    }
}

fn dispatch(
    role: Role,
    about: &'static str,
    common: CommonArgs,
    subcommand: Option<CommonCommand>,
) -> ExitCode {
    let cli = Cli {
        common,
        command: subcommand,
    };
    let bin = role.binary();
    // Writing completions or man pages needs no config.
    if let Some(CommonCommand::Generate { what, dir }) = &cli.command {
        return match generate(command(role, about), *what, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{bin}: cannot write into {}: {e}", dir.display());
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    let Loaded { config, warnings } = match Config::load(
        role,
        cli.common.config.as_deref(),
        &cli.common.overrides(),
        &ProcessEnv,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{bin}: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.common.check {
        return check(&config, &warnings);
    }
    match cli.command.unwrap_or(CommonCommand::Run) {
        CommonCommand::Healthcheck => healthcheck(&config),
        CommonCommand::Id => match load_key(&config) {
            Ok(key) => {
                print_id(&config, &key);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        CommonCommand::Run => match load_key(&config) {
            Ok(key) => run_node(config, warnings, key),
            Err(code) => code,
        },
        CommonCommand::Generate { what, dir } => match generate(command(role, about), what, &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{bin}: cannot write into {}: {e}", dir.display());
                ExitCode::from(EXIT_FAILURE)
            }
        },
    }
}

/// The clap command of `role`'s binary.
pub fn command(role: Role, about: &'static str) -> clap::Command {
    if role == Role::Peer {
        return PeerCli::command()
            .name(role.binary())
            .bin_name(role.binary())
            .about(about);
    }
    Cli::command()
        .name(role.binary())
        .bin_name(role.binary())
        .about(about)
}

fn generate(mut cmd: clap::Command, what: Generate, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_string();
    match what {
        Generate::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let path = clap_complete::generate_to(shell, &mut cmd, &name, dir)?;
                println!("{}", path.display());
            }
        }
        Generate::Man => {
            clap_mangen::generate_to(cmd, dir)?;
            for entry in std::fs::read_dir(dir)? {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "1") {
                    println!("{}", p.display());
                }
            }
        }
    }
    Ok(())
}

/// `--check`: the config loaded; an existing key and configured TLS files must be
/// usable too. Creates nothing.
fn check(config: &Config, warnings: &[crate::config::Warning]) -> ExitCode {
    let bin = config.role.binary();
    for w in warnings {
        eprintln!("{bin}: warning: {w}");
    }
    // An existing key must be usable; a missing one will be created at start.
    if config.key_file.exists()
        && let Err(e) = identity::load(&config.key_file)
    {
        eprintln!("{bin}: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(e) = crate::tls::check(config) {
        eprintln!("{bin}: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let source = config
        .source
        .as_ref()
        .map_or("embedded default config".to_string(), |p| {
            p.display().to_string()
        });
    println!("{source}: OK");
    ExitCode::SUCCESS
}

fn load_key(config: &Config) -> Result<Keypair, ExitCode> {
    let bin = config.role.binary();
    match identity::load_or_create(&config.key_file) {
        Ok((key, origin)) => {
            if origin == identity::Origin::Created {
                eprintln!("{bin}: created identity key {}", config.key_file.display());
            }
            Ok(key)
        }
        Err(e) => {
            eprintln!("{bin}: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn run_node(config: Config, warnings: Vec<crate::config::Warning>, key: Keypair) -> ExitCode {
    let bin = config.role.binary();
    logging::init(&config.log);
    for w in &warnings {
        warn!("{w}");
    }
    let runtime = match runtime(bin, true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(run(Arc::new(config), key));
    // Background threads (DNS, interface watching) must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Node(node::NodeError::Tls(e))) => {
            error!("{e}");
            eprintln!("{bin}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            error!("{e:#}");
            eprintln!("{bin}: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A tokio runtime (multi-threaded for a node, single-threaded for a short client
/// command), or the exit code after saying why there is none.
pub(crate) fn runtime(bin: &str, multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("{bin}: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}

fn healthcheck(config: &Config) -> ExitCode {
    let bin = config.role.binary();
    let Some(addr) = config.admin_listen else {
        eprintln!("{bin}: the admin endpoint is off (admin.listen: off); nothing to ask");
        return ExitCode::from(EXIT_FAILURE);
    };
    let runtime = match runtime(bin, false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(crate::admin::probe_ready(addr)) {
        Ok(200) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok(code) => {
            println!("not ready (HTTP {code} from {addr})");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            println!("not ready: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn print_id(config: &Config, key: &Keypair) {
    let peer_id = key.public().to_peer_id();
    println!("{peer_id}");
    let net = &config.network;
    let addrs = if net.external_addresses.is_empty() {
        eprintln!(
            "{}: no network.external_addresses configured; these are the listen addresses: put this host's public address in place of 0.0.0.0 / ::",
            config.role.binary()
        );
        &net.listen_addresses
    } else {
        &net.external_addresses
    };
    for a in addrs {
        println!("{}", a.clone().with(Protocol::P2p(peer_id)));
    }
}

/// Errors that end a running node.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminBindError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down within the grace period.
pub async fn run(config: Arc<Config>, key: Keypair) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;

    let admin = match config.admin_listen {
        Some(addr) => Some(Admin::bind(addr).await?),
        None => None,
    };
    let metrics = metrics::install();
    let handle = node::start(config.clone(), key).await?;
    let admin_addr = admin.as_ref().map(Admin::local_addr);
    if let Some(a) = admin_addr
        && !a.ip().is_loopback()
    {
        warn!(admin = %a, "the admin endpoint is not on loopback: anyone who can reach it can read status and make this node dial");
    }
    let cancel = CancellationToken::new();
    let mut admin_task = admin.map(|a| {
        tokio::spawn(a.serve(
            handle.client(),
            metrics,
            config.admin_token.clone(),
            cancel.clone(),
        ))
    });

    let listen: Vec<String> = handle
        .listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    crate::systemd::ready(&format!("peer id {}", handle.peer_id()));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        role = config.role.as_str(),
        name = %config.name,
        peer_id = %handle.peer_id(),
        listen = %listen.join(" "),
        admin = %admin_addr.map_or("off".to_string(), |a| a.to_string()),
        "jantar started"
    );

    let admin_died = async {
        match admin_task.as_mut() {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sigterm.recv() => info!("received SIGTERM"),
        _ = sigint.recv() => info!("received SIGINT"),
        r = admin_died => error!(result = ?r, "admin endpoint stopped unexpectedly"),
    }
    crate::systemd::stopping();
    cancel.cancel();
    handle.shutdown();
    let grace = config.shutdown_grace_period;
    let clean = handle.join().await;
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(grace, t).await;
    }
    if clean {
        info!("stopped");
    } else {
        warn!(
            ?grace,
            "stopped with connections still open after the grace period"
        );
    }
    Ok(())
}
