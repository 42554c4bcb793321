//! Jantar's shared networking crate.
//!
//! Everything the three executables (`jantar-bootstrap`, `jantar-relay`, `jantar-peer`)
//! do lives here; the binaries only parse their command line and call [`cli::main`].

pub mod config;
pub mod identity;
