//! The configuration model: the environment, read once, validated, and
//! turned into typed values that rendering and `init` work from.

pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod clone;
pub(crate) mod dcs;
pub(crate) mod env;
pub(crate) mod error;
pub(crate) mod extras;
pub(crate) mod identity;
pub(crate) mod kubernetes;
pub(crate) mod memory;
pub(crate) mod merge;
pub(crate) mod monitor;
pub(crate) mod paths;
pub(crate) mod ssl;
pub(crate) mod standby;
pub(crate) mod timeouts;
pub(crate) mod version;

use std::path::PathBuf;

use serde_json::{Map, Value};

pub(crate) use auth::Auth;
pub(crate) use backup::{Backup, Restore};
pub(crate) use clone::BasebackupClone;
pub(crate) use dcs::{Dcs, DcsKind};
pub use env::Env;
pub(crate) use error::ConfigError;
pub(crate) use extras::Pgbouncer;
pub(crate) use identity::{HostFacts, Identity, ThisHost};
pub(crate) use kubernetes::Kubernetes;
pub(crate) use memory::{MemoryProbe, Sizing};
use monitor::Monitor;
pub(crate) use paths::Paths;
pub(crate) use ssl::Ssl;
pub(crate) use standby::Standby;
pub(crate) use version::Version;

/// Where the facts about the machine come from; tests point these at
/// fixture trees.
pub struct System<'a> {
    pub postgres_root: PathBuf,
    /// A packed major is unpacked under RW_DIR (`Paths::unpacked_majors`)
    /// before it runs (`init`): the model points at that tree. Otherwise
    /// (`configure`) it points under `postgres_root`.
    pub unpacks: bool,
    pub memory: MemoryProbe,
    /// The cores the pod may use (backup parallelism).
    pub cpus: usize,
    pub host: &'a dyn HostFacts,
    /// This program, which Patroni's bootstrap of a clone calls back.
    pub program: PathBuf,
}

