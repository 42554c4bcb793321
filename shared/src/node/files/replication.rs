//! Replication: which announced files a peer fetches for the network, and the quota
//! they are held to (`max_storage_size`, `replication.*`).
//!
//! - At most `replication.max_concurrent_fetches` replication fetches run at once.
//! - A fetch reserves its room in the quota before it starts: the announced size, as
//!   far as it is free without evicting anything. An announced size is only a claim,
//!   so nothing is evicted for it; the rest of the room is made as verified chunks
//!   arrive, evicting the oldest replicas (files held whole) for bytes that verified.
//!   Partial files therefore always count, and never more than the quota.
//! - The files of one publisher, held and being fetched, take at most
//!   `replication.max_share_per_publisher` of the quota.
//! - A replication fetch not complete within `replication.fetch_deadline` stops; its
//!   reservation is released and its partial file removed.

use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::{net::Net, service::FileService};
use crate::{
    files::{FileId, protocol::Announcement, store::Origin},
    metrics as m,
};

pub(super) fn refused(reason: &'static str) {
    metrics::counter!(m::FILE_REPLICATION_REFUSED, "reason" => reason).increment(1);
}

impl FileService {
    /// A valid announcement of a file that is not being fetched: replicated if the
    /// policy wants it and the bounds allow it.
    pub(super) fn replicate(&mut self, net: &mut Net<'_>, publisher: PeerId, a: &Announcement) {
        if self.store.get(&a.id).is_some()
            || a.size < self.policy.min_file_size
            || self.policy.replication.max_concurrent_fetches == 0
        {
            return;
        }
        if let Err(reason) = self.replication_allowed(publisher, a) {
            refused(reason);
            debug!(id = %a.id, %publisher, size = a.size, reason, "not replicating announced file");
            return;
        }
        match self.start_fetch(net, a.id, None, Origin::Replica) {
            Ok(_) => info!(id = %a.id, name = %a.name, %publisher, "replicating announced file"),
            Err(e) => {
                refused("quota");
                debug!(id = %a.id, %publisher, error = %e, "not replicating");
            }
        }
    }

    fn replication_allowed(&self, publisher: PeerId, a: &Announcement) -> Result<(), &'static str> {
        let r = self.policy.replication;
        if self.replication_fetches() >= r.max_concurrent_fetches {
            return Err("concurrency");
        }
        let max = self.store.max_storage();
        let share = (max as f64 * r.max_share_per_publisher) as u64;
        if self
            .store
            .publisher_bytes(&publisher.to_string())
            .saturating_add(a.size)
            > share
        {
            return Err("publisher_share");
        }
        if a.size > self.store.free() + self.store.evictable() {
            return Err("quota");
        }
        Ok(())
    }

    pub(super) fn replication_fetches(&self) -> usize {
        self.fetches
            .values()
            .filter(|f| f.origin == Origin::Replica)
            .count()
    }

    /// Reserves room for a fetch of an announced file before it starts: what is free
    /// of `size`, evicting nothing (the size is only announced). A file that could not
    /// fit even after evicting every replica is refused at once.
    pub(super) fn reserve_announced(
        &mut self,
        id: FileId,
        name: &str,
        size: u64,
        publisher: Option<String>,
    ) -> Result<(), String> {
        let (free, evictable) = (self.store.free(), self.store.evictable());
        if size > free + evictable {
            return Err(format!(
                "storage quota: {name} needs {size} bytes but only {} of max_storage_size ({} bytes) can be freed; raise max_storage_size or remove files with `jantar-peer rm`",
                free + evictable,
                self.store.max_storage()
            ));
        }
        self.store
            .reserve(id, name, size.min(free), publisher, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Reserves `bytes` for the fetch of `id`, evicting the oldest replicas when they
    /// are in the way (the size is verified: a manifest the user's fetch accepted, or
    /// chunks that verified); evicted files are withdrawn.
    pub(super) fn reserve_verified(
        &mut self,
        net: &mut Net<'_>,
        id: FileId,
        bytes: u64,
    ) -> Result<(), String> {
        let Some(f) = self.fetches.get(&id) else {
            return Ok(());
        };
        let publisher = (f.origin == Origin::Replica)
            .then(|| f.publisher.map(|p| p.to_string()))
            .flatten();
        let name = f.name.clone();
        let evicted = self
            .store
            .reserve(id, &name, bytes, publisher, true)
            .map_err(|e| e.to_string())?;
        for e in evicted {
            info!(id = %e, "replica evicted to make room");
            net.withdraw(e);
        }
        Ok(())
    }

    /// A replication fetch's chunk: when its verified bytes outgrow what it reserved,
    /// its reservation grows, evicting old replicas, before the chunk is written.
    /// Returns false when the fetch had to stop for want of room.
    pub(super) fn room_for_chunk(
        &mut self,
        net: &mut Net<'_>,
        id: FileId,
        req: &libp2p::request_response::OutboundRequestId,
        data: &[u8],
    ) -> bool {
        let Some(f) = self.fetches.get(&id) else {
            return true;
        };
        let Some(size) = f.manifest.as_ref().map(|m| m.size) else {
            return true;
        };
        let need = (f.verified_bytes() + data.len() as u64).min(size);
        if need <= self.store.reserved_for(&id) || !f.verifies(req, data) {
            return true;
        }
        match self.reserve_verified(net, id, need) {
            Ok(()) => true,
            Err(e) => {
                warn!(%id, error = %e, "replication stopped: no room for its verified chunks");
                refused("quota");
                self.drop_fetch_data(id, e);
                false
            }
        }
    }

    /// Replication fetches past `replication.fetch_deadline` stop: reservation released,
    /// partial file removed.
    pub(super) fn enforce_deadlines(&mut self) {
        let deadline = self.policy.replication.fetch_deadline;
        let late: Vec<FileId> = self
            .fetches
            .values()
            .filter(|f| {
                f.origin == Origin::Replica && f.error.is_none() && f.started.elapsed() > deadline
            })
            .map(|f| f.id)
            .collect();
        for id in late {
            warn!(%id, ?deadline, "replication stopped: not complete within replication.fetch_deadline; partial file removed");
            refused("deadline");
            self.drop_fetch_data(
                id,
                format!("replication of {id} stopped: not complete within replication.fetch_deadline ({deadline:?})"),
            );
            self.finish_failed(id);
        }
    }

    pub(super) fn storage_gauges(&self) {
        metrics::gauge!(m::FILE_STORAGE, "kind" => "held").set(self.store.held() as f64);
        metrics::gauge!(m::FILE_STORAGE, "kind" => "reserved").set(self.store.reserved() as f64);
        metrics::gauge!(m::FILE_REPLICATION_FETCHES).set(self.replication_fetches() as f64);
    }
}
