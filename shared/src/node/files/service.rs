//! The file part's state and its entry points: the file API's commands, transfer
//! events, housekeeping.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    time::Instant,
};

use libp2p::{
    PeerId, gossipsub, kad,
    request_response::{self, OutboundRequestId},
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::{
    gossip_log::GossipLog,
    gossip_rate::SenderRates,
    net::Net,
    serving::{ChunkRead, Serving},
    uploads::UploadQueue,
};
use crate::node::command::FileCommand;
use crate::{
    config::{Config, Rate, ReplicationConfig, ServingConfig},
    files::{
        fetch::{ChunkWrite, Fetch, Written},
        id::{FileId, Manifest},
        protocol::{
            Announcement, ChatMessage, FILES_TOPIC, MESSAGES_TOPIC, REQUEST_TIMEOUT, Request,
            Response, parse_message,
        },
        store::{Entry, Origin, Store, now_secs},
    },
    metrics as m,
    status::{FileInfo, FileList, MessageRecord, Progress},
};

/// The file settings of the peer's config.
#[derive(Debug, Clone)]
pub(in crate::node) struct Policy {
    pub(super) download_dir: PathBuf,
    /// Smallest announced file that is replicated.
    pub(super) min_file_size: u64,
    /// Bytes per second spent serving chunks; 0: unlimited.
    pub(super) upload_rate_limit: u64,
    /// Announcements and messages accepted per sender.
    pub(super) announcement_rate: Rate,
    pub(super) message_rate: Rate,
    pub(super) replication: ReplicationConfig,
    pub(super) serving: ServingConfig,
}

impl Policy {
    pub(in crate::node) fn from_config(config: &Config) -> Self {
        Policy {
            download_dir: config.download_dir.clone(),
            min_file_size: config.min_file_size,
            upload_rate_limit: config.upload_rate_limit,
            announcement_rate: config.network.gossip.announcement_rate_per_sender,
            message_rate: config.network.gossip.message_rate_per_sender,
            replication: config.replication,
            serving: config.serving,
        }
    }
}

pub(in crate::node) struct FileService {
    pub(super) me: PeerId,
    pub(super) store: Store,
    pub(super) policy: Policy,
    pub(super) fetches: HashMap<FileId, Fetch>,
    /// Finished fetches whose result stays visible to `get`.
    pub(super) finished: VecDeque<Progress>,
    /// Chunks verified and written on the blocking pool, back to the event loop.
    pub(super) writes_tx: mpsc::UnboundedSender<(ChunkWrite, Written)>,
    writes_rx: mpsc::UnboundedReceiver<(ChunkWrite, Written)>,
    /// Progress requests answered when their fetch finishes (`get` waiting).
    pub(super) waiters: Vec<(FileId, oneshot::Sender<Option<Progress>>)>,
    /// Provider lookups running, by the fetch they serve.
    pub(super) provider_queries: HashMap<kad::QueryId, FileId>,
    /// Peers that served bad data, not asked (or served) until the given time.
    pub(super) penalized: HashMap<PeerId, Instant>,
    /// Relayed connections to a provider that closed with file requests in flight
    /// since the last whole chunk from it (see [`fetching::MAX_RELAY_CUTS`]).
    pub(super) relay_cuts: HashMap<PeerId, u32>,
    pub(super) serving: Serving,
    pub(super) gossip: GossipLog,
    pub(super) rates: SenderRates,
    /// What providers did, for the peer store (drained after every event).
    pub(super) observations: Vec<(PeerId, Observation)>,
}

/// What a provider did, as the peer store scores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::node) enum Observation {
    /// A chunk that verified.
    Chunk,
    /// A manifest that hashed to the file's ID.
    Manifest,
    /// Data that did not verify.
    BadData,
}

/// Progress requests waiting for their fetch to finish, at most; more are answered
/// at once. Each is an open request to the admin endpoint, which times it out.
pub(in crate::node) const MAX_PROGRESS_WAITERS: usize = 64;

/// Observations kept between drains at most.
const MAX_OBSERVATIONS: usize = 4096;

