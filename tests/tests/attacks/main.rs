//! Attacks on real nodes. Each checks three things: the bound holds, an honest client is
//! still served, and the target's memory stays bounded (`VmRSS`/`VmHWM` from `/proc`).
//!
//! One module per surface; the helpers every attack uses live here.

mod admin;
mod autonat;
mod connections;
mod dht;
mod files;
mod gossip;
mod ipv6;
mod relay;
mod relay_budget;
mod websocket;

use std::time::Duration;

use anyhow::{Result, ensure};
use jantar_tests::harness::{Memory, Node};

/// How long a network (or one node) may take to become ready.
const READY: Duration = Duration::from_secs(30);

/// How much a target may grow while attacked, and the most it may ever hold.
const GROWTH_KIB: u64 = 64 * 1024;
const CEILING_KIB: u64 = 256 * 1024;

fn memory_bounded(node: &Node, before: Memory) -> Result<Memory> {
    let after = node.memory()?;
    ensure!(
        after.rss_kib <= before.rss_kib + GROWTH_KIB && after.hwm_kib <= CEILING_KIB,
        "{}: memory grew from {before:?} to {after:?}",
        node.name
    );
    Ok(after)
}
