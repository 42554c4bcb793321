//! The command line shared by the three executables, and their `main`.
//!
//! Exit codes: 0 success, 1 runtime failure (a port in use, a node task that died),
//! 64 bad command line, 78 bad configuration or identity key, 141 standard output
//! closed by its reader (the process ends quietly, as on SIGPIPE).
//!
//! [`run`] runs and supervises a node; [`client`] holds the `jantar-peer` commands that
//! talk to a running daemon.

mod client;
pub(crate) mod exit;
mod run;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
pub use client::ClientCommand;
pub use exit::{EXIT_CLOSED_PIPE, EXIT_CONFIG, EXIT_FAILURE, EXIT_USAGE};
use exit::{out, runtime};
use libp2p::{identity::Keypair, multiaddr::Protocol};
pub use run::{RunError, run};

use crate::{
    admin::AdminClient,
    config::{Config, Loaded, Overrides, ProcessEnv, Role},
    identity,
};

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
    // Test builds only: fail points named in FAILPOINTS (see the `failpoints` feature).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
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
    Client(ClientCommand),
    /// Release tools for the holders of release keys: keygen, new, sign, combine,
    /// verify (no config or running node needed).
    #[command(subcommand)]
    Release(crate::release::tool::ReleaseCommand),
}

fn peer_main(about: &'static str) -> ExitCode {
    let role = Role::Peer;
    let cmd = command(role, about);
    let cli: PeerCli = match parse(cmd) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        None => dispatch(role, about, cli.common, None),
        Some(PeerCommand::Common(c)) => dispatch(role, about, cli.common, Some(c)),
        Some(PeerCommand::Release(crate::release::tool::ReleaseCommand::Publish {
            artifacts,
            manifest,
        })) => client_main(
            role,
            &cli.common,
            ClientCommand::PublishRelease {
                manifest,
                artifacts,
            },
            cli.json,
        ),
        Some(PeerCommand::Release(c)) => crate::release::tool::run(c),
        Some(PeerCommand::Client(c)) => client_main(role, &cli.common, c, cli.json),
    }
}

/// A client command: loads the config to find the daemon's admin endpoint.
fn client_main(role: Role, common: &CommonArgs, c: ClientCommand, json: bool) -> ExitCode {
    let config = match Config::load(
        role,
        common.config.as_deref(),
        &common.overrides(),
        &ProcessEnv,
    ) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("{}: config error: {e}", role.binary());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    client::run(&config, c, json)
}

fn dispatch(
    role: Role,
    about: &'static str,
    common: CommonArgs,
    subcommand: Option<CommonCommand>,
) -> ExitCode {
    let bin = role.binary();
    /// The subcommands that run on a loaded config.
    enum WithConfig {
        Run,
        Id,
        Healthcheck,
    }
    let subcommand = match subcommand.unwrap_or(CommonCommand::Run) {
        // Writing completions or man pages needs no config.
        CommonCommand::Generate { what, dir } => {
            return match generate(command(role, about), what, &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{bin}: cannot write into {}: {e}", dir.display());
                    ExitCode::from(EXIT_FAILURE)
                }
            };
        }
        CommonCommand::Run => WithConfig::Run,
        CommonCommand::Id => WithConfig::Id,
        CommonCommand::Healthcheck => WithConfig::Healthcheck,
    };
    let Loaded { config, warnings } = match Config::load(
        role,
        common.config.as_deref(),
        &common.overrides(),
        &ProcessEnv,
    ) {
        Ok(l) => l,
        Err(e) => {
            if let Some(dir) = Config::data_dir_only(
                role,
                common.config.as_deref(),
                &common.overrides(),
                &ProcessEnv,
            ) {
                run::hand_over_to_check(role, &dir);
            }
            eprintln!("{bin}{}: config error: {e}", staged_note());
            // A new version on trial that refuses the config fails like any other
            // start, so that systemd restarts the unit and it is rolled back (78 is
            // exempt from restarts).
            if std::env::var_os(crate::release::install::TRIAL_ENV).is_some() {
                return ExitCode::from(EXIT_FAILURE);
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if common.check {
        run::hand_over_to_check(role, &config.data_dir);
        return check(&config, &warnings);
    }
    match subcommand {
        WithConfig::Healthcheck => healthcheck(&config),
        WithConfig::Id => match load_key(&config) {
            Ok(key) => {
                print_id(&config, &key);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        WithConfig::Run => match load_key(&config) {
            Ok(key) => run::run_node(config, warnings, key),
            Err(code) => code,
        },
    }
}

/// The clap command of `role`'s binary.
pub fn command(role: Role, about: &'static str) -> clap::Command {
    if role == Role::Peer {
        return PeerCli::command()
            .name(role.binary())
            .bin_name(role.binary())
            .version(crate::version::version())
            .about(about);
    }
    Cli::command()
        .name(role.binary())
        .bin_name(role.binary())
        .version(crate::version::version())
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
                out!("{}", path.display());
            }
        }
        Generate::Man => {
            clap_mangen::generate_to(cmd, dir)?;
            for entry in std::fs::read_dir(dir)? {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "1") {
                    out!("{}", p.display());
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
    out!("{source}: OK{}", staged_note());
    ExitCode::SUCCESS
}

/// When this process is a staged release the installed binary handed over to: which.
fn staged_note() -> String {
    crate::release::install::running_staged().map_or_else(String::new, |installed| {
        format!(
            " (staged release {}, started by {})",
            crate::version::version(),
            installed.display()
        )
    })
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
    let client = AdminClient::new(addr, None).with_timeout(Duration::from_secs(3));
    match runtime.block_on(client.ready()) {
        Ok(200) => {
            out!("ready");
            ExitCode::SUCCESS
        }
        Ok(code) => {
            out!("not ready (HTTP {code} from {addr})");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(crate::admin::ClientError::Connect { addr, source }) => {
            out!("not ready: no node answering at {addr}: {source}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            out!("not ready: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn print_id(config: &Config, key: &Keypair) {
    let peer_id = key.public().to_peer_id();
    out!("{peer_id}");
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
        out!("{}", a.clone().with(Protocol::P2p(peer_id)));
    }
}
