//! pgBackRest's configuration: this cluster's repository (archiving and
//! backups) and, for a restore, the source's; and the commands Patroni's
//! configuration runs them with.

use serde_json::{Value, json};

use super::{Output, REDACTED, backup_tls, shell_quote};
use crate::config::backup::{AzureKey, Repository, S3Credentials, Store};
use crate::config::{Config, Restore};

/// The program, found on PATH by PostgreSQL, Patroni and the scheduler.
pub(crate) const PROGRAM: &str = "pgbackrest";

/// The bootstrap method of a restore in Patroni's configuration.
pub(crate) const RESTORE_METHOD: &str = "pgbackrest_restore";

/// One `key=value` line of a section.
type Options = Vec<(&'static str, String)>;

/// The configuration files, 0600: they hold the store's credentials.
pub(crate) fn files(config: &Config) -> Vec<Output> {
    let paths = &config.paths;
    let mut out = Vec::new();
    if let Some(backup) = &config.backup {
        let mut global = repository_options(&backup.repository);
        global.extend([
            ("repo1-retention-full-type", "count".to_owned()),
            ("repo1-retention-full", backup.retain_full.to_string()),
            ("process-max", backup.process_max.to_string()),
            ("compress-type", backup.compress_type.clone()),
        ]);
        if let Some(level) = backup.compress_level {
            global.push(("compress-level", level.to_string()));
        }
        global.extend([
            // archive-push returns as soon as the segment is queued; a
            // store that is slow or down does not hold up PostgreSQL.
            ("archive-async", "y".to_owned()),
            ("start-fast", "y".to_owned()),
            ("delta", "y".to_owned()),
        ]);
        let server = backup
            .from_replica
            .then(|| ("global:server", server_options(config, &backup.stanza)));
        out.push(file(
            config,
            paths.pgbackrest_config(),
            global,
            &backup.stanza,
            server,
        ));
    }
    // The sources' repositories, read and never written.
    let archive = config.standby.as_ref().and_then(|s| s.archive.as_ref());
    for (path, repository, stanza) in [
        config
            .restore
            .as_ref()
            .map(|r| (paths.pgbackrest_restore_config(), &r.repository, &r.stanza)),
        archive.map(|a| (paths.pgbackrest_standby_config(), &a.repository, &a.stanza)),
    ]
    .into_iter()
    .flatten()
    {
        let mut global = repository_options(repository);
        global.push((
            "process-max",
            config
                .backup
                .as_ref()
                .map_or(1, |b| b.process_max)
                .to_string(),
        ));
        out.push(file(config, path, global, stanza, None));
    }
    out
}

/// The TLS server a primary's backup reads this member's files through
/// when it is a replica (WALG_BACKUP_FROM_REPLICA). It listens on the
/// address the peers dial when that is an IP address.
fn server_options(config: &Config, stanza: &str) -> Options {
    let host = &config.identity.pg_connect_host;
    let address = if host.parse::<std::net::IpAddr>().is_ok() {
        host.clone()
    } else {
        "*".to_owned()
    };
    let tls = |name| config.paths.pgbackrest_tls(name).display().to_string();
    vec![
        ("tls-server-address", address),
        ("tls-server-port", backup_tls::PORT.to_string()),
        ("tls-server-ca-file", tls("ca.crt")),
        ("tls-server-cert-file", tls("server.crt")),
        ("tls-server-key-file", tls("member.key")),
        (
            "tls-server-auth",
            format!("{}={stanza}", backup_tls::CLIENT_NAME),
        ),
    ]
}

/// A file: `[global]` with the given options and the local paths, the
/// stanza of this data directory, and a command's section if any.
fn file(
    config: &Config,
    path: std::path::PathBuf,
    mut global: Options,
    stanza: &str,
    command: Option<(&str, Options)>,
) -> Output {
    let paths = &config.paths;
    global.extend([
        ("spool-path", paths.pgbackrest_spool().display().to_string()),
        ("lock-path", paths.pgbackrest_lock().display().to_string()),
        // Its files would grow unrotated in RW_DIR (memory on a pod): the
        // console goes to the container log, archive-push's errors stay
        // in the spool.
        ("log-level-file", "off".to_owned()),
        // What a replica's archive-get fetches ahead sits in the spool.
        ("archive-get-queue-max", "32MiB".to_owned()),
    ]);
    let database: Options = vec![
        ("pg1-path", config.paths.pgdata.display().to_string()),
        ("pg1-port", config.identity.pg_port.to_string()),
        (
            "pg1-socket-path",
            config.paths.socket_dir().display().to_string(),
        ),
        ("pg1-user", config.auth.superuser.username.clone()),
    ];
    // The asynchronous push gives up within archive-timeout (60 s), so
    // that PostgreSQL's archive_command fails with pgBackRest's reason in
    // the spool, not with a bare timeout: a connection is tried about
    // eight times io-timeout before it fails.
    let push: Options = vec![("io-timeout", "5".to_owned())];
    let header = "# pgBackRest configuration, generated by `spilo configure` from the environment\n# and rewritten at every start: change the variables, not this file.\n";
    let mut text = format!(
        "{header}{}{}",
        section("global", &global),
        section("global:archive-push", &push),
    );
    if let Some((name, options)) = command {
        text.push_str(&section(name, &options));
    }
    text.push_str(&section(stanza, &database));
    let shown = global.iter().fold(text.clone(), |shown, (key, value)| {
        if secret(key) {
            shown.replace(&format!("{key}={value}\n"), &format!("{key}={REDACTED}\n"))
        } else {
            shown
        }
    });
    Output::File {
        path,
        redacted: (shown != text).then_some(shown),
        contents: text.into_bytes(),
        mode: 0o600,
    }
}

fn secret(key: &str) -> bool {
    matches!(
        key,
        "repo1-s3-key-secret" | "repo1-s3-token" | "repo1-azure-key"
    )
}

fn section(name: &str, options: &Options) -> String {
    let lines: String = options
        .iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect();
    format!("\n[{name}]\n{lines}")
}

/// The `repo1-*` options of a repository.
fn repository_options(repository: &Repository) -> Options {
    let mut options: Options = Vec::new();
    match &repository.store {
        Store::S3(s3) => {
            options.extend([
                ("repo1-type", "s3".to_owned()),
                ("repo1-s3-bucket", s3.bucket.clone()),
                (
                    "repo1-s3-endpoint",
                    s3.endpoint
                        .clone()
                        .unwrap_or_else(|| format!("s3.{}.amazonaws.com", s3.region)),
                ),
                ("repo1-s3-region", s3.region.clone()),
            ]);
            if let Some(port) = s3.port {
                options.push(("repo1-storage-port", port.to_string()));
            }
            if s3.path_style {
                options.push(("repo1-s3-uri-style", "path".to_owned()));
            }
            match &s3.credentials {
                S3Credentials::Shared { key, secret, token } => {
                    options.extend([
                        ("repo1-s3-key-type", "shared".to_owned()),
                        ("repo1-s3-key", key.clone()),
                        ("repo1-s3-key-secret", secret.clone()),
                    ]);
                    if let Some(token) = token {
                        options.push(("repo1-s3-token", token.clone()));
                    }
                }
                S3Credentials::WebIdentity => {
                    options.push(("repo1-s3-key-type", "web-id".to_owned()));
                }
                S3Credentials::Instance => {
                    options.push(("repo1-s3-key-type", "auto".to_owned()));
                }
            }
            if let Some(id) = &s3.kms_key_id {
                options.push(("repo1-s3-kms-key-id", id.clone()));
            }
            if let Some(ca) = &s3.ca_file {
                options.push(("repo1-storage-ca-file", ca.display().to_string()));
            }
        }
        Store::Gcs { bucket, key_file } => {
            options.extend([
                ("repo1-type", "gcs".to_owned()),
                ("repo1-gcs-bucket", bucket.clone()),
            ]);
            match key_file {
                Some(file) => options.extend([
                    ("repo1-gcs-key-type", "service".to_owned()),
                    ("repo1-gcs-key", file.display().to_string()),
                ]),
                None => options.push(("repo1-gcs-key-type", "auto".to_owned())),
            }
        }
        Store::Azure {
            account,
            container,
            key,
        } => {
            let (kind, key) = match key {
                AzureKey::Shared(key) => ("shared", key),
                AzureKey::Sas(token) => ("sas", token),
            };
            options.extend([
                ("repo1-type", "azure".to_owned()),
                ("repo1-azure-account", account.clone()),
                ("repo1-azure-container", container.clone()),
                ("repo1-azure-key-type", kind.to_owned()),
                ("repo1-azure-key", key.clone()),
            ]);
        }
        Store::Posix => options.push(("repo1-type", "posix".to_owned())),
    }
    options.push(("repo1-path", repository.path.clone()));
    options
}

/// `pgbackrest --config=... --stanza=...` for a configuration file.
pub(crate) fn command(config_file: &std::path::Path, stanza: &str) -> String {
    format!(
        "{PROGRAM} {} {}",
        shell_quote(&format!("--config={}", config_file.display())),
        shell_quote(&format!("--stanza={stanza}"))
    )
}

/// archive_command: every node pushes to the archive once it is primary.
pub(crate) fn archive_command(config: &Config) -> Option<String> {
    let backup = config.backup.as_ref()?;
    Some(format!(
        "{} archive-push \"%p\"",
        command(&config.paths.pgbackrest_config(), &backup.stanza)
    ))
}

/// restore_command: a replica that fell behind its slot catches up from
/// the archive.
pub(crate) fn restore_command(config: &Config) -> Option<String> {
    let backup = config.backup.as_ref()?;
    Some(format!(
        "{} archive-get %f \"%p\"",
        command(&config.paths.pgbackrest_config(), &backup.stanza)
    ))
}

/// The bootstrap method that restores the source's repository, then
/// recovers to the target and promotes. Patroni discards the recovery
/// settings pgBackRest writes and uses `recovery_conf`; pgBackRest's own
/// target only picks the backup to start from.
pub(crate) fn restore_method(config: &Config, restore: &Restore) -> Value {
    let base = command(&config.paths.pgbackrest_restore_config(), &restore.stanza);
    let mut restore_args = String::from(" --log-level-console=info restore");
    if let Some(time) = &restore.target_time {
        restore_args.push_str(&format!(
            " --type=time {}",
            shell_quote(&format!("--target={time}"))
        ));
        if !restore.target_inclusive {
            restore_args.push_str(" --target-exclusive");
        }
    }
    let mut recovery = json!({
        "restore_command": format!("{base} archive-get %f \"%p\""),
        "recovery_target_timeline": restore.target_timeline,
        "recovery_target_action": if restore.pause_at_target { "pause" } else { "promote" },
    });
    if let Some(time) = &restore.target_time {
        recovery["recovery_target_time"] = json!(time);
        if !restore.target_inclusive {
            recovery["recovery_target_inclusive"] = json!(false);
        }
    }
    json!({
        "command": format!(
            "{} {base}{restore_args}",
            restore_wrapper(config, &restore.stanza, true)
        ),
        "no_params": true,
        "recovery_conf": recovery,
    })
}

/// `spilo clone-restore`, which checks the backups' major before it runs
/// the pgBackRest restore that follows (`clone::restore`). A clone's
/// (`upgrade`) may restore an older major and upgrade it; a standby
/// follows the source's WAL and needs its major.
pub(crate) fn restore_wrapper(config: &Config, stanza: &str, upgrade: bool) -> String {
    let mut command = format!(
        "{} clone-restore --major {} --pgdata {} --stanza {}",
        shell_quote(&config.program.display().to_string()),
        config.version.major,
        shell_quote(&config.paths.pgdata.display().to_string()),
        shell_quote(stanza),
    );
    if upgrade {
        command.push_str(&format!(
            " --upgrade-with {}",
            shell_quote(&config.paths.patroni_config().display().to_string())
        ));
    }
    command + " --"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::System;
    use crate::render::tests::config_on;

    /// The render tests' model, of scope acid-test on four cores.
    fn config(extra: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let mut pairs = vec![("SCOPE", "acid-test")];
        pairs.extend_from_slice(extra);
        let system = System {
            cpus: 4,
            ..System::default()
        };
        config_on(system, &pairs)
    }

    fn text(output: &Output) -> (String, Option<String>) {
        match output {
            Output::File {
                contents,
                redacted,
                mode,
                ..
            } => {
                assert_eq!(*mode, 0o600);
                (
                    String::from_utf8_lossy(contents).into_owned(),
                    redacted.clone(),
                )
            }
            Output::Symlink { .. } => panic!("a link"),
        }
    }

    #[test]
    fn s3_with_keys_and_a_ca() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca_path = ca.path().display().to_string();
        let (dir, config) = config(&[
            ("WAL_S3_BUCKET", "backups"),
            ("AWS_ENDPOINT", "https://127.0.0.9:9000"),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("WALG_S3_CA_CERT_FILE", &ca_path),
            ("BACKUP_NUM_TO_RETAIN", "3"),
        ]);
        let outputs = files(&config);
        let [conf] = outputs.as_slice() else {
            panic!("{outputs:?}");
        };
        let (text, shown) = text(conf);
        let rw = dir.path().join("rw/pgbackrest");
        let rw = rw.display();
        for line in [
            "[global]\nrepo1-type=s3\n",
            "repo1-s3-bucket=backups\n",
            "repo1-s3-endpoint=127.0.0.9\n",
            "repo1-s3-region=us-east-1\n",
            "repo1-storage-port=9000\n",
            "repo1-s3-uri-style=path\n",
            "repo1-s3-key-type=shared\n",
            "repo1-s3-key=AKIDEXAMPLE\n",
            "repo1-s3-key-secret=wJalrXUtnFEMI/K7MDENG\n",
            &format!("repo1-storage-ca-file={ca_path}\n"),
            "repo1-path=/spilo/acid-test/pgbackrest\n",
            "repo1-retention-full=3\n",
            "process-max=2\n",
            "compress-type=zst\n",
            "archive-async=y\n",
            &format!("spool-path={rw}/spool\n"),
            "\n[global:archive-push]\nio-timeout=5\n",
            "\n[acid-test]\npg1-path=",
            "pg1-port=5432\n",
            "pg1-user=postgres\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let shown = shown.expect("redacted");
        assert!(
            shown.contains("repo1-s3-key-secret=<redacted>\n"),
            "{shown}"
        );
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert_eq!(
            archive_command(&config).unwrap(),
            format!(
                "pgbackrest --config={rw}/pgbackrest.conf --stanza=acid-test archive-push \"%p\""
            )
        );
    }

    #[test]
    fn aws_itself_by_region_with_the_instance_profile() {
        let (_dir, config) = config(&[("WAL_S3_BUCKET", "b-1"), ("AWS_REGION", "eu-west-1")]);
        let (text, shown) = text(&files(&config)[0]);
        assert!(
            text.contains("repo1-s3-endpoint=s3.eu-west-1.amazonaws.com\n"),
            "{text}"
        );
        assert!(text.contains("repo1-s3-key-type=auto\n"), "{text}");
        assert_eq!(shown, None);
    }

    #[test]
    fn a_restore_bootstraps_from_the_source_repository() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path().display().to_string();
        let (dir, config) = config(&[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "old-cluster"),
            ("CLONE_WAL_LOCAL_PATH", &root),
            ("CLONE_TARGET_TIME", "2026-12-01 10:00:00+00"),
            ("CLONE_TARGET_INCLUSIVE", "false"),
        ]);
        let outputs = files(&config);
        let [conf] = outputs.as_slice() else {
            panic!("{outputs:?}");
        };
        let (text, _) = text(conf);
        assert!(text.contains("repo1-type=posix\n"), "{text}");
        assert!(
            text.contains(&format!("repo1-path={root}/spilo/old-cluster/pgbackrest\n")),
            "{text}"
        );
        assert!(text.contains("\n[old-cluster]\n"), "{text}");
        let method = restore_method(&config, config.restore.as_ref().unwrap());
        let conf = dir.path().join("rw/pgbackrest/restore.conf");
        let base = format!(
            "pgbackrest --config={} --stanza=old-cluster",
            conf.display()
        );
        let command = method["command"].as_str().unwrap();
        assert!(
            command.contains(&format!(
                " clone-restore --major 17 --pgdata {} --stanza old-cluster --upgrade-with {} -- ",
                config.paths.pgdata.display(),
                dir.path().join("rw/postgres.yml").display()
            )),
            "{command}"
        );
        assert!(
            command.ends_with(&format!(
                " -- {base} --log-level-console=info restore --type=time '--target=2026-12-01 10:00:00+00' --target-exclusive"
            )),
            "{command}"
        );
        assert_eq!(method["no_params"], true);
        let recovery = &method["recovery_conf"];
        assert_eq!(
            recovery["restore_command"],
            format!("{base} archive-get %f \"%p\"")
        );
        assert_eq!(recovery["recovery_target_time"], "2026-12-01 10:00:00+00");
        assert_eq!(recovery["recovery_target_inclusive"], false);
        assert_eq!(recovery["recovery_target_action"], "promote");
        assert_eq!(recovery["recovery_target_timeline"], "latest");
        let (_dir, paused) = self::config(&[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "old-cluster"),
            ("CLONE_WAL_LOCAL_PATH", &root),
            ("USE_PAUSE_AT_RECOVERY_TARGET", "true"),
        ]);
        let method = restore_method(&paused, paused.restore.as_ref().unwrap());
        assert_eq!(method["recovery_conf"]["recovery_target_action"], "pause");
        // No store of its own: nothing archived, nothing restored from.
        assert_eq!(archive_command(&config), None);
        assert_eq!(restore_command(&config), None);
    }
}
