//! The files a peer holds: shared from the user's disk, fetched on request, or
//! replicated. The index is JSON in the data dir, manifests sit beside it; every write
//! is atomic ([`crate::atomic`]).

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::id::{FileId, Manifest, chunk_matches};
pub use crate::status::Origin;
use crate::{
    atomic::{self, Existing},
    status::FileInfo,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub path: PathBuf,
    pub origin: Origin,
    /// Unix seconds.
    pub added: u64,
    /// The peer whose announcement made this a replica (its share of the quota is
    /// bounded); none for files shared or fetched by the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

/// Room held in the quota for a file being fetched, from before its first byte is
/// written until it is complete (then its entry counts) or the fetch ends.
#[derive(Clone, Debug)]
struct Reservation {
    bytes: u64,
    publisher: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the file index {}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "storage quota: {name} needs {need} bytes but only {free} of max_storage_size ({max} bytes) can be freed; raise max_storage_size or remove files with `jantar-peer rm`"
    )]
    Quota {
        name: String,
        need: u64,
        free: u64,
        max: u64,
    },
    #[error("no file {0} here")]
    Unknown(FileId),
    #[error("{} no longer matches what was shared (it changed on disk); stopped sharing it", path.display())]
    Changed { path: PathBuf },
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

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Store {
    dir: PathBuf,
    max_storage: u64,
    entries: BTreeMap<FileId, Entry>,
    manifests: BTreeMap<FileId, Manifest>,
    reservations: BTreeMap<FileId, Reservation>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens (or creates) the store in `<data_dir>/files`.
    pub fn open(data_dir: &Path, max_storage: u64) -> Result<Store, StoreError> {
        let dir = data_dir.join("files");
        for sub in ["manifests", "replicas", "partial"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(&dir))?;
        }
        let index = dir.join("index.json");
        let entries: Vec<Entry> = match fs::read(&index) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Index {
                path: index.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(StoreError::Index {
                    path: index,
                    reason: e.to_string(),
                });
            }
        };
        let mut store = Store {
            dir,
            max_storage,
            entries: BTreeMap::new(),
            manifests: BTreeMap::new(),
            reservations: BTreeMap::new(),
        };
        for e in entries {
            match store.read_manifest(&e.id) {
                Ok(m) if m.root() == e.id => {
                    store.manifests.insert(e.id, m);
                    store.entries.insert(e.id, e);
                }
                // A lost or damaged manifest only drops that entry.
                _ => {
                    tracing::warn!(id = %e.id, name = %e.name, "file index entry without a valid manifest; dropped")
                }
            }
        }
        Ok(store)
    }

    pub fn partial_dir(&self) -> PathBuf {
        self.dir.join("partial")
    }

    pub fn replica_path(&self, id: &FileId) -> PathBuf {
        self.dir.join("replicas").join(id.to_string())
    }

    fn manifest_path(&self, id: &FileId) -> PathBuf {
        self.dir.join("manifests").join(id.to_string())
    }

    fn read_manifest(&self, id: &FileId) -> io::Result<Manifest> {
        let b = fs::read(self.manifest_path(id))?;
        serde_json::from_slice(&b).map_err(io::Error::other)
    }

    pub fn get(&self, id: &FileId) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub fn manifest(&self, id: &FileId) -> Option<&Manifest> {
        self.manifests.get(id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Bytes Jantar itself stores (fetched files and replicas; shared files are the
    /// user's own), and the room reserved for fetches that are running.
    pub fn used(&self) -> u64 {
        self.held() + self.reserved()
    }

    /// Bytes of the fetched files and replicas held.
    pub fn held(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| e.origin != Origin::Shared)
            .map(|e| e.size)
            .sum()
    }

    /// Bytes reserved for fetches that are running.
    pub fn reserved(&self) -> u64 {
        self.reservations.values().map(|r| r.bytes).sum()
    }

    /// Bytes reserved for the fetch of `id`.
    pub fn reserved_for(&self, id: &FileId) -> u64 {
        self.reservations.get(id).map_or(0, |r| r.bytes)
    }

    pub fn max_storage(&self) -> u64 {
        self.max_storage
    }

    /// Room left in the quota without evicting anything.
    pub fn free(&self) -> u64 {
        self.max_storage.saturating_sub(self.used())
    }

    /// Bytes of the replicas that could be evicted.
    pub fn evictable(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| e.origin == Origin::Replica)
            .map(|e| e.size)
            .sum()
    }

    /// Bytes that the replicas of `publisher` take, held and reserved.
    pub fn publisher_bytes(&self, publisher: &str) -> u64 {
        let held: u64 = self
            .entries
            .values()
            .filter(|e| e.origin == Origin::Replica && e.publisher.as_deref() == Some(publisher))
            .map(|e| e.size)
            .sum();
        let reserved: u64 = self
            .reservations
            .values()
            .filter(|r| r.publisher.as_deref() == Some(publisher))
            .map(|r| r.bytes)
            .sum();
        held + reserved
    }

    /// Reserves `bytes` of the quota for the fetch of `id` (replacing what it reserved
    /// before). Without `evict` the room must be free already; with it the oldest
    /// replicas are evicted to make room (only files held whole, whose sizes are
    /// verified; never shared or fetched files). Returns the evicted IDs, or a quota
    /// error leaving everything, the earlier reservation too, in place.
    pub fn reserve(
        &mut self,
        id: FileId,
        name: &str,
        bytes: u64,
        publisher: Option<String>,
        evict: bool,
    ) -> Result<Vec<FileId>, StoreError> {
        let before = self.reservations.remove(&id);
        let evicted = if bytes <= self.free() {
            Ok(vec![])
        } else if evict {
            self.make_room(name, bytes)
        } else {
            Err(StoreError::Quota {
                name: name.to_string(),
                need: bytes,
                free: self.free(),
                max: self.max_storage,
            })
        };
        match evicted {
            Ok(evicted) => {
                self.reservations
                    .insert(id, Reservation { bytes, publisher });
                Ok(evicted)
            }
            Err(e) => {
                if let Some(r) = before {
                    self.reservations.insert(id, r);
                }
                Err(e)
            }
        }
    }

    /// Gives back what the fetch of `id` reserved.
    pub fn release(&mut self, id: &FileId) {
        self.reservations.remove(id);
    }

    /// Frees room for `need` bytes by evicting the oldest replicas (never shared or
    /// fetched files); returns the evicted IDs, or a quota error leaving all in place.
    pub fn make_room(&mut self, name: &str, need: u64) -> Result<Vec<FileId>, StoreError> {
        let used = self.used();
        if used + need <= self.max_storage {
            return Ok(vec![]);
        }
        let mut replicas: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.origin == Origin::Replica)
            .collect();
        replicas.sort_by_key(|e| e.added);
        let evictable: u64 = replicas.iter().map(|e| e.size).sum();
        let free = self.max_storage.saturating_sub(used) + evictable;
        if need > free {
            return Err(StoreError::Quota {
                name: name.to_string(),
                need,
                free,
                max: self.max_storage,
            });
        }
        let mut evicted = vec![];
        let mut freed = 0;
        for e in replicas {
            if used - freed + need <= self.max_storage {
                break;
            }
            freed += e.size;
            evicted.push(e.id);
        }
        for id in &evicted {
            self.remove(id)?;
        }
        Ok(evicted)
    }

    pub fn insert(&mut self, entry: Entry, manifest: Manifest) -> Result<(), StoreError> {
        let mp = self.manifest_path(&entry.id);
        write_atomic(
            &mp,
            &serde_json::to_vec(&manifest)
                .map_err(io::Error::other)
                .map_err(io_err(&mp))?,
        )?;
        self.manifests.insert(entry.id, manifest);
        // A complete file counts as itself instead of as its reservation.
        self.reservations.remove(&entry.id);
        self.entries.insert(entry.id, entry);
        self.save()
    }

    /// Turns a replica into a fetched file at `dest` (the user asked for it): moved out of
    /// the replica store, no longer evictable. Never replaces an existing file.
    pub fn promote(&mut self, id: &FileId, dest: &Path) -> Result<Entry, StoreError> {
        let e = self
            .entries
            .get(id)
            .ok_or(StoreError::Unknown(*id))?
            .clone();
        if e.origin != Origin::Replica {
            return Ok(e);
        }
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        atomic::move_new(&e.path, dest).map_err(io_err(dest))?;
        let mut entry = e;
        entry.origin = Origin::Fetched;
        entry.path = dest.to_path_buf();
        self.entries.insert(*id, entry.clone());
        self.save()?;
        Ok(entry)
    }

    /// Forgets a file; a replica's data is deleted, shared and fetched files stay on disk.
    pub fn remove(&mut self, id: &FileId) -> Result<Entry, StoreError> {
        let e = self.entries.remove(id).ok_or(StoreError::Unknown(*id))?;
        self.manifests.remove(id);
        let _ = fs::remove_file(self.manifest_path(id));
        if e.origin == Origin::Replica {
            let _ = fs::remove_file(&e.path);
        }
        self.save()?;
        Ok(e)
    }

    fn save(&self) -> Result<(), StoreError> {
        let index = self.dir.join("index.json");
        let entries: Vec<&Entry> = self.entries.values().collect();
        let bytes = serde_json::to_vec_pretty(&entries)
            .map_err(io::Error::other)
            .map_err(io_err(&index))?;
        write_atomic(&index, &bytes)
    }

    /// Where chunk `index` of a held file is and what it must hash to, for a read off
    /// the event loop ([`ChunkSource::read`]); `None` for a file or chunk not held.
    pub fn chunk_source(&self, id: &FileId, index: u32) -> Option<ChunkSource> {
        let (entry, manifest) = (self.entries.get(id)?, self.manifests.get(id)?);
        let leaf = *manifest.leaves.get(index as usize)?;
        Some(ChunkSource {
            path: entry.path.clone(),
            offset: u64::from(index) * u64::from(manifest.chunk_size),
            len: manifest.chunk_len(index),
            leaf,
        })
    }

    /// Reads chunk `index` of a held file, checked against its manifest: a file that
    /// changed on disk is never served (and is dropped from the store).
    pub fn read_chunk(&mut self, id: &FileId, index: u32) -> Result<Vec<u8>, StoreError> {
        let (entry, manifest) = match (self.entries.get(id), self.manifests.get(id)) {
            (Some(e), Some(m)) => (e, m),
            _ => return Err(StoreError::Unknown(*id)),
        };
        if index >= manifest.chunks() {
            return Err(StoreError::Unknown(*id));
        }
        let path = entry.path.clone();
        let offset = u64::from(index) * u64::from(manifest.chunk_size);
        match read_at(&path, offset, manifest.chunk_len(index)) {
            Some(buf) if manifest.verify_chunk(index, &buf) => Ok(buf),
            _ => {
                self.remove(id)?;
                Err(StoreError::Changed { path })
            }
        }
    }
}

