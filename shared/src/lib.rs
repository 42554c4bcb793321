//! Jantar's shared networking crate.
//!
//! Everything the three executables (`jantar-bootstrap`, `jantar-relay`, `jantar-peer`)
//! do lives here; the binaries only call [`cli::main`] with their role.
//!
//! From the top down: [`cli`] (command line, `run` and its supervision, the peer's
//! client commands) uses [`admin`] (the HTTP endpoint and its client), which talks to
//! [`node`] (the event loop and its parts) over a command channel. The node is built on
//! [`behaviour`] and [`transport`] from a validated [`config`]; [`files`] holds content
//! addressing, the store and the transfer protocol; [`status`] the types the admin
//! endpoint reports; [`limits`] what strangers may make a node do.

pub mod admin;
mod atomic;
mod backoff;
pub mod behaviour;
pub mod boxed;
pub mod cli;
pub mod config;
mod error;
pub mod files;
mod identity;
pub mod limits;
mod logging;
mod metrics;
pub mod node;
pub mod peering;
mod private_file;
pub mod release;
pub mod scope;
pub mod status;
mod systemd;
mod tls;
pub mod transport;
pub mod version;

pub use config::{Config, Role};
pub use node::{NodeClient, NodeError, NodeHandle, start};
pub use status::Status;
pub use tls::TlsError;
