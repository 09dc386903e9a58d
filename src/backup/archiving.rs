//! Reporting on WAL archiving: PostgreSQL retries a failed archive_command
//! itself, so the scheduler only says when archiving starts failing (and
//! pgBackRest's reason) and when it works again.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::server::Archiver;

/// How long a failure waits for pgBackRest's reason before it is said
/// without one: the asynchronous push writes it when it gives up.
const REASON_WAIT: i64 = 300;
/// How often a failure that goes on is said again.
const REPEAT: i64 = 1800;

/// What the previous ticks saw.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// failed_count at the last tick; None before the first.
    failed_count: Option<i64>,
    failing: Option<Failing>,
}

/// Archiving that fails since `since` (unix seconds).
#[derive(Debug)]
struct Failing {
    /// last_archived_wal when it began: archiving works again once it moves.
    after: String,
    since: i64,
    /// When it was last said, and with which reason.
    said: Option<(i64, Option<String>)>,
}

impl Watch {
    /// The line to log at `now` (unix seconds) for this tick's `archiver`,
    /// if any. `reason` reads why pgBackRest failed, from what it wrote
    /// since the unix second it is given.
    pub(crate) fn observe(
        &mut self,
        archiver: &Archiver,
        now: i64,
        reason: impl FnOnce(i64) -> Option<String>,
    ) -> Option<String> {
        let previous = self.failed_count.replace(archiver.failed_count);
        if let Some(failing) = &self.failing {
            if failing.after != archiver.last_archived_wal {
                self.failing = None;
                return Some(format!(
                    "WAL archiving works again: {} archived",
                    archiver.last_archived_wal
                ));
            }
        } else if previous.is_some_and(|previous| archiver.failed_count > previous) {
            self.failing = Some(Failing {
                after: archiver.last_archived_wal.clone(),
                since: now,
                said: None,
            });
        }
        let failing = self.failing.as_mut()?;
        // The push may have failed up to archive-timeout before PostgreSQL
        // counted it.
        let reason = reason(failing.since - REASON_WAIT);
        let due = match &failing.said {
            None => reason.is_some() || now - failing.since >= REASON_WAIT,
            Some((at, said)) => (reason.is_some() && reason != *said) || now - at >= REPEAT,
        };
        if !due {
            return None;
        }
        let line = format!(
            "warning: WAL archiving fails since {}: {} at {} UTC (PostgreSQL retries it; WAL stays in pg_wal): {}",
            super::calendar::format_utc(failing.since),
            archiver.last_failed_wal,
            archiver.last_failed_time,
            reason.as_deref().unwrap_or("pgBackRest recorded no reason")
        );
        failing.said = Some((now, reason));
        Some(line)
    }
}

