//! Serving other peers: manifests and verified chunks of the files held, within the
//! upload budget (`upload_rate_limit`), never to a peer that sent bad data recently.

use libp2p::{PeerId, request_response::ResponseChannel};
use tracing::warn;

use super::{net::Net, service::FileService};
use crate::{
    files::{
        protocol::{Request, Response},
        store::StoreError,
    },
    metrics as m,
};

impl FileService {
    pub(super) fn on_request(
        &mut self,
        net: &mut Net<'_>,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        let resp = self.serve(net, peer, request);
        self.uploads.send(net, channel, resp);
    }

    pub(super) fn serve(&mut self, net: &mut Net<'_>, peer: PeerId, request: Request) -> Response {
        if self.penalized(&peer) {
            return Response::NotFound;
        }
        match request {
            Request::Manifest(id) => self
                .store
                .manifest(&id)
                .cloned()
                .map_or(Response::NotFound, Response::Manifest),
            Request::Chunk { id, index } => match self.store.read_chunk(&id, index) {
                Ok(data) => {
                    metrics::counter!(m::FILE_BYTES, "direction" => "sent")
                        .increment(data.len() as u64);
                    Response::Chunk(serde_bytes::ByteBuf::from(data))
                }
                Err(e) => {
                    if matches!(e, StoreError::Changed { .. }) {
                        warn!(%id, error = %e, "stopped sharing a file that changed on disk");
                        net.withdraw(id);
                    }
                    Response::NotFound
                }
            },
        }
    }
}
