//! The one place the environment is read: a snapshot of the variables and
//! their typed view (envy), plus the parsers every other module uses.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::ConfigError;

/// A snapshot of the environment. Everything after this works on values,
/// so tests build one from a list instead of touching the process.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Names whose values are not UTF-8 (left out of `vars`).
    not_utf8: Vec<String>,
}

/// The prefixes and names of the variables Spilo's contract reads.
const CONTRACT: [&str; 33] = [
    "PG",
    "SCOPE",
    "HOSTNAME",
    "POD_",
    "RW_DIR",
    "WALE_",
    "WALG_",
    "WAL_",
    "LOG_",
    "APIPORT",
    "RESTAPI_",
    "KUBERNETES_",
    "SPILO_",
    "DCS_",
    "ETCD",
    "ZOOKEEPER",
    "EXHIBITOR",
    "CONSUL",
    "HUMAN_ROLE",
    "PAM_OAUTH2",
    "ALLOW_NOSSL",
    "SSL_",
    "INITDB_",
    "PATRONI_",
    "BACKUP_",
    "CLONE_",
    "STANDBY_",
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "USE_",
    "BGMON_",
    "CALLBACK_",
];

impl Env {
    pub fn from_process() -> Self {
        let mut not_utf8 = Vec::new();
        let mut vars = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            // A name that is not UTF-8 is none of ours.
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    vars.insert(name, value);
                }
                Err(_) => not_utf8.push(name),
            }
        }
        Env { vars, not_utf8 }
    }

    /// A variable of the contract whose value is not UTF-8: an error, not
    /// an unset variable (an invalid SCOPE must not join another cluster).
    pub(crate) fn check_utf8(&self) -> Result<(), ConfigError> {
        match self
            .not_utf8
            .iter()
            .find(|name| CONTRACT.iter().any(|c| name.starts_with(c)))
        {
            Some(name) => Err(ConfigError::inconsistent(
                name,
                "the value is not valid UTF-8",
            )),
            None => Ok(()),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            not_utf8: Vec::new(),
        }
    }

    /// Parses a `KEY=VALUE` per line file (comments with `#`), as the
    /// operator fixtures are written.
    pub fn from_env_file(text: &str) -> Self {
        Self::from_pairs(text.lines().filter_map(|line| {
            let line = line.trim_start();
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            Some((k.trim().to_owned(), v.to_owned()))
        }))
    }

    /// The typed view of the known variables.
    pub(crate) fn vars(&self) -> Result<Vars, ConfigError> {
        envy::from_iter(self.vars.clone()).map_err(|e| ConfigError::Inconsistent {
            var: "environment".into(),
            reason: e.to_string(),
        })
    }

    /// Every variable, for the prefix-driven rules (DCS parameters).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A variable's value when it is set, even to nothing.
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// A variable's value when it is set and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The Spilo variables as strings; parsing and validation happen in the
/// concern modules, which know what each value means.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Vars {
    pub(crate) pghome: Option<String>,
    pub(crate) pgroot: Option<String>,
    pub(crate) pgdata: Option<String>,
    pub(crate) pglog: Option<String>,
    pub(crate) pgwal: Option<String>,
    pub(crate) rw_dir: Option<String>,
    pub(crate) wale_env_dir: Option<String>,
    pub(crate) log_env_dir: Option<String>,

    pub(crate) scope: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) pod_ip: Option<String>,
    pub(crate) pod_namespace: Option<String>,
    pub(crate) pgport: Option<String>,
    pub(crate) apiport: Option<String>,
    pub(crate) restapi_connect_address: Option<String>,
    pub(crate) pg_connect_address: Option<String>,

    pub(crate) kubernetes_service_host: Option<String>,
    pub(crate) kubernetes_service_port: Option<String>,
    pub(crate) spilo_service_account_dir: Option<String>,
    pub(crate) dcs_enable_kubernetes_api: Option<String>,
    pub(crate) kubernetes_labels: Option<String>,
    pub(crate) kubernetes_bootstrap_labels: Option<String>,
    pub(crate) kubernetes_scope_label: Option<String>,
    pub(crate) kubernetes_role_label: Option<String>,
    pub(crate) kubernetes_leader_label_value: Option<String>,
    pub(crate) kubernetes_standby_leader_label_value: Option<String>,
    pub(crate) kubernetes_use_configmaps: Option<String>,

    pub(crate) pgversion: Option<String>,

    pub(crate) pguser_superuser: Option<String>,
    pub(crate) pgpassword_superuser: Option<String>,
    pub(crate) pguser_standby: Option<String>,
    pub(crate) pgpassword_standby: Option<String>,
    pub(crate) pguser_admin: Option<String>,
    pub(crate) pgpassword_admin: Option<String>,
    pub(crate) human_role: Option<String>,
    pub(crate) pam_oauth2: Option<String>,
    pub(crate) allow_nossl: Option<String>,

    pub(crate) ssl_certificate_file: Option<String>,
    pub(crate) ssl_private_key_file: Option<String>,
    pub(crate) ssl_ca_file: Option<String>,
    pub(crate) ssl_crl_file: Option<String>,
    pub(crate) ssl_certificate: Option<String>,
    pub(crate) ssl_private_key: Option<String>,
    pub(crate) ssl_ca: Option<String>,
    pub(crate) ssl_crl: Option<String>,
    pub(crate) ssl_restapi_certificate_file: Option<String>,
    pub(crate) ssl_restapi_private_key_file: Option<String>,
    pub(crate) ssl_restapi_ca_file: Option<String>,
    pub(crate) ssl_restapi_certificate: Option<String>,
    pub(crate) ssl_restapi_private_key: Option<String>,
    pub(crate) ssl_restapi_ca: Option<String>,

    pub(crate) initdb_locale: Option<String>,
    pub(crate) spilo_configuration: Option<String>,
    pub(crate) patroni_configuration: Option<String>,

    pub(crate) pgbouncer_configuration: Option<String>,
    pub(crate) pgbouncer_authentication: Option<String>,
    pub(crate) pgbouncer_auth: Option<String>,

    pub(crate) bgmon_enabled: Option<String>,
    pub(crate) bgmon_listen_ip: Option<String>,
    pub(crate) bgmon_port: Option<String>,
    pub(crate) bgmon_naptime: Option<String>,
    pub(crate) bgmon_history_buckets: Option<String>,
    pub(crate) bgmon_query_text: Option<String>,
}

