//! Copies of another cluster, for clones' bootstraps and standby leaders:
//! `spilo basebackup` copies a running cluster (CLONE_WITH_BASEBACKUP, the
//! basebackup_fast_xlog replica method), `spilo clone-restore` runs
//! pgBackRest's restore from the source's repository (CLONE_WITH_WALE,
//! bootstrap_standby_with_wale). The source's major is checked before
//! anything is copied, and the copy's after: a copy of another major would
//! start with the wrong binaries, or be removed and copied again at every
//! try. A clone's restore may be of an older major this image has: it is
//! upgraded before it opens (`upgrade::restored`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::backup::info::Stanza;

/// What to copy, from where (rendered by `render::clone`).
#[derive(Debug)]
pub struct Basebackup {
    /// This cluster's major, whose binaries run.
    pub major: u32,
    pub bin_dir: PathBuf,
    pub pgdata: PathBuf,
    pub waldir: Option<PathBuf>,
    /// The source's connection string (its password in a pgpass file).
    pub source: String,
    /// A clone's bootstrap (not a replica method): a source of an older
    /// major is copied with its programs and upgraded.
    pub upgrade: Option<Upgradable>,
}

/// A restore from the source's repository: pgBackRest's restore command
/// (rendered by `render::pgbackrest`), its global options first.
#[derive(Debug)]
pub struct Restore {
    pub major: u32,
    pub pgdata: PathBuf,
    pub stanza: String,
    pub command: Vec<String>,
    /// A clone's (not a standby's): backups of an older major are
    /// restored and upgraded.
    pub upgrade: Option<Upgradable>,
}

/// Where the upgrade of a restored older major finds what it needs.
#[derive(Debug)]
pub struct Upgradable {
    /// Patroni's configuration.
    pub config: PathBuf,
    /// Where the majors are installed.
    pub postgres_root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("no pgbackrest restore command given")]
    NoCommand,
    #[error("pgbackrest info of stanza {stanza}: {reason}")]
    Info { stanza: String, reason: String },
    #[error(
        "the source's backups are of PostgreSQL {found}, this cluster runs {major} (PGVERSION): a clone or standby needs the source's major; nothing was restored"
    )]
    BackupMajor { found: String, major: u32 },
    #[error(
        "the source's backups are of PostgreSQL {found}, this cluster runs {major} (PGVERSION): a clone needs the source's major or an older one this image has installed; nothing was restored"
    )]
    BackupNotUpgradable { found: String, major: u32 },
    #[error("upgrading the restored copy: {0}")]
    Upgrade(#[from] crate::upgrade::UpgradeError),
    #[error("cannot run {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error("{} failed ({status}){}", program.display(), output_suffix(output))]
    Failed {
        program: PathBuf,
        status: ExitStatus,
        output: String,
    },
    #[error("the source answered server_version_num {0:?}: not a version")]
    Version(String),
    #[error(
        "the source runs PostgreSQL {source_major}, this cluster {major} (PGVERSION): a clone or standby needs the source's major; nothing was copied"
    )]
    Major { source_major: u32, major: u32 },
    #[error(
        "the source runs PostgreSQL {source_major}, this cluster {major} (PGVERSION): a clone needs the source's major or an older one this image has installed (and no PGWAL); nothing was copied"
    )]
    NotUpgradable { source_major: u32, major: u32 },
    #[error("the copy in {} is not PostgreSQL {major}: PG_VERSION says {found:?}", path.display())]
    Copied {
        path: PathBuf,
        major: u32,
        found: String,
    },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// Checks the source's major, copies it with pg_basebackup (WAL
/// streamed), and checks the copy.
pub fn basebackup(clone: &Basebackup) -> Result<(), CloneError> {
    let source_major = source_major(clone)?;
    let older_bin = clone.upgrade.as_ref().and_then(|upgradable| {
        (source_major < clone.major && clone.waldir.is_none())
            .then(|| crate::upgrade::restored::installed(&upgradable.postgres_root, source_major))?
    });
    let bin_dir = match (&older_bin, &clone.upgrade) {
        _ if source_major == clone.major => &clone.bin_dir,
        (Some(older), Some(_)) => older,
        (None, Some(_)) => {
            return Err(CloneError::NotUpgradable {
                source_major,
                major: clone.major,
            });
        }
        (_, None) => {
            return Err(CloneError::Major {
                source_major,
                major: clone.major,
            });
        }
    };
    eprintln!(
        "basebackup: copying PostgreSQL {source_major} from {} into {}",
        clone.source,
        clone.pgdata.display()
    );
    let program = bin_dir.join("pg_basebackup");
    let mut command = Command::new(&program);
    command
        .arg("--pgdata")
        .arg(&clone.pgdata)
        .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"])
        .args(["--dbname", &clone.source]);
    if let Some(waldir) = &clone.waldir {
        command.arg("--waldir").arg(waldir);
    }
    status(&program, &mut command)?;
    copied_major(&clone.pgdata, source_major)?;
    eprintln!("basebackup: copied");
    if let (Some(_), Some(upgradable)) = (&older_bin, &clone.upgrade) {
        let done =
            crate::upgrade::restored::upgrade(&upgradable.config, &upgradable.postgres_root)?;
        eprintln!("basebackup: {done}");
    }
    Ok(())
}

