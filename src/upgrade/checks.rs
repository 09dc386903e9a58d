//! Everything an upgrade checks before it changes anything: the target
//! major, this member's place in the cluster, the replicas, what the
//! target cannot take, and `pg_upgrade --check` on a fresh new data
//! directory. A failure is a refusal: the cluster runs on as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::api::{self, Api, ClusterMember};
use super::member::Member;
use super::pgupgrade::{Settings, Upgrade, remove_dir};
use super::sql::Psql;
use super::{UpgradeError, data_major, say};

/// A replica more than this far behind is not upgraded with the rest.
pub(crate) const MAX_LAG: u64 = 16 * 1024 * 1024;

/// What the checks learnt, for the upgrade.
pub(crate) struct Plan {
    pub(crate) old_major: u32,
    pub(crate) new_major: u32,
    pub(crate) new_bin: PathBuf,
    pub(crate) replicas: Vec<ClusterMember>,
    /// This member's address, which the replicas pull from.
    pub(crate) host: String,
    pub(crate) system_identifier: String,
    /// (database, extension) dropped and created again after.
    pub(crate) recreated: Vec<(String, String)>,
    /// (database, extension) dropped before: the target has none.
    pub(crate) dropped: Vec<(String, String)>,
    pub(crate) upgrade: Upgrade,
}

/// The major to upgrade to: SPILO_CONFIGURATION's postgresql.bin_dir,
/// else PGVERSION's tree under `postgres_root`.
pub(crate) fn target(
    spilo_configuration: Option<&str>,
    pgversion: Option<&str>,
    postgres_root: &Path,
) -> Result<(u32, PathBuf), UpgradeError> {
    let from_configuration = spilo_configuration
        .and_then(|text| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).ok())
        .and_then(|v| {
            v.get("postgresql")?
                .get("bin_dir")?
                .as_str()
                .map(PathBuf::from)
        });
    let bin_dir = match (
        from_configuration,
        pgversion.map(str::trim).filter(|v| !v.is_empty()),
    ) {
        (Some(bin_dir), _) => bin_dir,
        (None, Some(version)) => {
            let major: u32 = version.parse().map_err(|_| {
                UpgradeError::Refused(format!("PGVERSION {version:?} is not a PostgreSQL major"))
            })?;
            postgres_root.join(major.to_string()).join("bin")
        }
        (None, None) => {
            return Err(UpgradeError::Refused(
                "no target: set PGVERSION (or postgresql.bin_dir in SPILO_CONFIGURATION)".into(),
            ));
        }
    };
    let major = binary_major(&bin_dir)?;
    for program in ["pg_upgrade", "initdb", "pg_ctl", "vacuumdb"] {
        if !bin_dir.join(program).exists() {
            return Err(UpgradeError::Refused(format!(
                "{} is missing: PostgreSQL {major} is not installed whole",
                bin_dir.join(program).display()
            )));
        }
    }
    Ok((major, bin_dir))
}

