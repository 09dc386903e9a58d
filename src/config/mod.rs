//! The configuration model: the environment, read once, validated, and
//! turned into typed values that rendering and `init` work from.

pub mod auth;
pub mod dcs;
pub mod env;
pub mod error;
pub mod extras;
pub mod identity;
pub mod kubernetes;
pub mod memory;
pub mod merge;
pub mod paths;
pub mod ssl;
pub mod timeouts;
pub mod version;

use std::path::PathBuf;

use serde_json::{Map, Value};

pub use auth::Auth;
pub use dcs::{Dcs, DcsKind};
pub use env::Env;
pub use error::ConfigError;
pub use extras::Pgbouncer;
pub use identity::{HostFacts, Identity, ThisHost};
pub use kubernetes::Kubernetes;
pub use memory::{MemoryProbe, Sizing};
pub use paths::Paths;
pub use ssl::Ssl;
pub use version::Version;

/// Libraries preloaded when the major ships them (looked up in its lib
/// directory, so an image without one still starts).
const PRELOAD_CANDIDATES: [&str; 5] = [
    "pg_stat_statements",
    "set_user",
    "timescaledb",
    "pg_cron",
    "pg_stat_kcache",
];

/// Where the facts about the machine come from; tests point these at
/// fixture trees.
pub struct System<'a> {
    pub postgres_root: PathBuf,
    pub memory: MemoryProbe,
    pub host: &'a dyn HostFacts,
}

impl Default for System<'_> {
    fn default() -> Self {
        System {
            postgres_root: version::DEFAULT_POSTGRES_ROOT.into(),
            memory: MemoryProbe::default(),
            host: &ThisHost,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub paths: Paths,
    pub identity: Identity,
    pub dcs: Dcs,
    pub installed_majors: Vec<u32>,
    pub version: Version,
    pub auth: Auth,
    pub ssl: Ssl,
    pub sizing: Sizing,
    /// Running under Kubernetes (KUBERNETES_SERVICE_HOST set).
    pub kubernetes: Option<Kubernetes>,
    pub initdb_locale: String,
    /// SPILO_CONFIGURATION, merged over the generated Patroni config.
    pub user: Map<String, Value>,
    pub pgbouncer: Option<Pgbouncer>,
    /// Set backup/clone/standby variables, not acted on yet.
    pub backup_variables: Vec<String>,
    pub preload_libraries: Vec<&'static str>,
    /// Values of secret variables, never printed.
    pub secrets: Vec<String>,
    /// One line each, for the operator's eyes.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn build(env: &Env, system: &System) -> Result<Self, ConfigError> {
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
        let backup_variables = extras::backup_variables(env);
        let preload_libraries = PRELOAD_CANDIDATES
            .into_iter()
            .filter(|lib| version.lib_dir.join(format!("{lib}.so")).exists())
            .collect();

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
        if !backup_variables.is_empty() {
            warnings.push(format!(
                "backups, clones and standby clusters are not supported yet ({} set): WAL archiving is off (archive_command /bin/true)",
                backup_variables.join(", ")
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
            installed_majors,
            version,
            auth,
            ssl,
            sizing,
            kubernetes,
            initdb_locale,
            user,
            pgbouncer,
            backup_variables,
            preload_libraries,
            secrets,
            warnings,
        })
    }
}
