//! A clone of a running cluster by base backup, as the operator asks for
//! it (`CLONE_METHOD=CLONE_WITH_BASEBACKUP`, `CLONE_HOST`, `CLONE_PORT`,
//! `CLONE_USER`, `CLONE_PASSWORD`): Patroni's bootstrap copies the source
//! with pg_basebackup instead of running initdb.

use super::env::{Env, check_host, parse_port};
use super::error::ConfigError;

/// Where the source cluster is and who may copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BasebackupClone {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    /// Written to a pgpass file, never to a command line.
    pub(crate) password: Option<String>,
}

impl BasebackupClone {
    /// The clone CLONE_METHOD=CLONE_WITH_BASEBACKUP asks for; None for any
    /// other method.
    pub(crate) fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        match env.get("CLONE_METHOD") {
            Some("CLONE_WITH_BASEBACKUP") => {}
            None | Some("CLONE_WITH_WALE") => return Ok(None),
            // A clone asked for in a way we do not know must not become a
            // new, empty cluster.
            Some(other) => {
                return Err(ConfigError::invalid(
                    "CLONE_METHOD",
                    other,
                    "expected CLONE_WITH_BASEBACKUP or CLONE_WITH_WALE",
                ));
            }
        }
        let needed = |var: &str, what: &str| {
            env.get(var).map(str::trim).ok_or_else(|| {
                ConfigError::inconsistent(
                    var,
                    format!("CLONE_METHOD=CLONE_WITH_BASEBACKUP needs {what}"),
                )
            })
        };
        let host = needed("CLONE_HOST", "the source cluster's host")?;
        check_host("CLONE_HOST", host)?;
        let user = needed("CLONE_USER", "a replication user of the source")?;
        if user.chars().any(|c| c == '\'' || c == '\\' || c == ':') {
            return Err(ConfigError::invalid(
                "CLONE_USER",
                user,
                "expected a role name without quotes, backslashes or colons",
            ));
        }
        let port = parse_port(
            "CLONE_PORT",
            &env.get("CLONE_PORT").map(str::to_owned),
            5432,
        )?;
        Ok(Some(BasebackupClone {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: env.get("CLONE_PASSWORD").map(str::to_owned),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<BasebackupClone>, String> {
        BasebackupClone::from_env(&Env::from_pairs(pairs.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_operators_variables() {
        let clone = read(&[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_HOST", "acid-source.default"),
            ("CLONE_PORT", "5433"),
            ("CLONE_USER", "standby"),
            ("CLONE_PASSWORD", "s3cret"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            clone,
            BasebackupClone {
                host: "acid-source.default".into(),
                port: 5433,
                user: "standby".into(),
                password: Some("s3cret".into()),
            }
        );
        assert_eq!(clone_port_default(), 5432);
        assert_eq!(read(&[("CLONE_METHOD", "CLONE_WITH_WALE")]), Ok(None));
        assert_eq!(read(&[("CLONE_HOST", "h")]), Ok(None));
    }

    fn clone_port_default() -> u16 {
        read(&[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_HOST", "h"),
            ("CLONE_USER", "standby"),
        ])
        .unwrap()
        .unwrap()
        .port
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let method = ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP");
        let err = read(&[method, ("CLONE_USER", "standby")]).unwrap_err();
        assert!(err.starts_with("CLONE_HOST: "), "{err}");
        let err = read(&[method, ("CLONE_HOST", "h")]).unwrap_err();
        assert!(err.starts_with("CLONE_USER: "), "{err}");
        let err = read(&[
            method,
            ("CLONE_HOST", "h"),
            ("CLONE_USER", "standby"),
            ("CLONE_PORT", "99999"),
        ])
        .unwrap_err();
        assert!(err.starts_with("CLONE_PORT"), "{err}");
        let err = read(&[method, ("CLONE_HOST", "a b"), ("CLONE_USER", "s")]).unwrap_err();
        assert!(err.starts_with("CLONE_HOST"), "{err}");
        let err = read(&[("CLONE_METHOD", "CLONE_WITH_MAGIC")]).unwrap_err();
        assert!(err.starts_with("CLONE_METHOD"), "{err}");
    }
}
