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

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl LayoutError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> LayoutError {
        LayoutError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// `path` (absolute, as in the image) under `root`.
pub fn under(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    root.join(path.strip_prefix("/").unwrap_or(path))
}
