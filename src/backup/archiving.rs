//! Reporting on WAL archiving: PostgreSQL retries a failed archive_command
//! itself, so the scheduler only says when archiving starts failing (and
//! pgBackRest's reason) and when it works again.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::server::Archiver;

/// What the previous ticks saw.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// failed_count at the last tick; None before the first.
    failed_count: Option<i64>,
    /// After failures: last_archived_wal when the latest was seen.
    failing_after: Option<String>,
}

impl Watch {
    /// The line to log for this tick's `archiver`, if any; `reason` reads
    /// why pgBackRest failed, only when there is a new failure.
    pub(crate) fn observe(
        &mut self,
        archiver: &Archiver,
        reason: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        let previous = self.failed_count.replace(archiver.failed_count);
        if previous.is_some_and(|previous| archiver.failed_count > previous) {
            self.failing_after = Some(archiver.last_archived_wal.clone());
            let reason = reason().unwrap_or_else(|| "no reason recorded".to_owned());
            return Some(format!(
                "warning: WAL archiving failed: {} at {} UTC: {reason}",
                archiver.last_failed_wal, archiver.last_failed_time
            ));
        }
        match &self.failing_after {
            Some(before) if *before != archiver.last_archived_wal => {
                self.failing_after = None;
                Some(format!(
                    "WAL archiving works again: {} archived",
                    archiver.last_archived_wal
                ))
            }
            _ => None,
        }
    }
}

/// The reason in the newest `*.error` file that pgBackRest's asynchronous
/// archive-push left in `<spool>/archive/<stanza>/out`: its first line is
/// the error code, the rest the message.
pub(crate) fn push_error(spool: &Path, stanza: &str) -> Option<String> {
    let dir = spool.join("archive").join(stanza).join("out");
    let newest = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "error"))
        .filter_map(|entry| {
            let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, entry.path()))
        })
        .max_by_key(|(modified, _): &(SystemTime, _)| *modified)?;
    let text = fs::read_to_string(newest.1).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let code = lines.next()?;
    let message = lines.collect::<Vec<_>>().join(" ");
    Some(format!("[{code}] {message}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn archiver(failed_count: i64, failed: &str, archived: &str) -> Archiver {
        Archiver {
            failed_count,
            last_failed_wal: failed.into(),
            last_failed_time: "2026-12-02 09:57:07".into(),
            last_archived_wal: archived.into(),
        }
    }

    fn reason() -> Option<String> {
        Some("[104] denied".into())
    }

    #[test]
    fn failures_then_recovery() {
        let mut watch = Watch::default();
        // Old failures at start are history.
        assert_eq!(watch.observe(&archiver(3, "W4", "W5"), reason), None);
        assert_eq!(watch.observe(&archiver(3, "W4", "W5"), reason), None);
        assert_eq!(
            watch.observe(&archiver(4, "W6", "W5"), reason).as_deref(),
            Some("warning: WAL archiving failed: W6 at 2026-12-02 09:57:07 UTC: [104] denied")
        );
        assert_eq!(watch.observe(&archiver(4, "W6", "W5"), reason), None);
        assert!(
            watch
                .observe(&archiver(6, "W6", "W5"), || None)
                .unwrap()
                .ends_with(": no reason recorded")
        );
        assert_eq!(
            watch.observe(&archiver(6, "W6", "W6"), reason).as_deref(),
            Some("WAL archiving works again: W6 archived")
        );
        assert_eq!(watch.observe(&archiver(6, "W6", "W7"), reason), None);
        // A statistics reset is no failure.
        assert_eq!(watch.observe(&archiver(0, "", "W7"), reason), None);
        assert!(watch.observe(&archiver(1, "W8", "W7"), reason).is_some());
    }

    #[test]
    fn the_newest_error_file_gives_the_reason() {
        let spool = tempfile::tempdir().unwrap();
        let out = spool.path().join("archive/demo/out");
        assert_eq!(push_error(spool.path(), "demo"), None);
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("000000010000000000000005.error"), "99\nolder\n").unwrap();
        let older = fs::File::options()
            .write(true)
            .open(out.join("000000010000000000000005.error"))
            .unwrap();
        older
            .set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        fs::write(out.join("000000010000000000000006.ok"), "").unwrap();
        // A real one, from pgBackRest 2.45 with a read-only repository.
        fs::write(
            out.join("000000010000000000000006.error"),
            include_str!("testdata/archive-push.error"),
        )
        .unwrap();
        let reason = push_error(spool.path(), "demo").unwrap();
        assert!(
            reason.starts_with(
                "[104] raised from local-1 protocol: archive-push command encountered error(s): \
                 repo1: [FileOpenError] unable to open file '/tmp/pgbr/repo/archive/demo/15-1/"
            ),
            "{reason}"
        );
        assert!(
            reason.ends_with("for write: [13] Permission denied [CommandError] on retry after 0ms")
        );
    }
}
