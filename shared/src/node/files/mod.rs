//! A peer's files and messages inside the event loop: [`service`] holds the state and
//! answers the file API's commands; [`fetching`] finds providers, asks them for chunks
//! and finishes files; [`replication`] decides which announced files are fetched and
//! holds them to the quota; [`serving`] answers other peers within the [`uploads`] bounds;
//! [`gossip`] handles announcements, replication and messages, remembered in
//! [`gossip_log`] and held to each sender's rate by [`gossip_rate`]. [`net`] is what
//! they work on besides their own state.
//!
//! The content addressing, the store and the transfer protocol themselves are in
//! [`crate::files`]; this part keeps the state that lives as long as the node.

mod fetching;
mod gossip;
mod gossip_log;
mod gossip_rate;
mod net;
mod replication;
mod service;
mod serving;
mod uploads;

pub(super) use net::Net;
pub(super) use service::{FileService, Observation, Offloaded, Policy};
