//! Signed releases inside the event loop (peers that trust release keys): manifests on
//! the channel's gossipsub topic are verified before gossipsub forwards them; the
//! newest is kept (and persisted, so a replay stays refused after a restart); with
//! `auto_update: apply` its artifact for this machine is fetched through the file part,
//! staged, and handed to the process to run ([`crate::release::install`]).
//!
//! [`apply`] takes a release up (fetch, check, stage, hand over), [`rotation`] the
//! release key rotations, and [`announce`] announces both again to peers that join.

use std::time::{Duration, Instant, SystemTime};

use libp2p::{PeerId, gossipsub};
use tokio::sync::watch;
use tracing::{debug, info, warn};

mod announce;
mod apply;
mod rotation;

use super::{
    announce::Announcements,
    files::{FileService, Net},
};
use crate::{
    config::{AutoUpdate, UpdateConfig},
    files::{FileId, protocol::MAX_GOSSIP_SIZE},
    limits::KeyedRateLimiter,
    metrics as m,
    release::{
        Manifest, Refused, SignedManifest, Trust,
        install::{self, Binary, Releases, TRIAL_ENV},
        manifest::this_target,
        root::Chain,
    },
    status::{ReleaseInfo, UpdateStatus},
};
pub(super) use rotation::keys_topic;

/// A failed artifact fetch is tried again after this long.
const FETCH_RETRY: Duration = Duration::from_secs(30);
/// Release messages (manifests and roots) accepted per sender: a burst of this many,
/// refilled over a minute. Honest senders announce the newest release at most every
/// 10 s, and a chain of at most 16 roots (`release::root::MAX_CHAIN`) with it.
const RATE_PER_MINUTE: u32 = 32;
/// Room a gossip message needs beyond its data (signature, key, topic, framing).
const GOSSIP_OVERHEAD: usize = 1024;
/// Every state [`UpdateStatus::state`] can take, for the state gauge.
const STATES: &[&str] = &[
    "idle",
    "available",
    "fetching",
    "staged",
    "applying",
    "up_to_date",
    "not_in_rollout",
    "no_target",
    "rolled_back",
    "failed",
];

/// The gossipsub topic of a release channel.
pub(super) fn topic(channel: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("jantar/releases/v1/{channel}"))
}

