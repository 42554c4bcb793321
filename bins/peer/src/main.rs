//! `jantar-peer`: the full Jantar client.

use std::process::ExitCode;

use jantar_net::{cli, config::Role};

fn main() -> ExitCode {
    cli::main(
        Role::Peer,
        "Jantar peer: joins the network through bootstrap nodes, stays reachable through relays",
    )
}
