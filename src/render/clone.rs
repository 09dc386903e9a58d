//! Patroni's bootstrap of a clone by base backup: `spilo basebackup`
//! copies the source, then recovery stops at the copy's end and promotes,
//! so the clone goes on from a timeline of its own.

use serde_json::{Value, json};

use super::{Output, shell_quote};
use crate::config::{BasebackupClone, Config};

/// The name of the bootstrap method in Patroni's configuration.
pub(crate) const METHOD: &str = "clone_with_basebackup";

/// The source's connection string: no password, that is in the pgpass
/// file.
fn conninfo(config: &Config, clone: &BasebackupClone) -> String {
    let mut conninfo = format!(
        "host={} port={} user={} dbname=postgres application_name={}",
        clone.host, clone.port, clone.user, config.identity.name
    );
    if clone.password.is_some() {
        conninfo.push_str(&format!(
            " passfile={}",
            config.paths.clone_pgpass().display()
        ));
    }
    conninfo
}

/// The bootstrap method.
pub(crate) fn method(config: &Config, clone: &BasebackupClone) -> Value {
    let mut command = format!(
        "{} basebackup --major {} --bin-dir {} --pgdata {}",
        shell_quote(&config.program.display().to_string()),
        config.version.major,
        shell_quote(&config.version.bin_dir.display().to_string()),
        shell_quote(&config.paths.pgdata.display().to_string()),
    );
    if let Some(wal) = &config.paths.pgwal {
        command.push_str(&format!(
            " --waldir {}",
            shell_quote(&wal.display().to_string())
        ));
    }
    command.push_str(&format!(
        " --source {} --upgrade-with {}",
        shell_quote(&conninfo(config, clone)),
        shell_quote(&config.paths.patroni_config().display().to_string())
    ));
    json!({
        "command": command,
        "no_params": true,
        // The copy holds the WAL it needs (streamed): nothing to fetch,
        // but PostgreSQL wants a restore_command for archive recovery.
        "recovery_conf": {
            "restore_command": "/bin/false",
            "recovery_target": "immediate",
            "recovery_target_action": "promote",
        },
    })
}

/// The pgpass file with CLONE_PASSWORD, when there is one.
pub(crate) fn files(config: &Config) -> Option<Output> {
    let clone = config.basebackup_clone.as_ref()?;
    let password = clone.password.as_ref()?;
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    Some(Output::File {
        path: config.paths.clone_pgpass(),
        contents: format!(
            "{}:{}:*:{}:{}\n",
            escape(&clone.host),
            clone.port,
            escape(&clone.user),
            escape(password)
        )
        .into_bytes(),
        redacted: Some(format!(
            "{}:{}:*:{}:<redacted>\n",
            escape(&clone.host),
            clone.port,
            escape(&clone.user)
        )),
        mode: 0o600,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::config_on;

    fn config(extra: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let mut pairs = vec![
            ("SCOPE", "acid-clone"),
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_HOST", "acid-source.default"),
            ("CLONE_USER", "standby"),
        ];
        pairs.extend_from_slice(extra);
        config_on(crate::config::System::default(), &pairs)
    }

    #[test]
    fn the_bootstrap_copies_the_source_and_promotes() {
        let (_dir, config) = config(&[("CLONE_PASSWORD", "pa:ss\\word")]);
        let clone = config.basebackup_clone.as_ref().unwrap();
        let method = method(&config, clone);
        let command = method["command"].as_str().unwrap();
        assert!(command.contains(" basebackup --major "), "{command}");
        assert!(
            command.ends_with(&format!(
                " --source 'host=acid-source.default port=5432 user=standby dbname=postgres application_name={} passfile={}' --upgrade-with {}",
                config.identity.name,
                config.paths.clone_pgpass().display(),
                config.paths.patroni_config().display()
            )),
            "{command}"
        );
        assert!(!command.contains("pa:ss"), "{command}");
        assert_eq!(method["no_params"], json!(true));
        assert_eq!(method["recovery_conf"]["recovery_target"], "immediate");
        assert_eq!(method["recovery_conf"]["recovery_target_action"], "promote");
        let Some(Output::File {
            contents,
            redacted,
            mode,
            ..
        }) = files(&config)
        else {
            panic!("no pgpass file")
        };
        assert_eq!(
            String::from_utf8(contents).unwrap(),
            "acid-source.default:5432:*:standby:pa\\:ss\\\\word\n"
        );
        assert_eq!(
            redacted.as_deref(),
            Some("acid-source.default:5432:*:standby:<redacted>\n")
        );
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn without_a_password_no_pgpass() {
        let (_dir, config) = config(&[]);
        assert!(files(&config).is_none());
        let clone = config.basebackup_clone.as_ref().unwrap();
        let command = method(&config, clone)["command"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!command.contains("passfile"), "{command}");
    }
}