/// Where applying the newest release stands.
#[derive(Debug)]
enum Stage {
    Idle,
    /// Verified; `auto_update: notify` reports it and goes no further.
    Available,
    Fetching {
        id: FileId,
        size: u64,
    },
    /// Waiting to fetch again.
    Retry {
        at: Instant,
        error: String,
    },
    /// Staged, and handed to the process to run.
    Applying(Binary),
    /// Nothing to do for this release, and why (`up_to_date`, `not_in_rollout`,
    /// `no_target`, `rolled_back`).
    Skipped(&'static str, String),
    Failed(String),
}

pub(in crate::node) struct Updates {
    me: PeerId,
    mode: AutoUpdate,
    channel: String,
    topic: gossipsub::TopicHash,
    keys_topic: gossipsub::TopicHash,
    /// The release keys trusted now: the configured ones, or the last root of the
    /// chain.
    trust: Trust,
    chain: Chain,
    target: String,
    running: &'static str,
    releases: Releases,
    newest: Option<(SignedManifest, Vec<u8>)>,
    /// The highest sequence applied and the last rollback, from the release state.
    applied: Option<u64>,
    rolled_back: Vec<u64>,
    stage: Stage,
    refused: u64,
    last_refused: Option<String>,
    announce: Announcements,
    keys_announce: Announcements,
    /// Release messages per sender (see [`RATE_PER_MINUTE`]).
    rates: KeyedRateLimiter<PeerId>,
    /// The staged release to run, for the process (see `cli::run`).
    apply_tx: watch::Sender<Option<Binary>>,
    /// This process is the new version of this release on trial: confirmed once the
    /// node is ready.
    trial: Option<u64>,
}

/// What a release manifest received is.
enum Received {
    /// Newer than any verified: adopted and forwarded.
    Newer,
    /// The newest again: not forwarded.
    Same,
}

impl Updates {
    /// The release part of a peer that trusts release keys; `None` otherwise.
    pub(in crate::node) fn new(
        me: PeerId,
        config: &UpdateConfig,
        data_dir: &std::path::Path,
        apply_tx: watch::Sender<Option<Binary>>,
    ) -> Option<Self> {
        if config.trust.keys.is_empty() {
            return None;
        }
        let releases = Releases::new(data_dir);
        let trial_env = std::env::var(TRIAL_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        let (applied, rolled_back, trial) = match releases.load() {
            Ok(s) => (
                s.applied,
                s.rolled_back.iter().map(|b| b.sequence).collect(),
                s.trial
                    .filter(|t| Some(t.binary.sequence) == trial_env)
                    .map(|t| t.binary.sequence),
            ),
            Err(error) => {
                warn!(%error, "release state unreadable; starting from none");
                (None, Vec::new(), None)
            }
        };
        let mut u = Updates {
            me,
            mode: config.mode,
            channel: config.channel.clone(),
            topic: topic(&config.channel).hash(),
            keys_topic: keys_topic().hash(),
            trust: config.trust.clone(),
            chain: Chain::default(),
            target: this_target(),
            running: crate::version::version(),
            newest: None,
            applied,
            rolled_back,
            stage: Stage::Idle,
            refused: 0,
            last_refused: None,
            announce: Announcements::default(),
            keys_announce: Announcements::default(),
            rates: KeyedRateLimiter::new(
                std::num::NonZeroU32::new(RATE_PER_MINUTE).unwrap_or(std::num::NonZeroU32::MIN),
                Duration::from_secs(60) / RATE_PER_MINUTE,
            ),
            releases,
            apply_tx,
            trial,
        };
        // Rotated keys first: the newest release was verified with them.
        let (trust, root_sequence, chain, problem) = Chain::load(&u.roots_path(), &config.trust);
        if let Some(p) = problem {
            warn!(problem = %p, "release key rotations not all taken");
        }
        if root_sequence > 0 {
            info!(
                root = root_sequence,
                keys = trust.keys.len(),
                threshold = trust.threshold,
                "release keys rotated"
            );
        }
        (u.trust, u.chain) = (trust, chain);
        // The newest verified before a restart: its sequence stays the replay floor,
        // expired or not, as long as today's keys verify it.
        if let Some(bytes) = u.releases.newest() {
            match SignedManifest::parse(&bytes).and_then(|m| {
                m.verify(&u.trust, &u.channel, SystemTime::UNIX_EPOCH, None, None)?;
                Ok(m)
            }) {
                Ok(m) => u.newest = Some((m, bytes)),
                Err(error) => warn!(%error, "the saved newest release does not verify; ignored"),
            }
        }
        u.gauges();
        Some(u)
    }

    /// The node is ready: a new version on trial is confirmed (the watcher that would
    /// roll it back stands down).
    pub(in crate::node) fn on_ready(&mut self) {
        let Some(sequence) = self.trial.take() else {
            return;
        };
        match install::confirm(&self.releases, sequence) {
            Ok(Some(b)) => {
                info!(version = %b.version, sequence, "the new version is ready; update confirmed");
                install::reap_watcher();
                self.applied = Some(self.applied.unwrap_or(0).max(sequence));
                // The release running and the one before it stay, to go back to.
                self.releases.prune(2, &[&b.path]);
            }
            Ok(None) => warn!(
                sequence,
                "the update was rolled back before it was confirmed"
            ),
            Err(error) => warn!(%error, "cannot confirm the update"),
        }
        self.gauges();
    }

    pub(in crate::node) fn topic(&self) -> &gossipsub::TopicHash {
        &self.topic
    }

    fn newest_sequence(&self) -> Option<u64> {
        self.newest.as_ref().map(|(m, _)| m.signed.sequence)
    }

    /// A message on the release topic: verified before gossipsub may forward it.
    /// Invalid manifests and replays of older ones are rejected (gossipsub penalizes
    /// the peer that sent them); the newest again is ignored (not forwarded).
    pub(in crate::node) fn on_message(
        &mut self,
        files: &mut FileService,
        net: &mut Net<'_>,
        propagation_source: PeerId,
        message_id: &gossipsub::MessageId,
        message: &gossipsub::Message,
    ) {
        let acceptance = match self.over_rate(propagation_source, message) {
            Some(verdict) => verdict,
            None => match self.receive(&message.data) {
                Ok(Received::Newer) => {
                    self.follow(files, net);
                    gossipsub::MessageAcceptance::Accept
                }
                Ok(Received::Same) => gossipsub::MessageAcceptance::Ignore,
                Err(refused) => {
                    warn!(peer = %propagation_source, source = ?message.source, reason = %refused, "refused a release manifest");
                    gossipsub::MessageAcceptance::Reject
                }
            },
        };
        report(net, message_id, &propagation_source, acceptance);
    }

    /// The verdict on a message whose sender is over [`RATE_PER_MINUTE`] (or that has
    /// no sender), before it is parsed: rejected when the sender sent it itself (it
    /// costs the sender gossipsub score), ignored when another peer forwarded it.
    fn over_rate(
        &mut self,
        propagation_source: PeerId,
        message: &gossipsub::Message,
    ) -> Option<gossipsub::MessageAcceptance> {
        let Some(source) = message.source else {
            return Some(gossipsub::MessageAcceptance::Reject);
        };
        if self.rates.try_acquire(source, Instant::now()) {
            return None;
        }
        metrics::counter!(m::UPDATE_MANIFESTS, "result" => "over_rate").increment(1);
        Some(if source == propagation_source {
            debug!(peer = %source, "release messages over the sender's rate");
            gossipsub::MessageAcceptance::Reject
        } else {
            gossipsub::MessageAcceptance::Ignore
        })
    }

    /// Verifies `data` and adopts it when it is newer than the newest.
    fn receive(&mut self, data: &[u8]) -> Result<Received, Refused> {
        let result = self.check(data);
        let label = match &result {
            Ok(Received::Newer) => "accepted",
            Ok(Received::Same) => "duplicate",
            Err(r) => refusal_label(r),
        };
        metrics::counter!(m::UPDATE_MANIFESTS, "result" => label).increment(1);
        if let Err(r) = &result {
            self.refused += 1;
            self.last_refused = Some(r.to_string());
        }
        result
    }

    fn check(&mut self, data: &[u8]) -> Result<Received, Refused> {
        let m = SignedManifest::parse(data)?;
        // Replays are told from the newest itself arriving again before anything else.
        if self.newest_sequence() == Some(m.signed.sequence) {
            return Ok(Received::Same);
        }
        let verified = m.verify(
            &self.trust,
            &self.channel,
            SystemTime::now(),
            self.newest_sequence(),
            None,
        )?;
        info!(release = %verified.manifest, signers = verified.signers, "verified a release");
        if let Err(error) = self.releases.save_newest(data) {
            warn!(%error, "cannot save the newest release; a restart forgets it");
        }
        self.newest = Some((m, data.to_vec()));
        self.gauges();
        Ok(Received::Newer)
    }

    /// `POST /releases`: a release from this node's operator. It must verify as any
    /// received one does, and this node must hold every artifact it names (so that
    /// peers can fetch them from it). Then it is announced.
    pub(in crate::node) fn publish(
        &mut self,
        files: &mut FileService,
        net: &mut Net<'_>,
        data: &[u8],
    ) -> Result<ReleaseInfo, String> {
        if data.len() > MAX_GOSSIP_SIZE - GOSSIP_OVERHEAD {
            return Err(format!(
                "the manifest is {} bytes; at most {} fit a gossip message",
                data.len(),
                MAX_GOSSIP_SIZE - GOSSIP_OVERHEAD
            ));
        }
        if crate::release::signed::is_root(data) {
            return self.publish_root(net, data);
        }
        let parsed = SignedManifest::parse(data).map_err(|e| e.to_string())?;
        for (target, t) in &parsed.signed.targets {
            if !files.holds(&t.file) {
                return Err(format!(
                    "this node does not hold the artifact for {target} ({}); share it first",
                    t.file
                ));
            }
        }
        match self.receive(data).map_err(|e| e.to_string())? {
            Received::Newer => self.follow(files, net),
            // The newest again: announced again, for peers that missed it.
            Received::Same
                if self
                    .newest
                    .as_ref()
                    .is_some_and(|(_, b)| b.as_slice() != data) =>
            {
                return Err(format!(
                    "sequence {} is taken by another manifest this node verified",
                    parsed.signed.sequence
                ));
            }
            Received::Same => {}
        }
        self.announce.request_now();
        self.announce_due(net);
        info!(release = %parsed.signed, "published a release");
        Ok(release_info(&parsed.signed))
    }

    pub(in crate::node) fn status(&self) -> UpdateStatus {
        let (state, detail) = self.state();
        UpdateStatus {
            auto_update: self.mode.as_str().into(),
            channel: self.channel.clone(),
            running_version: self.running.into(),
            target: self.target.clone(),
            trusted_keys: self.trust.keys.len(),
            threshold: self.trust.threshold,
            root_sequence: self.chain.sequence(),
            newest: self.newest.as_ref().map(|(m, _)| release_info(&m.signed)),
            state: state.into(),
            detail,
            applied_sequence: self.applied,
            refused: self.refused,
            last_refused: self.last_refused.clone(),
        }
    }

    fn state(&self) -> (&'static str, Option<String>) {
        match &self.stage {
            Stage::Idle if self.newest.is_some() => ("idle", None),
            Stage::Idle => ("idle", Some("no release verified yet".into())),
            Stage::Available => (
                "available",
                self.newest.as_ref().map(|(m, _)| {
                    format!("{} is available; auto_update is notify", m.signed.version)
                }),
            ),
            Stage::Fetching { id, .. } => ("fetching", Some(id.to_string())),
            Stage::Retry { error, .. } => ("fetching", Some(format!("retrying: {error}"))),
            Stage::Applying(b) => ("applying", Some(b.path.display().to_string())),
            Stage::Skipped(state, why) => (state, Some(why.clone())),
            Stage::Failed(e) => ("failed", Some(e.clone())),
        }
    }

    fn gauges(&self) {
        metrics::gauge!(m::UPDATE_NEWEST).set(self.newest_sequence().unwrap_or(0) as f64);
        metrics::gauge!(m::UPDATE_APPLIED).set(self.applied.unwrap_or(0) as f64);
        let (now, _) = self.state();
        for s in STATES {
            metrics::gauge!(m::UPDATE_STATE, "state" => *s).set(if *s == now { 1.0 } else { 0.0 });
        }
    }
}

/// Tells gossipsub whether to forward a message (and whether to penalize its sender).
fn report(
    net: &mut Net<'_>,
    message_id: &gossipsub::MessageId,
    propagation_source: &PeerId,
    acceptance: gossipsub::MessageAcceptance,
) {
    if let Some(g) = net.swarm.behaviour_mut().gossipsub.as_mut() {
        g.report_message_validation_result(message_id, propagation_source, acceptance);
    }
}

fn release_info(m: &Manifest) -> ReleaseInfo {
    ReleaseInfo {
        version: m.version.clone(),
        sequence: m.sequence,
        expires: m.expires,
        rollout_percent: m.rollout_percent,
        targets: m.targets.keys().cloned().collect(),
    }
}

fn refusal_label(r: &Refused) -> &'static str {
    match r {
        Refused::Malformed(_) => "malformed",
        Refused::BelowThreshold { .. } => "signatures",
        Refused::Expired { .. } => "expired",
        Refused::Replay { .. } => "replay",
        Refused::OtherChannel { .. } => "channel",
        Refused::NoTarget { .. } => "target",
    }
}
