//! What the scheduler asks PostgreSQL each tick, through the major's psql
//! over the socket: whether it is the primary, and how WAL archiving goes.

use std::process::{Command, Stdio};

use super::{BackupError, Spec};

/// One row: the role, then pg_stat_archiver (times in UTC, as the backup
/// list prints them).
const QUERY: &str = "SELECT pg_is_in_recovery(), failed_count, \
     coalesce(last_failed_wal, ''), \
     coalesce(to_char(last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), ''), \
     coalesce(last_archived_wal, '') \
     FROM pg_stat_archiver";

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) in_recovery: bool,
    pub(crate) archiver: Archiver,
}

/// The part of pg_stat_archiver the scheduler reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archiver {
    pub(crate) failed_count: i64,
    pub(crate) last_failed_wal: String,
    pub(crate) last_failed_time: String,
    pub(crate) last_archived_wal: String,
}

/// What psql says when the server is not there to ask.
const NOT_THERE: [&str; 7] = [
    "Connection refused",
    "No such file or directory",
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is in recovery mode",
    "the database system is shutting down",
    "timeout expired",
];

/// The server's status; None when it does not answer (starting, stopped,
/// restarting: the next tick asks again).
pub(crate) fn status(spec: &Spec) -> Result<Option<Status>, BackupError> {
    let program = spec.psql.display().to_string();
    let out = Command::new(&spec.psql)
        .args(["-X", "-A", "-t", "-h"])
        .arg(&spec.socket_dir)
        .arg("-p")
        .arg(spec.port.to_string())
        .args(["-U", &spec.superuser, "-d", "postgres", "-c", QUERY])
        .env("PGCONNECT_TIMEOUT", "5")
        .env("PGAPPNAME", "spilo backup")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BackupError::Run { program, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A server that is not there (yet) is asked again next tick;
        // anything else (a refused login, a wrong socket directory) is
        // reported.
        if NOT_THERE.iter().any(|reason| stderr.contains(reason)) {
            return Ok(None);
        }
        let reason = stderr.lines().next().unwrap_or_default().trim();
        return Err(BackupError::Psql(format!("{}: {reason}", out.status)));
    }
    let answer = String::from_utf8_lossy(&out.stdout);
    parse(answer.trim())
        .map(Some)
        .ok_or_else(|| BackupError::Answer(answer.trim().to_owned()))
}

/// `t|3|0000...6|2026-12-02 09:57:07|0000...5` (psql's unaligned row).
fn parse(row: &str) -> Option<Status> {
    let fields: Vec<&str> = row.split('|').collect();
    let [
        in_recovery,
        failed_count,
        failed_wal,
        failed_time,
        archived_wal,
    ] = fields[..]
    else {
        return None;
    };
    let in_recovery = match in_recovery {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    Some(Status {
        in_recovery,
        archiver: Archiver {
            failed_count: failed_count.parse().ok()?,
            last_failed_wal: failed_wal.to_owned(),
            last_failed_time: failed_time.to_owned(),
            last_archived_wal: archived_wal.to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_row() {
        assert_eq!(
            parse("f|2|000000010000000000000006|2026-12-02 09:57:07|000000010000000000000005"),
            Some(Status {
                in_recovery: false,
                archiver: Archiver {
                    failed_count: 2,
                    last_failed_wal: "000000010000000000000006".into(),
                    last_failed_time: "2026-12-02 09:57:07".into(),
                    last_archived_wal: "000000010000000000000005".into(),
                },
            })
        );
        assert_eq!(parse("t|0|||").map(|s| s.in_recovery), Some(true));
        assert_eq!(parse("x|0|||"), None);
        assert_eq!(parse("f|n|||"), None);
        assert_eq!(parse("f|0"), None);
        assert_eq!(parse(""), None);
    }
}
