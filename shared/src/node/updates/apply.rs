//! What the newest release means for this peer, and taking it up: fetching its
//! artifact through the file part, checking and staging it, and handing it to the
//! process to run.

use std::{path::PathBuf, time::Instant};

use tracing::{info, warn};

use super::{FETCH_RETRY, Stage, Updates};
use crate::{
    config::AutoUpdate,
    node::files::{FileService, Net},
    release::{Manifest, install::newer, manifest::in_rollout},
    status::FetchState,
};

impl Updates {
    /// Decides what the newest release means for this node, and starts on it.
    pub(super) fn follow(&mut self, files: &mut FileService, net: &mut Net<'_>) {
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
    pub(super) fn next_stage(&self, m: &Manifest) -> Stage {
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
    pub(super) fn fetch(&mut self, files: &mut FileService, net: &mut Net<'_>, m: &Manifest) {
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
    pub(super) fn stage_fetched(&mut self, m: &Manifest, size: u64, path: PathBuf) {
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
}
