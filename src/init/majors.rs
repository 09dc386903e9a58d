//! Images built with `spilo-build compress` keep all but the default
//! major packed. The one this container runs is unpacked under RW_DIR
//! (`Paths::unpacked_majors`) first; the model already points at the
//! unpacked tree (`System::unpacks`), and the children find its shared
//! libraries through LD_LIBRARY_PATH.

use std::path::Path;

use spilo_layout::{LayoutError, archive};
use tracing::info;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum MajorError {
    #[error("unpacking PostgreSQL {major}: {source}")]
    Unpack { major: u32, source: LayoutError },
}

/// What the children need to find the libraries of the major that runs
/// (none for an installed one).
pub(crate) fn prepare(
    config: &Config,
    postgres_root: &Path,
) -> Result<Vec<(String, String)>, MajorError> {
    let major = config.version.major;
    let unpacked = archive::unpack_if_needed(postgres_root, major, &config.paths.unpacked_majors())
        .map_err(|source| MajorError::Unpack { major, source })?;
    let Some(unpacked) = unpacked else {
        return Ok(Vec::new());
    };
    info!(
        "PostgreSQL {major}: {} in {:.2}s",
        if unpacked.fresh {
            "unpacked"
        } else {
            "already unpacked"
        },
        unpacked.seconds
    );
    let mut vars = Vec::new();
    if !unpacked.library_path.is_empty() {
        if let Ok(path) = std::env::join_paths(&unpacked.library_path) {
            vars.push((
                "LD_LIBRARY_PATH".to_owned(),
                path.to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(vars)
}
