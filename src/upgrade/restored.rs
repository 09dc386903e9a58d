//! A clone restored from an older major's backups (`spilo clone-restore`
//! in a cluster whose PGVERSION is newer), upgraded before it opens: the
//! copy recovers to its target with the old major's programs, pg_upgrade
//! links it into a new directory, and the new server is left running with
//! Patroni's settings. Patroni takes a server that already runs as its
//! bootstrap's result, and its post_bootstrap drops the recovery settings
//! it writes after the command: started by Patroni instead, the upgraded
//! directory would recover from the source's archive, whose WAL is not
//! its own.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::after::{self, Server};
use super::checks;
use super::member::Member;
use super::pgupgrade::{Settings, Upgrade, control_data, control_values, remove_dir, rename, stop};
use super::sql::{Psql, last_line};
use super::{UpgradeError, data_major, say, step, wait};
use crate::files::IoError;

/// How long recovery to the target may take.
const RECOVERY_LIMIT: Duration = Duration::from_secs(12 * 3600);

/// The programs of `major` when it is installed unpacked under `root`.
pub(crate) fn installed(root: &Path, major: u32) -> Option<PathBuf> {
    let bin = root.join(major.to_string()).join("bin");
    ["postgres", "pg_ctl", "psql", "pg_controldata"]
        .iter()
        .all(|p| bin.join(p).exists())
        .then_some(bin)
}

/// Recovers and upgrades the restored copy in Patroni's data directory
/// (Patroni's configuration `config`); a line saying what was done.
pub fn upgrade(config: &Path, postgres_root: &Path) -> Result<String, UpgradeError> {
    let started = Instant::now();
    let member = Member::read(config)?;
    let data = member.data_dir.clone();
    let old_major = data_major(&data)?;
    let new_bin = member.bin_dir.clone();
    let new_major = checks::binary_major(&new_bin)?;
    let old_bin = installed(postgres_root, old_major).ok_or_else(|| {
        UpgradeError::Refused(format!(
            "PostgreSQL {old_major} is not installed unpacked in this image: its copy cannot be recovered"
        ))
    })?;
    if data.join("pg_wal").is_symlink() || has_entries(&data.join("pg_tblspc")) {
        return Err(UpgradeError::Refused(
            "the copy has a WAL link or tablespaces: an upgrade moves one data directory".into(),
        ));
    }
    let (parent, _) = member.data_parent();
    let work = parent.to_owned();
    say(&format!(
        "the copy is PostgreSQL {old_major}: it recovers with PostgreSQL {old_major}'s programs, then pg_upgrade takes it to {new_major}"
    ));
    let old = Old {
        bin: old_bin,
        data: data.clone(),
        work: work.clone(),
        port: member.port,
        log: work.join("clone_recovery.log"),
        users: vec![member.superuser.username.clone(), "postgres".into()],
    };
    old.prepare(&member.bootstrap_recovery())?;
    let upgraded = old.recover().and_then(|user| {
        let local = Psql::socket(&old.bin, &work, member.port, &user);
        let extensions = checks::check_extensions(&local, &new_bin, new_major)?;
        checks::drop_helpers(&local, &extensions.dropped)?;
        let settings = Settings::of(&local, old_major)?;
        local.value("CHECKPOINT")?;
        stop(&old.bin, &data)?;
        let (state, _) = control_data(&old.bin, &data)?;
        if state != "shut down" {
            return Err(step(
                "stopping the recovered copy",
                &format!("it stopped as {state:?}"),
            ));
        }
        let upgrade = Upgrade {
            old_bin: old.bin.clone(),
            new_bin: new_bin.clone(),
            new_major,
            old_data: data.clone(),
            new_data: member.sibling("new"),
            superuser: user.clone(),
            new_preload: member.preload_for(&super::replica::lib_dir_of(&new_bin)),
            work_dir: work.clone(),
            jobs: std::thread::available_parallelism().map_or(1, usize::from),
        };
        say(&format!(
            "pg_upgrade --link from PostgreSQL {old_major} to {new_major}"
        ));
        let linked = upgrade.initdb(&settings).and_then(|()| upgrade.link());
        if let Err(e) = linked {
            upgrade.keep_logs();
            remove_dir(&upgrade.new_data)?;
            return Err(e);
        }
        let old_dir = member.sibling("old");
        remove_dir(&old_dir)?;
        rename(&data, &old_dir)?;
        rename(&upgrade.new_data, &data)?;
        remove_dir(&old_dir)?;
        remove_file(&work.join("delete_old_cluster.sh"))?;
        Ok((user, extensions.recreated, upgrade.jobs))
    });
    let (user, recreated, jobs) = upgraded.inspect_err(|_| stop_if_running(&old.bin, &data))?;
    let server = Server {
        major: new_major,
        bin_dir: new_bin.clone(),
        socket_dir: member.socket_dir.clone(),
        port: member.port,
        user,
    };
    start_for_patroni(&member, &server).inspect_err(|_| stop_if_running(&new_bin, &data))?;
    let local = Psql::socket(&new_bin, &server.socket_dir, server.port, &server.user);
    after::update_extensions(&local, &recreated, new_major)?;
    after::analyze(&server, jobs)?;
    Ok(format!(
        "the clone was PostgreSQL {old_major} and runs PostgreSQL {new_major} after {:.0}s; Patroni goes on with the running server",
        started.elapsed().as_secs_f64()
    ))
}

