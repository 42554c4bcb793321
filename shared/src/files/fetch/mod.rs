//! One file being fetched: which providers to ask for which chunks, verification of
//! every chunk before it is written, resumption from a partial file, and the atomic
//! move into place at the end.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::{self, File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::{PeerId, request_response::OutboundRequestId};

use super::{
    id::{CHUNK_SIZE, FileId, Manifest},
    protocol::{MAX_FILE_SIZE, Request},
    store::Origin,
};
use crate::status::FetchState;
pub use crate::status::Progress;

/// Requests in flight per fetch, and per provider.
pub const MAX_IN_FLIGHT: usize = 16;
pub const MAX_PER_PROVIDER: usize = 8;

/// How long a provider that answered "busy" is not asked again.
pub const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// A provider that sent data that does not verify.
#[derive(Debug)]
pub struct BadData {
    pub peer: PeerId,
    pub what: String,
}

pub struct Fetch {
    pub id: FileId,
    pub name: String,
    pub dest: PathBuf,
    pub origin: Origin,
    pub manifest: Option<Manifest>,
    /// The size the file was announced with, which its manifest must match (a
    /// replication fetch); `None` for a fetch by ID.
    pub expected_size: Option<u64>,
    /// The publisher whose announcement started a replication fetch.
    pub publisher: Option<PeerId>,
    pub started: Instant,
    part: PathBuf,
    file: Option<Arc<File>>,
    done: Vec<bool>,
    /// Chunks that arrived and are being verified and written off the event loop;
    /// they count against [`MAX_IN_FLIGHT`] like requests in flight.
    writing: usize,
    remaining: usize,
    resumed: u32,
    providers: Vec<PeerId>,
    bad: HashSet<PeerId>,
    /// Providers that answered "busy", not asked until the given time.
    paused: HashMap<PeerId, Instant>,
    in_flight: HashMap<OutboundRequestId, (PeerId, Option<u32>)>,
    queue: VecDeque<u32>,
    pub last_provider_query: Option<Instant>,
    /// DHT lookups in a row that found no provider while none was known.
    pub empty_lookups: u32,
    pub error: Option<String>,
    next_provider: usize,
}

impl Fetch {
    pub fn new(
        id: FileId,
        name: String,
        dest: PathBuf,
        origin: Origin,
        partial_dir: &Path,
    ) -> Self {
        Fetch {
            id,
            name,
            dest,
            origin,
            manifest: None,
            expected_size: None,
            publisher: None,
            started: Instant::now(),
            part: partial_dir.join(format!("{id}.part")),
            file: None,
            done: vec![],
            writing: 0,
            remaining: usize::MAX,
            resumed: 0,
            providers: vec![],
            bad: HashSet::new(),
            paused: HashMap::new(),
            in_flight: HashMap::new(),
            queue: VecDeque::new(),
            last_provider_query: None,
            empty_lookups: 0,
            error: None,
            next_provider: 0,
        }
    }

    pub fn add_provider(&mut self, peer: PeerId) -> bool {
        if self.bad.contains(&peer) || self.providers.contains(&peer) {
            return false;
        }
        self.providers.push(peer);
        true
    }

    pub fn remove_provider(&mut self, peer: &PeerId) {
        self.providers.retain(|p| p != peer);
    }

    pub fn has_providers(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Drops `peer` as a source for good.
    pub fn mark_bad(&mut self, peer: PeerId) {
        self.bad.insert(peer);
        self.remove_provider(&peer);
    }

    pub fn owns(&self, req: &OutboundRequestId) -> bool {
        self.in_flight.contains_key(req)
    }

    /// Peers with a request in flight.
    pub fn in_flight_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.in_flight.values().map(|(p, _)| *p)
    }

    /// Whether a request to `peer` is in flight.
    pub fn waiting_on(&self, peer: &PeerId) -> bool {
        self.in_flight.values().any(|(p, _)| p == peer)
    }

    /// Stops asking `peer`, which cannot deliver (it did not lie: it is not
    /// penalized). When no other provider is known the fetch fails with `why`;
    /// the verified chunks stay in the partial file for a later attempt.
    pub fn give_up_on(&mut self, peer: PeerId, why: String) {
        self.mark_bad(peer);
        if self.providers.is_empty() && self.error.is_none() {
            self.error = Some(why);
        }
    }

    /// The requests to send now, spread over the providers, at most
    /// [`MAX_PER_PROVIDER`] in flight to each.
    pub fn next_requests(&mut self) -> Vec<(PeerId, Request)> {
        self.next_requests_with(|_| MAX_PER_PROVIDER)
    }

