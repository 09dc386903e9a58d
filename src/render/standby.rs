//! A standby cluster in Patroni's configuration: `standby_cluster`, the
//! replica methods its leader copies the source with (Spilo's names, which
//! the operator's standby patch lists), and Spilo's env-standby directory,
//! which the patch's restore_command reads with envdir.

use serde_json::{Map, Value, json};

use super::{Output, pgbackrest, shell_quote};
use crate::config::{Config, Standby};

/// The leader's copy from the source's archive.
pub(crate) const FROM_ARCHIVE: &str = "bootstrap_standby_with_wale";
/// A copy from a running primary (pg_basebackup, WAL streamed).
pub(crate) const BASEBACKUP: &str = "basebackup_fast_xlog";

/// `bootstrap.dcs.standby_cluster`: where the standby leader copies its
/// data from and follows.
pub(crate) fn standby_cluster(config: &Config, standby: &Standby) -> Value {
    let mut methods = Vec::new();
    if standby.archive.is_some() {
        methods.push(FROM_ARCHIVE);
    }
    // Patroni leaves it out when there is no host to copy from.
    methods.push(BASEBACKUP);
    let mut cluster = json!({ "create_replica_methods": methods });
    if let Some(source) = &standby.source {
        cluster["host"] = json!(source.host);
        cluster["port"] = json!(source.port);
        if let Some(slot) = &source.primary_slot_name {
            cluster["primary_slot_name"] = json!(slot);
        }
    }
    if let Some(archive) = &standby.archive {
        cluster["restore_command"] = json!(format!(
            "{} archive-get %f \"%p\"",
            pgbackrest::command(&config.paths.pgbackrest_standby_config(), &archive.stanza)
        ));
    }
    cluster
}

/// The replica methods of `postgresql`: BASEBACKUP for every cluster (a
/// Spilo user's configuration may name it), FROM_ARCHIVE for a standby.
pub(crate) fn replica_methods(config: &Config) -> Map<String, Value> {
    let mut copy = format!(
        "{} basebackup --major {} --bin-dir {}",
        shell_quote(&config.program.display().to_string()),
        config.version.major,
        shell_quote(&config.version.bin_dir.display().to_string()),
    );
    if let Some(wal) = &config.paths.pgwal {
        copy.push_str(&format!(
            " --waldir {}",
            shell_quote(&wal.display().to_string())
        ));
    }
    // Patroni adds --datadir and --connstring (the password in PGPASSFILE).
    let mut methods = Map::new();
    methods.insert(BASEBACKUP.to_owned(), json!({ "command": copy }));
    let Some(standby) = &config.standby else {
        return methods;
    };
    let from_archive = match &standby.archive {
        Some(archive) => json!({
            "command": format!(
                "{} {} --log-level-console=info restore --type=standby",
                pgbackrest::restore_wrapper(config, &archive.stanza, false),
                pgbackrest::command(&config.paths.pgbackrest_standby_config(), &archive.stanza)
            ),
            "no_params": true,
            "no_leader": 1,
        }),
        // The operator's patch lists it for a streaming standby too: it
        // says why it cannot, and Patroni goes on to the next method.
        None => json!({
            "command": "/bin/sh -c 'echo \"no source archive for this standby (STANDBY_WALE_S3_PREFIX, STANDBY_WALE_GS_PREFIX): copying from STANDBY_HOST instead\" >&2; exit 1'",
            "no_params": true,
        }),
    };
    methods.insert(FROM_ARCHIVE.to_owned(), from_archive);
    methods
}

