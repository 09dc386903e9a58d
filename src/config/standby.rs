//! A standby cluster that streams from a remote primary, as the operator
//! asks for it (`spec.standby.standby_host`: `STANDBY_HOST`,
//! `STANDBY_PORT`, `STANDBY_PRIMARY_SLOT_NAME`): Patroni's
//! `bootstrap.dcs.standby_cluster`. One fed from an archive is refused
//! until it exists: it must never become a new, empty primary.

use super::env::{Env, check_host, parse_port};
use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standby {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) primary_slot_name: Option<String>,
}

/// The variables of a standby fed from the source's archive.
const ARCHIVE_VARS: &[&str] = &[
    "STANDBY_METHOD",
    "STANDBY_WALE_S3_PREFIX",
    "STANDBY_WALE_GS_PREFIX",
    "STANDBY_WAL_S3_BUCKET",
    "STANDBY_WAL_GS_BUCKET",
];

impl Standby {
    pub(crate) fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        if let Some(var) = ARCHIVE_VARS.iter().find(|var| env.get(var).is_some()) {
            return Err(ConfigError::inconsistent(
                var,
                "a standby cluster fed from an archive is not supported yet; stream from the source with STANDBY_HOST",
            ));
        }
        let Some(host) = env.get("STANDBY_HOST").map(str::trim) else {
            if let Some(var) = ["STANDBY_PORT", "STANDBY_PRIMARY_SLOT_NAME"]
                .into_iter()
                .find(|var| env.get(var).is_some())
            {
                return Err(ConfigError::inconsistent(
                    var,
                    "a standby cluster needs STANDBY_HOST, the primary to stream from",
                ));
            }
            return Ok(None);
        };
        check_host("STANDBY_HOST", host)?;
        let port = parse_port(
            "STANDBY_PORT",
            &env.get("STANDBY_PORT").map(str::to_owned),
            5432,
        )?;
        let primary_slot_name = env
            .get("STANDBY_PRIMARY_SLOT_NAME")
            .map(str::trim)
            .map(|slot| {
                // PostgreSQL's rule for slot names.
                if !slot.is_empty()
                    && slot.len() <= 63
                    && slot
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    Ok(slot.to_owned())
                } else {
                    Err(ConfigError::invalid(
                        "STANDBY_PRIMARY_SLOT_NAME",
                        slot,
                        "a slot name is 1 to 63 lower-case letters, digits and underscores",
                    ))
                }
            })
            .transpose()?;
        Ok(Some(Standby {
            host: host.to_owned(),
            port,
            primary_slot_name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<Standby>, String> {
        Standby::from_env(&Env::from_pairs(pairs.iter().copied())).map_err(|e| e.to_string())
    }

    #[test]
    fn the_operators_streaming_variables() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(
            read(&[
                ("STANDBY_HOST", "acid-source.default"),
                ("STANDBY_PORT", "5433"),
                ("STANDBY_PRIMARY_SLOT_NAME", "standby_slot"),
            ]),
            Ok(Some(Standby {
                host: "acid-source.default".into(),
                port: 5433,
                primary_slot_name: Some("standby_slot".into()),
            }))
        );
        assert_eq!(
            read(&[("STANDBY_HOST", "10.0.0.9")]).unwrap().unwrap().port,
            5432
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_an_error() {
        for (pairs, var) in [
            (
                &[
                    ("STANDBY_METHOD", "STANDBY_WITH_WALE"),
                    ("STANDBY_WALE_S3_PREFIX", "s3://b/spilo/x/wal/15"),
                ][..],
                "STANDBY_METHOD",
            ),
            (&[("STANDBY_PORT", "5432")][..], "STANDBY_PORT"),
            (
                &[("STANDBY_HOST", "h"), ("STANDBY_PORT", "0")][..],
                "STANDBY_PORT",
            ),
            (
                &[
                    ("STANDBY_HOST", "h"),
                    ("STANDBY_PRIMARY_SLOT_NAME", "Bad-Slot"),
                ][..],
                "STANDBY_PRIMARY_SLOT_NAME",
            ),
        ] {
            let err = read(pairs).unwrap_err();
            assert!(err.starts_with(var), "{pairs:?}: {err}");
        }
    }
}
