//! `jantar-bootstrap`: a stateless Kademlia bootstrap server.

use std::process::ExitCode;

use jantar_net::{cli, config::Role};

fn main() -> ExitCode {
    cli::main(
        Role::Bootstrap,
        "Jantar bootstrap node: a stateless Kademlia server that lets peers join the network",
    )
}
