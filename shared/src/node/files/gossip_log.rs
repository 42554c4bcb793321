//! What gossip brought: the files announced (with their publishers) and the messages
//! received, both bounded.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;

use crate::{
    files::{
        id::FileId,
        protocol::{Announcement, ChatMessage},
        store::now_secs,
    },
    node::announce::Announcements,
    status::MessageRecord,
};

/// Messages kept for `messages`.
const MESSAGE_LOG: usize = 1000;
/// Announcements remembered (for names, sizes and the first provider).
const ANNOUNCED: usize = 10_000;

#[derive(Default)]
pub(super) struct GossipLog {
    /// Announced files, with their publisher.
    announced: HashMap<FileId, (Announcement, PeerId)>,
    messages: VecDeque<MessageRecord>,
    next_seq: u64,
    /// Shared files announced again to peers that join the topic.
    pub(super) announce: Announcements,
}

impl GossipLog {
    pub(super) fn announced(&self, id: &FileId) -> Option<(Announcement, PeerId)> {
        self.announced.get(id).cloned()
    }

    pub(super) fn remember(&mut self, publisher: PeerId, a: Announcement) {
        if self.announced.len() >= ANNOUNCED
            && let Some(k) = self.announced.keys().next().copied()
        {
            self.announced.remove(&k);
        }
        self.announced.insert(a.id, (a, publisher));
    }

    pub(super) fn push_message(&mut self, from: PeerId, msg: ChatMessage) -> MessageRecord {
        self.next_seq += 1;
        let rec = MessageRecord {
            seq: self.next_seq,
            from: from.to_string(),
            sent_at: msg.sent_at,
            received_at: now_secs(),
            text: msg.text,
        };
        self.messages.push_back(rec.clone());
        if self.messages.len() > MESSAGE_LOG {
            self.messages.pop_front();
        }
        rec
    }

    pub(super) fn messages_after(&self, after: u64) -> Vec<MessageRecord> {
        self.messages
            .iter()
            .filter(|m| m.seq > after)
            .cloned()
            .collect()
    }
}
