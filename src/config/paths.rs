//! Where things live: the Spilo path variables and the files derived from
//! them. Everything generated at start-up goes under RW_DIR, and each path
//! there is named here, once.

use std::path::{Path, PathBuf};

use super::env::{Vars, set};
use super::error::ConfigError;

/// PGDATA under PGROOT by default: where Spilo keeps the cluster, so a
/// Spilo volume is adopted as it is.
const PGDATA_DIR: &str = "pgdata";

/// Where spilo-rs before 0.2 put the cluster by default.
const OLD_PGDATA_DIR: &str = "data";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub(crate) pghome: PathBuf,
    pub(crate) pgroot: PathBuf,
    pub(crate) pgdata: PathBuf,
    pub(crate) pglog: PathBuf,
    /// PGWAL: a separate WAL volume (initdb --waldir), when given.
    pub(crate) pgwal: Option<PathBuf>,
    pub(crate) rw_dir: PathBuf,
    pub(crate) wale_env_dir: PathBuf,
    pub(crate) log_env_dir: PathBuf,
}

impl Paths {
    pub(crate) fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let pghome = absolute("PGHOME", &vars.pghome, || "/home/postgres".into())?;
        let pgroot = absolute("PGROOT", &vars.pgroot, || pghome.join("pgdata/pgroot"))?;
        let pgdata = absolute("PGDATA", &vars.pgdata, || pgroot.join(PGDATA_DIR))?;
        let pglog = absolute("PGLOG", &vars.pglog, || pgroot.join("pg_log"))?;
        let pgwal = set(&vars.pgwal)
            .map(|_| absolute("PGWAL", &vars.pgwal, PathBuf::new))
            .transpose()?;
        if pgwal.as_ref().is_some_and(|w| w.starts_with(&pgdata)) {
            return Err(ConfigError::invalid(
                "PGWAL",
                set(&vars.pgwal).unwrap_or_default(),
                "must be outside PGDATA (it is a separate WAL volume)",
            ));
        }
        let rw_dir = absolute("RW_DIR", &vars.rw_dir, || "/run".into())?;
        let wale_env_dir = absolute("WALE_ENV_DIR", &vars.wale_env_dir, || {
            rw_dir.join("etc/wal-e.d/env")
        })?;
        let log_env_dir = absolute("LOG_ENV_DIR", &vars.log_env_dir, || {
            rw_dir.join("etc/log.d/env")
        })?;
        Ok(Paths {
            pghome,
            pgroot,
            pgdata,
            pglog,
            pgwal,
            rw_dir,
            wale_env_dir,
            log_env_dir,
        })
    }

    /// Refuses a PGDATA that cannot be the data directory (a file), and an
    /// empty default PGDATA beside a cluster in the old default place: a
    /// new cluster there would hide the user's data. `defaulted`: PGDATA
    /// was not set.
    pub(crate) fn check_data_directory(&self, defaulted: bool) -> Result<(), ConfigError> {
        let shown = self.pgdata.display().to_string();
        match std::fs::metadata(&self.pgdata) {
            Ok(meta) if !meta.is_dir() => {
                return Err(ConfigError::invalid(
                    "PGDATA",
                    &shown,
                    "exists and is not a directory",
                ));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Read {
                    path: self.pgdata.clone(),
                    source: e,
                });
            }
            _ => {}
        }
        let old = self.pgroot.join(OLD_PGDATA_DIR);
        if defaulted && !holds_cluster(&self.pgdata) && holds_cluster(&old) {
            return Err(ConfigError::invalid(
                "PGDATA",
                &shown,
                format!(
                    "empty, but {} holds a PostgreSQL cluster (the old default place): move it to {shown} or set PGDATA={}; refusing to make a new cluster beside it",
                    old.display(),
                    old.display()
                ),
            ));
        }
        Ok(())
    }

    /// The Patroni configuration file.
    pub(crate) fn patroni_config(&self) -> PathBuf {
        self.rw_dir.join("postgres.yml")
    }

    /// The link in PGHOME that tools (and people) look for.
    pub(crate) fn patroni_config_link(&self) -> PathBuf {
        self.pghome.join("postgres.yml")
    }

    /// Unix socket directory; also holds the pgpass file.
    pub(crate) fn socket_dir(&self) -> PathBuf {
        self.rw_dir.join("postgresql")
    }

    pub(crate) fn pgpass(&self) -> PathBuf {
        self.socket_dir().join("pgpass")
    }

    /// CLONE_PASSWORD, for the clone's pg_basebackup.
    pub(crate) fn clone_pgpass(&self) -> PathBuf {
        self.socket_dir().join("clone.pgpass")
    }

    pub(crate) fn certs_dir(&self) -> PathBuf {
        self.rw_dir.join("certs")
    }

    pub(crate) fn pgbouncer_dir(&self) -> PathBuf {
        self.rw_dir.join("pgbouncer")
    }

    pub(crate) fn pgbouncer_ini(&self) -> PathBuf {
        self.pgbouncer_dir().join("pgbouncer.ini")
    }

    /// pgBackRest's files: its configuration, spool, locks and logs.
    pub(crate) fn pgbackrest_dir(&self) -> PathBuf {
        self.rw_dir.join("pgbackrest")
    }

    pub(crate) fn pgbackrest_config(&self) -> PathBuf {
        self.pgbackrest_dir().join("pgbackrest.conf")
    }

    /// Asynchronous archive-push's queue and error files.
    pub(crate) fn pgbackrest_spool(&self) -> PathBuf {
        self.pgbackrest_dir().join("spool")
    }

    /// The certificates of pgBackRest's TLS server (backups from a
    /// replica).
    pub(crate) fn pgbackrest_tls(&self, name: &str) -> PathBuf {
        self.pgbackrest_dir().join("tls").join(name)
    }

    pub(crate) fn pgbackrest_lock(&self) -> PathBuf {
        self.pgbackrest_dir().join("lock")
    }

    /// The repository a restore reads (CLONE_*), apart from our own.
    pub(crate) fn pgbackrest_restore_config(&self) -> PathBuf {
        self.pgbackrest_dir().join("restore.conf")
    }

    /// The repository a standby cluster replays (STANDBY_*).
    pub(crate) fn pgbackrest_standby_config(&self) -> PathBuf {
        self.pgbackrest_dir().join("standby.conf")
    }

    /// Spilo's env-standby directory, which the operator's standby
    /// restore_command reads with envdir.
    pub(crate) fn standby_env_dir(&self) -> PathBuf {
        self.rw_dir.join("etc/wal-e.d/env-standby")
    }

    /// What the backup commands need (`backup::Spec`).
    pub(crate) fn backup_spec(&self) -> PathBuf {
        self.rw_dir.join("backup.json")
    }

    /// What Patroni's hooks need (`init::hooks::Spec`), 0600.
    pub(crate) fn hooks_spec(&self) -> PathBuf {
        self.rw_dir.join("hooks.json")
    }

    /// The embedded etcd's data directory.
    pub(crate) fn etcd_data(&self) -> PathBuf {
        self.rw_dir.join("etcd")
    }

    /// Exists from before the embedded etcd's first start until it
    /// answered (`init::etcd`).
    pub(crate) fn etcd_first_start(&self) -> PathBuf {
        self.rw_dir.join("etcd.first-start")
    }

    /// The copies of passwd and group nss_wrapper gives an arbitrary uid.
    pub(crate) fn nss_passwd(&self) -> PathBuf {
        self.rw_dir.join("nss/passwd")
    }

    pub(crate) fn nss_group(&self) -> PathBuf {
        self.rw_dir.join("nss/group")
    }

    /// Where `init` unpacks a packed major (`<dir>/<major>`).
    pub(crate) fn unpacked_majors(&self) -> PathBuf {
        self.rw_dir.join(spilo_layout::UNPACKED_SUBDIR)
    }

    /// The run of initdb ahead of Patroni (`init::initdb_ahead`).
    pub(crate) fn initdb_ahead(&self) -> PathBuf {
        self.rw_dir.join("spilo/initdb-ahead")
    }

    /// The PAM service file; the image links /etc/pam.d/postgresql here so
    /// that the root filesystem can stay read-only.
    pub fn pam_service(&self) -> PathBuf {
        self.rw_dir.join("pam.d/postgresql")
    }

    /// `log_directory` as Spilo writes it (relative to the data directory)
    /// when PGLOG sits beside PGDATA, else the absolute path.
    pub(crate) fn log_directory(&self) -> String {
        match self.pgdata.parent() {
            Some(parent) if parent.join("pg_log") == self.pglog => "../pg_log".to_owned(),
            _ => self.pglog.display().to_string(),
        }
    }
}

