//! A chunk that arrived for a fetch, verified and written in place off the event loop.

use std::{fs::File, os::unix::fs::FileExt, sync::Arc};

use libp2p::PeerId;

use crate::files::id::{FileId, chunk_matches};

/// A chunk to verify and write into a fetch's partial file: blocking work (hashing and
/// disk), done off the event loop.
#[derive(Debug)]
pub struct ChunkWrite {
    pub id: FileId,
    pub peer: PeerId,
    pub index: u32,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) leaf: [u8; 32],
    pub(super) file: Arc<File>,
}

/// How a [`ChunkWrite`] went.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Ok,
    /// The data is not the chunk: wrong length or hash. Nothing was written.
    Bad,
    /// Writing failed (disk full, I/O error).
    Failed(String),
}

impl ChunkWrite {
    /// Checks `data` against the chunk's hash and writes it in place (blocking).
    pub fn run(&self, data: &[u8]) -> Written {
        if !chunk_matches(data, self.len, &self.leaf) {
            return Written::Bad;
        }
        match self.file.write_all_at(data, self.offset) {
            Ok(()) => Written::Ok,
            Err(e) => Written::Failed(e.to_string()),
        }
    }
}