    /// Like [`next_requests`](Self::next_requests), with at most
    /// `per_provider(peer)` requests in flight to each provider. Over a relayed
    /// connection a fetch asks for one chunk at a time: the relay caps the bytes
    /// of a circuit, and chunks sent in parallel would share that budget so that
    /// none might arrive whole before the circuit is cut.
    pub fn next_requests_with(
        &mut self,
        per_provider: impl Fn(&PeerId) -> usize,
    ) -> Vec<(PeerId, Request)> {
        let mut out = vec![];
        if self.providers.is_empty() || self.error.is_some() {
            return out;
        }
        let now = Instant::now();
        self.paused.retain(|_, until| *until > now);
        if self.manifest.is_none() {
            if self.in_flight.is_empty() {
                for _ in 0..self.providers.len() {
                    let p = self.providers[self.next_provider % self.providers.len()];
                    self.next_provider += 1;
                    if !self.paused.contains_key(&p) {
                        out.push((p, Request::Manifest(self.id)));
                        break;
                    }
                }
            }
            return out;
        }
        let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
        for (p, _) in self.in_flight.values() {
            *per_peer.entry(*p).or_default() += 1;
        }
        let mut tried = 0;
        while self.in_flight.len() + self.writing + out.len() < MAX_IN_FLIGHT
            && tried < self.providers.len()
        {
            let Some(&index) = self.queue.front() else {
                break;
            };
            let p = self.providers[self.next_provider % self.providers.len()];
            self.next_provider += 1;
            let n = per_peer.entry(p).or_default();
            if *n >= per_provider(&p).min(MAX_PER_PROVIDER) || self.paused.contains_key(&p) {
                tried += 1;
                continue;
            }
            tried = 0;
            *n += 1;
            self.queue.pop_front();
            out.push((p, Request::Chunk { id: self.id, index }));
        }
        out
    }

    /// Records a sent request (`chunk` is `None` for the manifest).
    pub fn sent(&mut self, req: OutboundRequestId, peer: PeerId, chunk: Option<u32>) {
        self.in_flight.insert(req, (peer, chunk));
    }

    /// A request failed (peer gone, timeout): its chunk goes back in the queue and the
    /// peer stops being asked until it is found as a provider again.
    pub fn failed(&mut self, req: &OutboundRequestId) {
        if let Some((peer, chunk)) = self.in_flight.remove(req) {
            if let Some(i) = chunk {
                self.queue.push_front(i);
            }
            self.remove_provider(&peer);
        }
    }

    /// The provider has no such file.
    pub fn not_found(&mut self, req: &OutboundRequestId) {
        self.failed(req);
    }

    /// The provider is serving all it may: the chunk goes back in the queue, and the
    /// provider stays one but is not asked again for [`BUSY_PAUSE`].
    pub fn busy(&mut self, req: &OutboundRequestId) {
        if let Some((peer, chunk)) = self.in_flight.remove(req) {
            if let Some(i) = chunk {
                self.queue.push_front(i);
            }
            self.paused.insert(peer, Instant::now() + BUSY_PAUSE);
        }
    }

    /// A manifest arrived: check it against the ID, then open the partial file and
    /// keep every chunk in it that already verifies.
    pub fn on_manifest(
        &mut self,
        req: &OutboundRequestId,
        manifest: Manifest,
    ) -> Result<(), BadData> {
        let Some((peer, _)) = self.in_flight.remove(req) else {
            return Ok(());
        };
        if self.manifest.is_some() {
            return Ok(());
        }
        if !manifest.is_consistent() || manifest.root() != self.id {
            self.mark_bad(peer);
            return Err(BadData {
                peer,
                what: "a manifest that does not hash to the file ID".into(),
            });
        }
        if let Err(why) = self.check_scheme(&manifest) {
            self.error = Some(format!("manifest of {} from {peer}: {why}", self.id));
            return Ok(());
        }
        match self.open_part(&manifest) {
            Ok(()) => self.manifest = Some(manifest),
            Err(e) => self.error = Some(format!("cannot write {}: {e}", self.part.display())),
        }
        Ok(())
    }

    /// A manifest that hashes to the ID can still describe a file this fetch must not
    /// take: one of another size than announced, or not cut the scheme's way.
    fn check_scheme(&self, m: &Manifest) -> Result<(), String> {
        if m.chunk_size != CHUNK_SIZE {
            return Err(format!(
                "chunk size {} is not the scheme's {CHUNK_SIZE}",
                m.chunk_size
            ));
        }
        if m.size > MAX_FILE_SIZE {
            return Err(format!(
                "size {} is above the {MAX_FILE_SIZE} limit",
                m.size
            ));
        }
        if let Some(announced) = self.expected_size
            && announced != m.size
        {
            return Err(format!("size {} is not the announced {announced}", m.size));
        }
        Ok(())
    }

    fn open_part(&mut self, m: &Manifest) -> std::io::Result<()> {
        if let Some(dir) = self.part.parent() {
            fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.part)?;
        let existing = f.metadata()?.len();
        self.done = vec![false; m.chunks() as usize];
        let mut buf = vec![];
        for i in 0..m.chunks() {
            let len = m.chunk_len(i);
            let start = u64::from(i) * u64::from(m.chunk_size);
            if start + len <= existing && len > 0 {
                buf.resize(len as usize, 0);
                if f.read_exact_at(&mut buf, start).is_ok() && m.verify_chunk(i, &buf) {
                    self.done[i as usize] = true;
                    self.resumed += 1;
                }
            }
        }
        f.set_len(m.size)?;
        if m.size == 0 {
            self.done[0] = true;
        }
        self.queue = (0..m.chunks())
            .filter(|i| !self.done[*i as usize])
            .collect();
        self.remaining = self.queue.len();
        self.file = Some(Arc::new(f));
        Ok(())
    }