/// Treats an empty value like an unset one, as Spilo's shell heritage does.
pub(crate) fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Booleans are true only for true/yes/on/1 and false only for
/// false/no/off/0 (any case) or empty; anything else is an error rather
/// than Spilo's "any non-empty value is true".
pub(crate) fn parse_bool(var: &str, value: &Option<String>) -> Result<bool, ConfigError> {
    let Some(raw) = set(value) else {
        return Ok(false);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(ConfigError::invalid(
            var,
            raw,
            "not a boolean (use true/yes/on/1 or false/no/off/0)",
        )),
    }
}

/// A TCP port, 1 to 65535.
pub(crate) fn parse_port(
    var: &str,
    value: &Option<String>,
    default: u16,
) -> Result<u16, ConfigError> {
    match set(value) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(ConfigError::invalid(
                var,
                raw,
                "not a TCP port number (1-65535)",
            )),
        },
    }
}

/// A host to connect to, as it goes into a libpq connection string or a
/// Patroni setting: no spaces, quotes or backslashes.
pub(crate) fn check_host(var: &str, host: &str) -> Result<(), ConfigError> {
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return Err(ConfigError::invalid(
            var,
            host,
            "expected a host name or address",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn booleans_are_strict() {
        for t in ["true", "TRUE", "Yes", "on", "ON", "1", " true "] {
            assert!(parse_bool("X", &some(t)).unwrap(), "{t}");
        }
        for f in ["false", "False", "no", "off", "0", ""] {
            assert!(!parse_bool("X", &some(f)).unwrap(), "{f}");
        }
        assert!(!parse_bool("X", &None).unwrap());
        let err = parse_bool("ALLOW_NOSSL", &some("maybe")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ALLOW_NOSSL=maybe: not a boolean")
        );
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(parse_port("PGPORT", &None, 5432).unwrap(), 5432);
        assert_eq!(parse_port("PGPORT", &some("6432"), 5432).unwrap(), 6432);
        for bad in ["0", "70000", "-1", "abc", "5432x"] {
            let err = parse_port("PGPORT", &some(bad), 5432).unwrap_err();
            assert!(err.to_string().starts_with(&format!("PGPORT={bad}:")));
        }
    }

    #[test]
    fn env_files_parse_like_the_fixtures() {
        let env = Env::from_env_file("# comment\nA=1\nB={\"x\": \"=\"}\n\nC=\n");
        assert_eq!(env.get("A"), Some("1"));
        assert_eq!(env.get("B"), Some("{\"x\": \"=\"}"));
        assert_eq!(env.get("C"), None);
        let vars = Env::from_pairs([("PGPORT", "1"), ("SCOPE", "x")])
            .vars()
            .unwrap();
        assert_eq!(vars.scope.as_deref(), Some("x"));
    }
}
