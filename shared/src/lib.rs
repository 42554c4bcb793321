//! Jantar's shared networking crate.
//!
//! Everything the three executables (`jantar-bootstrap`, `jantar-relay`, `jantar-peer`)
//! do lives here; the binaries only parse their command line and call [`cli::main`].

pub mod admin;
pub mod backoff;
pub mod behaviour;
pub mod cli;
pub mod client;
pub mod config;
pub mod files;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod status;
pub mod systemd;
pub mod tls;
pub mod transport;
