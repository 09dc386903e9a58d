//! Volumes running out of space, said in one line each time their state
//! changes: PostgreSQL stops when PGDATA or its WAL has no room left (and
//! Patroni fails over to a replica), a full log volume only costs log
//! lines. Either way the reason is in the container log, not buried in
//! PostgreSQL's own (which may be on the full volume).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::statvfs::statvfs;

use super::supervisor::Periodic;
use crate::backup::info::size;

const EVERY: Duration = Duration::from_secs(5);
/// Less than one WAL segment free: PostgreSQL cannot start the next one.
const FULL_BELOW: u64 = 16 << 20;
/// Less than this share free is worth a warning.
const LOW_PERCENT: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Room,
    Low,
    Full,
}

/// What a volume holds, as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holds {
    Pgdata,
    Wal,
    Log,
}

impl Holds {
    fn name(self) -> &'static str {
        match self {
            Holds::Pgdata => "PGDATA",
            Holds::Wal => "WAL",
            Holds::Log => "log",
        }
    }
}

/// The periodic job watching the volumes of `watched` (a path may not
/// exist yet: its nearest existing parent's volume is watched).
pub(crate) fn watch(watched: Vec<(Holds, PathBuf)>) -> Periodic {
    let mut levels: HashMap<u64, Level> = HashMap::new();
    Periodic {
        name: "volumes",
        every: EVERY,
        job: Box::new(move || {
            let mut lines = Vec::new();
            let mut worse = false;
            for volume in volumes(&watched) {
                let Ok(stat) = statvfs(&volume.path) else {
                    continue;
                };
                let unit = stat.fragment_size();
                let (free, total) = (stat.blocks_available() * unit, stat.blocks() * unit);
                let now = level(free, total);
                let before = levels.insert(volume.device, now).unwrap_or(Level::Room);
                if now != before {
                    worse |= now > before;
                    lines.push(describe(&volume, now, free, total));
                }
            }
            match (lines.is_empty(), worse) {
                (true, _) => Ok(None),
                (false, true) => Err(lines.join("; ")),
                (false, false) => Ok(Some(lines.join("; "))),
            }
        }),
    }
}

fn level(free: u64, total: u64) -> Level {
    if free < FULL_BELOW {
        Level::Full
    } else if free.saturating_mul(100) < total.saturating_mul(LOW_PERCENT) {
        Level::Low
    } else {
        Level::Room
    }
}

/// One filesystem and what of ours is on it.
#[derive(Debug, PartialEq, Eq)]
struct Volume {
    device: u64,
    holds: Vec<Holds>,
    /// The first watched path on it, as it exists now.
    path: PathBuf,
}

fn volumes(watched: &[(Holds, PathBuf)]) -> Vec<Volume> {
    let mut found: Vec<Volume> = Vec::new();
    for (holds, path) in watched {
        let Some((path, device)) = existing(path) else {
            continue;
        };
        match found.iter_mut().find(|v| v.device == device) {
            Some(volume) => volume.holds.push(*holds),
            None => found.push(Volume {
                device,
                holds: vec![*holds],
                path,
            }),
        }
    }
    found
}

/// The path (a symlink followed: pg_wal on a volume of its own), else its
/// nearest existing parent, with its device.
pub(crate) fn existing(path: &Path) -> Option<(PathBuf, u64)> {
    path.ancestors().find_map(|p| {
        let meta = std::fs::metadata(p).ok()?;
        Some((
            p.canonicalize().unwrap_or_else(|_| p.to_owned()),
            meta.dev(),
        ))
    })
}

fn describe(volume: &Volume, level: Level, free: u64, total: u64) -> String {
    let names: Vec<&str> = volume.holds.iter().map(|h| h.name()).collect();
    let names = match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    let what = format!("{names} volume {}", volume.path.display());
    let space = format!("{} free of {}", size(Some(free)), size(Some(total)));
    let database = volume.holds.iter().any(|h| *h != Holds::Log);
    match level {
        Level::Full if database => format!(
            "{what} is full ({space}): PostgreSQL's writes fail and it stops once WAL has no \
             room (Patroni then fails over to a replica); free space or grow the volume"
        ),
        Level::Full => format!(
            "{what} is full ({space}): PostgreSQL's log lines are lost, the database keeps running"
        ),
        Level::Low => format!("{what} is almost full ({space})"),
        Level::Room => format!("{what} has room again ({space})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        const GIB: u64 = 1 << 30;
        assert_eq!(level(GIB, 2 * GIB), Level::Room);
        assert_eq!(level(GIB / 30, GIB), Level::Low);
        assert_eq!(level(FULL_BELOW - 1, GIB), Level::Full);
        // A small volume is full before it is low.
        assert_eq!(level(FULL_BELOW, FULL_BELOW * 2), Level::Room);
    }

    #[test]
    fn one_volume_names_all_it_holds_and_a_missing_path_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        let found = volumes(&[
            (Holds::Pgdata, pgdata.clone()),
            (Holds::Wal, pgdata.join("pg_wal")),
            (Holds::Log, dir.path().join("pg_log")),
        ]);
        let [volume] = found.as_slice() else {
            panic!("{found:?}");
        };
        assert_eq!(volume.holds, [Holds::Pgdata, Holds::Wal, Holds::Log]);
        assert_eq!(volume.path, dir.path().canonicalize().unwrap());
        let line = describe(volume, Level::Full, 1024, 1 << 30);
        assert!(
            line.starts_with(&format!(
                "PGDATA, WAL and log volume {} is full (1.0 KiB free of 1.0 GiB): \
                 PostgreSQL's writes fail and it stops once WAL has no room",
                volume.path.display()
            )),
            "{line}"
        );
    }

    #[test]
    fn said_when_the_state_changes_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = watch(vec![(Holds::Log, dir.path().to_owned())]);
        // The test's own volume has room (or is low, said once).
        let first = (job.job)();
        assert!(matches!(first, Ok(None) | Err(_)), "{first:?}");
        assert_eq!((job.job)(), Ok(None));
    }
}
