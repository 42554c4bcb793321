//! Signed releases inside the event loop (peers that trust release keys): manifests on
//! the channel's gossipsub topic are verified before gossipsub forwards them; the
//! newest is kept (and persisted, so a replay stays refused after a restart); with
//! `auto_update: apply` its artifact for this machine is fetched through the file part,
//! staged, and handed to the process to run ([`crate::release::install`]).

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use libp2p::{PeerId, gossipsub};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::files::{FileService, Net};
use crate::{
    config::{AutoUpdate, UpdateConfig},
    files::{FileId, protocol::MAX_GOSSIP_SIZE},
    limits::KeyedRateLimiter,
    metrics as m,
    release::{
        Manifest, Refused, SignedManifest, Trust,
        install::{self, Binary, Releases, TRIAL_ENV, newer},
        manifest::{in_rollout, this_target},
        root::{Chain, MAX_CHAIN, SignedRoot},
    },
    status::{FetchState, ReleaseInfo, UpdateStatus},
};

/// The newest release is announced again at most this often (when a peer joins the
/// topic).
const REANNOUNCE: Duration = Duration::from_secs(10);
/// A failed artifact fetch is tried again after this long.
const FETCH_RETRY: Duration = Duration::from_secs(30);
/// Release messages (manifests and roots) accepted per sender: a burst of this many,
/// refilled over a minute. Honest senders announce the newest release at most every
/// [`REANNOUNCE`], and a chain of at most [`MAX_CHAIN`] roots with it.
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

/// The gossipsub topic of release key rotations (every channel's).
pub(super) fn keys_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new("jantar/release-keys/v1")
}

/// Announcing what this node holds again when peers join a topic: at most every
/// [`REANNOUNCE`]; a join during the cool-down is announced when it ends; a publish that
/// reached no one starts no cool-down.
#[derive(Debug, Default)]
struct Announcements {
    pending: bool,
    last: Option<Instant>,
}

impl Announcements {
    fn due(&self) -> bool {
        self.pending && self.last.is_none_or(|t| t.elapsed() >= REANNOUNCE)
    }

    fn publish(
        &mut self,
        g: &mut gossipsub::Behaviour,
        topic: &gossipsub::TopicHash,
        messages: Vec<Vec<u8>>,
    ) {
        self.pending = false;
        let topic = gossipsub::IdentTopic::new(topic.as_str());
        for m in messages {
            match g.publish(topic.clone(), m) {
                Ok(_) => self.last = Some(Instant::now()),
                Err(e) => debug!(topic = %topic, error = %e, "not announced"),
            }
        }
    }
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
    root_sequence: u64,
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
            root_sequence: 0,
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
        (u.trust, u.root_sequence, u.chain) = (trust, root_sequence, chain);
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

    pub(in crate::node) fn keys_topic(&self) -> &gossipsub::TopicHash {
        &self.keys_topic
    }

