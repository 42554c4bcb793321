//! Connection management: what the node knows about peers and whom it keeps.
//!
//! | module | holds |
//! |--------|-------|
//! | [`group`] | network groups (IPv4 /16, IPv6 /32, or the AS number when a GeoIP database says) |
//! | [`geo`] | country and AS number lookups in MaxMind-format databases |
//! | [`score`] | a peer's score and its components |
//! | [`store`] | the peer store: known peers, their addresses and history, persisted in the data dir |
//! | [`eviction`] | whom to close above the high watermark, resisting takeover |
//! | [`keep_alive`] | holding a peer's connections open, idle or not, until trimming closes them |
//! | [`dials`] | whom to dial below the low watermark: the best known peers and some untried ones |

pub mod dials;
pub mod eviction;
pub mod geo;
pub mod group;
pub mod keep_alive;
pub mod score;
pub mod store;