/// Checks the majors of the stanza's backups, then restores.
pub fn restore(restore: &Restore) -> Result<(), CloneError> {
    let (program, args) = restore.command.split_first().ok_or(CloneError::NoCommand)?;
    let program = PathBuf::from(program);
    let options: Vec<&String> = args
        .iter()
        .take_while(|arg| arg.starts_with("--"))
        .filter(|arg| !arg.starts_with("--log-level"))
        .collect();
    let info = output(
        &program,
        Command::new(&program).args(&options).args([
            "--log-level-console=off",
            "--log-level-stderr=error",
            "info",
            "--output=json",
        ]),
    )?;
    let info_error = |reason: String| CloneError::Info {
        stanza: restore.stanza.clone(),
        reason,
    };
    let stanza = Stanza::find(&info, &restore.stanza).map_err(|e| info_error(e.to_string()))?;
    let majors = stanza
        .as_ref()
        .map(Stanza::backup_majors)
        .unwrap_or_default();
    // No backup at all: pgBackRest's restore says so itself.
    if !majors.is_empty() && !majors.iter().any(|m| restorable(restore, m)) {
        let mut found: Vec<&str> = majors.clone();
        found.dedup();
        let (found, major) = (found.join(", "), restore.major);
        return Err(match restore.upgrade {
            Some(_) => CloneError::BackupNotUpgradable { found, major },
            None => CloneError::BackupMajor { found, major },
        });
    }
    status(&program, Command::new(&program).args(args))?;
    // A target time can pick an older backup of another major.
    let found = read_major(&restore.pgdata)?;
    match &restore.upgrade {
        Some(upgradable) if found != restore.major.to_string() && restorable(restore, &found) => {
            let done =
                crate::upgrade::restored::upgrade(&upgradable.config, &upgradable.postgres_root)?;
            eprintln!("clone-restore: {done}");
            Ok(())
        }
        _ => copied_major(&restore.pgdata, restore.major),
    }
}

/// Whether backups of `major` can become this cluster: of its major, or
/// for a clone of an older one installed here.
fn restorable(restore: &Restore, major: &str) -> bool {
    if major == restore.major.to_string() {
        return true;
    }
    let Some(upgradable) = &restore.upgrade else {
        return false;
    };
    major.parse::<u32>().is_ok_and(|older| {
        older < restore.major
            && crate::upgrade::restored::installed(&upgradable.postgres_root, older).is_some()
    })
}

/// The copy in `pgdata` is of `major`.
fn copied_major(pgdata: &Path, major: u32) -> Result<(), CloneError> {
    let found = read_major(pgdata)?;
    if found != major.to_string() {
        return Err(CloneError::Copied {
            path: pgdata.join("PG_VERSION"),
            major,
            found,
        });
    }
    Ok(())
}

/// The major of the copy in `pgdata` (its PG_VERSION).
fn read_major(pgdata: &Path) -> Result<String, CloneError> {
    let path = pgdata.join("PG_VERSION");
    fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| CloneError::Read { path, source })
}

fn source_major(clone: &Basebackup) -> Result<u32, CloneError> {
    let program = clone.bin_dir.join("psql");
    let answer = output(
        &program,
        Command::new(&program)
            .args(["-X", "-A", "-t", "-w", "-c", "SHOW server_version_num"])
            .args(["-d", &clone.source])
            // Patroni's connection string for a replica method names no
            // database; the replication user's own rarely exists.
            .env("PGDATABASE", "postgres"),
    )?;
    let answer = String::from_utf8_lossy(&answer).trim().to_owned();
    major_of(&answer).ok_or(CloneError::Version(answer))
}

