//! The new major's data directory: made by initdb exactly like the old
//! one (encoding, locale and its provider, checksums, WAL segment size,
//! the install user), then filled by pg_upgrade in link mode.
//!
//! Link mode, also for 18 (not --swap): the replicas are brought in step
//! by rsync's `--hard-links --size-only` over both directories, which
//! needs the old directory to keep its files, as link mode leaves it.
//! --swap moves them into the new directory, and a replica would then
//! have to copy every relation file again.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::UpgradeError;
use super::sql::{Psql, last_line};
use crate::files::IoError;

/// pg_upgrade's log directory (in the new data directory).
const LOGS: &str = "pg_upgrade_output.d";

/// How initdb made the old cluster, as the new one must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) encoding: String,
    pub(crate) collate: String,
    pub(crate) ctype: String,
    /// `c` (libc), `i` (ICU) or `b` (builtin, 17+).
    pub(crate) provider: String,
    pub(crate) provider_locale: String,
    pub(crate) checksums: bool,
    pub(crate) wal_segment_mb: u64,
}

impl Settings {
    /// Read from the running old cluster (template0 keeps initdb's).
    pub(crate) fn of(psql: &Psql, old_major: u32) -> Result<Self, UpgradeError> {
        let locale_column = if old_major >= 17 {
            "datlocale"
        } else {
            "daticulocale"
        };
        let rows = psql.rows(&format!(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, \
             coalesce({locale_column}, ''), current_setting('data_checksums'), \
             pg_size_bytes(current_setting('wal_segment_size')) / 1048576 \
             FROM pg_database WHERE datname = 'template0'"
        ))?;
        let [
            encoding,
            collate,
            ctype,
            provider,
            provider_locale,
            checksums,
            segment,
        ] = rows.first().map(Vec::as_slice).unwrap_or_default()
        else {
            return Err(UpgradeError::Step {
                what: "reading template0's settings".into(),
                reason: format!("unexpected answer {rows:?}"),
            });
        };
        Ok(Settings {
            encoding: encoding.clone(),
            collate: collate.clone(),
            ctype: ctype.clone(),
            provider: provider.clone(),
            provider_locale: provider_locale.clone(),
            checksums: checksums == "on",
            wal_segment_mb: segment.parse().unwrap_or(16),
        })
    }

    fn initdb_args(&self, new_major: u32) -> Vec<String> {
        let mut args = vec![
            format!("--encoding={}", self.encoding),
            format!("--lc-collate={}", self.collate),
            format!("--lc-ctype={}", self.ctype),
            format!("--wal-segsize={}", self.wal_segment_mb),
        ];
        match self.provider.as_str() {
            "i" => {
                args.push("--locale-provider=icu".into());
                args.push(format!("--icu-locale={}", self.provider_locale));
            }
            "b" => {
                args.push("--locale-provider=builtin".into());
                args.push(format!("--builtin-locale={}", self.provider_locale));
            }
            _ => {}
        }
        if self.checksums {
            args.push("--data-checksums".into());
        } else if new_major >= 18 {
            // 18's initdb turns checksums on unless told otherwise.
            args.push("--no-data-checksums".into());
        }
        args
    }
}

/// One pg_upgrade between two majors' trees and data directories.
pub(crate) struct Upgrade {
    pub(crate) old_bin: PathBuf,
    pub(crate) new_bin: PathBuf,
    pub(crate) new_major: u32,
    pub(crate) old_data: PathBuf,
    pub(crate) new_data: PathBuf,
    pub(crate) superuser: String,
    /// shared_preload_libraries for the new server: a library that can
    /// only be preloaded (pg_stat_kcache) is checked as loadable only so.
    pub(crate) new_preload: String,
    /// Where pg_upgrade runs and leaves its logs (it writes to its cwd).
    pub(crate) work_dir: PathBuf,
    pub(crate) jobs: usize,
}

impl Upgrade {
    /// A fresh new data directory (an earlier attempt's is replaced).
    pub(crate) fn initdb(&self, settings: &Settings) -> Result<(), UpgradeError> {
        remove_dir(&self.new_data)?;
        let initdb = self.new_bin.join("initdb");
        let out = Command::new(&initdb)
            .arg("-D")
            .arg(&self.new_data)
            .arg(format!("--username={}", self.superuser))
            .args(settings.initdb_args(self.new_major))
            .arg("--no-instructions")
            .current_dir(&self.work_dir)
            .output()
            .map_err(UpgradeError::spawn(&initdb))?;
        if !out.status.success() {
            return Err(UpgradeError::Step {
                what: initdb.display().to_string(),
                reason: last_line(&out.stderr),
            });
        }
        Ok(())
    }

    /// `pg_upgrade --check` against the running old server (`port`, in
    /// `socket_dir`): changes nothing of the old cluster.
    pub(crate) fn check(&self, port: u16, socket_dir: &Path) -> Result<(), UpgradeError> {
        self.run(&[
            "--check".into(),
            format!("--old-port={port}"),
            format!("--socketdir={}", socket_dir.display()),
        ])
    }

    /// The upgrade itself, the old server stopped.
    pub(crate) fn link(&self) -> Result<(), UpgradeError> {
        self.run(&["--link".into()])
    }

    /// Where a failed run's logs are kept: the new data directory they
    /// are written to is removed.
    fn kept_logs(&self) -> PathBuf {
        self.work_dir.join(LOGS)
    }

    /// Moves pg_upgrade's logs out of the new data directory.
    pub(crate) fn keep_logs(&self) {
        let kept = self.kept_logs();
        let _ = std::fs::remove_dir_all(&kept);
        let _ = std::fs::rename(self.new_data.join(LOGS), &kept);
    }