/// The reason in the newest `*.error` file that pgBackRest's asynchronous
/// archive-push left in `<spool>/archive/<stanza>/out` since `not_before`
/// (unix seconds): its first line is the error code, the rest the message.
pub(crate) fn push_error(spool: &Path, stanza: &str, not_before: i64) -> Option<String> {
    let not_before = UNIX_EPOCH + Duration::from_secs(not_before.max(0) as u64);
    let dir = spool.join("archive").join(stanza).join("out");
    let newest = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "error"))
        .filter_map(|entry| {
            let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, entry.path()))
        })
        .filter(|(modified, _)| *modified >= not_before)
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

    fn denied(_: i64) -> Option<String> {
        Some("[104] denied".into())
    }

    fn none(_: i64) -> Option<String> {
        None
    }

    const T: i64 = 1_796_205_412;

    #[test]
    fn a_failure_is_said_once_with_its_reason_then_recovery() {
        let mut watch = Watch::default();
        // Old failures at start are history.
        assert_eq!(watch.observe(&archiver(3, "W4", "W5"), T, denied), None);
        assert_eq!(watch.observe(&archiver(3, "W4", "W5"), T, denied), None);
        let mut asked = None;
        let line = watch.observe(&archiver(4, "W6", "W5"), T + 10, |since| {
            asked = Some(since);
            denied(since)
        });
        assert_eq!(
            line.as_deref(),
            Some(
                "warning: WAL archiving fails since 2026-12-02 09:57:02: W6 at 2026-12-02 09:57:07 UTC \
                 (PostgreSQL retries it; WAL stays in pg_wal): [104] denied"
            )
        );
        assert_eq!(asked, Some(T + 10 - REASON_WAIT));
        // Going on with the same reason: said again only after REPEAT.
        assert_eq!(
            watch.observe(&archiver(5, "W6", "W5"), T + 20, denied),
            None
        );
        assert_eq!(
            watch.observe(&archiver(9, "W6", "W5"), T + REPEAT, denied),
            None
        );
        assert!(
            watch
                .observe(&archiver(9, "W6", "W5"), T + 10 + REPEAT, denied)
                .is_some()
        );
        assert_eq!(
            watch
                .observe(&archiver(9, "W6", "W6"), T + 11 + REPEAT, denied)
                .as_deref(),
            Some("WAL archiving works again: W6 archived")
        );
        assert_eq!(
            watch.observe(&archiver(9, "W6", "W7"), T + 12 + REPEAT, denied),
            None
        );
        // A statistics reset is no failure.
        assert_eq!(
            watch.observe(&archiver(0, "", "W7"), T + 13 + REPEAT, denied),
            None
        );
        assert!(
            watch
                .observe(&archiver(1, "W8", "W7"), T + 14 + REPEAT, denied)
                .is_some()
        );
    }

    #[test]
    fn a_failure_waits_for_its_reason_and_says_a_new_one() {
        let mut watch = Watch::default();
        assert_eq!(watch.observe(&archiver(0, "", "W5"), T, none), None);
        assert_eq!(watch.observe(&archiver(1, "W6", "W5"), T, none), None);
        assert_eq!(watch.observe(&archiver(2, "W6", "W5"), T + 60, none), None);
        // The push wrote its reason.
        let line = watch
            .observe(&archiver(3, "W6", "W5"), T + 70, denied)
            .unwrap();
        assert!(line.ends_with(": [104] denied"), "{line}");
        let other = |_| Some("[039] gone".to_owned());
        let line = watch
            .observe(&archiver(4, "W6", "W5"), T + 80, other)
            .unwrap();
        assert!(line.ends_with(": [039] gone"), "{line}");
        assert_eq!(watch.observe(&archiver(5, "W6", "W5"), T + 90, other), None);

        // No reason at all: said after REASON_WAIT.
        let mut watch = Watch::default();
        assert_eq!(watch.observe(&archiver(0, "", "W5"), T, none), None);
        assert_eq!(watch.observe(&archiver(1, "W6", "W5"), T, none), None);
        assert_eq!(
            watch.observe(&archiver(2, "W6", "W5"), T + REASON_WAIT - 1, none),
            None
        );
        let line = watch
            .observe(&archiver(3, "W6", "W5"), T + REASON_WAIT, none)
            .unwrap();
        assert!(line.ends_with(": pgBackRest recorded no reason"), "{line}");
    }

    #[test]
    fn the_newest_error_file_gives_the_reason() {
        let spool = tempfile::tempdir().unwrap();
        let out = spool.path().join("archive/demo/out");
        assert_eq!(push_error(spool.path(), "demo", 0), None);
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("000000010000000000000005.error"), "99\nolder\n").unwrap();
        let older = fs::File::options()
            .write(true)
            .open(out.join("000000010000000000000005.error"))
            .unwrap();
        older
            .set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(
            push_error(spool.path(), "demo", now - 70).as_deref(),
            Some("[99] older")
        );
        // Older than asked for: another failure's.
        assert_eq!(push_error(spool.path(), "demo", now - 30), None);
        fs::write(out.join("000000010000000000000006.ok"), "").unwrap();
        // A real one, from pgBackRest 2.45 with a read-only repository.
        fs::write(
            out.join("000000010000000000000006.error"),
            include_str!("testdata/archive-push.error"),
        )
        .unwrap();
        let reason = push_error(spool.path(), "demo", 0).unwrap();
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
