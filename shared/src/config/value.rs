//! Scalar types that appear in config files: durations, sizes and peer addresses.

use std::{fmt, str::FromStr, time::Duration};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use serde::{Deserialize, Deserializer, de};

/// A duration written as `20s`, `2m`, `1h 30m` or `500ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write it like `20s`, `2m` or `1h`"
                ))
            })
    }
}

/// A byte count written as an integer (`104857600`) or with a unit (`100MiB`, `1 GB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes such as `104857600` or `100MiB`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                bytesize::ByteSize::from_str(v.trim())
                    .map(|b| ByteSize(b.as_u64()))
                    .map_err(|_| {
                        E::custom(format!(
                            "invalid size {v:?}; write bytes (`104857600`) or a unit (`100MiB`, `1GB`)"
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// A multiaddr that must end in `/p2p/<peer id>`: how bootstrap and relay nodes are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub peer_id: PeerId,
    /// The transport part (without `/p2p/..`); empty when only the peer id is known and
    /// its addresses must be looked up in the DHT.
    pub addr: Multiaddr,
}

impl PeerAddr {
    /// The full address including the trailing `/p2p/<peer id>`.
    pub fn full(&self) -> Multiaddr {
        self.addr.clone().with(Protocol::P2p(self.peer_id))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.full())
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut addr: Multiaddr = s
            .parse()
            .map_err(|e| format!("{s:?} is not a valid multiaddr ({e})"))?;
        let Some(Protocol::P2p(peer_id)) = addr.pop() else {
            return Err(format!(
                "{s:?} does not end in /p2p/<peer id>; run `<binary> id` on that node to get its full address"
            ));
        };
        // The design document names relays as `/p2p-circuit/p2p/<relay id>`: the relay's
        // identity without a transport address, found through the DHT.
        if addr.iter().next() == Some(Protocol::P2pCircuit) && addr.iter().count() == 1 {
            addr = Multiaddr::empty();
        }
        if addr
            .iter()
            .any(|p| matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit))
        {
            return Err(format!(
                "{s:?} names more than one peer; give the node's own address ending in /p2p/<peer id>"
            ));
        }
        Ok(PeerAddr { peer_id, addr })
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A plain multiaddr (listen or external address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr(pub Multiaddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim()
            .parse()
            .map(Addr)
            .map_err(|e| de::Error::custom(format!("{s:?} is not a valid multiaddr ({e})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "12D3KooWLUtCEj7vL4aAYTgNFn4VfX5azPyrkBoLHJC5uHZ76xCe";

    #[test]
    fn peer_addr_requires_peer_id() {
        let err = "/ip4/1.2.3.4/tcp/4001".parse::<PeerAddr>().unwrap_err();
        assert!(err.contains("does not end in /p2p/<peer id>"), "{err}");
        let err = "/ip4/165.232.45.78/tcp/4001/p2p/12D3KooWBootstrap1..."
            .parse::<PeerAddr>()
            .unwrap_err();
        assert!(err.contains("not a valid multiaddr"), "{err}");
    }

    #[test]
    fn peer_addr_forms() {
        let a: PeerAddr = format!("/ip4/1.2.3.4/tcp/4001/p2p/{ID}").parse().unwrap();
        assert_eq!(a.addr.to_string(), "/ip4/1.2.3.4/tcp/4001");
        assert_eq!(
            a.full().to_string(),
            format!("/ip4/1.2.3.4/tcp/4001/p2p/{ID}")
        );
        let r: PeerAddr = format!("/p2p-circuit/p2p/{ID}").parse().unwrap();
        assert!(r.addr.is_empty());
        let d: PeerAddr = format!("/dns4/boot.example.org/tcp/4001/p2p/{ID}")
            .parse()
            .unwrap();
        assert_eq!(d.peer_id.to_string(), ID);
        assert!(
            format!("/ip4/1.2.3.4/tcp/1/p2p/{ID}/p2p-circuit/p2p/{ID}")
                .parse::<PeerAddr>()
                .is_err()
        );
    }
}
