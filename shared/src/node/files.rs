//! The peer's files and messages inside the event loop: serving chunks, fetching,
//! announcements and replication, and the message log.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    time::{Duration, Instant},
};

use libp2p::{
    PeerId, gossipsub, kad,
    request_response::{self, OutboundRequestId},
};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::Node;
use crate::{
    files::{
        fetch::{Fetch, Progress, free_destination},
        id::{FileId, Manifest},
        protocol::{
            Announcement, ChatMessage, FILES_TOPIC, MESSAGES_TOPIC, Request, Response,
            parse_announcement, parse_message, safe_name,
        },
        store::{Entry, Origin, Store, now_secs},
    },
    metrics as m,
};

/// Messages kept for `messages`.
const MESSAGE_LOG: usize = 1000;
/// Announcements remembered (for names, sizes and the first provider).
const ANNOUNCED: usize = 10_000;
/// Finished fetches whose result stays visible to `get`.
const FINISHED: usize = 256;
/// How long a peer that served bad data is not asked again.
const PENALTY: Duration = Duration::from_secs(600);
/// How often a fetch without providers looks them up again.
const PROVIDER_RETRY: Duration = Duration::from_secs(5);
/// Lookups that find nobody before a fetch that never started gives up.
const MAX_EMPTY_LOOKUPS: u32 = 6;
/// Relayed connections to a provider that may close with file requests in flight,
/// in a row and without a whole chunk arriving in between, before the fetch stops
/// asking that provider: its relay's circuits are too small (or too short) to
/// carry one chunk.
const MAX_RELAY_CUTS: u32 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub origin: Origin,
    pub path: String,
}

