//! Certificates replaced on disk (a renewed secret) are picked up without
//! a restart: when the files change, the postmaster gets SIGHUP, which is
//! what `pg_ctl reload` sends.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::supervisor::Periodic;

const EVERY: Duration = Duration::from_secs(10);

/// What identifies a file's version: inode, size, modification time
/// (None when missing). Kubernetes swaps secret files by symlink, which
/// changes the inode.
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// The periodic job watching `files` for the data directory `pgdata`.
pub(crate) fn watch(files: Vec<PathBuf>, pgdata: PathBuf) -> Periodic {
    let mut seen: Vec<Stamp> = files.iter().map(|f| stamp(f)).collect();
    Periodic {
        name: "certificates",
        every: EVERY,
        job: Box::new(move || {
            let now: Vec<Stamp> = files.iter().map(|f| stamp(f)).collect();
            if now == seen {
                return Ok(None);
            }
            seen = now;
            reload(&pgdata).map(Some)
        }),
    }
}

/// SIGHUP to the postmaster named in postmaster.pid.
fn reload(pgdata: &Path) -> Result<String, String> {
    let pid_file = pgdata.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pid_file) {
        Ok(text) => text,
        Err(_) => return Ok("changed; PostgreSQL is not running".into()),
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{}: no process id on its first line", pid_file.display()))?;
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|e| format!("changed, but reloading PostgreSQL (pid {pid}) failed: {e}"))?;
    Ok(format!("changed: PostgreSQL (pid {pid}) reloaded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_triggers_one_reload() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("server.crt");
        std::fs::write(&cert, "one").unwrap();
        let mut job = watch(vec![cert.clone()], dir.path().to_owned());
        assert_eq!((job.job)(), Ok(None));
        std::fs::write(&cert, "two, longer").unwrap();
        assert_eq!(
            (job.job)(),
            Ok(Some("changed; PostgreSQL is not running".into()))
        );
        assert_eq!((job.job)(), Ok(None));
        std::fs::write(dir.path().join("postmaster.pid"), "garbage\n").unwrap();
        std::fs::remove_file(&cert).unwrap();
        assert!((job.job)().unwrap_err().contains("postmaster.pid"));
    }
}
