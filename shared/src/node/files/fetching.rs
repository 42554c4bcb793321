//! Fetching: starting a fetch (or promoting a replica), finding providers in the DHT,
//! asking them for the manifest and chunks, verifying what they send, giving up on
//! providers whose relay cannot carry a chunk, and moving the finished file into place.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use libp2p::{PeerId, kad, request_response::OutboundRequestId};
use tracing::{debug, info, warn};

use super::{
    net::Net,
    service::{FileService, Observation},
};
use crate::{
    files::{
        fetch::{BadData, ChunkWrite, Fetch, MAX_PER_PROVIDER, Written, free_destination},
        id::{CHUNK_SIZE, FileId, Manifest},
        protocol::{Request, Response, safe_name},
        store::{Entry, Origin, now_secs},
    },
    metrics as m,
    status::{FetchState, Progress},
};

/// Finished fetches whose result stays visible to `get`.
const FINISHED: usize = 256;
/// How long a peer that served bad data is not asked again.
const PENALTY: Duration = Duration::from_secs(600);
/// How often a fetch without providers looks them up again, at first; each lookup
/// that finds nobody doubles the wait, up to [`MAX_PROVIDER_RETRY`].
const PROVIDER_RETRY: Duration = Duration::from_secs(5);
const MAX_PROVIDER_RETRY: Duration = Duration::from_secs(300);
/// Lookups that find nobody before a fetch that never started gives up: at 0, 10 and
/// 30 s (see [`lookup_interval`]), so a `get` of an ID nobody provides fails after
/// about 30 s plus the last lookup. The later ones cover a record being published
/// right now.
const MAX_EMPTY_LOOKUPS: u32 = 3;
/// Relayed connections to a provider that may close with file requests in flight,
/// in a row and without a whole chunk arriving in between, before the fetch stops
/// asking that provider: its relay's circuits are too small (or too short) to
/// carry one chunk.
pub(super) const MAX_RELAY_CUTS: u32 = 3;

impl FileService {
    /// Starts fetching `id` (or reports the fetch running, or the file held). A replica
    /// the user asks for is promoted to a fetched file instead.
    pub(super) fn start_fetch(
        &mut self,
        net: &mut Net<'_>,
        id: FileId,
        out: Option<PathBuf>,
        origin: Origin,
    ) -> Result<Progress, String> {
        if origin == Origin::Fetched {
            self.promote_replica(id, out.as_ref())?;
        }
        if let Some(p) = self.held_progress(&id) {
            return Ok(p);
        }
        if let Some(f) = self.fetches.get_mut(&id) {
            // The user asks for a file being replicated: the same fetch goes on, and
            // ends as the user's file where they want it instead of as a replica.
            if origin == Origin::Fetched && f.origin == Origin::Replica {
                f.dest = match out {
                    Some(o) if o.exists() => {
                        return Err(format!("{} exists; refusing to overwrite it", o.display()));
                    }
                    Some(o) => o,
                    None => free_destination(&self.policy.download_dir, &f.name, &id),
                };
                f.origin = Origin::Fetched;
                info!(%id, "fetching file the user asked for (was a replica)");
            }
            return Ok(f.progress());
        }
        let announced = self.gossip.announced(&id);
        // The name comes from an earlier attempt whose partial file this fetch resumes,
        // else from the announcement, else the ID.
        let name_file = self.store.partial_dir().join(format!("{id}.name"));
        let saved = std::fs::read_to_string(&name_file)
            .ok()
            .and_then(|n| safe_name(n.trim()));
        let name = match (saved, &announced) {
            (Some(n), _) => n,
            (None, Some((a, _))) => a.name.clone(),
            (None, None) => id.to_string(),
        };
        if let Some((a, publisher)) = &announced {
            let publisher = (origin == Origin::Replica).then(|| publisher.to_string());
            self.reserve_announced(id, &a.name, a.size, publisher)?;
            // Remembered for a resumed fetch, once the fetch may go ahead.
            let _ = std::fs::write(&name_file, &name);
        }
        let dest = match (origin, out) {
            (Origin::Replica, _) => self.store.replica_path(&id),
            (_, Some(out)) if out.exists() => {
                return Err(format!(
                    "{} exists; refusing to overwrite it",
                    out.display()
                ));
            }
            (_, Some(out)) => out,
            (_, None) => free_destination(&self.policy.download_dir, &name, &id),
        };
        let mut fetch = Fetch::new(id, name, dest, origin, &self.store.partial_dir());
        if origin == Origin::Replica
            && let Some((a, publisher)) = &announced
        {
            fetch.expected_size = Some(a.size);
            fetch.publisher = Some(*publisher);
        }
        if let Some((_, publisher)) = &announced
            && !self.penalized(publisher)
        {
            fetch.add_provider(*publisher);
        }
        let progress = fetch.progress();
        self.fetches.insert(id, fetch);
        info!(%id, ?origin, "fetching file");
        self.find_providers(net, id);
        self.pump(net, id);
        Ok(progress)
    }

