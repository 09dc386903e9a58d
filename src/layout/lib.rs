//! What the build tool (`spilo-build`) and the runtime (`spilo`) agree on:
//! where the image puts things, the manifest `spilo-build manifest` writes
//! and `spilo manifest` prints, and the archive a packed major is kept in
//! (written by `spilo-build compress`, unpacked by `spilo init`).
//!
//! A crate of its own so that the build tool compiles without the runtime
//! (a change to runtime code leaves the image's package layers to the
//! build cache) and the runtime carries no apt, dpkg or packing code.

pub mod archive;
pub mod manifest;

use std::path::{Path, PathBuf};

/// Where the per-major trees live (`<root>/<major>/bin`).
pub const POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// Subdirectory of the root with the majors `spilo-build compress` packed
/// (`<N>.json` beside each archive). They count as installed: `spilo init`
/// unpacks the one it runs.
pub const ARCHIVE_SUBDIR: &str = "archives";

/// Subdirectory of RW_DIR where `spilo init` unpacks the packed major it
/// runs (`<dir>/<major>`).
pub const UNPACKED_SUBDIR: &str = "spilo/majors";

/// A failed file system call: what it did, on which path, and why. The one
/// I/O error of the build tool, this crate and the runtime.
#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", path.display())]
pub struct IoError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl IoError {
    /// For `map_err`: the error of `action` on `path`, from std's error or
    /// one that converts to it (nix's).
    pub fn at<E: Into<std::io::Error>>(
        action: &'static str,
        path: &Path,
    ) -> impl FnOnce(E) -> Self {
        move |e| IoError {
            action,
            path: path.to_owned(),
            source: e.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// Reading (`parse`) or writing (`encode`) a JSON file.
    #[error("{}: {action}: {source}", path.display())]
    Json {
        action: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// `path` (absolute, as in the image) under `root`.
pub fn under(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    root.join(path.strip_prefix("/").unwrap_or(path))
}