/// One chunk of a held file: where it is, how long, and its hash.
#[derive(Clone, Debug)]
pub struct ChunkSource {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub leaf: [u8; 32],
}

impl ChunkSource {
    /// Reads and verifies the chunk (blocking: disk and hashing). `None` when it cannot
    /// be read or no longer matches its hash: the file changed on disk.
    pub fn read(&self) -> Option<Vec<u8>> {
        let buf = read_at(&self.path, self.offset, self.len)?;
        chunk_matches(&buf, self.len, &self.leaf).then_some(buf)
    }
}

/// Reads exactly `len` bytes at `offset`, into a buffer that is not zeroed first (the
/// read fills it); `None` when the file is shorter or cannot be read.
fn read_at(path: &Path, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(usize::try_from(len).ok()?);
    let mut f = fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    f.take(len).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 == len).then_some(buf)
}

/// Writes `bytes` to `path` atomically, replacing what was there.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    atomic::write(path, bytes, 0o644, Existing::Replace).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::id::hash_file;

    fn add(
        store: &mut Store,
        dir: &Path,
        name: &str,
        size: usize,
        origin: Origin,
        added: u64,
    ) -> FileId {
        let p = dir.join(name);
        // Distinct names give distinct contents, hence distinct IDs.
        let data: Vec<u8> = name.bytes().cycle().take(size).collect();
        fs::write(&p, data).unwrap();
        let m = hash_file(&p).unwrap();
        let id = m.root();
        store
            .insert(
                Entry {
                    id,
                    name: name.into(),
                    size: size as u64,
                    path: p,
                    origin,
                    added,
                    publisher: None,
                },
                m,
            )
            .unwrap();
        id
    }

    #[test]
    fn persists_and_serves_verified_chunks() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path(), 1 << 30).unwrap();
        let id = add(&mut s, d.path(), "a", 3000, Origin::Shared, 1);
        assert_eq!(s.read_chunk(&id, 0).unwrap().len(), 3000);
        let src = s.chunk_source(&id, 0).unwrap();
        assert_eq!(src.read().unwrap().len(), 3000);
        assert!(s.chunk_source(&id, 1).is_none() && s.chunk_source(&id, u32::MAX).is_none());
        let s2 = Store::open(d.path(), 1 << 30).unwrap();
        assert_eq!(s2.get(&id).unwrap().name, "a");
        // The file changes on disk: never served, dropped.
        let mut s = s2;
        fs::write(d.path().join("a"), vec![b'x'; 3000]).unwrap();
        assert!(src.read().is_none(), "a changed chunk does not verify");
        assert!(matches!(
            s.read_chunk(&id, 0),
            Err(StoreError::Changed { .. })
        ));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn quota_evicts_oldest_replicas_only() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path(), 10_000).unwrap();
        let r1 = add(&mut s, d.path(), "r1", 4000, Origin::Replica, 1);
        let r2 = add(&mut s, d.path(), "r2", 4000, Origin::Replica, 2);
        let f = add(&mut s, d.path(), "f", 2000, Origin::Fetched, 0);
        add(&mut s, d.path(), "s", 50_000, Origin::Shared, 0);
        assert_eq!(s.used(), 10_000);
        let ev = s.make_room("new", 3000).unwrap();
        assert_eq!(ev, vec![r1]);
        assert!(s.get(&r2).is_some() && s.get(&f).is_some());
        assert!(
            !d.path().join("r1").exists(),
            "evicted replica data is deleted"
        );
        let err = s.make_room("huge", 9000).unwrap_err();
        assert!(err.to_string().contains("storage quota"), "{err}");
        assert!(s.get(&r2).is_some(), "a refused request evicts nothing");
    }

    #[test]
    fn reservations_count_and_evict_only_when_allowed() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path(), 10_000).unwrap();
        let r1 = add(&mut s, d.path(), "r1", 4000, Origin::Replica, 1);
        let a = FileId([1; 32]);
        let b = FileId([2; 32]);
        let c = FileId([3; 32]);
        // 6000 free: a fetch takes 5000 of it without evicting anything.
        assert!(
            s.reserve(a, "a", 5000, Some("p".into()), false)
                .unwrap()
                .is_empty()
        );
        assert_eq!((s.used(), s.free(), s.reserved()), (9000, 1000, 5000));
        // A second one does not fit without eviction: refused, nothing evicted.
        let e = s
            .reserve(b, "b", 3000, Some("p".into()), false)
            .unwrap_err();
        assert!(e.to_string().contains("storage quota"), "{e}");
        assert!(s.get(&r1).is_some() && s.reserved_for(&b) == 0);
        // The reservations of one publisher add up with its replicas.
        assert_eq!(s.publisher_bytes("p"), 5000);
        // Allowed to evict (a verified size): the oldest replica goes.
        assert_eq!(s.reserve(c, "c", 3000, None, true).unwrap(), vec![r1]);
        assert_eq!(s.used(), 8000);
        // Growing a reservation that cannot fit leaves the old one in place.
        assert!(s.reserve(a, "a", 20_000, None, true).is_err());
        assert_eq!(s.reserved_for(&a), 5000);
        s.release(&a);
        assert_eq!(s.used(), 3000);
        // A complete file counts as itself, not twice.
        let p = d.path().join("c");
        fs::write(&p, vec![7u8; 3000]).unwrap();
        let m = hash_file(&p).unwrap();
        let id = m.root();
        s.reserve(id, "c", 3000, Some("q".into()), false).unwrap();
        s.insert(
            Entry {
                id,
                name: "c".into(),
                size: 3000,
                path: p,
                origin: Origin::Replica,
                added: 5,
                publisher: Some("q".into()),
            },
            m,
        )
        .unwrap();
        assert_eq!(s.reserved_for(&id), 0);
        assert_eq!(s.publisher_bytes("q"), 3000);
        assert_eq!(s.used(), 6000);
    }

    #[test]
    fn corrupt_index_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("files")).unwrap();
        fs::write(d.path().join("files/index.json"), b"{").unwrap();
        let err = Store::open(d.path(), 1).err().unwrap();
        assert!(err.to_string().contains("index.json"), "{err}");
    }
}
