//! `network.gossip`: how many announcements and messages one sender may publish (peer).

use super::super::{Checker, rate};
use crate::config::{ConfigError, GossipConfig, file::GossipFile};

/// Applies the defaults: 60 announcements and 30 messages per minute per sender.
pub(super) fn check(c: &Checker<'_>, g: GossipFile) -> Result<GossipConfig, ConfigError> {
    Ok(GossipConfig {
        announcement_rate_per_sender: rate(
            c,
            "network.gossip.announcement_rate_per_sender",
            g.announcement_rate_per_sender,
            60,
            60,
        )?,
        message_rate_per_sender: rate(
            c,
            "network.gossip.message_rate_per_sender",
            g.message_rate_per_sender,
            30,
            60,
        )?,
    })
}
