//! What the admin endpoint (and tests) ask of the event loop; each request carries the
//! channel for its answer.

use std::path::PathBuf;

use libp2p::Multiaddr;
use tokio::sync::oneshot;

use crate::{
    files::{FileId, Manifest},
    status::{
        ConnectionStatus, DhtStats, FileInfo, FileList, MessageRecord, PeerScoreStatus, Progress,
        Status,
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
    /// Files and messages (peers only).
    Files(FileCommand),
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
    Progress {
        id: FileId,
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