    /// A replica the user asks for becomes a fetched file at `out` (or in the download
    /// dir): moved out of the replica store, no longer evictable.
    pub(super) fn promote_replica(
        &mut self,
        id: FileId,
        out: Option<&PathBuf>,
    ) -> Result<(), String> {
        let Some(e) = self.store.get(&id).filter(|e| e.origin == Origin::Replica) else {
            return Ok(());
        };
        let dest = match out {
            Some(o) if o.exists() => {
                return Err(format!("{} exists; refusing to overwrite it", o.display()));
            }
            Some(o) => o.clone(),
            None => free_destination(&self.policy.download_dir, &e.name, &id),
        };
        self.store
            .promote(&id, &dest)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A held file's progress: complete.
    pub(super) fn held_progress(&self, id: &FileId) -> Option<Progress> {
        let e = self.store.get(id)?;
        let chunks = self.store.manifest(id).map(Manifest::chunks);
        Some(Progress {
            id: id.to_string(),
            name: e.name.clone(),
            state: FetchState::Complete,
            size: Some(e.size),
            chunks_total: chunks,
            chunks_done: chunks.unwrap_or(0),
            chunks_resumed: 0,
            providers: 0,
            bad_providers: vec![],
            path: e.path.display().to_string(),
            error: None,
        })
    }

    pub(super) fn find_providers(&mut self, net: &mut Net<'_>, id: FileId) {
        let Some(kad) = net.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        let q = kad.get_providers(id.dht_key());
        self.provider_queries.insert(q, id);
        if let Some(f) = self.fetches.get_mut(&id) {
            f.last_provider_query = Some(Instant::now());
        }
    }

    /// Providers found in the DHT; returns false when `query` is not a file's lookup.
    pub(in crate::node) fn on_providers(
        &mut self,
        net: &mut Net<'_>,
        query: kad::QueryId,
        providers: &[PeerId],
    ) -> bool {
        let Some(id) = self.provider_queries.get(&query).copied() else {
            return false;
        };
        let me = self.me;
        for p in providers.iter().filter(|p| **p != me) {
            if !self.penalized(p)
                && let Some(f) = self.fetches.get_mut(&id)
                && f.add_provider(*p)
            {
                debug!(%id, provider = %p, "provider found");
            }
        }
        self.pump(net, id);
        true
    }

    /// A provider lookup ended. A fetch that has found nobody to ask after
    /// [`MAX_EMPTY_LOOKUPS`] lookups fails; one that has started waits for providers,
    /// looking them up less and less often (see [`lookup_interval`]).
    pub(in crate::node) fn query_ended(&mut self, query: kad::QueryId) {
        let Some(id) = self.provider_queries.remove(&query) else {
            return;
        };
        if let Some(f) = self.fetches.get_mut(&id) {
            if f.has_providers() {
                f.empty_lookups = 0;
            } else {
                f.empty_lookups += 1;
                if f.manifest.is_none() && f.empty_lookups >= MAX_EMPTY_LOOKUPS {
                    f.error = Some(format!(
                        "no peer provides {id}: {MAX_EMPTY_LOOKUPS} DHT lookups found nobody (is the ID right, and is its publisher online?)"
                    ));
                }
            }
        }
        self.finish_failed(id);
    }

    /// Sends whatever requests a fetch can send now. Over a relayed connection a fetch
    /// asks for one chunk at a time (see [`Fetch::next_requests_with`]).
    pub(super) fn pump(&mut self, net: &mut Net<'_>, id: FileId) {
        let Some(fetch) = self.fetches.get_mut(&id) else {
            return;
        };
        let direct = net.connections.direct_peers();
        let requests = fetch.next_requests_with(|p| {
            if direct.contains(p) {
                MAX_PER_PROVIDER
            } else {
                1
            }
        });
        let Some(rr) = net.swarm.behaviour_mut().files.as_mut() else {
            return;
        };
        for (peer, req) in requests {
            let chunk = match &req {
                Request::Chunk { index, .. } => Some(*index),
                Request::Manifest(_) => None,
            };
            let rid = rr.send_request(&peer, req);
            fetch.sent(rid, peer, chunk);
        }
    }

    /// Every second: replication fetches past their deadline stop; fetches without
    /// providers look them up again (less often the longer nobody is found); every
    /// fetch sends what it can.
    pub(super) fn retry_fetches(&mut self, net: &mut Net<'_>) {
        self.enforce_deadlines();
        let now = Instant::now();
        let stalled: Vec<FileId> = self
            .fetches
            .values()
            .filter(|f| f.error.is_none() && !f.has_providers())
            .filter(|f| {
                f.last_provider_query
                    .is_none_or(|t| now.duration_since(t) > lookup_interval(f.empty_lookups))
            })
            .map(|f| f.id)
            .collect();
        for id in stalled {
            self.find_providers(net, id);
        }
        let all: Vec<FileId> = self.fetches.keys().copied().collect();
        for id in all {
            self.pump(net, id);
        }
    }

    /// A provider answered: a manifest (checked against the ID; room is made before any
    /// byte is written), a chunk (checked against its leaf), or "not found". A provider
    /// that sent data that does not verify is penalized and disconnected.
    pub(super) fn on_response(
        &mut self,
        net: &mut Net<'_>,
        peer: PeerId,
        req: OutboundRequestId,
        response: Response,
    ) {
        let Some(id) = self.fetch_of(&req) else {
            return;
        };
        let Some(fetch) = self.fetches.get_mut(&id) else {
            return;
        };
        let is_manifest = matches!(response, Response::Manifest(_));
        let origin = fetch.origin;
        let result = match response {
            Response::Manifest(manifest) => {
                let size = manifest.size;
                let r = fetch.on_manifest(&req, manifest).map(|()| false);
                if r.is_ok() && fetch.manifest.is_none() && fetch.error.is_some() {
                    // It hashes to the ID, but is not what was announced or not the
                    // scheme's: the fetch stops (logged with the reason when it fails).
                    if origin == Origin::Replica {
                        super::replication::refused("manifest");
                    }
                    self.drop_fetch_data(id, fetch_error(self.fetches.get(&id)));
                } else if r.is_ok() && fetch.manifest.is_some() && fetch.error.is_none() {
                    // The user's fetch makes room for the file's verified size; a
                    // replica makes room as its chunks verify.
                    if origin != Origin::Replica
                        && let Err(e) = self.reserve_verified(net, id, size)
                    {
                        self.drop_fetch_data(id, e);
                    }
                }
                r
            }
            Response::Chunk(data) => {
                metrics::counter!(m::FILE_BYTES, "direction" => "received")
                    .increment(data.len() as u64);
                if origin == Origin::Replica && !self.room_for_chunk(net, id, &req, &data) {
                    self.finish_failed(id);
                    return;
                }
                let Some(fetch) = self.fetches.get_mut(&id) else {
                    return;
                };
                // Hashing and writing a chunk takes about a millisecond: on the
                // blocking pool, so the event loop asks for the next one meanwhile.
                if let Some(write) = fetch.take_chunk(&req) {
                    let tx = self.writes_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let r = write.run(&data);
                        let _ = tx.send((write, r));
                    });
                }
                self.pump(net, id);
                return;
            }
            Response::NotFound => {
                fetch.not_found(&req);
                Ok(false)
            }
            Response::Busy => {
                debug!(%id, %peer, "provider busy; asking it again shortly");
                fetch.busy(&req);
                Ok(false)
            }
        };
        let observed = is_manifest.then_some(Observation::Manifest);
        self.settle(net, id, peer, observed, result);
    }

    /// A chunk verified and written on the blocking pool, or refused there.
    pub(in crate::node) fn on_chunk_written(
        &mut self,
        net: &mut Net<'_>,
        write: ChunkWrite,
        r: Written,
    ) {
        let Some(fetch) = self.fetches.get_mut(&write.id) else {
            return;
        };
        let result = fetch.written(&write, r);
        if result.is_ok() {
            self.relay_cuts.remove(&write.peer);
        }
        self.settle(net, write.id, write.peer, Some(Observation::Chunk), result);
    }

    /// What an answer from `peer` did to the fetch of `id`: scored (`observed` when it
    /// was good), and the fetch completed, a liar penalized, or the next chunks asked.
    fn settle(
        &mut self,
        net: &mut Net<'_>,
        id: FileId,
        peer: PeerId,
        observed: Option<Observation>,
        result: Result<bool, BadData>,
    ) {
        match (&result, observed) {
            (Ok(_), Some(o)) => self.observe(peer, o),
            (Ok(_), None) => {}
            (Err(bad), _) => self.observe(bad.peer, Observation::BadData),
        }
        match result {
            Ok(true) => self.complete(net, id),
            Ok(false) => {}
            Err(bad) => {
                warn!(%id, peer = %bad.peer, what = %bad.what, "provider sent bad data; dropped as a source and penalized");
                metrics::counter!(m::FILE_BAD_DATA).increment(1);
                self.penalized.insert(bad.peer, Instant::now() + PENALTY);
                let _ = net.swarm.disconnect_peer_id(peer);
            }
        }
        self.finish_failed(id);
        self.pump(net, id);
    }

    /// A fetch that cannot go on: it fails with `error`, and its partial file and saved
    /// name are removed.
    pub(super) fn drop_fetch_data(&mut self, id: FileId, error: String) {
        if let Some(f) = self.fetches.get_mut(&id) {
            f.error = Some(error);
            f.abandon();
        }
        let partial = self.store.partial_dir();
        let _ = std::fs::remove_file(partial.join(format!("{id}.part")));
        let _ = std::fs::remove_file(partial.join(format!("{id}.name")));
    }

    /// A relayed connection to `peer` closed. When that cuts file requests in flight
    /// [`MAX_RELAY_CUTS`] times in a row without a whole chunk from `peer` in between,
    /// its relay cannot carry a chunk: fetches stop asking `peer`, and fail with the
    /// reason when it was their only provider.
    pub(in crate::node) fn relayed_connection_lost(&mut self, net: &mut Net<'_>, peer: PeerId) {
        if net.swarm.is_connected(&peer) {
            return;
        }
        let waiting: Vec<FileId> = self
            .fetches
            .values()
            .filter(|f| f.waiting_on(&peer))
            .map(|f| f.id)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let cuts = self.relay_cuts.entry(peer).or_default();
        *cuts += 1;
        if *cuts < MAX_RELAY_CUTS {
            debug!(%peer, cuts = *cuts, "relayed connection to a provider closed mid-transfer; will reconnect");
            return;
        }
        self.relay_cuts.remove(&peer);
        let why = format!(
            "provider {peer} is reachable only through a relay, which closed the connection \
             {MAX_RELAY_CUTS} times in a row before a whole chunk ({CHUNK_SIZE} bytes) arrived: the \
             relay's circuits are too small or too short for files (its relay.max_circuit_bytes \
             must be at least 2 MiB); the verified chunks are kept, `get` again to resume"
        );
        warn!(%peer, cuts = MAX_RELAY_CUTS, "no longer fetching from this provider: its relay cuts every chunk");
        for id in waiting {
            if let Some(f) = self.fetches.get_mut(&id) {
                f.give_up_on(peer, why.clone());
            }
        }
        let ids: Vec<FileId> = self.fetches.keys().copied().collect();
        for id in ids {
            self.finish_failed(id);
        }
    }

    /// Moves a failed fetch to the finished list and releases its reservation; a
    /// replica's partial file goes too (the user's stays, to resume from).
    pub(super) fn finish_failed(&mut self, id: FileId) {
        if self.fetches.get(&id).is_some_and(|f| f.error.is_some())
            && let Some(mut f) = self.fetches.remove(&id)
        {
            warn!(%id, error = ?f.error, "fetch failed");
            f.abandon();
            self.store.release(&id);
            if f.origin == Origin::Replica {
                let partial = self.store.partial_dir();
                let _ = std::fs::remove_file(partial.join(format!("{id}.part")));
                let _ = std::fs::remove_file(partial.join(format!("{id}.name")));
            }
            self.push_finished(f.progress());
        }
    }

    pub(super) fn push_finished(&mut self, p: Progress) {
        for (_, waiter) in self.waiters.extract_if(.., |(w, _)| w.to_string() == p.id) {
            let _ = waiter.send(Some(p.clone()));
        }
        self.finished.push_back(p);
        if self.finished.len() > FINISHED {
            self.finished.pop_front();
        }
    }

    /// Every chunk verified: the file moves into place and is held (and provided).
    pub(super) fn complete(&mut self, net: &mut Net<'_>, id: FileId) {
        let Some(mut fetch) = self.fetches.remove(&id) else {
            return;
        };
        let Some(manifest) = fetch.manifest.clone() else {
            return;
        };
        match fetch.finish() {
            Ok(path) => {
                let entry = Entry {
                    id,
                    name: fetch.name.clone(),
                    size: manifest.size,
                    path: path.clone(),
                    origin: fetch.origin,
                    added: now_secs(),
                    publisher: (fetch.origin == Origin::Replica)
                        .then(|| fetch.publisher.map(|p| p.to_string()))
                        .flatten(),
                };
                if let Err(e) = self.store.insert(entry, manifest) {
                    self.store.release(&id);
                    fetch.error = Some(e.to_string());
                } else {
                    info!(%id, path = %path.display(), "file complete");
                    let name_file = self.store.partial_dir().join(format!("{id}.name"));
                    let _ = std::fs::remove_file(name_file);
                    net.provide(id);
                }
            }
            Err(e) => {
                self.store.release(&id);
                fetch.error = Some(format!("cannot move the file into place: {e}"));
            }
        }
        self.push_finished(fetch.progress());
    }
}

/// The wait before the next provider lookup after `empty` lookups in a row found
/// nobody: 5 s, doubling, at most [`MAX_PROVIDER_RETRY`].
fn lookup_interval(empty: u32) -> Duration {
    PROVIDER_RETRY
        .saturating_mul(1 << empty.min(10))
        .min(MAX_PROVIDER_RETRY)
}

fn fetch_error(f: Option<&Fetch>) -> String {
    f.and_then(|f| f.error.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_lookups_back_off() {
        assert_eq!(lookup_interval(0), Duration::from_secs(5));
        assert_eq!(lookup_interval(3), Duration::from_secs(40));
        assert_eq!(lookup_interval(7), MAX_PROVIDER_RETRY);
        assert_eq!(lookup_interval(u32::MAX), MAX_PROVIDER_RETRY);
    }
}
