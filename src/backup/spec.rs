//! What the backup commands need, written by `init` next to the Patroni
//! configuration. It holds no secret: those are in pgBackRest's own file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The pgbackrest executable.
    pub pgbackrest: PathBuf,
    /// Its configuration file, rendered by `configure`.
    pub config: PathBuf,
    /// The cluster's stanza (its SCOPE).
    pub stanza: String,
    /// BACKUP_SCHEDULE: five cron fields, in UTC.
    pub schedule: String,
    /// The major's psql, to ask the server whether it is the primary.
    pub psql: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub superuser: String,
    /// pgBackRest's spool directory: asynchronous archive-push leaves its
    /// errors there (`archive/<stanza>/out/*.error`).
    pub spool: PathBuf,
    /// uid and gid that pgbackrest runs as when a command is started as
    /// root (`docker exec`): files it makes stay PostgreSQL's.
    pub owner: Option<(u32, u32)>,
    /// WALG_BACKUP_FROM_REPLICA: where a replica's files are read.
    #[serde(default)]
    pub from_replica: Option<FromReplica>,
}

/// What a backup needs to read a streaming replica's files through its
/// pgBackRest TLS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromReplica {
    /// patronictl and Patroni's configuration: which members stream, and
    /// the address each is dialled at.
    pub patronictl: PathBuf,
    pub patroni_config: PathBuf,
    /// PGDATA, the same path on every member (as `config` is).
    pub pgdata: PathBuf,
    pub tls_port: u16,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Spec {
    /// The spec of a configuration with backups; `owner` is who the
    /// children run as, `patroni` Patroni's program (patronictl is beside
    /// it).
    pub(crate) fn for_config(
        config: &crate::config::Config,
        owner: Option<(u32, u32)>,
        patroni: &Path,
    ) -> Option<Self> {
        let backup = config.backup.as_ref()?;
        let paths = &config.paths;
        let from_replica = backup.from_replica.then(|| FromReplica {
            patronictl: patroni.with_file_name("patronictl"),
            patroni_config: paths.patroni_config(),
            pgdata: paths.pgdata.clone(),
            tls_port: crate::render::backup_tls::PORT,
            ca_file: paths.pgbackrest_tls("ca.crt"),
            cert_file: paths.pgbackrest_tls("client.crt"),
            key_file: paths.pgbackrest_tls("member.key"),
        });
        Some(Spec {
            pgbackrest: crate::render::pgbackrest::PROGRAM.into(),
            config: config.paths.pgbackrest_config(),
            stanza: backup.stanza.clone(),
            schedule: backup.schedule.clone(),
            psql: config.version.bin_dir.join("psql"),
            socket_dir: config.paths.socket_dir(),
            port: config.identity.pg_port,
            superuser: config.auth.superuser.username.clone(),
            spool: config.paths.pgbackrest_spool(),
            owner,
            from_replica,
        })
    }
}
