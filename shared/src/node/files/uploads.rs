//! The upload budget (`upload_rate_limit`): a token bucket of bytes per second for
//! chunk responses, and the responses waiting for tokens.

use std::collections::VecDeque;

use libp2p::request_response::ResponseChannel;

use super::net::Net;
use crate::files::{id::CHUNK_SIZE, protocol::Response};

/// A token bucket of bytes per second for chunk responses, and the responses waiting
/// for tokens.
pub(super) struct UploadBudget {
    /// Bytes per second; 0: unlimited.
    rate: u64,
    tokens: u64,
    deferred: VecDeque<(ResponseChannel<Response>, Response)>,
}

impl UploadBudget {
    pub(super) fn new(rate: u64) -> Self {
        UploadBudget {
            rate,
            tokens: rate,
            deferred: VecDeque::new(),
        }
    }

    /// Sends `resp` now if the budget allows, else queues it behind the others.
    pub(super) fn send(
        &mut self,
        net: &mut Net<'_>,
        channel: ResponseChannel<Response>,
        resp: Response,
    ) {
        if self.rate > 0
            && let Response::Chunk(data) = &resp
        {
            let len = data.len() as u64;
            if !self.deferred.is_empty() || self.tokens < len {
                self.deferred.push_back((channel, resp));
                return;
            }
            self.tokens -= len;
        }
        respond(net, channel, resp);
    }

    /// Every second: a second's worth of tokens (a burst of at most one second, or one
    /// chunk when the rate is below a chunk per second), then the responses that waited.
    pub(super) fn refill(&mut self, net: &mut Net<'_>) {
        if self.rate == 0 {
            return;
        }
        self.tokens = (self.tokens + self.rate).min(self.rate.max(u64::from(CHUNK_SIZE)));
        while let Some((_, Response::Chunk(data))) = self.deferred.front() {
            let len = data.len() as u64;
            if self.tokens < len {
                break;
            }
            self.tokens -= len;
            if let Some((channel, resp)) = self.deferred.pop_front() {
                respond(net, channel, resp);
            }
        }
    }
}

fn respond(net: &mut Net<'_>, channel: ResponseChannel<Response>, resp: Response) {
    if let Some(rr) = net.swarm.behaviour_mut().files.as_mut() {
        let _ = rr.send_response(channel, resp);
    }
}
