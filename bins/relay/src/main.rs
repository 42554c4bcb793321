//! `jantar-relay`: a circuit relay v2 server with rate limiting.

use std::process::ExitCode;

use jantar_net::{cli, config::Role};

fn main() -> ExitCode {
    cli::main(
        Role::Relay,
        "Jantar relay: circuit relay v2 so peers behind NAT stay reachable and can hole-punch",
    )
}
