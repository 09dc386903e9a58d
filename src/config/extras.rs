//! Companions configured by variables: pgbouncer; and the variables of
//! clones and standby clusters that are not acted on yet.

use super::env::{Env, Vars, set};
use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pgbouncer {
    /// A complete pgbouncer.ini.
    pub(crate) ini: String,
    /// userlist.txt, when given.
    pub(crate) userlist: Option<String>,
}

impl Pgbouncer {
    pub(crate) fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let userlist = set(&vars.pgbouncer_authentication)
            .or(set(&vars.pgbouncer_auth))
            .map(str::to_owned);
        let Some(ini) = set(&vars.pgbouncer_configuration) else {
            if userlist.is_some() {
                return Err(ConfigError::inconsistent(
                    "PGBOUNCER_AUTHENTICATION",
                    "given without PGBOUNCER_CONFIGURATION",
                ));
            }
            return Ok(None);
        };
        let has_section = ini
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("[pgbouncer]"));
        if !has_section {
            return Err(ConfigError::invalid(
                "PGBOUNCER_CONFIGURATION",
                ini,
                "a pgbouncer.ini needs a [pgbouncer] section",
            ));
        }
        Ok(Some(Pgbouncer {
            ini: ini.to_owned(),
            userlist,
        }))
    }
}

/// Variables that are set but not acted on yet: CLONE_ variables without
/// a clone method, and WAL-E's and WAL-G's store
/// prefixes (the stores are named by their bucket variables). STANDBY_*
/// is acted on or refused (`standby`).
pub(crate) fn unsupported_variables(env: &Env) -> Vec<String> {
    let restores = matches!(
        env.get("CLONE_METHOD"),
        Some("CLONE_WITH_WALE" | "CLONE_WITH_BASEBACKUP")
    );
    env.iter()
        .filter(|(name, value)| {
            !value.is_empty()
                && ((name.starts_with("CLONE_") && !restores)
                    || matches!(
                        *name,
                        "WALE_S3_PREFIX" | "WALG_S3_PREFIX" | "WALE_GS_PREFIX" | "WALG_GS_PREFIX"
                    ))
        })
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbouncer_only_when_configured() {
        assert_eq!(Pgbouncer::from_vars(&Vars::default()).unwrap(), None);
        let vars = Vars {
            pgbouncer_configuration: Some(
                "[databases]\n* = host=127.0.0.1\n[pgbouncer]\nlisten_port = 6432\n".into(),
            ),
            pgbouncer_auth: Some("\"u\" \"p\"\n".into()),
            ..Vars::default()
        };
        let b = Pgbouncer::from_vars(&vars).unwrap().unwrap();
        assert_eq!(b.userlist.as_deref(), Some("\"u\" \"p\"\n"));
    }

    #[test]
    fn pgbouncer_needs_its_section() {
        let vars = Vars {
            pgbouncer_configuration: Some("listen_port = 6432".into()),
            ..Vars::default()
        };
        let err = Pgbouncer::from_vars(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with("PGBOUNCER_CONFIGURATION=listen_port = 6432:"),
            "{err}"
        );
        let vars = Vars {
            pgbouncer_authentication: Some("\"u\" \"p\"".into()),
            ..Vars::default()
        };
        let err = Pgbouncer::from_vars(&vars).unwrap_err().to_string();
        assert_eq!(
            err,
            "PGBOUNCER_AUTHENTICATION: given without PGBOUNCER_CONFIGURATION"
        );
    }

    #[test]
    fn unsupported_variables_are_noticed() {
        let env = Env::from_pairs([
            ("WAL_S3_BUCKET", "b"),
            ("WALG_S3_PREFIX", "s3://x"),
            ("CLONE_SCOPE", "c"),
            ("STANDBY_HOST", "h"),
            ("WAL_BUCKET_SCOPE_PREFIX", ""),
        ]);
        assert_eq!(
            unsupported_variables(&env),
            ["CLONE_SCOPE", "WALG_S3_PREFIX"]
        );
        let env = Env::from_pairs([("CLONE_METHOD", "CLONE_WITH_WALE"), ("CLONE_SCOPE", "c")]);
        assert!(unsupported_variables(&env).is_empty());
        let env = Env::from_pairs([
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_HOST", "h"),
        ]);
        assert!(unsupported_variables(&env).is_empty());
    }
}