impl From<&Entry> for FileInfo {
    fn from(e: &Entry) -> Self {
        FileInfo {
            id: e.id.to_string(),
            name: e.name.clone(),
            size: e.size,
            origin: e.origin,
            path: e.path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub seq: u64,
    pub from: String,
    pub sent_at: u64,
    pub received_at: u64,
    pub text: String,
}

/// Requests for the file part of the event loop.
#[derive(Debug)]
pub enum FileCommand {
    /// Share a file already hashed by the caller.
    Share {
        path: PathBuf,
        name: String,
        manifest: Manifest,
        reply: oneshot::Sender<Result<FileInfo, String>>,
    },
    Get {
        id: FileId,
        out: Option<PathBuf>,
        reply: oneshot::Sender<Result<Progress, String>>,
    },
    List(oneshot::Sender<(Vec<FileInfo>, Vec<Progress>)>),
    Progress {
        id: FileId,
        reply: oneshot::Sender<Option<Progress>>,
    },
    Remove {
        id: FileId,
        reply: oneshot::Sender<Result<FileInfo, String>>,
    },
    Send {
        text: String,
        reply: oneshot::Sender<Result<MessageRecord, String>>,
    },
    Messages {
        after: u64,
        reply: oneshot::Sender<Vec<MessageRecord>>,
    },
}

pub(super) struct FileState {
    store: Store,
    download_dir: PathBuf,
    min_file_size: u64,
    fetches: HashMap<FileId, Fetch>,
    finished: VecDeque<Progress>,
    announced: HashMap<FileId, (Announcement, PeerId)>,
    messages: VecDeque<MessageRecord>,
    next_seq: u64,
    provider_queries: HashMap<kad::QueryId, FileId>,
    penalized: HashMap<PeerId, Instant>,
    last_reannounce: Option<Instant>,
    /// Upload budget (bytes per second; 0: unlimited), its tokens, and the chunk
    /// responses waiting for tokens.
    upload_rate: u64,
    upload_tokens: u64,
    deferred: VecDeque<(request_response::ResponseChannel<Response>, Response)>,
    /// Relayed connections to a provider that closed with file requests in flight
    /// since the last whole chunk from it (see [`MAX_RELAY_CUTS`]).
    relay_cuts: HashMap<PeerId, u32>,
}

impl FileState {
    pub(super) fn new(
        store: Store,
        download_dir: PathBuf,
        min_file_size: u64,
        upload_rate: u64,
    ) -> Self {
        FileState {
            store,
            download_dir,
            min_file_size,
            fetches: HashMap::new(),
            finished: VecDeque::new(),
            announced: HashMap::new(),
            messages: VecDeque::new(),
            next_seq: 1,
            provider_queries: HashMap::new(),
            penalized: HashMap::new(),
            last_reannounce: None,
            upload_rate,
            upload_tokens: upload_rate,
            deferred: VecDeque::new(),
            relay_cuts: HashMap::new(),
        }
    }

    pub(super) fn held_ids(&self) -> Vec<FileId> {
        self.store.entries().map(|e| e.id).collect()
    }

    fn push_message(&mut self, from: PeerId, msg: ChatMessage) -> MessageRecord {
        let rec = MessageRecord {
            seq: self.next_seq,
            from: from.to_string(),
            sent_at: msg.sent_at,
            received_at: now_secs(),
            text: msg.text,
        };
        self.next_seq += 1;
        self.messages.push_back(rec.clone());
        if self.messages.len() > MESSAGE_LOG {
            self.messages.pop_front();
        }
        rec
    }
}

impl Node {
    /// Publishes a provider record for `id` now, and again whenever our addresses change.
    fn provide(&mut self, id: FileId) {
        self.provided.insert(id.dht_key(), false);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            let _ = kad.start_providing(id.dht_key());
        }
    }

    pub(super) fn on_file_command(&mut self, cmd: FileCommand) {
        let Some(files) = self.files.as_mut() else {
            // Only peers run the file service; the admin endpoint checks the role.
            return;
        };
        match cmd {
            FileCommand::Share {
                path,
                name,
                manifest,
                reply,
            } => {
                let id = manifest.root();
                let entry = Entry {
                    id,
                    name,
                    size: manifest.size,
                    path,
                    origin: Origin::Shared,
                    added: now_secs(),
                };
                let info = FileInfo::from(&entry);
                let announcement = Announcement {
                    id,
                    name: entry.name.clone(),
                    size: entry.size,
                };
                if let Err(e) = files.store.insert(entry, manifest) {
                    let _ = reply.send(Err(e.to_string()));
                    return;
                }
                info!(%id, name = %info.name, size = info.size, "sharing file");
                let _ = reply.send(Ok(info));
                self.provide(id);
                self.publish(FILES_TOPIC, &announcement);
            }
            FileCommand::Get { id, out, reply } => {
                let _ = reply.send(self.start_fetch(id, out, Origin::Fetched));
            }
            FileCommand::List(reply) => {
                let held = files.store.entries().map(FileInfo::from).collect();
                let fetching = files.fetches.values().map(Fetch::progress).collect();
                let _ = reply.send((held, fetching));
            }
            FileCommand::Progress { id, reply } => {
                let p = files.fetches.get(&id).map(Fetch::progress).or_else(|| {
                    files
                        .finished
                        .iter()
                        .rev()
                        .find(|p| p.id == id.to_string())
                        .cloned()
                });
                let _ = reply.send(p);
            }
            FileCommand::Remove { id, reply } => {
                if let Some(mut f) = files.fetches.remove(&id) {
                    f.abandon();
                }
                let r = files
                    .store
                    .remove(&id)
                    .map(|e| FileInfo::from(&e))
                    .map_err(|e| e.to_string());
                if r.is_ok() {
                    self.provided.remove(&id.dht_key());
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        kad.stop_providing(&id.dht_key());
                    }
                }
                let _ = reply.send(r);
            }
            FileCommand::Send { text, reply } => {
                let msg = ChatMessage {
                    text,
                    sent_at: now_secs(),
                };
                let data = serde_json::to_vec(&msg).unwrap_or_default();
                if let Err(e) = parse_message(&data) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let me = self.peer_id;
                let rec = files.push_message(me, msg);
                let topic = gossipsub::IdentTopic::new(MESSAGES_TOPIC);
                let r = match self.swarm.behaviour_mut().gossipsub.as_mut().map(|g| g.publish(topic, data)) {
                    Some(Ok(_)) => Ok(rec),
                    Some(Err(gossipsub::PublishError::NoPeersSubscribedToTopic)) => {
                        Err("no connected peer receives messages yet; try again once `jantar-peer peers` lists some".into())
                    }
                    Some(Err(e)) => Err(format!("cannot publish: {e}")),
                    None => Err("messages are not enabled on this node".into()),
                };
                let _ = reply.send(r);
            }
            FileCommand::Messages { after, reply } => {
                let _ = reply.send(
                    files
                        .messages
                        .iter()
                        .filter(|m| m.seq > after)
                        .cloned()
                        .collect(),
                );
            }
        }
    }