    fn run(&self, extra: &[String]) -> Result<(), UpgradeError> {
        let program = self.new_bin.join("pg_upgrade");
        let out = Command::new(&program)
            .arg("--old-bindir")
            .arg(&self.old_bin)
            .arg("--new-bindir")
            .arg(&self.new_bin)
            .arg("--old-datadir")
            .arg(&self.old_data)
            .arg("--new-datadir")
            .arg(&self.new_data)
            .arg(format!("--username={}", self.superuser))
            .arg(format!("--jobs={}", self.jobs))
            // WAL the old server writes under pg_upgrade is not archived.
            .arg("--old-options=-c archive_mode=off")
            .arg(format!(
                "--new-options=-c archive_mode=off -c shared_preload_libraries={}",
                self.new_preload
            ))
            .args(extra)
            .current_dir(&self.work_dir)
            .output()
            .map_err(UpgradeError::spawn(&program))?;
        if out.status.success() {
            return Ok(());
        }
        let reason = failure(&String::from_utf8_lossy(&out.stdout));
        Err(UpgradeError::Step {
            what: format!(
                "pg_upgrade{}",
                extra.first().map(|a| format!(" {a}")).unwrap_or_default()
            ),
            reason: format!("{reason} (logs: {})", self.kept_logs().display()),
        })
    }
}

/// The reason in pg_upgrade's output: the check that failed and the first
/// lines of the file it names (what to fix), else its last lines.
fn failure(stdout: &str) -> String {
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let check = lines
        .iter()
        .find_map(|l| l.strip_suffix("fatal"))
        .map(|l| l.trim().to_owned());
    let listed = lines
        .iter()
        .find(|l| l.starts_with('/') && l.ends_with(".txt"))
        .and_then(|file| std::fs::read_to_string(file).ok())
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ")
        });
    match (check, listed) {
        (Some(check), Some(listed)) => format!("{check}: {listed}"),
        (Some(check), None) => check,
        _ => {
            let kept: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| *l != "Failure, exiting" && !l.starts_with('*'))
                .collect();
            kept[kept.len().saturating_sub(3)..].join(" / ")
        }
    }
}

/// `pg_controldata` of a stopped data directory: (state, latest checkpoint).
pub(crate) fn control_data(bin_dir: &Path, data: &Path) -> Result<(String, String), UpgradeError> {
    let [state, checkpoint] = control_values(
        bin_dir,
        data,
        ["Database cluster state", "Latest checkpoint location"],
    )?;
    Ok((state, checkpoint))
}

/// Fields of `pg_controldata` (empty when it has none of that name).
pub(crate) fn control_values<const N: usize>(
    bin_dir: &Path,
    data: &Path,
    names: [&str; N],
) -> Result<[String; N], UpgradeError> {
    let program = bin_dir.join("pg_controldata");
    let out = Command::new(&program)
        .arg(data)
        .env("LC_ALL", "C")
        .output()
        .map_err(UpgradeError::spawn(&program))?;
    if !out.status.success() {
        return Err(UpgradeError::Step {
            what: program.display().to_string(),
            reason: last_line(&out.stderr),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(names.map(|name| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }))
}

/// Stops the server of `data` cleanly (fast: sessions are ended).
pub(crate) fn stop(bin_dir: &Path, data: &Path) -> Result<(), UpgradeError> {
    let program = bin_dir.join("pg_ctl");
    let out = Command::new(&program)
        .args(["stop", "-m", "fast", "-w", "-t", "600", "-D"])
        .arg(data)
        .output()
        .map_err(UpgradeError::spawn(&program))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(UpgradeError::Step {
            what: format!("{} stop", program.display()),
            reason: last_line(&out.stderr),
        })
    }
}

/// Removes a directory tree when it exists.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), UpgradeError> {
    Ok(crate::files::remove_dir_if_present(dir)?)
}

/// Renames a directory.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), UpgradeError> {
    std::fs::rename(from, to).map_err(|e| IoError::at("rename", from)(e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            encoding: "UTF8".into(),
            collate: "en_US.UTF-8".into(),
            ctype: "en_US.UTF-8".into(),
            provider: "c".into(),
            provider_locale: String::new(),
            checksums: false,
            wal_segment_mb: 16,
        }
    }

    #[test]
    fn the_reason_is_the_failed_check_and_what_it_lists() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("loadable_libraries.txt");
        std::fs::write(
            &file,
            "could not load library \"$libdir/x\": ERROR:  no\nIn database: postgres\n",
        )
        .unwrap();
        let out = format!(
            "Checking for presence of required libraries                   fatal\n\nYour installation references\nproblem libraries is in the file:\n    {}\n\nFailure, exiting\n",
            file.display()
        );
        assert_eq!(
            failure(&out),
            "Checking for presence of required libraries: could not load library \"$libdir/x\": ERROR:  no / In database: postgres"
        );
        assert_eq!(failure("a\nb\nFailure, exiting\n"), "a / b");
    }

    #[test]
    fn the_new_cluster_is_made_like_the_old() {
        let args = settings().initdb_args(17);
        assert_eq!(
            args,
            [
                "--encoding=UTF8",
                "--lc-collate=en_US.UTF-8",
                "--lc-ctype=en_US.UTF-8",
                "--wal-segsize=16"
            ]
        );
        assert!(
            settings()
                .initdb_args(18)
                .contains(&"--no-data-checksums".to_owned())
        );
        let icu = Settings {
            provider: "i".into(),
            provider_locale: "und".into(),
            checksums: true,
            ..settings()
        };
        let args = icu.initdb_args(18);
        assert!(args.contains(&"--icu-locale=und".to_owned()), "{args:?}");
        assert!(args.contains(&"--data-checksums".to_owned()), "{args:?}");
    }
}
