//! A standby cluster, as the operator asks for it (`spec.standby`): one
//! that streams from a remote primary (`STANDBY_HOST`, `STANDBY_PORT`,
//! `STANDBY_PRIMARY_SLOT_NAME`), one that replays the source's archive
//! (`STANDBY_METHOD=STANDBY_WITH_WALE` with `STANDBY_WALE_S3_PREFIX` or
//! `STANDBY_WALE_GS_PREFIX`), or both: Patroni's
//! `bootstrap.dcs.standby_cluster`. Whatever is asked for and cannot be
//! honoured is an error: a standby must never become a new, empty primary.

use super::backup::Archive;
use super::env::{Env, check_host, parse_port};
use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standby {
    /// The primary to stream from; None: the archive only.
    pub(crate) source: Option<Source>,
    /// The source's archive; None: streaming only.
    pub(crate) archive: Option<Archive>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) primary_slot_name: Option<String>,
}

impl Standby {
    pub(crate) fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let archive = Archive::standby_from_env(env)?;
        match env.get("STANDBY_METHOD").map(str::trim) {
            None => {}
            Some("STANDBY_WITH_WALE") if archive.is_some() => {}
            Some("STANDBY_WITH_WALE") => {
                return Err(ConfigError::inconsistent(
                    "STANDBY_METHOD",
                    "STANDBY_WITH_WALE needs the source's archive: STANDBY_WALE_S3_PREFIX, STANDBY_WALE_GS_PREFIX, or STANDBY_WAL_S3_BUCKET / STANDBY_WAL_GS_BUCKET with STANDBY_SCOPE",
                ));
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    "STANDBY_METHOD",
                    other,
                    "expected STANDBY_WITH_WALE",
                ));
            }
        }
        let source = Source::from_env(env)?;
        if source.is_none() && archive.is_none() {
            return Ok(None);
        }
        Ok(Some(Standby { source, archive }))
    }
}

impl Source {
    fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(host) = env.get("STANDBY_HOST").map(str::trim) else {
            if let Some(var) = ["STANDBY_PORT", "STANDBY_PRIMARY_SLOT_NAME"]
                .into_iter()
                .find(|var| env.get(var).is_some())
            {
                return Err(ConfigError::inconsistent(
                    var,
                    "streaming needs STANDBY_HOST, the primary to stream from",
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
        Ok(Some(Source {
            host: host.to_owned(),
            port,
            primary_slot_name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::backup::{Repository, Store};

    fn read(pairs: &[(&str, &str)]) -> Result<Option<Standby>, String> {
        Standby::from_env(&Env::from_pairs(pairs.iter().copied())).map_err(|e| e.to_string())
    }

    fn archive_of(pairs: &[(&str, &str)]) -> (Repository, String) {
        let archive = read(pairs).unwrap().unwrap().archive.unwrap();
        (archive.repository, archive.stanza)
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
                source: Some(Source {
                    host: "acid-source.default".into(),
                    port: 5433,
                    primary_slot_name: Some("standby_slot".into()),
                }),
                archive: None,
            }))
        );
        let standby = read(&[("STANDBY_HOST", "10.0.0.9")]).unwrap().unwrap();
        assert_eq!(standby.source.unwrap().port, 5432);
    }

    #[test]
    fn the_operators_archive_variables() {
        let operator = [
            ("STANDBY_METHOD", "STANDBY_WITH_WALE"),
            ("STANDBY_WAL_BUCKET_SCOPE_PREFIX", ""),
        ];
        for (prefix, path) in [
            (
                "s3://backups/spilo/acid-source/5c4e-11/wal/15",
                "/spilo/acid-source/5c4e-11/pgbackrest",
            ),
            (
                "s3://backups/spilo/acid-source/wal",
                "/spilo/acid-source/pgbackrest",
            ),
            (
                "s3://backups/team/spilo/acid-source/wal/17/",
                "/team/spilo/acid-source/pgbackrest",
            ),
        ] {
            let mut pairs = operator.to_vec();
            pairs.push(("STANDBY_WALE_S3_PREFIX", prefix));
            let (repository, stanza) = archive_of(&pairs);
            assert_eq!(repository.path, path, "{prefix}");
            assert_eq!(stanza, "acid-source", "{prefix}");
            assert!(
                matches!(&repository.store, Store::S3(s3) if s3.bucket == "backups"),
                "{prefix}"
            );
        }
        let (repository, _) = archive_of(&[(
            "STANDBY_WALE_GS_PREFIX",
            "gs://gcs-backups/spilo/acid-source/uid/wal/15",
        )]);
        assert!(
            matches!(repository.store, Store::Gcs { ref bucket, .. } if bucket == "gcs-backups")
        );
        // Streaming and the archive together.
        let standby = read(&[
            ("STANDBY_HOST", "acid-source"),
            (
                "STANDBY_WALE_S3_PREFIX",
                "s3://backups/spilo/acid-source/wal/15",
            ),
        ])
        .unwrap()
        .unwrap();
        assert!(standby.source.is_some() && standby.archive.is_some());
        // Spilo's own form: a bucket and the source's scope.
        let (repository, stanza) = archive_of(&[
            ("STANDBY_WAL_S3_BUCKET", "backups"),
            ("STANDBY_SCOPE", "acid-source"),
            ("STANDBY_WAL_BUCKET_SCOPE_SUFFIX", "/uid"),
        ]);
        assert_eq!(repository.path, "/spilo/acid-source/uid/pgbackrest");
        assert_eq!(stanza, "acid-source");
    }

    #[test]
    fn what_cannot_be_honoured_is_an_error() {
        for (pairs, var) in [
            (
                &[("STANDBY_METHOD", "STANDBY_WITH_WALE")][..],
                "STANDBY_METHOD",
            ),
            (
                &[
                    ("STANDBY_METHOD", "STANDBY_WITH_MAGIC"),
                    ("STANDBY_WALE_S3_PREFIX", "s3://backups/spilo/x/wal/15"),
                ][..],
                "STANDBY_METHOD",
            ),
            (
                &[("STANDBY_WALE_S3_PREFIX", "s3://bucket/somewhere/else")][..],
                "STANDBY_WALE_S3_PREFIX",
            ),
            (
                &[("STANDBY_WALE_S3_PREFIX", "gs://bucket/spilo/x/wal")][..],
                "STANDBY_WALE_S3_PREFIX",
            ),
            (
                &[("STANDBY_WALE_S3_PREFIX", "s3://bucket/spilo/../wal")][..],
                "STANDBY_WALE_S3_PREFIX",
            ),
            (
                &[
                    ("STANDBY_WALE_S3_PREFIX", "s3://b1/spilo/x/wal"),
                    ("STANDBY_WALE_GS_PREFIX", "gs://b2/spilo/x/wal"),
                ][..],
                "STANDBY_WALE_S3_PREFIX",
            ),
            (
                &[("STANDBY_WAL_S3_BUCKET", "backups")][..],
                "STANDBY_WAL_S3_BUCKET",
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