/// The env-standby directory: what `/scripts/restore_command.sh` needs to
/// fetch from the source's archive. For a streaming standby, an empty
/// PGBACKREST_STANZA (envdir unsets it): the script then fetches nothing.
pub(crate) fn files(config: &Config) -> Vec<Output> {
    let Some(standby) = &config.standby else {
        return Vec::new();
    };
    let dir = config.paths.standby_env_dir();
    let file = |name: &str, value: String| Output::File {
        path: dir.join(name),
        contents: value.into_bytes(),
        mode: 0o644,
        redacted: None,
    };
    match &standby.archive {
        Some(archive) => vec![
            file(
                "PGBACKREST_CONFIG",
                format!("{}\n", config.paths.pgbackrest_standby_config().display()),
            ),
            file("PGBACKREST_STANZA", format!("{}\n", archive.stanza)),
        ],
        None => vec![file("PGBACKREST_STANZA", String::new())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::config_on;

    fn config(extra: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let mut pairs = vec![("SCOPE", "acid-standby")];
        pairs.extend_from_slice(extra);
        config_on(crate::config::System::default(), &pairs)
    }

    const OPERATOR_ARCHIVE: [(&str, &str); 3] = [
        ("STANDBY_METHOD", "STANDBY_WITH_WALE"),
        (
            "STANDBY_WALE_S3_PREFIX",
            "s3://backups/spilo/acid-source/uid-1/wal/17",
        ),
        ("STANDBY_WAL_BUCKET_SCOPE_PREFIX", ""),
    ];

    #[test]
    fn a_streaming_standby_copies_and_follows_its_source() {
        let (_dir, config) = config(&[
            ("STANDBY_HOST", "acid-source.default"),
            ("STANDBY_PRIMARY_SLOT_NAME", "standby_slot"),
        ]);
        let standby = config.standby.as_ref().unwrap();
        assert_eq!(
            standby_cluster(&config, standby),
            json!({
                "host": "acid-source.default",
                "port": 5432,
                "primary_slot_name": "standby_slot",
                "create_replica_methods": [BASEBACKUP],
            })
        );
        let methods = replica_methods(&config);
        let copy = methods[BASEBACKUP]["command"].as_str().unwrap();
        assert!(copy.contains(" basebackup --major 17 --bin-dir "), "{copy}");
        let refused = methods[FROM_ARCHIVE]["command"].as_str().unwrap();
        assert!(refused.contains("exit 1"), "{refused}");
        assert_eq!(methods[FROM_ARCHIVE].get("no_leader"), None);
        let files = files(&config);
        assert_eq!(files.len(), 1);
        let Output::File { path, contents, .. } = &files[0] else {
            panic!("{files:?}")
        };
        assert!(path.ends_with("etc/wal-e.d/env-standby/PGBACKREST_STANZA"));
        assert!(contents.is_empty());
    }

    #[test]
    fn an_archive_standby_restores_and_replays_the_sources_repository() {
        let (_dir, config) = config(&OPERATOR_ARCHIVE);
        let standby = config.standby.as_ref().unwrap();
        let cluster = standby_cluster(&config, standby);
        let conf = config.paths.pgbackrest_standby_config();
        assert_eq!(
            cluster,
            json!({
                "create_replica_methods": [FROM_ARCHIVE, BASEBACKUP],
                "restore_command": format!(
                    "pgbackrest --config={} --stanza=acid-source archive-get %f \"%p\"",
                    conf.display()
                ),
            })
        );
        let methods = replica_methods(&config);
        let restore = methods[FROM_ARCHIVE]["command"].as_str().unwrap();
        assert!(
            restore.contains(" clone-restore --major 17 ")
                && !restore.contains("--upgrade-with")
                && restore.ends_with(&format!(
                    " -- pgbackrest --config={} --stanza=acid-source --log-level-console=info restore --type=standby",
                    conf.display()
                )),
            "{restore}"
        );
        assert_eq!(methods[FROM_ARCHIVE]["no_params"], json!(true));
        assert_eq!(methods[FROM_ARCHIVE]["no_leader"], json!(1));
        let written: Vec<(String, String)> = files(&config)
            .into_iter()
            .map(|f| match f {
                Output::File { path, contents, .. } => (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    String::from_utf8(contents).unwrap(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            written,
            [
                (
                    "PGBACKREST_CONFIG".to_owned(),
                    format!("{}\n", conf.display())
                ),
                ("PGBACKREST_STANZA".to_owned(), "acid-source\n".to_owned()),
            ]
        );
    }

    #[test]
    fn the_source_repository_is_configured_apart_from_our_own() {
        let mut pairs = OPERATOR_ARCHIVE.to_vec();
        pairs.extend([
            ("WAL_S3_BUCKET", "backups"),
            ("WAL_BUCKET_SCOPE_SUFFIX", "/uid-2"),
        ]);
        let (_dir, config) = config(&pairs);
        let texts: Vec<String> = pgbackrest::files(&config)
            .into_iter()
            .map(|f| match f {
                Output::File { contents, .. } => String::from_utf8(contents).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts.len(), 2);
        assert!(texts[0].contains("repo1-path=/spilo/acid-standby/uid-2/pgbackrest\n"));
        assert!(texts[0].contains("\n[acid-standby]\n"));
        assert!(texts[1].contains("repo1-path=/spilo/acid-source/uid-1/pgbackrest\n"));
        assert!(texts[1].contains("\n[acid-source]\n"));
        assert!(!texts[1].contains("retention"), "{}", texts[1]);
    }

    #[test]
    fn without_a_standby_only_the_basebackup_method() {
        let (_dir, config) = config(&[]);
        let methods = replica_methods(&config);
        assert_eq!(methods.keys().collect::<Vec<_>>(), [BASEBACKUP]);
        assert!(files(&config).is_empty());
    }
}