    /// A chunk arrived: verified, then written, here and now. Returns true when the
    /// file is complete. The node does the same in two steps, [`Fetch::take_chunk`]
    /// and [`Fetch::written`], with [`ChunkWrite::run`] off its event loop.
    pub fn on_chunk(&mut self, req: &OutboundRequestId, data: &[u8]) -> Result<bool, BadData> {
        match self.take_chunk(req) {
            Some(w) => {
                let r = w.run(data);
                self.written(&w, r)
            }
            None => Ok(self.is_complete()),
        }
    }

    /// A chunk arrived for `req`: what verifying and writing it takes, or `None` for a
    /// request this fetch no longer waits for. Until [`Fetch::written`] it counts
    /// against [`MAX_IN_FLIGHT`], and its chunk is asked of no one.
    pub fn take_chunk(&mut self, req: &OutboundRequestId) -> Option<ChunkWrite> {
        let Some((peer, Some(index))) = self.in_flight.remove(req) else {
            return None;
        };
        let (m, file) = (self.manifest.as_ref()?, self.file.as_ref()?);
        let Some(leaf) = m.leaves.get(index as usize) else {
            self.queue.push_front(index);
            return None;
        };
        self.writing += 1;
        Some(ChunkWrite {
            id: self.id,
            peer,
            index,
            offset: u64::from(index) * u64::from(m.chunk_size),
            len: m.chunk_len(index),
            leaf: *leaf,
            file: file.clone(),
        })
    }

    /// How the chunk of `w` went. Returns true when the file is complete; a chunk
    /// that did not verify goes back in the queue and its provider is dropped. The
    /// result of a write for an earlier fetch of the same file is ignored.
    pub fn written(&mut self, w: &ChunkWrite, result: Written) -> Result<bool, BadData> {
        if !self.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &w.file)) {
            return Ok(false);
        }
        self.writing -= 1;
        match result {
            Written::Bad => {
                self.queue.push_front(w.index);
                self.mark_bad(w.peer);
                Err(BadData {
                    peer: w.peer,
                    what: format!("chunk {} that does not match the file's hash", w.index),
                })
            }
            Written::Failed(e) => {
                self.error = Some(format!("cannot write {}: {e}", self.part.display()));
                Ok(false)
            }
            Written::Ok => {
                if !self.done[w.index as usize] {
                    self.done[w.index as usize] = true;
                    self.remaining -= 1;
                }
                Ok(self.is_complete())
            }
        }
    }

    /// Bytes of the chunks verified and written so far.
    pub fn verified_bytes(&self) -> u64 {
        let Some(m) = self.manifest.as_ref() else {
            return 0;
        };
        (0..m.chunks())
            .filter(|i| self.done.get(*i as usize).copied().unwrap_or(false))
            .map(|i| m.chunk_len(i))
            .sum()
    }

    /// Whether `data` verifies as the chunk that `req` asked for (without taking it).
    pub fn verifies(&self, req: &OutboundRequestId, data: &[u8]) -> bool {
        match (self.in_flight.get(req), self.manifest.as_ref()) {
            (Some((_, Some(index))), Some(m)) => m.verify_chunk(*index, data),
            _ => false,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.manifest.is_some() && self.remaining == 0
    }

    /// Flushes the partial file and moves it into place. Never overwrites an existing
    /// file: the destination was chosen free when the fetch began, and the final link
    /// fails rather than replace one that appeared since.
    pub fn finish(&mut self) -> std::io::Result<PathBuf> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        if let Some(dir) = self.dest.parent() {
            fs::create_dir_all(dir)?;
        }
        crate::atomic::move_new(&self.part, &self.dest)?;
        Ok(self.dest.clone())
    }

    /// Stops the fetch; the partial file stays for a later attempt to resume from.
    pub fn abandon(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = (&*f).flush();
            let _ = (&*f).seek(SeekFrom::Start(0));
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            id: self.id.to_string(),
            name: self.name.clone(),
            state: if self.error.is_some() {
                FetchState::Failed
            } else if self.is_complete() {
                FetchState::Complete
            } else {
                FetchState::Fetching
            },
            size: self.manifest.as_ref().map(|m| m.size),
            chunks_total: self.manifest.as_ref().map(|m| m.chunks()),
            chunks_done: self.done.iter().filter(|d| **d).count() as u32,
            chunks_resumed: self.resumed,
            providers: self.providers.len(),
            bad_providers: self.bad.iter().map(|p| p.to_string()).collect(),
            path: self.dest.display().to_string(),
            error: self.error.clone(),
        }
    }
}

/// `dir/name`, or `dir/name.<id prefix>` when that exists already.
pub fn free_destination(dir: &Path, name: &str, id: &FileId) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    dir.join(format!("{name}.{}", &id.to_string()[..12]))
}

mod write;

pub use write::{ChunkWrite, Written};

#[cfg(test)]
mod tests;
