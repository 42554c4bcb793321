//! What the admin endpoint (and tests) ask of the event loop; each request carries the
//! channel for its answer.

use std::path::PathBuf;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::{
    files::{FileId, Manifest},
    status::{
        ConnectionStatus, DhtStats, FileInfo, FileList, MessageRecord, PeerScoreStatus, Progress,
        ReleaseInfo, Status,
    },
};

/// Requests to the event loop; each carries the channel for its answer.
#[derive(Debug)]
pub enum Command {
    Status(oneshot::Sender<Status>),
    DhtStats(oneshot::Sender<DhtStats>),
    /// Dial an address and answer once the connection is up or has failed.
    Connect {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<ConnectionStatus, String>>,
    },
    /// Every known peer with its score, best first.
    Peers(oneshot::Sender<Vec<PeerScoreStatus>>),
    /// An iterative Kademlia lookup of the peers closest to `key` (FIND_NODE).
    FindNode {
        key: PeerId,
        reply: oneshot::Sender<Lookup>,
    },
    /// Files and messages (peers only).
    Files(FileCommand),
    /// Verify a signed release manifest and announce it (peers that trust release
    /// keys).
    PublishRelease {
        manifest: Vec<u8>,
        reply: oneshot::Sender<Result<ReleaseInfo, String>>,
    },
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
    List(oneshot::Sender<FileList>),
    /// Where the fetch of `id` stands. With `wait`, a running fetch answers when it
    /// finishes instead (64 such requests at most; the caller times out).
    Progress {
        id: FileId,
        wait: bool,
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

/// The outcome of a [`Command::FindNode`] lookup (empty and incomplete by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The closest peers found, closest first (at most Kademlia's K, 20).
    pub peers: Vec<PeerId>,
    /// Requests sent, and how many were answered and how many failed.
    pub requests: u32,
    pub answered: u32,
    pub failed: u32,
    /// False when the query timed out (`peers` holds what it had found by then) or
    /// the DHT is off.
    pub complete: bool,
}