/// A data directory (or what is left of one): it has PG_VERSION.
fn holds_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").exists()
}

fn absolute(
    var: &str,
    value: &Option<String>,
    default: impl FnOnce() -> PathBuf,
) -> Result<PathBuf, ConfigError> {
    match set(value) {
        None => Ok(default()),
        Some(raw) if Path::new(raw).is_absolute() => Ok(PathBuf::from(raw)),
        Some(raw) => Err(ConfigError::invalid(var, raw, "must be an absolute path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let p = Paths::from_vars(&Vars::default()).unwrap();
        assert_eq!(p.pgroot, Path::new("/home/postgres/pgdata/pgroot"));
        assert_eq!(p.pgdata, Path::new("/home/postgres/pgdata/pgroot/pgdata"));
        assert_eq!(p.pglog, Path::new("/home/postgres/pgdata/pgroot/pg_log"));
        assert_eq!(p.wale_env_dir, Path::new("/run/etc/wal-e.d/env"));
        assert_eq!(p.log_env_dir, Path::new("/run/etc/log.d/env"));
        assert_eq!(p.patroni_config(), Path::new("/run/postgres.yml"));
        assert_eq!(
            p.patroni_config_link(),
            Path::new("/home/postgres/postgres.yml")
        );
        assert_eq!(p.pgpass(), Path::new("/run/postgresql/pgpass"));
        assert_eq!(
            p.certs_dir().join("server.crt"),
            Path::new("/run/certs/server.crt")
        );
        assert_eq!(p.log_directory(), "../pg_log");
    }

    #[test]
    fn derived_paths_follow_their_parents() {
        let vars = Vars {
            pgroot: Some("/data/pg".into()),
            rw_dir: Some("/tmp/rw".into()),
            pglog: Some("/var/log/pg".into()),
            ..Vars::default()
        };
        let p = Paths::from_vars(&vars).unwrap();
        assert_eq!(p.pgdata, Path::new("/data/pg/pgdata"));
        assert_eq!(p.wale_env_dir, Path::new("/tmp/rw/etc/wal-e.d/env"));
        assert_eq!(p.log_directory(), "/var/log/pg");
    }

    fn under(root: &Path) -> Paths {
        Paths::from_vars(&Vars {
            pgroot: Some(root.display().to_string()),
            ..Vars::default()
        })
        .unwrap()
    }

    #[test]
    fn a_cluster_in_the_old_default_place_is_never_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let p = under(dir.path());
        p.check_data_directory(true).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/PG_VERSION"), "15\n").unwrap();
        std::fs::create_dir_all(&p.pgdata).unwrap();
        let err = p.check_data_directory(true).unwrap_err().to_string();
        let old = dir.path().join("data").display().to_string();
        assert!(
            err.starts_with(&format!(
                "PGDATA={}: empty, but {old} holds",
                p.pgdata.display()
            )),
            "{err}"
        );
        // Set on purpose, or a cluster in PGDATA too: no doubt left.
        p.check_data_directory(false).unwrap();
        std::fs::write(p.pgdata.join("PG_VERSION"), "15\n").unwrap();
        p.check_data_directory(true).unwrap();
    }

    #[test]
    fn a_file_is_not_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = under(dir.path());
        std::fs::write(&p.pgdata, "").unwrap();
        let err = p.check_data_directory(false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "PGDATA={}: exists and is not a directory",
                p.pgdata.display()
            )
        );
    }

    #[test]
    fn relative_paths_are_refused() {
        let vars = Vars {
            pgdata: Some("data".into()),
            ..Vars::default()
        };
        let err = Paths::from_vars(&vars).unwrap_err();
        assert_eq!(err.to_string(), "PGDATA=data: must be an absolute path");
    }
}
