//! The three roles a node can run in, and each role's embedded default config.

/// The embedded default config for peers: mDNS and DHT on, no bootstrap nodes.
pub const DEFAULT_PEER_CONFIG: &str = include_str!("../../defaults/peer.cfg");
/// The embedded default config for bootstrap nodes.
pub const DEFAULT_BOOTSTRAP_CONFIG: &str = include_str!("../../defaults/bootstrap.cfg");
/// The embedded default config for relays.
pub const DEFAULT_RELAY_CONFIG: &str = include_str!("../../defaults/relay.cfg");

/// Which of the three executables is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Bootstrap,
    Relay,
    Peer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bootstrap => "bootstrap",
            Role::Relay => "relay",
            Role::Peer => "peer",
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Role::Bootstrap => "jantar-bootstrap",
            Role::Relay => "jantar-relay",
            Role::Peer => "jantar-peer",
        }
    }

    pub fn default_config(self) -> &'static str {
        match self {
            Role::Bootstrap => DEFAULT_BOOTSTRAP_CONFIG,
            Role::Relay => DEFAULT_RELAY_CONFIG,
            Role::Peer => DEFAULT_PEER_CONFIG,
        }
    }

    pub(super) fn is_server(self) -> bool {
        matches!(self, Role::Bootstrap | Role::Relay)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