/// The major of the server program in `bin_dir` (`postgres --version`).
pub(crate) fn binary_major(bin_dir: &Path) -> Result<u32, UpgradeError> {
    let postgres = bin_dir.join("postgres");
    let out = Command::new(&postgres).arg("--version").output().map_err(|e| {
        UpgradeError::Refused(format!(
            "{}: {e} (the target major is not installed here, or is packed in a compressed image)",
            postgres.display()
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|version| version.split('.').next()?.parse().ok())
        .ok_or_else(|| {
            UpgradeError::Refused(format!("{}: no version in {text:?}", postgres.display()))
        })
}

/// Every check, in order; the plan when all pass.
pub(crate) fn run(
    member: &Member,
    api: &Api,
    members: usize,
    new_major: u32,
    new_bin: &Path,
) -> Result<Plan, UpgradeError> {
    let refused = |reason: String| UpgradeError::Refused(reason);
    let old_major = data_major(&member.data_dir)?;
    if new_major < old_major {
        return Err(refused(format!(
            "the data directory is PostgreSQL {old_major}, newer than the target {new_major}"
        )));
    }
    let cluster = api.get(&format!("{}/cluster", member.api))?;
    let (all, paused) = api::members(&cluster);
    if paused {
        return Err(refused("the cluster is paused (maintenance mode)".into()));
    }
    let me = all.iter().find(|m| m.name == member.name);
    if !me.is_some_and(|m| m.role == "leader" && m.state == "running") {
        return Err(refused(format!(
            "{} does not hold the leader lock with a running server",
            member.name
        )));
    }
    if all.len() != members {
        return Err(refused(format!(
            "the cluster has {} members, not the {members} expected",
            all.len()
        )));
    }
    let replicas: Vec<ClusterMember> = all
        .iter()
        .filter(|m| m.name != member.name)
        .cloned()
        .collect();
    for replica in &replicas {
        if replica.state != "streaming" {
            return Err(refused(format!(
                "replica {} is {}, not streaming",
                replica.name, replica.state
            )));
        }
        match replica.lag {
            Some(lag) if lag <= MAX_LAG => {}
            lag => {
                return Err(refused(format!(
                    "replica {} lags {} behind (at most {MAX_LAG} bytes)",
                    replica.name,
                    lag.map_or("an unknown amount".into(), |l| format!("{l} bytes"))
                )));
            }
        }
        let psql = remote(member, replica);
        if psql.value("SELECT pg_is_in_recovery()")? != "t" {
            return Err(refused(format!("{} is not in recovery", replica.name)));
        }
        let replay = replay_lag(&psql)?;
        if replay > MAX_LAG {
            return Err(refused(format!(
                "replica {} has {replay} bytes received but not replayed (at most {MAX_LAG})",
                replica.name
            )));
        }
    }
    let host = me.map(|m| m.host.clone()).unwrap_or_default();
    let local = Psql::socket(
        &member.bin_dir,
        &member.socket_dir,
        member.port,
        &member.superuser.username,
    );
    if member.data_dir.join("pg_wal").is_symlink() {
        return Err(refused(
            "pg_wal is a link to a WAL volume (PGWAL): spilo upgrade moves one data directory"
                .into(),
        ));
    }
    let tablespaces = local.value(
        "SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')",
    )?;
    if tablespaces != "0" {
        return Err(refused(format!(
            "{tablespaces} tablespaces besides the default: spilo upgrade moves one data directory"
        )));
    }
    let extensions = check_extensions(&local, new_bin, new_major)?;
    let system_identifier = local.value("SELECT system_identifier FROM pg_control_system()")?;
    let settings = Settings::of(&local, old_major)?;
    let (parent, _) = member.data_parent();
    let upgrade = Upgrade {
        old_bin: member.bin_dir.clone(),
        new_bin: new_bin.to_owned(),
        new_major,
        old_data: member.data_dir.clone(),
        new_data: member.sibling("new"),
        superuser: member.superuser.username.clone(),
        new_preload: member.preload_for(&super::replica::lib_dir_of(new_bin)),
        work_dir: parent.to_owned(),
        jobs: std::thread::available_parallelism().map_or(1, usize::from),
    };
    say(&format!(
        "making {} with initdb (PostgreSQL {new_major}) and running pg_upgrade --check",
        upgrade.new_data.display()
    ));
    let checked = drop_helpers(&local, &extensions.dropped)
        .and_then(|()| upgrade.initdb(&settings))
        .and_then(|()| upgrade.check(member.port, &member.socket_dir));
    if let Err(e) = checked {
        upgrade.keep_logs();
        remove_dir(&upgrade.new_data)?;
        if extensions.dropped.is_empty() {
            return Err(refused(e.to_string()));
        }
        return Err(refused(format!("{e} ({})", helpers_again())));
    }
    Ok(Plan {
        old_major,
        new_major,
        new_bin: new_bin.to_owned(),
        replicas,
        host,
        system_identifier,
        recreated: extensions.recreated,
        dropped: extensions.dropped,
        upgrade,
    })
}

/// A superuser session on a replica.
pub(crate) fn remote(member: &Member, replica: &ClusterMember) -> Psql {
    Psql::remote(
        &member.bin_dir,
        &replica.host,
        replica.port,
        &member.superuser.username,
        &member.superuser.password,
    )
}

/// Bytes a replica received but has not replayed.
fn replay_lag(psql: &Psql) -> Result<u64, UpgradeError> {
    let value = psql.value(
        "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint",
    )?;
    Ok(value.parse::<i64>().map_or(0, |v| v.max(0) as u64))
}

/// Extensions that hold no data and ship no update scripts: when the
/// target has another version, they are dropped and created again after
/// the upgrade (pg_upgrade carries their old version into the catalog,
/// which the new library refuses).
const RECREATED: [&str; 1] = ["pg_repack"];

/// How the target has an installed extension.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Availability {
    /// At its version, or with an update script from it.
    Updatable,
    /// Only at another version, and the extension is one of `RECREATED`.
    Recreated,
    Missing,
}

/// The database helpers' optional extensions, made only where a major
/// ships them (image/sql/extensions.sql, cron.sql). When the target has
/// none they are dropped before the upgrade: set_user and pg_stat_kcache
/// hold no data, pg_cron only when it has no jobs.
const DROPPED_WHEN_MISSING: [&str; 3] = ["pg_stat_kcache", "set_user", "pg_cron"];

/// What the target lacks and the upgrade handles.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    /// (database, extension) dropped and created again after.
    pub(crate) recreated: Vec<(String, String)>,
    /// (database, extension) dropped before, as the target has none.
    pub(crate) dropped: Vec<(String, String)>,
}

/// Every extension of every database must exist for the target at its
/// version, with an update path from it, be one that is re-created or a
/// helper that is dropped.
pub(crate) fn check_extensions(
    local: &Psql,
    new_bin: &Path,
    new_major: u32,
) -> Result<Extensions, UpgradeError> {
    let share = sharedir(new_bin)?.join("extension");
    let mut missing = Vec::new();
    let mut found = Extensions::default();
    for row in local.rows("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")? {
        let Some(database) = row.first() else {
            continue;
        };
        let db = local.database(database);
        for ext in db.rows("SELECT extname, extversion FROM pg_extension ORDER BY 1")? {
            let [name, version] = ext.as_slice() else {
                continue;
            };
            let pair = (database.clone(), name.clone());
            match availability(&share, name, version) {
                Availability::Updatable => {}
                Availability::Recreated => found.recreated.push(pair),
                Availability::Missing if DROPPED_WHEN_MISSING.contains(&name.as_str()) => {
                    let jobs = match name.as_str() {
                        "pg_cron" => db.value("SELECT count(*) FROM cron.job")?,
                        _ => "0".into(),
                    };
                    if jobs == "0" {
                        found.dropped.push(pair);
                    } else {
                        missing.push(format!(
                            "{name} {version} (database {database}, {jobs} jobs)"
                        ));
                    }
                }
                Availability::Missing => {
                    missing.push(format!("{name} {version} (database {database})"))
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    Err(UpgradeError::Refused(format!(
        "PostgreSQL {new_major} has no {}",
        missing.join(", ")
    )))
}

/// Drops the helpers the target lacks (pg_cron with the helpers' own
/// objects on its tables).
pub(crate) fn drop_helpers(local: &Psql, dropped: &[(String, String)]) -> Result<(), UpgradeError> {
    for (database, name) in dropped {
        say(&format!(
            "dropping extension {name} in database {database}: the target has none"
        ));
        let cascade = if name == "pg_cron" { " CASCADE" } else { "" };
        local.database(database).script(
            &format!("SELECT format('DROP EXTENSION %I{cascade}', :'name') \\gexec\n"),
            &[("name", name)],
        )?;
    }
    Ok(())
}

/// The database helpers made again on the old major, after a refusal or a
/// roll back that follows dropped helpers; a line saying how it went.
pub(crate) fn helpers_again() -> String {
    let made = crate::init::hooks::read_spec(&super::rw_dir().join("hooks.json"))
        .and_then(|spec| crate::init::hooks::reapply(&spec));
    match made {
        Ok(()) => "the database helpers were made again".into(),
        Err(e) => format!("making the database helpers again failed: {e}"),
    }
}

/// Whether `share` (a major's extension directory) has `name` at
/// `version`, a script that updates from it, or another version of one
/// that is re-created.
pub(crate) fn availability(share: &Path, name: &str, version: &str) -> Availability {
    if !share.join(format!("{name}.control")).exists() {
        return Availability::Missing;
    }
    let exact = format!("{name}--{version}.sql");
    let update = format!("{name}--{version}--");
    // PostGIS updates from any version through one script.
    let from_any = format!("{name}--ANY--");
    let updatable = std::fs::read_dir(share).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file == exact
                || ((file.starts_with(&update) || file.starts_with(&from_any))
                    && file.ends_with(".sql"))
        })
    });
    match updatable {
        true => Availability::Updatable,
        false if RECREATED.contains(&name) => Availability::Recreated,
        false => Availability::Missing,
    }
}

/// `pg_config --sharedir` of a major.
fn sharedir(bin_dir: &Path) -> Result<PathBuf, UpgradeError> {
    let program = bin_dir.join("pg_config");
    let out = Command::new(&program)
        .arg("--sharedir")
        .output()
        .map_err(UpgradeError::spawn(&program))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return Err(UpgradeError::Refused(format!(
            "{}: no share directory",
            program.display()
        )));
    }
    Ok(text.into())
}