impl Default for System<'_> {
    fn default() -> Self {
        System {
            postgres_root: spilo_layout::POSTGRES_ROOT.into(),
            unpacks: false,
            memory: MemoryProbe::default(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            host: &ThisHost,
            program: std::env::current_exe().unwrap_or_else(|_| "spilo".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub paths: Paths,
    pub(crate) identity: Identity,
    pub(crate) dcs: Dcs,
    pub(crate) version: Version,
    pub(crate) auth: Auth,
    pub(crate) ssl: Ssl,
    pub(crate) sizing: Sizing,
    /// Running under Kubernetes (KUBERNETES_SERVICE_HOST set).
    pub(crate) kubernetes: Option<Kubernetes>,
    pub(crate) initdb_locale: String,
    /// SPILO_CONFIGURATION, merged over the generated Patroni config.
    pub(crate) user: Map<String, Value>,
    pub(crate) pgbouncer: Option<Pgbouncer>,
    /// The monitor on 8080, unless BGMON_ENABLED turns it off.
    pub(crate) monitor: Option<Monitor>,
    /// WAL archiving and backups, when a store is configured.
    pub(crate) backup: Option<Backup>,
    /// The bootstrap restores this repository instead of running initdb.
    pub(crate) restore: Option<Restore>,
    /// The bootstrap copies this running cluster instead of running initdb.
    pub(crate) basebackup_clone: Option<BasebackupClone>,
    /// A standby cluster: Patroni's `bootstrap.dcs.standby_cluster`.
    pub(crate) standby: Option<Standby>,
    /// This program (`System::program`).
    pub(crate) program: PathBuf,
    /// Values of secret variables, never printed.
    pub(crate) secrets: Vec<String>,
    /// One line each, for the operator's eyes.
    pub(crate) warnings: Vec<String>,
}

impl Config {
    pub fn build(env: &Env, system: &System) -> Result<Self, ConfigError> {
        env.check_utf8()?;
        let vars = env.vars()?;
        let paths = Paths::from_vars(&vars)?;
        paths.check_data_directory(env::set(&vars.pgdata).is_none())?;
        let identity = Identity::from_vars(&vars, system.host)?;
        let (user_var, mut user) =
            merge::user_configuration(&vars)?.unwrap_or(("SPILO_CONFIGURATION", Map::new()));
        let mut warnings = timeouts::adjust(&mut user, user_var)?;
        let dcs = dcs::choose(
            env,
            &vars,
            &dcs::Inputs {
                pod_ip: &identity.pod_ip.to_string(),
                pg_port: identity.pg_port,
                user_has_dcs: dcs::DCS_NAMES.iter().any(|n| user.contains_key(*n)),
            },
        )?;
        let installed_majors = version::installed_majors(&system.postgres_root)?;
        let version = version::choose(
            &system.postgres_root,
            &installed_majors,
            &paths.pgdata,
            env::set(&vars.pgversion),
            system.unpacks.then(|| paths.unpacked_majors()).as_deref(),
        )?;
        let auth = Auth::from_vars(&vars)?;
        let ssl = Ssl::from_vars(&vars, &paths.certs_dir())?;
        let kubernetes = Kubernetes::from_vars(&vars)?;
        let sizing = memory::sizing(system.memory.memory_mib()?, kubernetes.is_some());
        let initdb_locale = env::set(&vars.initdb_locale).unwrap_or("en_US").to_owned();
        if !initdb_locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::invalid(
                "INITDB_LOCALE",
                &initdb_locale,
                "expected a locale name such as en_US (.UTF-8 is added)",
            ));
        }
        let pgbouncer = Pgbouncer::from_vars(&vars)?;
        let monitor = Monitor::from_vars(&vars)?;
        let namespace = kubernetes
            .as_ref()
            .filter(|_| dcs.kind == DcsKind::Kubernetes)
            .map(|k| k.namespace.as_str());
        let backup = Backup::from_env(env, &identity.scope, namespace, system.cpus)?;
        let standby = Standby::from_env(env)?;
        if standby.is_some() && env.get("CLONE_METHOD").is_some() {
            return Err(ConfigError::inconsistent(
                "CLONE_METHOD",
                "a standby cluster (STANDBY_*) follows its source and cannot also be a clone",
            ));
        }
        // A restore is a bootstrap: a data directory that holds a cluster
        // (a restart, a replica) neither needs nor checks its source.
        let (restore, basebackup_clone) = if paths.pgdata.join("PG_VERSION").exists() {
            (None, None)
        } else {
            (Restore::from_env(env)?, BasebackupClone::from_env(env)?)
        };
        // A clone or a promoted standby writing into its source's
        // repository would mix its WAL into the source's and expire the
        // source's backups: same system identifier, same stanza.
        let sources = [
            restore.as_ref().map(|r| &r.repository),
            standby
                .as_ref()
                .and_then(|s| s.archive.as_ref())
                .map(|a| &a.repository),
        ];
        if let Some(own) = &backup {
            if sources
                .into_iter()
                .flatten()
                .any(|s| s.same_place(&own.repository))
            {
                return Err(ConfigError::inconsistent(
                    "SCOPE",
                    format!(
                        "this cluster's repository ({}) is its source's: give it another SCOPE or WAL_BUCKET_SCOPE_SUFFIX, a clone or standby never writes to its source's backups",
                        own.repository.path
                    ),
                ));
            }
        }
        if backup.as_ref().is_some_and(Backup::guesses_region) {
            warnings.push(
                "AWS_REGION is not set: the bucket is taken to be in us-east-1 (set AWS_REGION for any other)".to_owned(),
            );
        }
        let unsupported = extras::unsupported_variables(env);

        if env::set(&vars.spilo_configuration).is_some()
            && env::set(&vars.patroni_configuration).is_some()
        {
            warnings
                .push("PATRONI_CONFIGURATION is ignored: SPILO_CONFIGURATION is set".to_owned());
        }
        if version.source == version::Source::DataDirectory {
            if let Some(wanted) =
                env::set(&vars.pgversion).filter(|w| w.trim() != version.major.to_string())
            {
                warnings.push(format!(
                    "PGVERSION={wanted} ignored: the data directory is PostgreSQL {} (upgrade it to change majors)",
                    version.major
                ));
            }
        }
        if let Some(Value::Array(lines)) = user.get("postgresql").and_then(|p| p.get("pg_hba")) {
            let lines: Vec<String> = lines
                .iter()
                .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                .collect();
            if !auth.hba_allows_replication(&lines) {
                warnings.push(format!(
                    "{user_var}: postgresql.pg_hba has no host rule for replication by {}: replicas will fail to connect",
                    auth.replication.username
                ));
            }
        }
        if !unsupported.is_empty() {
            warnings.push(format!(
                "not supported yet, ignored: {}",
                unsupported.join(", ")
            ));
        }

        let secrets: Vec<String> = env
            .iter()
            .filter(|(name, value)| error::is_secret_var(name) && !value.is_empty())
            .map(|(_, value)| value.to_owned())
            .collect();

        Ok(Config {
            paths,
            identity,
            dcs,
            version,
            auth,
            ssl,
            sizing,
            kubernetes,
            initdb_locale,
            user,
            pgbouncer,
            monitor,
            backup,
            restore,
            basebackup_clone,
            standby,
            program: system.program.clone(),
            secrets,
            warnings,
        })
    }
}