/// Runs `command` (of `program`), its output on ours.
fn status(program: &Path, command: &mut Command) -> Result<(), CloneError> {
    let status = command.status().map_err(|source| CloneError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if !status.success() {
        return Err(CloneError::Failed {
            program: program.to_owned(),
            status,
            output: String::new(),
        });
    }
    Ok(())
}

/// Runs `command` (of `program`) for its standard output; a failure
/// carries its standard error.
fn output(program: &Path, command: &mut Command) -> Result<Vec<u8>, CloneError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CloneError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(CloneError::Failed {
            program: program.to_owned(),
            status: output.status,
            output: one_line(&output.stderr),
        });
    }
    Ok(output.stdout)
}

/// The major of a server_version_num of PostgreSQL 10 or later.
fn major_of(version_num: &str) -> Option<u32> {
    let num: u32 = version_num.parse().ok()?;
    (num >= 100_000).then_some(num / 10_000)
}

fn one_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Whether `path` is an empty or missing directory.
    fn untouched(path: &Path) -> bool {
        fs::read_dir(path).map_or(true, |mut d| d.next().is_none())
    }

    #[test]
    fn majors_of_version_numbers() {
        assert_eq!(major_of("150018"), Some(15));
        assert_eq!(major_of("180001"), Some(18));
        assert_eq!(major_of("90624"), None);
        assert_eq!(major_of("fifteen"), None);
    }

    /// Writes an executable shell script, and waits until it can be run:
    /// a fork by another test's thread may still hold it open for writing
    /// (ETXTBSY) for a moment. The probe runs it once with no arguments.
    fn script(path: &Path, body: &str) {
        fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        for _ in 0..100 {
            match Command::new(path).output() {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => return,
            }
        }
        panic!("{} stays busy", path.display());
    }

    /// A bin directory whose psql answers `version` and whose
    /// pg_basebackup writes PG_VERSION `copied`.
    fn fake_bin(dir: &Path, version: &str, copied: &str) -> PathBuf {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        script(&bin.join("psql"), &format!("echo {version}"));
        script(
            &bin.join("pg_basebackup"),
            &format!("mkdir -p \"$2\" && echo {copied} > \"$2/PG_VERSION\""),
        );
        bin
    }

    fn spec(dir: &Path, bin_dir: PathBuf) -> Basebackup {
        Basebackup {
            major: 17,
            bin_dir,
            pgdata: dir.join("pgdata"),
            waldir: None,
            source: "host=source user=standby".into(),
            upgrade: None,
        }
    }

    #[test]
    fn another_major_is_refused_before_any_copy() {
        let dir = tempfile::tempdir().unwrap();
        let clone = spec(dir.path(), fake_bin(dir.path(), "150018", "15"));
        let err = basebackup(&clone).unwrap_err().to_string();
        assert_eq!(
            err,
            "the source runs PostgreSQL 15, this cluster 17 (PGVERSION): a clone or standby needs the source's major; nothing was copied"
        );
        assert!(untouched(&clone.pgdata));
    }

    #[test]
    fn a_clones_older_source_is_copied_with_its_own_programs_then_upgraded() {
        let root = tempfile::tempdir().unwrap();
        let older = fake_bin(&root.path().join("15"), "150018", "15");
        for program in ["postgres", "pg_ctl", "pg_controldata"] {
            fs::write(older.join(program), "").unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let upgradable = || {
            Some(Upgradable {
                config: dir.path().join("postgres.yml"),
                postgres_root: root.path().to_owned(),
            })
        };
        // Asked with this major's psql, copied with 15's pg_basebackup,
        // handed to the upgrade (which finds no configuration here).
        let mut clone = spec(dir.path(), fake_bin(dir.path(), "150018", "17"));
        clone.upgrade = upgradable();
        let err = basebackup(&clone).unwrap_err().to_string();
        assert!(err.starts_with("upgrading the restored copy: "), "{err}");
        assert_eq!(
            fs::read_to_string(clone.pgdata.join("PG_VERSION")).unwrap(),
            "15\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut newer = spec(dir.path(), fake_bin(dir.path(), "180001", "18"));
        newer.upgrade = upgradable();
        let err = basebackup(&newer).unwrap_err().to_string();
        assert!(
            err.contains("an older one this image has installed"),
            "{err}"
        );
        assert!(untouched(&newer.pgdata));
    }

    #[test]
    fn the_same_major_is_copied_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let clone = spec(dir.path(), fake_bin(dir.path(), "170007", "17"));
        basebackup(&clone).unwrap();
        assert_eq!(
            fs::read_to_string(clone.pgdata.join("PG_VERSION")).unwrap(),
            "17\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let odd = spec(dir.path(), fake_bin(dir.path(), "170007", "16"));
        let err = basebackup(&odd).unwrap_err().to_string();
        assert!(
            err.contains("is not PostgreSQL 17: PG_VERSION says \"16\""),
            "{err}"
        );
    }

    /// A pgbackrest whose info lists backups of `versions` and whose
    /// restore writes PG_VERSION `restored` into the directory given.
    fn fake_pgbackrest(dir: &Path, versions: &[&str], restored: &str) -> Restore {
        let db: Vec<String> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| format!(r#"{{"id":{},"version":"{v}"}}"#, i + 1))
            .collect();
        let backups: Vec<String> = (1..=versions.len())
            .map(|id| {
                format!(
                    r#"{{"label":"b{id}","type":"full","timestamp":{{"start":1,"stop":2}},"info":{{}},"database":{{"id":{id}}}}}"#
                )
            })
            .collect();
        let info = format!(
            r#"[{{"name":"src","db":[{}],"backup":[{}],"status":{{"message":"ok"}}}}]"#,
            db.join(","),
            backups.join(",")
        );
        let pgdata = dir.join("pgdata");
        let program = dir.join("pgbackrest");
        script(
            &program,
            &format!(
                "case \" $* \" in *\" info \"*) echo '{info}' ;; *restore*) mkdir -p '{}' && echo {restored} > '{}/PG_VERSION' ;; esac",
                pgdata.display(),
                pgdata.display()
            ),
        );
        Restore {
            major: 17,
            pgdata,
            stanza: "src".into(),
            command: vec![
                program.display().to_string(),
                "--config=/x.conf".into(),
                "--stanza=src".into(),
                "--log-level-console=info".into(),
                "restore".into(),
            ],
            upgrade: None,
        }
    }

    #[test]
    fn a_restore_of_another_majors_backups_is_refused_before_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let older = fake_pgbackrest(dir.path(), &["15", "15"], "15");
        let err = restore(&older).unwrap_err().to_string();
        assert_eq!(
            err,
            "the source's backups are of PostgreSQL 15, this cluster runs 17 (PGVERSION): a clone or standby needs the source's major; nothing was restored"
        );
        assert!(untouched(&older.pgdata));

        let dir = tempfile::tempdir().unwrap();
        restore(&fake_pgbackrest(dir.path(), &["15", "17"], "17")).unwrap();
        // A target time that picked the older one is caught after.
        let dir = tempfile::tempdir().unwrap();
        let picked = fake_pgbackrest(dir.path(), &["15", "17"], "15");
        let err = restore(&picked).unwrap_err().to_string();
        assert!(
            err.contains("is not PostgreSQL 17: PG_VERSION says \"15\""),
            "{err}"
        );
    }

    #[test]
    fn a_clone_restores_an_older_installed_major_to_upgrade_it() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("15/bin");
        fs::create_dir_all(&bin).unwrap();
        for program in ["postgres", "pg_ctl", "psql", "pg_controldata"] {
            fs::write(bin.join(program), "").unwrap();
        }
        let clone = |versions: &[&str], restored: &str| {
            let dir = tempfile::tempdir().unwrap();
            let mut clone = fake_pgbackrest(dir.path(), versions, restored);
            clone.upgrade = Some(Upgradable {
                config: dir.path().join("postgres.yml"),
                postgres_root: root.path().to_owned(),
            });
            let err = restore(&clone).unwrap_err().to_string();
            (err, untouched(&clone.pgdata))
        };
        for versions in [&["13"][..], &["18"]] {
            let (err, untouched) = clone(versions, "x");
            assert!(
                err.contains("a clone needs the source's major or an older one this image has installed; nothing was restored"),
                "{err}"
            );
            assert!(untouched);
        }
        // Restored, then handed to the upgrade (which finds no
        // configuration here).
        let (err, untouched) = clone(&["15"], "15");
        assert!(err.starts_with("upgrading the restored copy: "), "{err}");
        assert!(err.contains("postgres.yml"), "{err}");
        assert!(!untouched);
        // A standby's restore never upgrades.
        let dir = tempfile::tempdir().unwrap();
        let err = restore(&fake_pgbackrest(dir.path(), &["15"], "15"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing was restored"), "{err}");
    }

    #[test]
    fn an_unreachable_source_names_psql_and_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_bin(dir.path(), "x", "17");
        script(
            &bin.join("psql"),
            "echo 'psql: error: connection refused' >&2\nexit 2",
        );
        let err = basebackup(&spec(dir.path(), bin)).unwrap_err().to_string();
        assert!(
            err.ends_with("psql failed (exit status: 2): psql: error: connection refused"),
            "{err}"
        );
    }
}