    fn roots_path(&self) -> PathBuf {
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
    fn receive_root(&mut self, data: &[u8]) -> Result<bool, Refused> {
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

    fn check_root(&mut self, data: &[u8]) -> Result<bool, Refused> {
        let r = SignedRoot::parse(data)?;
        // A link of the chain again (a peer catching others up): not forwarded.
        if self.chain.roots.iter().any(|c| c.signed == r.signed) {
            return Ok(false);
        }
        let trust = r.verify_next(&self.trust, self.root_sequence)?;
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
        (self.trust, self.root_sequence, self.chain) = (trust, r.signed.sequence, chain);
        Ok(true)
    }

    /// A peer joined the key rotation topic: the chain is announced again (see
    /// [`Announcements`]), link by link, so a peer that missed a rotation takes them in
    /// order.
    pub(in crate::node) fn on_keys_subscribed(&mut self, net: &mut Net<'_>) {
        self.keys_announce.pending = !self.chain.roots.is_empty();
        self.announce_due(net);
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

    /// Decides what the newest release means for this node, and starts on it.
    fn follow(&mut self, files: &mut FileService, net: &mut Net<'_>) {
        let Some((m, _)) = &self.newest else {
            return;
        };
        let m = m.signed.clone();
        self.stage = self.next_stage(&m);
        if let Stage::Skipped(state, why) = &self.stage {
            info!(release = %m.version, sequence = m.sequence, state, reason = %why, "not applying the release");
        }
        if matches!(self.stage, Stage::Idle) {
            self.fetch(files, net, &m);
        }
        self.gauges();
    }

    /// What to do about `m`: `Idle` means fetch it.
    fn next_stage(&self, m: &Manifest) -> Stage {
        let skip = |state, why: String| Stage::Skipped(state, why);
        if self.rolled_back.contains(&m.sequence) {
            return skip("rolled_back", format!("{} was rolled back here", m.version));
        }
        if self.applied.is_some_and(|a| a >= m.sequence) || !newer(&m.version, self.running) {
            return skip(
                "up_to_date",
                format!("running {}, the release is {}", self.running, m.version),
            );
        }
        if !m.targets.contains_key(&self.target) {
            let has = m.targets.keys().cloned().collect::<Vec<_>>().join(", ");
            return skip(
                "no_target",
                format!("no artifact for {} (it has: {has})", self.target),
            );
        }
        if !in_rollout(&self.me.to_bytes(), m) {
            return skip(
                "not_in_rollout",
                format!("this peer is outside the {}% rollout", m.rollout_percent),
            );
        }
        match self.mode {
            AutoUpdate::Apply => Stage::Idle,
            _ => Stage::Available,
        }
    }

    fn fetch(&mut self, files: &mut FileService, net: &mut Net<'_>, m: &Manifest) {
        let Some(t) = m.targets.get(&self.target) else {
            return;
        };
        let out = match self.releases.incoming(m) {
            Ok(o) => o,
            Err(e) => {
                self.stage = Stage::Failed(e.to_string());
                return;
            }
        };
        match files.fetch_to(net, t.file, out) {
            Ok(_) => {
                info!(release = %m.version, file = %t.file, size = t.size, "fetching the release");
                self.stage = Stage::Fetching {
                    id: t.file,
                    size: t.size,
                };
            }
            Err(error) => {
                warn!(release = %m.version, %error, "cannot fetch the release");
                self.stage = Stage::Retry {
                    at: Instant::now() + FETCH_RETRY,
                    error,
                };
            }
        }
    }

    /// Every second: a finished fetch is checked and staged; a failed one is retried;
    /// a newest release from before a restart is taken up again.
    pub(in crate::node) fn housekeeping(&mut self, files: &mut FileService, net: &mut Net<'_>) {
        self.announce_due(net);
        let Some((m, _)) = &self.newest else {
            return;
        };
        let m = m.signed.clone();
        match &self.stage {
            Stage::Idle => self.follow(files, net),
            Stage::Retry { at, .. } if Instant::now() >= *at => self.fetch(files, net, &m),
            Stage::Fetching { id, size } => {
                let (id, size) = (*id, *size);
                let Some(p) = files.progress_of(&id) else {
                    self.fetch(files, net, &m);
                    return;
                };
                match p.state {
                    FetchState::Fetching => {}
                    FetchState::Failed => {
                        let error = p.error.unwrap_or_else(|| "the fetch failed".into());
                        warn!(release = %m.version, %error, "fetching the release failed; trying again later");
                        self.stage = Stage::Retry {
                            at: Instant::now() + FETCH_RETRY,
                            error,
                        };
                    }
                    FetchState::Complete => self.stage_fetched(&m, size, PathBuf::from(p.path)),
                }
            }
            _ => {}
        }
        self.gauges();
    }

    /// The artifact verified chunk by chunk against its ID; its size is checked against
    /// the manifest's, and it is staged and handed over.
    fn stage_fetched(&mut self, m: &Manifest, size: u64, path: PathBuf) {
        let on_disk = std::fs::metadata(&path).map(|md| md.len());
        if on_disk.as_ref().ok() != Some(&size) {
            let error = format!(
                "the artifact at {} is {:?} bytes, the manifest says {size}",
                path.display(),
                on_disk.map_err(|e| e.to_string())
            );
            warn!(release = %m.version, %error, "not staging the release");
            self.stage = Stage::Failed(error);
            return;
        }
        match self.releases.stage(m, &path) {
            Ok(binary) => {
                info!(release = %m.version, binary = %binary.path.display(), "release staged");
                self.stage = Stage::Applying(binary.clone());
                self.apply_tx.send_replace(Some(binary));
            }
            Err(e) => {
                warn!(release = %m.version, error = %e, "cannot stage the release");
                self.stage = Stage::Failed(e.to_string());
            }
        }
    }

    /// A peer joined the topic: the newest release is announced again (see
    /// [`Announcements`]), so peers that were away learn of it.
    pub(in crate::node) fn on_subscribed(&mut self, net: &mut Net<'_>) {
        self.announce.pending = self.newest.is_some();
        self.announce_due(net);
    }

    /// Publishes what is pending and out of its cool-down (also from housekeeping).
    fn announce_due(&mut self, net: &mut Net<'_>) {
        let Some(g) = net.swarm.behaviour_mut().gossipsub.as_mut() else {
            return;
        };
        if self.announce.due() {
            let bytes = self.newest.as_ref().map(|(_, b)| vec![b.clone()]);
            self.announce
                .publish(g, &self.topic, bytes.unwrap_or_default());
        }
        if self.keys_announce.due() {
            let links = self
                .chain
                .roots
                .iter()
                .map(|r| r.to_json().into_bytes())
                .collect();
            self.keys_announce.publish(g, &self.keys_topic, links);
        }
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
        self.announce.pending = true;
        self.announce.last = None;
        self.announce_due(net);
        info!(release = %parsed.signed, "published a release");
        Ok(release_info(&parsed.signed))
    }

    /// A key rotation from this node's operator: taken as a received one is, then
    /// announced with the rest of the chain.
    fn publish_root(&mut self, net: &mut Net<'_>, data: &[u8]) -> Result<ReleaseInfo, String> {
        let r = SignedRoot::parse(data).map_err(|e| e.to_string())?;
        self.receive_root(data).map_err(|e| e.to_string())?;
        self.keys_announce.pending = true;
        self.keys_announce.last = None;
        self.announce_due(net);
        info!(root = r.signed.sequence, "published a release key rotation");
        Ok(ReleaseInfo {
            version: format!("root {}", r.signed.sequence),
            sequence: r.signed.sequence,
            ..ReleaseInfo::default()
        })
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
            root_sequence: self.root_sequence,
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
