//! Serving other peers: manifests and verified chunks of the files held, within the
//! [`uploads`](super::uploads) bounds (`serving.*`, `upload_rate_limit`), never to a
//! peer that sent bad data recently. Chunks are read and hashed on the blocking pool,
//! and the result comes back to the event loop as a [`ChunkRead`].

use std::time::Instant;

use libp2p::{
    PeerId,
    request_response::{InboundRequestId, ResponseChannel},
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    net::Net,
    service::FileService,
    uploads::{Refusal, UploadQueue},
};
use crate::{
    files::{
        FileId,
        protocol::{Request, Response},
        store::ChunkSource,
    },
    metrics as m,
};

/// Chunks read (and hashed) at once on the blocking pool, all peers together: what
/// serving holds in memory besides the responses being sent.
const MAX_READS: usize = 4;

/// A chunk read on the blocking pool, for the request `request` of `peer`.
pub(in crate::node) struct ChunkRead {
    request: InboundRequestId,
    peer: PeerId,
    id: FileId,
    /// `None`: the file no longer matches what was shared.
    data: Option<Vec<u8>>,
}

/// What a waiting chunk request needs to be answered.
pub(super) struct Pending {
    channel: ResponseChannel<Response>,
    id: FileId,
    source: ChunkSource,
}

/// The serving side of the file part: accepted requests, chunks being read.
pub(super) struct Serving {
    pub(super) queue: UploadQueue<InboundRequestId, Pending>,
    /// Channels of the requests whose chunk is being read.
    reading: std::collections::HashMap<InboundRequestId, ResponseChannel<Response>>,
    reads_tx: mpsc::UnboundedSender<ChunkRead>,
    pub(super) reads_rx: mpsc::UnboundedReceiver<ChunkRead>,
}

impl Serving {
    pub(super) fn new(queue: UploadQueue<InboundRequestId, Pending>) -> Self {
        let (reads_tx, reads_rx) = mpsc::unbounded_channel();
        Serving {
            queue,
            reading: Default::default(),
            reads_tx,
            reads_rx,
        }
    }
}

fn refused(reason: &'static str) {
    metrics::counter!(m::FILE_UPLOADS_REFUSED, "reason" => reason).increment(1);
}

impl FileService {
    pub(super) fn on_request(
        &mut self,
        net: &mut Net<'_>,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if self.penalized(&peer) {
            respond(net, channel, Response::NotFound);
            return;
        }
        match request {
            Request::Manifest(id) => {
                let Some(manifest) = self.store.manifest(&id).cloned() else {
                    respond(net, channel, Response::NotFound);
                    return;
                };
                // A manifest is answered at once, but holds a slot while it is sent.
                if let Err(r) = self.serving.queue.admit_now(peer, request_id) {
                    debug!(%peer, %id, reason = r.as_str(), "manifest request refused");
                    refused(r.as_str());
                    respond(net, channel, Response::Busy);
                    return;
                }
                if !respond(net, channel, Response::Manifest(manifest)) {
                    self.serving.queue.release(&request_id);
                }
            }
            Request::Chunk { id, index } => {
                let Some(source) = self.store.chunk_source(&id, index) else {
                    respond(net, channel, Response::NotFound);
                    return;
                };
                let len = source.len;
                let pending = Pending {
                    channel,
                    id,
                    source,
                };
                match self
                    .serving
                    .queue
                    .admit(peer, request_id, pending, len, Instant::now())
                {
                    Ok(()) => self.pump_uploads(),
                    Err((r, pending)) => {
                        if r == Refusal::PerPeer {
                            debug!(%peer, %id, index, "chunk request over the peer's bound; refused");
                        } else {
                            debug!(%peer, %id, index, "chunk request over the serving bound; refused");
                        }
                        refused(r.as_str());
                        respond(net, pending.channel, Response::Busy);
                    }
                }
            }
        }
        self.serving_gauges();
    }

    /// Starts reading the chunks whose turn it is, as far as the budget and
    /// [`MAX_READS`] allow.
    pub(super) fn pump_uploads(&mut self) {
        let now = Instant::now();
        while self.serving.reading.len() < MAX_READS {
            let Some((peer, request, p)) = self.serving.queue.next(now) else {
                break;
            };
            self.serving.reading.insert(request, p.channel);
            let tx = self.serving.reads_tx.clone();
            let (id, source) = (p.id, p.source);
            tokio::task::spawn_blocking(move || {
                let data = source.read();
                let _ = tx.send(ChunkRead {
                    request,
                    peer,
                    id,
                    data,
                });
            });
        }
        let expired = self.serving.queue.take_expired();
        if expired > 0 {
            metrics::counter!(m::FILE_UPLOADS_REFUSED, "reason" => "expired").increment(expired);
        }
    }

    /// A chunk read on the blocking pool: sent, or, when the file changed on disk,
    /// "not found" and the file is no longer shared.
    pub(in crate::node) fn on_chunk_read(&mut self, net: &mut Net<'_>, read: ChunkRead) {
        let ChunkRead {
            request,
            peer,
            id,
            data,
        } = read;
        let Some(channel) = self.serving.reading.remove(&request) else {
            return;
        };
        let sent = match data {
            Some(data) => {
                metrics::counter!(m::FILE_BYTES, "direction" => "sent")
                    .increment(data.len() as u64);
                respond(
                    net,
                    channel,
                    Response::Chunk(serde_bytes::ByteBuf::from(data)),
                )
            }
            None => {
                if let Some(e) = self.store.get(&id) {
                    warn!(%id, %peer, path = %e.path.display(), "stopped sharing a file that changed on disk");
                    let _ = self.store.remove(&id);
                    net.withdraw(id);
                }
                respond(net, channel, Response::NotFound)
            }
        };
        if !sent {
            self.serving.queue.release(&request);
        }
        self.pump_uploads();
        self.serving_gauges();
    }

    /// A response was sent, or the request failed: its slot is free.
    pub(super) fn request_done(&mut self, request: &InboundRequestId) {
        self.serving.queue.release(request);
        self.pump_uploads();
        self.serving_gauges();
    }

    /// Every second: the budget refills, and the requests it allows go.
    pub(super) fn serving_housekeeping(&mut self) {
        self.serving.queue.refill();
        self.pump_uploads();
        self.serving_gauges();
    }

    fn serving_gauges(&self) {
        metrics::gauge!(m::FILE_UPLOADS_ACCEPTED).set(self.serving.queue.accepted() as f64);
        metrics::gauge!(m::FILE_UPLOAD_QUEUED_BYTES).set(self.serving.queue.waiting_bytes() as f64);
    }
}

/// Sends `resp` on `channel`; false when the requester is gone already.
fn respond(net: &mut Net<'_>, channel: ResponseChannel<Response>, resp: Response) -> bool {
    net.swarm
        .behaviour_mut()
        .files
        .as_mut()
        .is_some_and(|rr| rr.send_response(channel, resp).is_ok())
}