    fn publish<T: Serialize>(&mut self, topic: &str, payload: &T) {
        let data = match serde_json::to_vec(payload) {
            Ok(d) => d,
            Err(_) => return,
        };
        if let Some(g) = self.swarm.behaviour_mut().gossipsub.as_mut()
            && let Err(e) = g.publish(gossipsub::IdentTopic::new(topic), data)
        {
            debug!(topic, error = %e, "not published");
        }
    }

    fn start_fetch(
        &mut self,
        id: FileId,
        out: Option<PathBuf>,
        origin: Origin,
    ) -> Result<Progress, String> {
        let Some(files) = self.files.as_mut() else {
            return Err("files are not enabled on this node".into());
        };
        if origin == Origin::Fetched
            && let Some(e) = files.store.get(&id)
            && e.origin == Origin::Replica
        {
            let dest = match &out {
                Some(o) if o.exists() => {
                    return Err(format!("{} exists; refusing to overwrite it", o.display()));
                }
                Some(o) => o.clone(),
                None => free_destination(&files.download_dir, &e.name.clone(), &id),
            };
            files.store.promote(&id, &dest).map_err(|e| e.to_string())?;
        }
        if let Some(e) = files.store.get(&id) {
            return Ok(Progress {
                id: id.to_string(),
                name: e.name.clone(),
                state: "complete".into(),
                size: Some(e.size),
                chunks_total: files.store.manifest(&id).map(Manifest::chunks),
                chunks_done: files.store.manifest(&id).map_or(0, Manifest::chunks),
                chunks_resumed: 0,
                providers: 0,
                bad_providers: vec![],
                path: e.path.display().to_string(),
                error: None,
            });
        }
        if let Some(f) = files.fetches.get(&id) {
            return Ok(f.progress());
        }
        let announced = files.announced.get(&id).cloned();
        // The name comes from an earlier attempt whose partial file this fetch resumes,
        // else from the announcement, else the ID.
        let name_file = files.store.partial_dir().join(format!("{id}.name"));
        let saved = std::fs::read_to_string(&name_file)
            .ok()
            .and_then(|n| safe_name(n.trim()));
        let name = match (saved, &announced) {
            (Some(n), _) => n,
            (None, Some((a, _))) => a.name.clone(),
            (None, None) => id.to_string(),
        };
        if let Some((a, _)) = &announced {
            files
                .store
                .make_room(&a.name, a.size)
                .map_err(|e| e.to_string())?;
            // Remembered for a resumed fetch, once the fetch may go ahead.
            let _ = std::fs::write(&name_file, &name);
        }
        let dest = match (origin, out) {
            (Origin::Replica, _) => files.store.replica_path(&id),
            (_, Some(out)) => {
                if out.exists() {
                    return Err(format!(
                        "{} exists; refusing to overwrite it",
                        out.display()
                    ));
                }
                out
            }
            (_, None) => free_destination(&files.download_dir, &name, &id),
        };
        let mut fetch = Fetch::new(id, name, dest, origin, &files.store.partial_dir());
        let now = Instant::now();
        files.penalized.retain(|_, until| *until > now);
        if let Some((_, publisher)) = &announced
            && !files.penalized.contains_key(publisher)
        {
            fetch.add_provider(*publisher);
        }
        let progress = fetch.progress();
        files.fetches.insert(id, fetch);
        info!(%id, ?origin, "fetching file");
        self.find_providers(id);
        self.pump(id);
        Ok(progress)
    }

