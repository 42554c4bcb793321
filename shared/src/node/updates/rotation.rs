//! Rotating the release keys inside the release part: roots on their own topic,
//! verified (the current keys' threshold and their own) before gossipsub forwards them,
//! kept as a chain, and announced again to peers that join.

use std::path::PathBuf;

use libp2p::{PeerId, gossipsub};
use tracing::{info, warn};

use super::{Updates, report};
use crate::{
    metrics as m,
    node::files::Net,
    release::{
        Refused,
        root::{MAX_CHAIN, SignedRoot},
    },
    status::ReleaseInfo,
};

/// The gossipsub topic of release key rotations (every channel's).
pub(in crate::node) fn keys_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new("jantar/release-keys/v1")
}

impl Updates {
    pub(in crate::node) fn keys_topic(&self) -> &gossipsub::TopicHash {
        &self.keys_topic
    }
    pub(super) fn roots_path(&self) -> PathBuf {
        self.releases.dir().join("roots.json")
    }
    /// A message on the key rotation topic: the next root is verified (the current
    /// keys' threshold and its own) before gossipsub forwards it.
    pub(in crate::node) fn on_root_message(
        &mut self,
        net: &mut Net<'_>,
        propagation_source: PeerId,
        message_id: &gossipsub::MessageId,
        message: &gossipsub::Message,
    ) {
        let acceptance = match self.over_rate(propagation_source, message) {
            Some(verdict) => verdict,
            None => match self.receive_root(&message.data) {
                Ok(true) => gossipsub::MessageAcceptance::Accept,
                Ok(false) => gossipsub::MessageAcceptance::Ignore,
                Err(refused) => {
                    warn!(peer = %propagation_source, source = ?message.source, reason = %refused, "refused a release key rotation");
                    gossipsub::MessageAcceptance::Reject
                }
            },
        };
        report(net, message_id, &propagation_source, acceptance);
    }
    /// Takes `data` as the next root; `Ok(false)` for one of the chain again.
    pub(super) fn receive_root(&mut self, data: &[u8]) -> Result<bool, Refused> {
        let result = self.check_root(data);
        let label = match &result {
            Ok(true) => "root_accepted",
            Ok(false) => "root_duplicate",
            Err(_) => "root_refused",
        };
        metrics::counter!(m::UPDATE_MANIFESTS, "result" => label).increment(1);
        if let Err(r) = &result {
            self.refused += 1;
            self.last_refused = Some(format!("key rotation: {r}"));
        }
        result
    }
    pub(super) fn check_root(&mut self, data: &[u8]) -> Result<bool, Refused> {
        let r = SignedRoot::parse(data)?;
        // A link of the chain again (a peer catching others up): not forwarded.
        if self.chain.roots.iter().any(|c| c.signed == r.signed) {
            return Ok(false);
        }
        let trust = r.verify_next(&self.trust, self.chain.sequence())?;
        if self.chain.roots.len() >= MAX_CHAIN {
            return Err(Refused::Malformed(format!(
                "this node keeps at most {MAX_CHAIN} rotations"
            )));
        }
        let mut chain = self.chain.clone();
        chain.roots.push(r.clone());
        let path = self.roots_path();
        std::fs::create_dir_all(self.releases.dir())
            .and_then(|()| {
                crate::atomic::write(
                    &path,
                    &chain.to_json(),
                    0o644,
                    crate::atomic::Existing::Replace,
                )
            })
            .map_err(|e| Refused::Malformed(format!("cannot save {}: {e}", path.display())))?;
        info!(
            root = r.signed.sequence,
            keys = trust.keys.len(),
            threshold = trust.threshold,
            "release keys rotated"
        );
        (self.trust, self.chain) = (trust, chain);
        Ok(true)
    }
    /// A peer joined the key rotation topic: the chain is announced again (see
    /// [`Announcements`]), link by link, so a peer that missed a rotation takes them in
    /// order.
    pub(in crate::node) fn on_keys_subscribed(&mut self, net: &mut Net<'_>) {
        if !self.chain.roots.is_empty() {
            self.keys_announce.request();
        }
        self.announce_due(net);
    }
    /// A key rotation from this node's operator: taken as a received one is, then
    /// announced with the rest of the chain.
    pub(super) fn publish_root(
        &mut self,
        net: &mut Net<'_>,
        data: &[u8],
    ) -> Result<ReleaseInfo, String> {
        let r = SignedRoot::parse(data).map_err(|e| e.to_string())?;
        self.receive_root(data).map_err(|e| e.to_string())?;
        self.keys_announce.request_now();
        self.announce_due(net);
        info!(root = r.signed.sequence, "published a release key rotation");
        Ok(ReleaseInfo {
            version: format!("root {}", r.signed.sequence),
            sequence: r.signed.sequence,
            ..ReleaseInfo::default()
        })
    }
}
