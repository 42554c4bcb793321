//! Signed releases, after The Update Framework (TUF) and Syncthing's signed releases:
//! release keys kept offline sign a manifest; a node trusts a set of keys and a
//! threshold of them, and accepts only a manifest that enough of them signed, that has
//! not expired, and whose sequence is newer than any it verified before.
//!
//! | part | what it does |
//! |---|---|
//! | [`keys`] | Ed25519 release keys: generate, save (owner-only, never replaced), load; public keys as `ed25519:<hex>` |
//! | [`manifest`] | the manifest, its signatures, combining signatures made apart, verification with every refusal named, staged rollout by peer id |
//! | [`install`] | applying a release: staging, handing over, confirming, rolling back |
//! | [`watch`] | the update watcher: the old binary, rolling back a new version not ready in time |
//! | [`root`] | rotating the release keys: a new key set signed by the old threshold and its own, the chain a node keeps |
//! | [`signed`] | a document signed by release keys (a manifest or a root): parsing within limits, signing, combining signatures made apart, counting valid ones |
//! | [`tool`] | `jantar-peer release`: `keygen`, `new`, `sign`, `combine`, `verify` |

pub mod install;
pub mod keys;
pub mod manifest;
pub mod root;
pub mod signed;
pub mod tool;
pub mod watch;

pub use keys::{PublicKey, SigningKey};
pub use manifest::{Manifest, Refused, SignedManifest, Target, Trust};
