//! The scheduler's last outcomes, in a small file beside the spool: when a
//! backup last succeeded (the repository's newest one at start) and last
//! failed, and why. The monitor's metrics read it; nothing else depends
//! on it, so a file that cannot be written is only a log line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{self, IoError, Owner};
use crate::render::Output;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Unix seconds.
    pub last_success: Option<i64>,
    pub last_failure: Option<i64>,
    pub last_error: Option<String>,
}

/// Where the state of the spool `spool` lives.
pub fn path(spool: &Path) -> PathBuf {
    spool.join("backup-state.json")
}

impl State {
    /// The state in `path`; None when there is none (yet) or it is not
    /// readable.
    pub fn read(path: &Path) -> Option<State> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Replaces the file at once (a reader never sees half of it).
    pub(crate) fn write(&self, path: &Path) -> Result<(), IoError> {
        let file = Output::File {
            path: path.to_owned(),
            contents: serde_json::to_vec(self).unwrap_or_default(),
            mode: 0o644,
            redacted: None,
        };
        files::write_all(&[file], Owner::default()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert_eq!(State::read(&file), None);
        let state = State {
            last_success: Some(10),
            last_failure: Some(20),
            last_error: Some("[049] unable to connect".into()),
        };
        state.write(&file).unwrap();
        assert_eq!(State::read(&file), Some(state));
    }
}
