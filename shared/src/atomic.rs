//! Files that are never half-written, and never replace what they must not.
//!
//! Every file Jantar writes for itself (identity key, TLS certificate and key, the file
//! index and manifests) and every file it hands to the user (a finished download) goes
//! through here: the bytes are written to a temporary file beside the target, flushed to
//! disk, then moved into place in one step. A crash leaves either the old file or the
//! new one, plus at worst a stray `.*.tmp` file, never a truncated target.

use std::{
    fs::{self, File, Permissions},
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
};

/// What [`write`] does when the target exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Replace it (an index, a manifest).
    Replace,
    /// Keep it and fail with [`io::ErrorKind::AlreadyExists`] (an identity key).
    Keep,
}

/// Writes `bytes` to `path` atomically, creating the file with permission bits `mode`.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    replace_with(path, mode, existing, |f| f.write_all(bytes))
}

/// Copies `src` to `path` atomically with permission bits `mode`.
pub(crate) fn copy(src: &Path, path: &Path, mode: u32, existing: Existing) -> io::Result<()> {
    replace_with(path, mode, existing, |f| {
        io::copy(&mut File::open(src)?, f).map(|_| ())
    })
}

/// Fills a temporary file beside `path` (permission bits `mode`), flushes it to disk and
/// moves it into place in one step.
fn replace_with(
    path: &Path,
    mode: u32,
    existing: Existing,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    match existing {
        Existing::Replace => tmp.persist(path).map_err(|e| e.error)?,
        Existing::Keep => tmp.persist_noclobber(path).map_err(|e| e.error)?,
    };
    sync_dir(dir);
    Ok(())
}

/// Moves `src` to the new path `dest` without ever replacing a file there: a hard link
/// where both are on one file system, else a copy beside `dest` (flushed) that is then
/// linked into place. `src` is removed once `dest` holds the data; a failure to remove
/// it leaves two copies, never none.
pub(crate) fn move_new(src: &Path, dest: &Path) -> io::Result<()> {
    match fs::hard_link(src, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let mut tmp = tempfile::Builder::new()
                .prefix(".")
                .suffix(".tmp")
                .tempfile_in(parent(dest))?;
            io::copy(&mut File::open(src)?, tmp.as_file_mut())?;
            tmp.as_file().sync_all()?;
            tmp.persist_noclobber(dest).map_err(|e| e.error)?;
        }
        Err(e) => return Err(e),
    }
    sync_dir(parent(dest));
    if let Err(e) = fs::remove_file(src) {
        tracing::warn!(src = %src.display(), error = %e, "moved into place, but the source could not be removed");
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Makes a rename or link in `dir` durable. Best effort: some file systems refuse it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_or_keeps_and_leaves_no_temporary_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write(&p, b"one", 0o600, Existing::Keep).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write(&p, b"two", 0o600, Existing::Keep).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write(&p, b"three", 0o644, Existing::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(names(d.path()), vec!["f"]);
    }

    #[test]
    fn move_new_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, b"data").unwrap();
        fs::write(&b, b"theirs").unwrap();
        assert_eq!(
            move_new(&a, &b).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&b).unwrap(), b"theirs");
        fs::remove_file(&b).unwrap();
        move_new(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"data");
        assert_eq!(names(d.path()), vec!["b"]);
    }

    #[test]
    fn move_new_copies_across_file_systems() {
        // /dev/shm is a tmpfs on Linux; skip where it is missing or the same device.
        let shm = Path::new("/dev/shm");
        let Ok(src_dir) = tempfile::tempdir_in(shm) else {
            return;
        };
        let dst_dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::MetadataExt;
        if fs::metadata(src_dir.path()).unwrap().dev()
            == fs::metadata(dst_dir.path()).unwrap().dev()
        {
            return;
        }
        let (a, b) = (src_dir.path().join("a"), dst_dir.path().join("b"));
        fs::write(&a, b"across").unwrap();
        move_new(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"across");
        assert!(!a.exists());
        assert_eq!(names(dst_dir.path()), vec!["b"]);
    }
}
