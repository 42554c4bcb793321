//! The nodes a node dials: `network.bootstrap_nodes`, and for peers `network.relay_nodes`
//! with `relay_reservations` and `max_relays`.

use super::Checker;
use crate::config::{ConfigError, PeerAddr, RelayReservations, Role};

/// `network.bootstrap_nodes`: each needs a transport address; without the DHT a peer has
/// no use for them (a warning).
pub(super) fn bootstrap_nodes(
    c: &mut Checker<'_>,
    role: Role,
    list: Option<Vec<PeerAddr>>,
    enable_dht: bool,
) -> Result<Vec<PeerAddr>, ConfigError> {
    let bootstrap_nodes = list.unwrap_or_default();
    for b in &bootstrap_nodes {
        if b.addr.is_empty() {
            return Err(c.bad(
                "network.bootstrap_nodes",
                format!(
                    "{b} has no transport address; a bootstrap node needs one such as /ip4/<ip>/tcp/4001/p2p/<peer id>"
                ),
            ));
        }
    }
    if role == Role::Peer && !enable_dht && !bootstrap_nodes.is_empty() {
        c.warn(
            "network.bootstrap_nodes",
            "are only used by the DHT, which is disabled".into(),
        );
    }
    Ok(bootstrap_nodes)
}

/// How a peer uses relays.
pub(super) struct Relays {
    pub(super) nodes: Vec<PeerAddr>,
    pub(super) reservations: RelayReservations,
    pub(super) max_relays: usize,
}

/// `network.relay_nodes`, `network.relay_reservations` and `network.max_relays`: a peer
/// must be able to find the relays it is told to use.
pub(super) fn relays(
    c: &Checker<'_>,
    role: Role,
    nodes: Option<Vec<PeerAddr>>,
    reservations: Option<&str>,
    max_relays: Option<usize>,
    enable_dht: bool,
) -> Result<Relays, ConfigError> {
    let relay_nodes = nodes.unwrap_or_default();
    let relay_reservations = match reservations {
        None | Some("auto") => RelayReservations::Auto,
        Some("always") => RelayReservations::Always,
        Some("never") => RelayReservations::Never,
        Some(other) => {
            return Err(c.bad(
                "network.relay_reservations",
                format!("{other:?} is not `auto`, `always` or `never`"),
            ));
        }
    };
    if role == Role::Peer
        && relay_reservations == RelayReservations::Always
        && relay_nodes.is_empty()
        && !enable_dht
    {
        return Err(c.bad(
            "network.relay_reservations",
            "is `always`, but there are no relay_nodes and the DHT (where relays are found) is disabled".into(),
        ));
    }
    if role == Role::Peer
        && !enable_dht
        && let Some(r) = relay_nodes.iter().find(|r| r.addr.is_empty())
    {
        return Err(c.bad(
            "network.relay_nodes",
            format!(
                "{r} has no transport address and the DHT, where it would be looked up, is disabled"
            ),
        ));
    }
    let max_relays = max_relays.unwrap_or(2);
    if max_relays == 0 && relay_reservations == RelayReservations::Always {
        return Err(c.bad(
            "network.max_relays",
            "is 0 but relay_reservations is `always`".into(),
        ));
    }
    Ok(Relays {
        nodes: relay_nodes,
        reservations: relay_reservations,
        max_relays,
    })
}
