//! The node's persistent ed25519 identity.
//!
//! Created on first start with mode 0600 and written atomically ([`crate::atomic`]: a
//! temporary file, fsync, then a move that fails if the target appeared meanwhile), so a
//! key file is never half-written and never overwritten. An existing key that is unreadable, corrupt or
//! readable by group or others is refused and left untouched.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

use crate::{
    atomic::{self, Existing},
    private_file::{self, ReadError},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("cannot read identity key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "identity key {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}` and start again",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("identity key {} is corrupt or not a libp2p key ({reason}); the file was left untouched", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot create identity key {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether [`load_or_create`] found an existing key or made a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Loaded,
    Created,
}

/// Reads the key at `path`, or creates a new ed25519 key there if no file exists.
pub(crate) fn load_or_create(path: &Path) -> Result<(Keypair, Origin), IdentityError> {
    match fs::symlink_metadata(path) {
        Ok(_) => load(path).map(|k| (k, Origin::Loaded)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            match create(path, &key) {
                Ok(()) => Ok((key, Origin::Created)),
                // Another process created it between our check and our link: use theirs.
                Err(IdentityError::Create { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    load(path).map(|k| (k, Origin::Loaded))
                }
                Err(e) => Err(e),
            }
        }
        Err(source) => Err(IdentityError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads an existing key file, refusing it when its permissions are too open.
pub(crate) fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let read_err = |source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match private_file::read(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(read_err(io::ErrorKind::NotFound.into())),
        Err(ReadError::Io(e)) => return Err(read_err(e)),
        Err(ReadError::Open { mode }) => {
            return Err(IdentityError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    };
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn create(path: &Path, key: &Keypair) -> Result<(), IdentityError> {
    let create_err = |source| IdentityError::Create {
        path: path.to_path_buf(),
        source,
    };
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| create_err(io::Error::other(e)))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(create_err)?;
    }
    // `Existing::Keep`: an existing key is never replaced.
    atomic::write(path, &bytes, 0o600, Existing::Keep).map_err(create_err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_once_then_loads_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let (a, o1) = load_or_create(&path).unwrap();
        assert_eq!(o1, Origin::Created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, o2) = load_or_create(&path).unwrap();
        assert_eq!(o2, Origin::Loaded);
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_open_permissions_and_leaves_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        load_or_create(&path).unwrap();
        let before = fs::read(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_corrupt_key_and_leaves_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        fs::write(&path, b"not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn refuses_directory_in_place_of_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Read { .. }), "{err}");
    }
}
