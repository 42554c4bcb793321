//! Files and messages: content addressing, the local store, the transfer protocol and
//! fetching with verification.

pub mod codec;
pub mod fetch;
pub mod id;
pub mod protocol;
pub mod store;

pub use id::{FileId, Manifest};