impl FileService {
    pub(in crate::node) fn new(me: PeerId, store: Store, policy: Policy) -> Self {
        let (writes_tx, writes_rx) = mpsc::unbounded_channel();
        FileService {
            writes_tx,
            writes_rx,
            me,
            store,
            serving: Serving::new(UploadQueue::new(
                policy.serving,
                policy.upload_rate_limit,
                REQUEST_TIMEOUT,
            )),
            rates: SenderRates::new(policy.announcement_rate, policy.message_rate),
            policy,
            fetches: HashMap::new(),
            finished: VecDeque::new(),
            waiters: Vec::new(),
            provider_queries: HashMap::new(),
            penalized: HashMap::new(),
            relay_cuts: HashMap::new(),
            gossip: GossipLog::default(),
            observations: Vec::new(),
        }
    }

    pub(super) fn observe(&mut self, peer: PeerId, what: Observation) {
        if self.observations.len() < MAX_OBSERVATIONS {
            self.observations.push((peer, what));
        }
    }

    /// What providers did since the last call.
    pub(in crate::node) fn take_observations(&mut self) -> Vec<(PeerId, Observation)> {
        std::mem::take(&mut self.observations)
    }

    /// Peers with a transfer running: a request of ours in flight, or one of theirs
    /// accepted.
    pub(in crate::node) fn transfer_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.fetches
            .values()
            .flat_map(Fetch::in_flight_peers)
            .chain(self.serving.queue.peers().copied())
    }

    /// The files held, whose provider records the node publishes from the start.
    pub(in crate::node) fn held_ids(&self) -> Vec<FileId> {
        self.store.entries().map(|e| e.id).collect()
    }

    /// Fetches `id` to `out` as a file the node asked for itself (a release's
    /// artifact); a file held already is reported complete at once.
    pub(in crate::node) fn fetch_to(
        &mut self,
        net: &mut Net<'_>,
        id: FileId,
        out: PathBuf,
    ) -> Result<Progress, String> {
        self.start_fetch(net, id, Some(out), Origin::Fetched)
    }

    /// Where the fetch of `id` stands: running, finished lately, or held.
    pub(in crate::node) fn progress_of(&self, id: &FileId) -> Option<Progress> {
        self.fetches
            .get(id)
            .map(Fetch::progress)
            .or_else(|| self.held_progress(id))
            .or_else(|| {
                self.finished
                    .iter()
                    .rev()
                    .find(|p| p.id == id.to_string())
                    .cloned()
            })
    }

    /// Whether the node holds the whole file `id` (shared or fetched).
    pub(in crate::node) fn holds(&self, id: &FileId) -> bool {
        self.store.get(id).is_some()
    }

    pub(in crate::node) fn on_command(&mut self, net: &mut Net<'_>, cmd: FileCommand) {
        match cmd {
            FileCommand::Share {
                path,
                name,
                manifest,
                reply,
            } => {
                let _ = reply.send(self.share(net, path, name, manifest));
            }
            FileCommand::Get { id, out, reply } => {
                let _ = reply.send(self.start_fetch(net, id, out, Origin::Fetched));
            }
            FileCommand::List(reply) => {
                let _ = reply.send(FileList {
                    files: self.store.entries().map(FileInfo::from).collect(),
                    fetching: self.fetches.values().map(Fetch::progress).collect(),
                });
            }
            FileCommand::Progress { id, wait, reply } => {
                // Callers that went away leave their place to others.
                self.waiters.retain(|(_, w)| !w.is_closed());
                if wait
                    && self.fetches.contains_key(&id)
                    && self.waiters.len() < MAX_PROGRESS_WAITERS
                {
                    self.waiters.push((id, reply));
                    return;
                }
                let p = self.fetches.get(&id).map(Fetch::progress).or_else(|| {
                    self.finished
                        .iter()
                        .rev()
                        .find(|p| p.id == id.to_string())
                        .cloned()
                });
                let _ = reply.send(p);
            }
            FileCommand::Remove { id, reply } => {
                let _ = reply.send(self.remove(net, id));
            }
            FileCommand::Send { text, reply } => {
                let _ = reply.send(self.send_message(net, text));
            }
            FileCommand::Messages { after, reply } => {
                let _ = reply.send(self.gossip.messages_after(after));
            }
        }
    }

    fn share(
        &mut self,
        net: &mut Net<'_>,
        path: PathBuf,
        name: String,
        manifest: Manifest,
    ) -> Result<FileInfo, String> {
        let id = manifest.root();
        let entry = Entry {
            id,
            name,
            size: manifest.size,
            path,
            origin: Origin::Shared,
            added: now_secs(),
            publisher: None,
        };
        let info = FileInfo::from(&entry);
        let announcement = Announcement {
            id,
            name: entry.name.clone(),
            size: entry.size,
        };
        self.store
            .insert(entry, manifest)
            .map_err(|e| e.to_string())?;
        info!(%id, name = %info.name, size = info.size, "sharing file");
        net.provide(id);
        net.publish(FILES_TOPIC, &announcement);
        Ok(info)
    }

    fn remove(&mut self, net: &mut Net<'_>, id: FileId) -> Result<FileInfo, String> {
        if let Some(mut f) = self.fetches.remove(&id) {
            f.abandon();
            self.store.release(&id);
        }
        let e = self.store.remove(&id).map_err(|e| e.to_string())?;
        net.withdraw(id);
        Ok(FileInfo::from(&e))
    }

    fn send_message(&mut self, net: &mut Net<'_>, text: String) -> Result<MessageRecord, String> {
        let msg = ChatMessage {
            text,
            sent_at: now_secs(),
        };
        let data = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        parse_message(&data)?;
        let rec = self.gossip.push_message(self.me, msg);
        let topic = gossipsub::IdentTopic::new(MESSAGES_TOPIC);
        match net.swarm.behaviour_mut().gossipsub.as_mut().map(|g| g.publish(topic, data)) {
            Some(Ok(_)) => Ok(rec),
            Some(Err(gossipsub::PublishError::NoPeersSubscribedToTopic)) => Err(
                "no connected peer receives messages yet; try again once `jantar-peer peers` lists some".into(),
            ),
            Some(Err(e)) => Err(format!("cannot publish: {e}")),
            None => Err("messages are not enabled on this node".into()),
        }
    }

    pub(in crate::node) fn on_transfer(
        &mut self,
        net: &mut Net<'_>,
        e: request_response::Event<Request, Response>,
    ) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.on_request(net, peer, request_id, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(net, peer, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, error = %error, "file request failed");
                if let Some(id) = self.fetch_of(&request_id)
                    && let Some(f) = self.fetches.get_mut(&id)
                {
                    f.failed(&request_id);
                    self.pump(net, id);
                }
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                let reason = match &error {
                    request_response::InboundFailure::Io(_) => "malformed",
                    request_response::InboundFailure::Timeout => "timeout",
                    request_response::InboundFailure::ConnectionClosed => "connection_closed",
                    request_response::InboundFailure::ResponseOmission => "omitted",
                    request_response::InboundFailure::UnsupportedProtocols => "unsupported",
                };
                metrics::counter!(m::FILE_INBOUND_FAILURES, "reason" => reason).increment(1);
                debug!(%peer, error = %error, "serving a file request failed");
                self.request_done(&request_id);
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.request_done(&request_id);
            }
        }
    }

    pub(super) fn fetch_of(&self, req: &OutboundRequestId) -> Option<FileId> {
        self.fetches.values().find(|f| f.owns(req)).map(|f| f.id)
    }

    /// Forgets penalties that ran out; true while `peer` is penalized.
    pub(super) fn penalized(&mut self, peer: &PeerId) -> bool {
        let now = Instant::now();
        self.penalized.retain(|_, until| *until > now);
        self.penalized.contains_key(peer)
    }

    /// Every second: the upload budget refills, fetches move on, and a join that came
    /// during the re-announce cool-down is announced.
    pub(in crate::node) fn housekeeping(&mut self, net: &mut Net<'_>) {
        self.serving_housekeeping();
        self.retry_fetches(net);
        self.announce_due(net);
        self.storage_gauges();
    }

    /// The next chunk read or written on the blocking pool.
    pub(in crate::node) async fn next_offloaded(&mut self) -> Option<Offloaded> {
        tokio::select! {
            Some(read) = self.serving.reads_rx.recv() => Some(Offloaded::Read(read)),
            Some((w, r)) = self.writes_rx.recv() => Some(Offloaded::Written(w, r)),
        }
    }

    /// Finishes what the blocking pool did.
    pub(in crate::node) fn on_offloaded(&mut self, net: &mut Net<'_>, done: Offloaded) {
        match done {
            Offloaded::Read(read) => self.on_chunk_read(net, read),
            Offloaded::Written(w, r) => self.on_chunk_written(net, w, r),
        }
    }
}

/// Chunk work done on the blocking pool (disk and hashing), for the event loop to
/// finish.
pub(in crate::node) enum Offloaded {
    /// A chunk read for a peer that asked for it.
    Read(ChunkRead),
    /// A chunk that arrived, verified and written (or refused).
    Written(ChunkWrite, Written),
}
