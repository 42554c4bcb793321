//! The peer's file keys: where downloads go and how much it stores and serves
//! (`download_dir`, `max_storage_size`, `min_file_size`, `upload_rate_limit`).

use std::path::{Path, PathBuf};

use crate::config::file::FileConfig;

/// The validated file keys.
pub(super) struct Files {
    pub(super) download_dir: PathBuf,
    pub(super) max_storage_size: u64,
    pub(super) min_file_size: u64,
    pub(super) upload_rate_limit: u64,
}

/// Applies the defaults; every value is acceptable. (That these keys mean nothing on a
/// bootstrap node or relay is a warning from the role check.)
pub(super) fn check(f: &FileConfig, data_dir: &Path) -> Files {
    Files {
        download_dir: f
            .download_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("downloads")),
        max_storage_size: f.max_storage_size.map_or(1 << 30, |s| s.0),
        min_file_size: f.min_file_size.map_or(0, |s| s.0),
        upload_rate_limit: f.upload_rate_limit.map_or(0, |s| s.0),
    }
}
