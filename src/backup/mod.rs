//! Backups with pgBackRest: what `init` hands the backup commands (the
//! spec), and the commands themselves: the scheduler `init` supervises
//! next to Patroni, a backup on demand, and the list of backups.

mod archiving;
pub(crate) mod calendar;
pub mod cron;
pub(crate) mod info;
mod pgbackrest;
mod replica;
mod schedule;
mod server;
mod spec;
pub mod state;

use std::ffi::OsStr;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::files::IoError;
use info::Stanza;
use pgbackrest::Pgbackrest;

pub use schedule::run as schedule;
pub use spec::{FromReplica, Spec};

/// Where `init` writes the spec under RW_DIR.
const SPEC_FILE: &str = "backup.json";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "{}: no such file (backups are configured by WAL_S3_BUCKET, WAL_GS_BUCKET, AZURE_STORAGE_ACCOUNT or WAL_LOCAL_PATH)",
        .0.display()
    )]
    NoSpec(PathBuf),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: not a backup spec: {source}", path.display())]
    Spec {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: BACKUP_SCHEDULE {schedule:?}: {reason}", path.display())]
    Schedule {
        path: PathBuf,
        schedule: String,
        reason: String,
    },
    #[error("{program}: {source}")]
    Run {
        program: String,
        source: std::io::Error,
    },
    #[error("{program}: waiting for it: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    /// pgbackrest failed: the command and the reason it printed.
    #[error("{command}: {status}: {reason}")]
    Pgbackrest {
        command: String,
        status: ExitStatus,
        reason: String,
    },
    #[error("pgbackrest info: not the JSON expected: {0}")]
    Info(serde_json::Error),
    #[error("pgbackrest info does not list stanza {0}")]
    NoStanza(String),
    #[error("psql: unexpected answer {0:?}")]
    Answer(String),
    /// psql failed for another reason than a server not there.
    #[error("psql: {0}")]
    Psql(String),
    /// Which replicas stream could not be learnt.
    #[error("{0}")]
    Patronictl(String),
    #[error("catching signals: {0}")]
    Signals(std::io::Error),
    #[error("the thread waiting for signals ended")]
    SignalsGone,
}

/// pgBackRest's backup types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    fn option(self) -> &'static str {
        match self {
            BackupType::Full => "--type=full",
            BackupType::Diff => "--type=diff",
            BackupType::Incr => "--type=incr",
        }
    }
}

/// The spec `init` wrote.
pub fn read_spec(path: &Path) -> Result<Spec, BackupError> {
    let text = std::fs::read(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => BackupError::NoSpec(path.to_owned()),
        _ => IoError::at("read", path)(e).into(),
    })?;
    serde_json::from_slice(&text).map_err(|source| BackupError::Spec {
        path: path.to_owned(),
        source,
    })
}

/// `$RW_DIR/backup.json`, RW_DIR from the environment (default /run).
pub fn default_spec_path() -> PathBuf {
    spec_path(std::env::var_os("RW_DIR").as_deref())
}

fn spec_path(rw_dir: Option<&OsStr>) -> PathBuf {
    match rw_dir {
        Some(dir) if !dir.is_empty() => Path::new(dir).join(SPEC_FILE),
        _ => Path::new("/run").join(SPEC_FILE),
    }
}

/// `spilo backup now`: one backup, its output on ours; from a replica
/// as the scheduler's are.
pub fn now(spec: &Spec, kind: BackupType) -> Result<(), BackupError> {
    let mut args: Vec<String> = ["--log-level-console=info", "backup", kind.option()]
        .map(str::to_owned)
        .to_vec();
    if let Some(from) = &spec.from_replica {
        let (options, words) = replica::reading(spec, from, replica::streaming(spec, from));
        eprintln!("spilo backup now: {words}");
        args.extend(options);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = Pgbackrest::new(spec).start(&args)?;
    let status = running.wait()?;
    running.result(status)
}

/// After a major upgrade, before the new server starts: the stanza
/// takes the new cluster (`--no-online`: nothing to connect to).
pub fn stanza_upgrade(spec: &Spec) -> Result<(), BackupError> {
    Pgbackrest::new(spec)
        .output(&["--no-online", "stanza-upgrade"])
        .map(drop)
}

/// A full backup whose output is kept, not printed: for a caller whose
/// stderr means failure (the operator's upgrade).
pub fn full_backup(spec: &Spec) -> Result<(), BackupError> {
    Pgbackrest::new(spec)
        .output(&["backup", BackupType::Full.option()])
        .map(drop)
}

/// `spilo backup list`: pgBackRest's JSON as is, or a table.
pub fn list(spec: &Spec, json: bool, out: &mut impl Write) -> Result<(), BackupError> {
    let answer = Pgbackrest::new(spec).output(&["info", "--output=json"])?;
    let text = if json {
        answer
    } else {
        stanza_info(spec, &answer)?.table().into_bytes()
    };
    out.write_all(&text)
        .and_then(|()| out.flush())
        .map_err(|e| IoError::at("write", Path::new("/dev/stdout"))(e).into())
}

/// The stanza's entry in `info --output=json`.
fn stanza_info(spec: &Spec, answer: &[u8]) -> Result<Stanza, BackupError> {
    Stanza::find(answer, &spec.stanza)
        .map_err(BackupError::Info)?
        .ok_or_else(|| BackupError::NoStanza(spec.stanza.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            pgbackrest: "/usr/bin/pgbackrest".into(),
            config: "/run/pgbackrest/pgbackrest.conf".into(),
            stanza: "demo".into(),
            schedule: "00 01 * * *".into(),
            psql: "/usr/lib/postgresql/17/bin/psql".into(),
            socket_dir: "/run/postgresql".into(),
            port: 5432,
            superuser: "postgres".into(),
            spool: "/home/postgres/pgdata/pgbackrest/spool".into(),
            owner: Some((101, 103)),
            from_replica: None,
        }
    }

    #[test]
    fn reads_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.json");
        std::fs::write(&path, serde_json::to_vec(&spec()).unwrap()).unwrap();
        assert_eq!(read_spec(&path).unwrap(), spec());
        std::fs::write(&path, "{").unwrap();
        assert!(
            read_spec(&path)
                .unwrap_err()
                .to_string()
                .starts_with(&format!("{}: not a backup spec: ", path.display()))
        );
        assert_eq!(
            read_spec(&dir.path().join("none.json"))
                .unwrap_err()
                .to_string(),
            format!(
                "{}/none.json: no such file (backups are configured by WAL_S3_BUCKET, \
                 WAL_GS_BUCKET, AZURE_STORAGE_ACCOUNT or WAL_LOCAL_PATH)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn the_spec_is_under_rw_dir() {
        assert_eq!(spec_path(None), Path::new("/run/backup.json"));
        assert_eq!(
            spec_path(Some(OsStr::new(""))),
            Path::new("/run/backup.json")
        );
        assert_eq!(
            spec_path(Some(OsStr::new("/rw"))),
            Path::new("/rw/backup.json")
        );
    }

    #[test]
    fn the_stanza_must_be_listed() {
        let answer = include_bytes!("testdata/info.json");
        assert!(stanza_info(&spec(), answer).is_ok());
        let other = Spec {
            stanza: "other".into(),
            ..spec()
        };
        assert_eq!(
            stanza_info(&other, answer).unwrap_err().to_string(),
            "pgbackrest info does not list stanza other"
        );
    }
}