/// Whether every member's Patroni reports the pause as `paused`.
pub(crate) fn all_see_pause(api: &Api, members: &[String], paused: bool) -> bool {
    members.iter().all(|url| {
        api.get(url)
            .is_ok_and(|state: Value| state["pause"].as_bool().unwrap_or(false) == paused)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_needs_its_version_an_update_from_it_or_to_be_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path();
        for file in [
            "a.control",
            "a--1.0.sql",
            "b.control",
            "b--2.0.sql",
            "b--1.0--2.0.sql",
            "c--1.0.sql",
            "pg_repack.control",
            "pg_repack--1.5.3.sql",
            "postgis.control",
            "postgis--ANY--3.6.4.sql",
        ] {
            std::fs::write(share.join(file), "").unwrap();
        }
        assert_eq!(availability(share, "a", "1.0"), Availability::Updatable);
        assert_eq!(availability(share, "a", "0.9"), Availability::Missing);
        assert_eq!(availability(share, "b", "1.0"), Availability::Updatable);
        assert_eq!(
            availability(share, "c", "1.0"),
            Availability::Missing,
            "no control file"
        );
        assert_eq!(
            availability(share, "pg_repack", "1.4.8"),
            Availability::Recreated
        );
    }

    #[test]
    fn the_target_comes_from_the_configuration_or_pgversion() {
        let err = target(None, None, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("set PGVERSION"), "{err}");
        let err = target(None, Some("x"), Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PGVERSION \"x\""), "{err}");
        let err = target(
            Some("postgresql:\n  bin_dir: /nonexistent/9/bin\n"),
            Some("17"),
            Path::new("/x"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/9/bin/postgres"), "{err}");
    }
}
