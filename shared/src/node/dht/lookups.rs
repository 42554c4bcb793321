//! Lookups asked for by a command (`Command::FindNode`):
//! started as Kademlia closest-peers queries, answered when their query ends.

use std::collections::HashMap;

use libp2p::{PeerId, kad};
use tokio::sync::oneshot;

use crate::{metrics as m, node::command::Lookup};

#[derive(Debug, Default)]
pub(super) struct Lookups {
    waiting: HashMap<kad::QueryId, oneshot::Sender<Lookup>>,
}

impl Lookups {
    /// Starts a lookup of the peers closest to `key` on `kad` (answered at once, as
    /// incomplete, when the DHT is off).
    pub(super) fn start(
        &mut self,
        kad: Option<&mut kad::Behaviour<kad::store::MemoryStore>>,
        key: PeerId,
        reply: oneshot::Sender<Lookup>,
    ) {
        self.waiting.retain(|_, r| !r.is_closed());
        let Some(kad) = kad else {
            let _ = reply.send(Lookup::default());
            return;
        };
        metrics::counter!(m::DHT_QUERIES_STARTED, "kind" => "get_closest_peers").increment(1);
        self.waiting.insert(kad.get_closest_peers(key), reply);
    }

    /// A query took its last step: answers it if it was one of ours.
    pub(super) fn ended(
        &mut self,
        query: kad::QueryId,
        result: &kad::QueryResult,
        stats: &kad::QueryStats,
    ) {
        if let Some(reply) = self.waiting.remove(&query) {
            let _ = reply.send(lookup(result, stats));
        }
    }
}

/// A finished closest-peers query as a [`Lookup`].
fn lookup(result: &kad::QueryResult, stats: &kad::QueryStats) -> Lookup {
    let (peers, complete) = match result {
        kad::QueryResult::GetClosestPeers(Ok(ok)) => (&ok.peers, true),
        kad::QueryResult::GetClosestPeers(Err(kad::GetClosestPeersError::Timeout {
            peers,
            ..
        })) => (peers, false),
        _ => return Lookup::default(),
    };
    Lookup {
        peers: peers.iter().map(|p| p.peer_id).collect(),
        requests: stats.num_requests(),
        answered: stats.num_successes(),
        failed: stats.num_failures(),
        complete,
    }
}