/// The restored copy and where its old major's server runs: no address,
/// a socket in the data directory's parent, no archiving.
struct Old {
    bin: PathBuf,
    data: PathBuf,
    work: PathBuf,
    port: u16,
    log: PathBuf,
    /// Who to ask for the install user's name.
    users: Vec<String>,
}

impl Old {
    /// Settings of its own for the recovery, the source's set aside
    /// (they name its libraries and its addresses): the target of the
    /// bootstrap's `recovery` (a pause promotes: nobody could look at a
    /// server paused here), hot standby off as the source's limits are not
    /// known, and what the copy's WAL needs as pg_control says.
    fn prepare(&self, recovery: &[(String, String)]) -> Result<(), UpgradeError> {
        let [connections, prepared, locks, workers, senders] = control_values(
            &self.bin,
            &self.data,
            [
                "max_connections setting",
                "max_prepared_xacts setting",
                "max_locks_per_xact setting",
                "max_worker_processes setting",
                "max_wal_senders setting",
            ],
        )?;
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", String::new()),
            ("port", self.port.to_string()),
            ("unix_socket_directories", self.work.display().to_string()),
            ("hot_standby", "off".into()),
            ("archive_mode", "off".into()),
            ("shared_preload_libraries", String::new()),
            ("logging_collector", "off".into()),
        ]
        .into_iter()
        .chain(
            [
                ("max_connections", connections),
                ("max_prepared_transactions", prepared),
                ("max_locks_per_transaction", locks),
                ("max_worker_processes", workers),
                ("max_wal_senders", senders),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty()),
        )
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        for (name, value) in recovery {
            if name == "recovery_target_action" && value != "promote" {
                say(
                    "recovery promotes at the target: a paused clone is not possible while it upgrades",
                );
                continue;
            }
            settings.push((name.clone(), value.clone()));
        }
        settings.push(("recovery_target_action".into(), "promote".into()));
        write(&self.data.join("postgresql.conf"), &conf(&settings))?;
        write(&self.data.join("pg_hba.conf"), "local all all trust\n")?;
        write(&self.data.join("pg_ident.conf"), "")?;
        // ALTER SYSTEM's settings and pgBackRest's recovery ones would
        // override these; pg_upgrade carries neither.
        write(&self.data.join("postgresql.auto.conf"), "")?;
        remove_file(&self.data.join("standby.signal"))?;
        write(&self.data.join("recovery.signal"), "")
    }

    /// Starts recovery and waits for the promotion; the install user's
    /// name (the source's, which pg_upgrade runs as).
    fn recover(&self) -> Result<String, UpgradeError> {
        let pg_ctl = self.bin.join("pg_ctl");
        let out = Command::new(&pg_ctl)
            .args(["start", "-W", "-s", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .output()
            .map_err(UpgradeError::spawn(&pg_ctl))?;
        if !out.status.success() {
            return Err(step("starting the recovery", &last_line(&out.stderr)));
        }
        let started = Instant::now();
        let mut said = Instant::now();
        let user = wait(RECOVERY_LIMIT, || {
            // pg_ctl -W does not wait for the postmaster's pid file.
            if started.elapsed() > Duration::from_secs(10)
                && !self.data.join("postmaster.pid").exists()
            {
                return Some(Err(step(
                    "the recovery",
                    &format!("{} ({})", self.reason(), self.log.display()),
                )));
            }
            if said.elapsed() > Duration::from_secs(30) {
                said = Instant::now();
                say(&format!(
                    "recovering: {} WAL files restored in {:.0}s",
                    self.count("restored log file"),
                    started.elapsed().as_secs_f64()
                ));
            }
            let user = self.install_user()?;
            let local = Psql::socket(&self.bin, &self.work, self.port, &user);
            (local.value("SELECT pg_is_in_recovery()").ok()? == "f").then_some(Ok(user))
        })
        .unwrap_or_else(|| {
            Err(step(
                "the recovery",
                &format!("not done within {}s", RECOVERY_LIMIT.as_secs()),
            ))
        })?;
        say(&format!(
            "recovered and promoted after {} WAL files: {}",
            self.count("restored log file"),
            self.last_matching("recovery stopping").unwrap_or_default()
        ));
        Ok(user)
    }

    /// The name of role 10, asked as this cluster's superuser or as
    /// postgres (the socket trusts any role that exists): None until the
    /// server takes connections.
    fn install_user(&self) -> Option<String> {
        self.users.iter().find_map(|name| {
            Psql::socket(&self.bin, &self.work, self.port, name)
                .value("SELECT rolname FROM pg_authid WHERE oid = 10")
                .ok()
        })
    }

    /// Why the server stopped: its last FATAL or PANIC line.
    fn reason(&self) -> String {
        ["FATAL", "PANIC"]
            .iter()
            .find_map(|level| self.last_matching(level))
            .unwrap_or_else(|| "the server stopped".into())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    fn last_matching(&self, needle: &str) -> Option<String> {
        self.log_text()
            .lines()
            .rev()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().to_owned())
    }
}

/// Starts the upgraded directory with Patroni's settings, as Patroni
/// would write them (its pg_hba too): nothing Patroni rewrites after its
/// bootstrap then waits for a restart.
fn start_for_patroni(member: &Member, server: &Server) -> Result<(), UpgradeError> {
    let data = &member.data_dir;
    rename(
        &data.join("postgresql.conf"),
        &data.join("postgresql.base.conf"),
    )?;
    let known = known_settings(&server.bin_dir)?;
    // The recovery settings too, inert without a signal file: Patroni's
    // post_bootstrap writes them once more before it drops them, and a
    // server without them would then wait for a restart.
    let mut settings: Vec<(String, String)> = member
        .server_parameters()
        .into_iter()
        .chain(member.bootstrap_recovery())
        .filter(|(name, _)| name.contains('.') || known.contains(name))
        .collect();
    for (name, file) in [("hba_file", "pg_hba.conf"), ("ident_file", "pg_ident.conf")] {
        settings.retain(|(n, _)| n != name);
        settings.push((name.into(), data.join(file).display().to_string()));
    }
    let text = format!("include 'postgresql.base.conf'\n{}", conf(&settings));
    write(&data.join("postgresql.conf"), &text)?;
    let mut hba = member.pg_hba().join("\n");
    hba.push('\n');
    write(&data.join("pg_hba.conf"), &hba)?;
    let pg_ctl = server.bin_dir.join("pg_ctl");
    let out = Command::new(&pg_ctl)
        .args(["start", "-w", "-t", "600", "-s", "-D"])
        .arg(data)
        .arg("-l")
        .arg(member.data_parent().0.join("clone_recovery.log"))
        .output()
        .map_err(UpgradeError::spawn(&pg_ctl))?;
    if !out.status.success() {
        return Err(step(
            &format!("starting PostgreSQL {}", server.major),
            &last_line(&out.stderr),
        ));
    }
    let local = Psql::socket(
        &server.bin_dir,
        &server.socket_dir,
        server.port,
        &server.user,
    );
    let primary = local.value("SELECT pg_is_in_recovery()")?;
    if primary != "f" {
        return Err(step("the upgraded server", "it is in recovery"));
    }
    say(&format!(
        "PostgreSQL {} runs the upgraded clone with Patroni's settings",
        server.major
    ));
    Ok(())
}

/// The settings a major's server knows (`postgres --describe-config`).
fn known_settings(bin_dir: &Path) -> Result<HashSet<String>, UpgradeError> {
    let postgres = bin_dir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--describe-config")
        .output()
        .map_err(UpgradeError::spawn(&postgres))?;
    if !out.status.success() {
        return Err(step(
            &format!("{} --describe-config", postgres.display()),
            &last_line(&out.stderr),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .collect())
}

/// A failure's cleanup: the server of `data` stopped, if one runs.
fn stop_if_running(bin_dir: &Path, data: &Path) {
    if data.join("postmaster.pid").exists() {
        let _ = stop(bin_dir, data);
    }
}

/// Settings in postgresql.conf's syntax.
fn conf(settings: &[(String, String)]) -> String {
    settings
        .iter()
        .map(|(name, value)| {
            format!(
                "{name} = '{}'\n",
                value.replace('\\', "\\\\").replace('\'', "''")
            )
        })
        .collect()
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn write(path: &Path, text: &str) -> Result<(), UpgradeError> {
    std::fs::write(path, text).map_err(|e| IoError::at("write", path)(e).into())
}

fn remove_file(path: &Path) -> Result<(), UpgradeError> {
    Ok(crate::files::remove_file_if_present(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_quoted_as_postgresql_reads_them() {
        let text = conf(&[
            (
                "restore_command".into(),
                r#"pgbackrest archive-get %f "%p""#.into(),
            ),
            ("recovery_target_time".into(), "it's \\ here".into()),
        ]);
        assert_eq!(
            text,
            "restore_command = 'pgbackrest archive-get %f \"%p\"'\nrecovery_target_time = 'it''s \\\\ here'\n"
        );
    }
}
