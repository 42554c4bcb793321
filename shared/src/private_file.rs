//! Files only the node's user may read (the identity key, the admin token): read only
//! when they are regular files that group and others cannot read.

use std::{fs, io, os::unix::fs::PermissionsExt, path::Path};

#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// Group or others may read it (`mode` is the permission bits).
    Open {
        mode: u32,
    },
}

/// The contents of `path`, `None` when there is no file.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    if !meta.is_file() {
        return Err(ReadError::Io(io::Error::other("not a regular file")));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ReadError::Open { mode });
    }
    fs::read(path).map(Some).map_err(ReadError::Io)
}
