//! The admin token a node makes for itself when `admin.token` is not configured: 32
//! random bytes, hex, in `<data_dir>/admin.token` (mode 0600, written atomically, never
//! replaced), which the `jantar-peer` client commands read, as Jupyter and Docker-style
//! local APIs do. A web page in the user's browser cannot read it, so it cannot make the
//! node do anything.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use rand::RngCore;

use crate::{
    atomic::{self, Existing},
    private_file::{self, ReadError},
};

/// Where a node keeps the token it made.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the admin token {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the admin token {} is not a token (expected 64 hex characters); remove it to make a new one", path.display())]
    Corrupt { path: PathBuf },
    #[error("cannot create the admin token {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The token in `<data_dir>/admin.token`, made there first if there is none.
pub(crate) fn load_or_create(data_dir: &Path) -> Result<String, TokenError> {
    let path = path(data_dir);
    if let Some(t) = read(&path)? {
        return Ok(t);
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let create = |source| TokenError::Create {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(data_dir).map_err(create)?;
    match atomic::write(&path, token.as_bytes(), 0o600, Existing::Keep) {
        Ok(()) => Ok(token),
        // Another process made it meanwhile: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read(&path)?.ok_or(TokenError::Corrupt { path })
        }
        Err(e) => Err(create(e)),
    }
}

/// The token at `path`, or `None` when there is no file.
pub fn read(path: &Path) -> Result<Option<String>, TokenError> {
    let bytes = match private_file::read(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(ReadError::Io(source)) => {
            return Err(TokenError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(ReadError::Open { mode }) => {
            return Err(TokenError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    };
    let token = std::str::from_utf8(&bytes).unwrap_or_default().trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Corrupt {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(token.to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn made_once_private_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path()).unwrap();
        assert_eq!(a.len(), 64);
        let mode = fs::metadata(path(d.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create(d.path()).unwrap(),
            a,
            "the same token next time"
        );
        assert_eq!(read(&path(d.path())).unwrap(), Some(a));
    }

    #[test]
    fn refuses_open_or_corrupt_files_and_leaves_them() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path());
        fs::write(&p, "x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create(d.path()),
            Err(TokenError::Corrupt { .. })
        ));
        assert_eq!(fs::read(&p).unwrap(), b"x");
        fs::write(&p, "ab".repeat(32)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(d.path()).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