    fn find_providers(&mut self, id: FileId) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        let q = kad.get_providers(id.dht_key());
        files.provider_queries.insert(q, id);
        if let Some(f) = files.fetches.get_mut(&id) {
            f.last_provider_query = Some(Instant::now());
        }
    }

    /// Providers of a file found in the DHT.
    pub(super) fn on_file_providers(
        &mut self,
        query: kad::QueryId,
        providers: Vec<PeerId>,
    ) -> bool {
        let Some(files) = self.files.as_mut() else {
            return false;
        };
        let Some(id) = files.provider_queries.get(&query).copied() else {
            return false;
        };
        let now = Instant::now();
        files.penalized.retain(|_, until| *until > now);
        if let Some(f) = files.fetches.get_mut(&id) {
            for p in providers {
                if p != self.peer_id && !files.penalized.contains_key(&p) && f.add_provider(p) {
                    debug!(%id, provider = %p, "provider found");
                }
            }
        }
        self.pump(id);
        true
    }

    /// A provider lookup ended. A fetch that has found nobody to ask after
    /// [`MAX_EMPTY_LOOKUPS`] lookups fails; one that has started waits for providers.
    pub(super) fn file_query_finished(&mut self, query: &kad::QueryId) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let Some(id) = files.provider_queries.remove(query) else {
            return;
        };
        if let Some(f) = files.fetches.get_mut(&id) {
            if f.has_providers() || f.manifest.is_some() {
                f.empty_lookups = 0;
            } else {
                f.empty_lookups += 1;
                if f.empty_lookups >= MAX_EMPTY_LOOKUPS {
                    f.error = Some(format!(
                        "no peer provides {id}: {MAX_EMPTY_LOOKUPS} DHT lookups found nobody (is the ID right, and is its publisher online?)"
                    ));
                }
            }
        }
        self.finish_failed(id);
    }

    /// Sends whatever requests a fetch can send now.
    fn pump(&mut self, id: FileId) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let Some(fetch) = files.fetches.get_mut(&id) else {
            return;
        };
        let direct: HashSet<PeerId> = self
            .connections
            .values()
            .filter(|c| c.kind == crate::status::ConnectionKind::Direct)
            .map(|c| c.peer)
            .collect();
        let per_provider = |p: &PeerId| {
            if direct.contains(p) {
                crate::files::fetch::MAX_PER_PROVIDER
            } else {
                1
            }
        };
        let requests = fetch.next_requests_with(per_provider);
        let Some(rr) = self.swarm.behaviour_mut().files.as_mut() else {
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

    /// Every second: refill the upload budget and send what waited for it; look
    /// providers up again for fetches that have none, and retry.
    pub(super) fn files_housekeeping(&mut self) {
        if let Some(files) = self.files.as_mut()
            && files.upload_rate > 0
        {
            files.upload_tokens = (files.upload_tokens + files.upload_rate).min(
                files
                    .upload_rate
                    .max(u64::from(crate::files::id::CHUNK_SIZE)),
            );
            while let Some((_, Response::Chunk(data))) = files.deferred.front() {
                let len = data.len() as u64;
                if files.upload_tokens < len {
                    break;
                }
                files.upload_tokens -= len;
                let (channel, resp) = files.deferred.pop_front().expect("front exists");
                if let Some(rr) = self.swarm.behaviour_mut().files.as_mut() {
                    let _ = rr.send_response(channel, resp);
                }
            }
        }
        let Some(files) = self.files.as_ref() else {
            return;
        };
        let now = Instant::now();
        let stalled: Vec<FileId> = files
            .fetches
            .values()
            .filter(|f| f.error.is_none())
            .filter(|f| {
                !f.has_providers()
                    && f.last_provider_query
                        .is_none_or(|t| now.duration_since(t) > PROVIDER_RETRY)
            })
            .map(|f| f.id)
            .collect();
        let all: Vec<FileId> = files.fetches.keys().copied().collect();
        for id in stalled {
            self.find_providers(id);
        }
        for id in all {
            self.pump(id);
        }
    }

    pub(super) fn on_transfer(&mut self, e: request_response::Event<Request, Response>) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let resp = self.serve(peer, request);
                    if let Some(files) = self.files.as_mut()
                        && files.upload_rate > 0
                        && let Response::Chunk(data) = &resp
                    {
                        let len = data.len() as u64;
                        if !files.deferred.is_empty() || files.upload_tokens < len {
                            files.deferred.push_back((channel, resp));
                            return;
                        }
                        files.upload_tokens -= len;
                    }
                    if let Some(rr) = self.swarm.behaviour_mut().files.as_mut() {
                        let _ = rr.send_response(channel, resp);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.on_response(peer, request_id, response);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, error = %error, "file request failed");
                if let Some(id) = self.fetch_of(&request_id)
                    && let Some(f) = self.files.as_mut().and_then(|s| s.fetches.get_mut(&id))
                {
                    f.failed(&request_id);
                    self.pump(id);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, error = %error, "serving a file request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn serve(&mut self, peer: PeerId, request: Request) -> Response {
        let Some(files) = self.files.as_mut() else {
            return Response::NotFound;
        };
        if files
            .penalized
            .get(&peer)
            .is_some_and(|t| *t > Instant::now())
        {
            return Response::NotFound;
        }
        match request {
            Request::Manifest(id) => files
                .store
                .manifest(&id)
                .cloned()
                .map_or(Response::NotFound, Response::Manifest),
            Request::Chunk { id, index } => match files.store.read_chunk(&id, index) {
                Ok(data) => {
                    metrics::counter!(m::FILE_BYTES, "direction" => "sent")
                        .increment(data.len() as u64);
                    Response::Chunk(serde_bytes::ByteBuf::from(data))
                }
                Err(e) => {
                    if matches!(e, crate::files::store::StoreError::Changed { .. }) {
                        warn!(%id, error = %e, "stopped sharing a file that changed on disk");
                        self.provided.remove(&id.dht_key());
                        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                            kad.stop_providing(&id.dht_key());
                        }
                    }
                    Response::NotFound
                }
            },
        }
    }

    fn fetch_of(&self, req: &OutboundRequestId) -> Option<FileId> {
        self.files
            .as_ref()?
            .fetches
            .values()
            .find(|f| f.owns(req))
            .map(|f| f.id)
    }

    fn on_response(&mut self, peer: PeerId, req: OutboundRequestId, response: Response) {
        let Some(id) = self.fetch_of(&req) else {
            return;
        };
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let Some(fetch) = files.fetches.get_mut(&id) else {
            return;
        };
        let is_chunk = matches!(response, Response::Chunk(_));
        let result = match response {
            Response::Manifest(manifest) => {
                let size = manifest.size;
                let r = fetch.on_manifest(&req, manifest).map(|()| false);
                // The size is known now: make room before any byte is written.
                if r.is_ok() && fetch.manifest.is_some() && fetch.error.is_none() {
                    let name = fetch.name.clone();
                    if let Err(e) = files.store.make_room(&name, size) {
                        let f = files.fetches.get_mut(&id).expect("present");
                        f.error = Some(e.to_string());
                        f.abandon();
                        let partial = files.store.partial_dir();
                        let _ = std::fs::remove_file(partial.join(format!("{id}.part")));
                        let _ = std::fs::remove_file(partial.join(format!("{id}.name")));
                    }
                }
                r
            }
            Response::Chunk(data) => {
                metrics::counter!(m::FILE_BYTES, "direction" => "received")
                    .increment(data.len() as u64);
                fetch.on_chunk(&req, &data)
            }
            Response::NotFound => {
                fetch.not_found(&req);
                Ok(false)
            }
        };
        if is_chunk
            && result.is_ok()
            && let Some(files) = self.files.as_mut()
        {
            files.relay_cuts.remove(&peer);
        }
        match result {
            Ok(true) => self.complete(id),
            Ok(false) => {}
            Err(bad) => {
                warn!(%id, peer = %bad.peer, what = %bad.what, "provider sent bad data; dropped as a source and penalized");
                metrics::counter!(m::FILE_BAD_DATA).increment(1);
                if let Some(files) = self.files.as_mut() {
                    files.penalized.insert(bad.peer, Instant::now() + PENALTY);
                }
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        self.finish_failed(id);
        self.pump(id);
    }

    /// A relayed connection to `peer` closed. When that cuts file requests in flight
    /// [`MAX_RELAY_CUTS`] times in a row without a whole chunk from `peer` in between,
    /// its relay cannot carry a chunk: fetches stop asking `peer`, and fail with the
    /// reason when it was their only provider.
    pub(super) fn relayed_connection_lost(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let waiting: Vec<FileId> = files
            .fetches
            .values()
            .filter(|f| f.waiting_on(&peer))
            .map(|f| f.id)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let cuts = files.relay_cuts.entry(peer).or_default();
        *cuts += 1;
        if *cuts < MAX_RELAY_CUTS {
            debug!(%peer, cuts = *cuts, "relayed connection to a provider closed mid-transfer; will reconnect");
            return;
        }
        files.relay_cuts.remove(&peer);
        let why = format!(
            "provider {peer} is reachable only through a relay, which closed the connection \
             {MAX_RELAY_CUTS} times in a row before a whole chunk ({} bytes) arrived: the \
             relay's circuits are too small or too short for files (its relay.max_circuit_bytes \
             must be at least 2 MiB); the verified chunks are kept, `get` again to resume",
            crate::files::id::CHUNK_SIZE
        );
        warn!(%peer, cuts = MAX_RELAY_CUTS, "no longer fetching from this provider: its relay cuts every chunk");
        for id in waiting {
            if let Some(f) = files.fetches.get_mut(&id) {
                f.give_up_on(peer, why.clone());
            }
        }
        let ids: Vec<FileId> = files.fetches.keys().copied().collect();
        for id in ids {
            self.finish_failed(id);
        }
    }

    fn finish_failed(&mut self, id: FileId) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        if files.fetches.get(&id).is_some_and(|f| f.error.is_some())
            && let Some(f) = files.fetches.remove(&id)
        {
            warn!(%id, error = ?f.error, "fetch failed");
            files.finished.push_back(f.progress());
            if files.finished.len() > FINISHED {
                files.finished.pop_front();
            }
        }
    }

    fn complete(&mut self, id: FileId) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let Some(mut fetch) = files.fetches.remove(&id) else {
            return;
        };
        let manifest = fetch
            .manifest
            .clone()
            .expect("complete fetch has a manifest");
        match fetch.finish() {
            Ok(path) => {
                let entry = Entry {
                    id,
                    name: fetch.name.clone(),
                    size: manifest.size,
                    path: path.clone(),
                    origin: fetch.origin,
                    added: now_secs(),
                };
                if let Err(e) = files.store.insert(entry, manifest) {
                    fetch.error = Some(e.to_string());
                } else {
                    info!(%id, path = %path.display(), "file complete");
                    let _ =
                        std::fs::remove_file(files.store.partial_dir().join(format!("{id}.name")));
                    self.provide(id);
                }
            }
            Err(e) => fetch.error = Some(format!("cannot move the file into place: {e}")),
        }
        let Some(files) = self.files.as_mut() else {
            return;
        };
        files.finished.push_back(fetch.progress());
        if files.finished.len() > FINISHED {
            files.finished.pop_front();
        }
    }

    pub(super) fn on_gossip(&mut self, e: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = e
        else {
            if let gossipsub::Event::Subscribed { topic, .. } = e
                && topic == gossipsub::IdentTopic::new(FILES_TOPIC).hash()
            {
                self.reannounce();
            }
            return;
        };
        let topic = if message.topic == gossipsub::IdentTopic::new(FILES_TOPIC).hash() {
            FILES_TOPIC
        } else {
            MESSAGES_TOPIC
        };
        let source = message.source;
        let verdict = match (topic, source) {
            (_, None) => Err("unsigned message".to_string()),
            (FILES_TOPIC, Some(src)) => {
                parse_announcement(&message.data).map(|a| self.on_announcement(src, a))
            }
            (_, Some(src)) => parse_message(&message.data).map(|msg| {
                if let Some(files) = self.files.as_mut() {
                    files.push_message(src, msg);
                }
            }),
        };
        let acceptance = match &verdict {
            Ok(()) => gossipsub::MessageAcceptance::Accept,
            Err(why) => {
                warn!(peer = %propagation_source, source = ?source, topic, reason = %why, "rejected gossip message");
                gossipsub::MessageAcceptance::Reject
            }
        };
        metrics::counter!(m::GOSSIP_MESSAGES, "topic" => topic, "result" => if verdict.is_ok() { "accepted" } else { "rejected" })
            .increment(1);
        if let Some(g) = self.swarm.behaviour_mut().gossipsub.as_mut() {
            g.report_message_validation_result(&message_id, &propagation_source, acceptance);
        }
    }

    /// Re-announces shared files when a new peer joins the topic (at most every 10 s).
    fn reannounce(&mut self) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        if files
            .last_reannounce
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        files.last_reannounce = Some(Instant::now());
        let mine: Vec<Announcement> = files
            .store
            .entries()
            .filter(|e| e.origin == Origin::Shared)
            .map(|e| Announcement {
                id: e.id,
                name: e.name.clone(),
                size: e.size,
            })
            .collect();
        for a in mine {
            self.publish(FILES_TOPIC, &a);
        }
    }

    fn on_announcement(&mut self, publisher: PeerId, a: Announcement) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        debug!(id = %a.id, name = %a.name, size = a.size, %publisher, "file announced");
        if files.announced.len() >= ANNOUNCED
            && let Some(k) = files.announced.keys().next().copied()
        {
            files.announced.remove(&k);
        }
        files.announced.insert(a.id, (a.clone(), publisher));
        // A running fetch gains the publisher as a provider, unless it sent bad data
        // recently.
        let now = Instant::now();
        files.penalized.retain(|_, until| *until > now);
        if let Some(f) = files.fetches.get_mut(&a.id) {
            if !files.penalized.contains_key(&publisher) {
                f.add_provider(publisher);
                self.pump(a.id);
            }
            return;
        }
        // Replication policy.
        if files.store.get(&a.id).is_some()
            || a.size < files.min_file_size
            || a.size > files.store.max_storage()
        {
            return;
        }
        match self.start_fetch(a.id, None, Origin::Replica) {
            Ok(_) => info!(id = %a.id, name = %a.name, "replicating announced file"),
            Err(e) => debug!(id = %a.id, error = %e, "not replicating"),
        }
    }
}

/// A name for a shared path, checked like announced names.
pub fn share_name(path: &std::path::Path) -> Result<String, String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(safe_name)
        .ok_or_else(|| format!("{} has no usable file name", path.display()))
}
