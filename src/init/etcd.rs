//! The embedded etcd's data across starts. Its first start is marked
//! before it and unmarked once etcd answers (`supervisor::Ready::Http`):
//! stopped in between, it may hold a member whose configuration was never
//! committed, which never elects itself; without its data it starts as the
//! new member it was. Data is removed only after a first start known
//! unfinished, never on a missing mark.

use tracing::{info, warn};

use crate::config::Paths;
use crate::files::IoError;

/// This start of the embedded etcd.
pub(crate) struct Embedded {
    /// It has no data yet: a new member of its own cluster.
    pub(crate) first_start: bool,
}

/// Removes the data an unfinished first start left, then tells whether
/// this start is a first one.
pub(crate) fn prepare(paths: &Paths) -> Embedded {
    match clear_unfinished(paths) {
        Ok(true) => info!(
            "{}: removed the data of an embedded etcd whose first start never finished",
            paths.etcd_data().display()
        ),
        Ok(false) => {}
        Err(e) => warn!("{e}"),
    }
    Embedded {
        first_start: !paths.etcd_data().exists(),
    }
}

/// Whether there was data of an unfinished first start (now removed).
fn clear_unfinished(paths: &Paths) -> Result<bool, IoError> {
    let data = paths.etcd_data();
    if !paths.etcd_first_start().exists() || !data.exists() {
        return Ok(false);
    }
    std::fs::remove_dir_all(&data).map_err(IoError::at("remove", &data))?;
    Ok(true)
}

impl Embedded {
    /// Marks a first start; until etcd answers, the next start may remove
    /// what it wrote. Called once the volumes are prepared. Without the
    /// mark nothing is removed later: only a cut-short first start is not
    /// cleaned up.
    pub(crate) fn mark(&self, paths: &Paths) {
        if !self.first_start {
            return;
        }
        let mark = paths.etcd_first_start();
        if let Err(e) = std::fs::write(&mark, b"").map_err(IoError::at("write", &mark)) {
            warn!("{e}");
        }
    }
}
