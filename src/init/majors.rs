//! Images built with `spilo-build compress` keep all but the default
//! major packed. The one this container runs is unpacked under RW_DIR
//! first; the model is then rebuilt against the unpacked tree (bin_dir,
//! preloadable libraries) and the children find its shared libraries
//! through LD_LIBRARY_PATH.

use std::path::Path;

use spilo_layout::{LayoutError, archive};
use tracing::info;

use crate::config::{Config, ConfigError, Env, System};

#[derive(Debug, thiserror::Error)]
pub enum MajorError {
    #[error("unpacking PostgreSQL {major}: {source}")]
    Unpack { major: u32, source: LayoutError },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where packed majors are unpacked (`<dir>/<major>`), as `spilo-build
/// unpack` does by default with RW_DIR=/run.
fn unpack_dir(config: &Config) -> std::path::PathBuf {
    config.paths.rw_dir.join("spilo/majors")
}

/// A major unpacked for this run.
pub struct Unpacked {
    /// The model rebuilt against the unpacked tree.
    pub config: Config,
    /// What the children need to find its libraries.
    pub env: Vec<(String, String)>,
}

/// Unpacks the chosen major when it is packed (None for an installed one).
pub fn prepare(
    config: &Config,
    env: &Env,
    postgres_root: &Path,
) -> Result<Option<Unpacked>, MajorError> {
    let major = config.version.major;
    let unpacked = archive::unpack_if_needed(postgres_root, major, &unpack_dir(config))
        .map_err(|source| MajorError::Unpack { major, source })?;
    let Some(unpacked) = unpacked else {
        return Ok(None);
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
    let system = System {
        postgres_root: unpacked.postgres_root,
        ..System::default()
    };
    let config = Config::build(env, &system)?;
    let mut vars = Vec::new();
    if !unpacked.library_path.is_empty() {
        if let Ok(path) = std::env::join_paths(&unpacked.library_path) {
            vars.push((
                "LD_LIBRARY_PATH".to_owned(),
                path.to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(Some(Unpacked { config, env: vars }))
}
