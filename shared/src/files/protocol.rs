//! The transfer protocol (request-response, `/jantar/file/1.1.0` with `1.0.0` for older
//! peers; the wire format is in [`super::codec`]) and the gossip payloads (file
//! announcements and messages), with their validation.

use std::{path::Path, time::Duration};

use libp2p::request_response::{self, ProtocolSupport};
use serde::{Deserialize, Serialize};

pub use super::codec::{PROTOCOL, PROTOCOL_CBOR};
use super::{
    codec::Codec,
    id::{CHUNK_SIZE, FileId, Manifest},
};

pub const FILES_TOPIC: &str = "jantar/files/v1";
pub const MESSAGES_TOPIC: &str = "jantar/messages/v1";
/// Longest message text accepted.
pub const MAX_MESSAGE_TEXT: usize = 4096;
/// Largest gossip payload: announcements and messages are small.
pub const MAX_GOSSIP_SIZE: usize = 16 * 1024;
/// Largest file a manifest can describe.
pub const MAX_FILE_SIZE: u64 = 65536 * CHUNK_SIZE as u64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Manifest(FileId),
    Chunk { id: FileId, index: u32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Manifest(Manifest),
    Chunk(serde_bytes::ByteBuf),
    NotFound,
    /// The provider has the file but is serving as much as its bounds allow: ask
    /// again shortly. Sent as "not found" to peers that speak only the CBOR protocol.
    Busy,
}

pub type Behaviour = request_response::Behaviour<Codec>;

/// How long a request may wait for its response, on either side.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn behaviour() -> Behaviour {
    request_response::Behaviour::with_codec(
        Codec::new(),
        [
            (PROTOCOL, ProtocolSupport::Full),
            (PROTOCOL_CBOR, ProtocolSupport::Full),
        ],
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(64),
    )
}

/// A file announced on [`FILES_TOPIC`]; the publisher is the gossip message's signer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Announcement {
    pub id: FileId,
    pub name: String,
    pub size: u64,
}

/// A message on [`MESSAGES_TOPIC`]; the sender is the gossip message's signer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub text: String,
    /// Unix seconds, as the sender's clock says.
    pub sent_at: u64,
}

pub fn parse_announcement(data: &[u8]) -> Result<Announcement, String> {
    let a: Announcement =
        serde_json::from_slice(data).map_err(|e| format!("malformed announcement: {e}"))?;
    if safe_name(&a.name).as_deref() != Some(a.name.as_str()) {
        return Err(format!("announcement with unsafe file name {:?}", a.name));
    }
    if a.size > MAX_FILE_SIZE {
        return Err(format!(
            "announced size {} is above the {MAX_FILE_SIZE} limit",
            a.size
        ));
    }
    Ok(a)
}

pub fn parse_message(data: &[u8]) -> Result<ChatMessage, String> {
    let m: ChatMessage =
        serde_json::from_slice(data).map_err(|e| format!("malformed message: {e}"))?;
    if m.text.is_empty() || m.text.len() > MAX_MESSAGE_TEXT {
        return Err(format!(
            "message text of {} bytes (1 to {MAX_MESSAGE_TEXT} allowed)",
            m.text.len()
        ));
    }
    if m.text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("message text with control characters".into());
    }
    Ok(m)
}

/// A file name that is safe to create in a directory: the last path component, no
/// control characters, not `.`/`..`, at most 255 bytes.
pub fn safe_name(name: &str) -> Option<String> {
    let base = Path::new(name).file_name()?.to_str()?;
    if base.is_empty()
        || base == "."
        || base == ".."
        || base.len() > 255
        || base
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return None;
    }
    Some(base.to_string())
}

/// A name for a shared path, checked like announced names.
pub fn share_name(path: &Path) -> Result<String, String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(safe_name)
        .ok_or_else(|| format!("{} has no usable file name", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(safe_name("report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(safe_name("/etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(safe_name(".."), None);
        assert_eq!(safe_name("a\nb"), None);
        assert_eq!(safe_name(""), None);
    }

    #[test]
    fn announcements_and_messages_are_validated() {
        let ok = serde_json::to_vec(&Announcement {
            id: FileId([1; 32]),
            name: "a.txt".into(),
            size: 3,
        })
        .unwrap();
        assert!(parse_announcement(&ok).is_ok());
        let evil = serde_json::to_vec(&Announcement {
            id: FileId([1; 32]),
            name: "../../x".into(),
            size: 3,
        })
        .unwrap();
        assert!(
            parse_announcement(&evil)
                .unwrap_err()
                .contains("unsafe file name")
        );
        assert!(parse_announcement(b"{}").unwrap_err().contains("malformed"));
        let long = serde_json::to_vec(&ChatMessage {
            text: "x".repeat(5000),
            sent_at: 0,
        })
        .unwrap();
        assert!(parse_message(&long).is_err());
        let m = serde_json::to_vec(&ChatMessage {
            text: "hi".into(),
            sent_at: 1,
        })
        .unwrap();
        assert_eq!(parse_message(&m).unwrap().text, "hi");
    }
}
