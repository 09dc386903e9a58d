//! What Patroni's configuration file says about this member: the one
//! source both sides of an upgrade read (a replica's side runs with the
//! server's environment, not the pod's), and the file an upgrade points
//! at the new major.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::UpgradeError;
use crate::files::{self, IoError, Owner};
use crate::render::Output;

#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The file itself (a link into RW_DIR in the image, followed).
    pub(crate) file: PathBuf,
    pub(crate) scope: String,
    pub(crate) name: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) socket_dir: PathBuf,
    pub(crate) superuser: Credentials,
    pub(crate) replication: Credentials,
    /// Patroni's REST API on this host.
    pub(crate) api: String,
    pub(crate) api_auth: Option<Credentials>,
    document: Value,
}

impl Member {
    pub(crate) fn read(path: &Path) -> Result<Self, UpgradeError> {
        let file = std::fs::canonicalize(path).map_err(IoError::at("resolve", path))?;
        let text = std::fs::read_to_string(&file).map_err(IoError::at("read", &file))?;
        let document: Value = serde_yaml_ng::from_str(&text).map_err(|e| UpgradeError::Config {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| UpgradeError::Config {
            file: file.clone(),
            reason,
        };
        let text_at = |keys: &[&str]| -> Option<String> {
            let mut value = &document;
            for key in keys {
                value = value.get(*key)?;
            }
            match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let required =
            |keys: &[&str]| text_at(keys).ok_or_else(|| bad(format!("no {}", keys.join("."))));
        let credentials = |role: &str| -> Result<Credentials, UpgradeError> {
            Ok(Credentials {
                username: required(&["postgresql", "authentication", role, "username"])?,
                password: text_at(&["postgresql", "authentication", role, "password"])
                    .unwrap_or_default(),
            })
        };
        let listen = required(&["postgresql", "listen"])?;
        let port = match text_at(&["postgresql", "parameters", "port"]) {
            Some(port) => port,
            None => listen
                .rsplit_once(':')
                .map(|(_, p)| p.to_owned())
                .unwrap_or("5432".into()),
        };
        let port = port
            .trim()
            .parse()
            .map_err(|_| bad(format!("postgresql.listen {listen:?}: no port")))?;
        let socket_dir = required(&["postgresql", "parameters", "unix_socket_directories"])?
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let api_listen = required(&["restapi", "listen"])?;
        let api_port = api_listen
            .rsplit_once(':')
            .map(|(_, p)| p.to_owned())
            .ok_or_else(|| bad(format!("restapi.listen {api_listen:?}: no port")))?;
        let scheme = if text_at(&["restapi", "certfile"]).is_some() {
            "https"
        } else {
            "http"
        };
        let api_auth =
            text_at(&["restapi", "authentication", "username"]).map(|username| Credentials {
                username,
                password: text_at(&["restapi", "authentication", "password"]).unwrap_or_default(),
            });
        Ok(Member {
            scope: required(&["scope"])?,
            name: required(&["name"])?,
            data_dir: required(&["postgresql", "data_dir"])?.into(),
            bin_dir: required(&["postgresql", "bin_dir"])?.into(),
            port,
            socket_dir: socket_dir.into(),
            superuser: credentials("superuser")?,
            replication: credentials("replication")?,
            api: format!("{scheme}://127.0.0.1:{api_port}"),
            api_auth,
            document,
            file,
        })
    }

    /// The directory the data directory is in, and the data directory's
    /// name there (`pgroot`, `pgdata`).
    pub(crate) fn data_parent(&self) -> (&Path, String) {
        (
            self.data_dir.parent().unwrap_or(Path::new("/")),
            self.data_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    }

    /// A sibling of the data directory: `<data>_new`, `<data>_old`.
    pub(crate) fn sibling(&self, suffix: &str) -> PathBuf {
        let (parent, name) = self.data_parent();
        parent.join(format!("{name}_{suffix}"))
    }

    /// Points Patroni at the new major: bin_dir, the replica methods'
    /// `--major` and `--bin-dir` (every string naming the old tree), and
    /// shared_preload_libraries keeps what the new major ships
    /// (`lib_dir`). Written in place, atomically.
    pub(crate) fn retarget(
        &mut self,
        (old_major, new_major): (u32, u32),
        bin_dir: &Path,
        lib_dir: &Path,
    ) -> Result<(), UpgradeError> {
        let old_bin = self.bin_dir.display().to_string();
        let new_bin = bin_dir.display().to_string();
        let (old_flag, new_flag) = (
            format!("--major {old_major} "),
            format!("--major {new_major} "),
        );
        replace_strings(&mut self.document, &|s| {
            s.replace(&old_bin, &new_bin).replace(&old_flag, &new_flag)
        });
        let postgresql = self
            .document
            .get_mut("postgresql")
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| UpgradeError::Config {
                file: self.file.clone(),
                reason: "no postgresql section".into(),
            })?;
        postgresql.insert("bin_dir".into(), new_bin.into());
        if let Some(Value::String(libraries)) = postgresql
            .get_mut("parameters")
            .and_then(|p| p.get_mut("shared_preload_libraries"))
        {
            *libraries = kept_libraries(libraries, lib_dir);
        }
        let text = serde_yaml_ng::to_string(&self.document).map_err(|e| UpgradeError::Config {
            file: self.file.clone(),
            reason: e.to_string(),
        })?;
        let mode = std::fs::metadata(&self.file)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .map_err(IoError::at("stat", &self.file))?;
        files::write_all(
            &[Output::File {
                path: self.file.clone(),
                contents: text.into_bytes(),
                mode,
                redacted: None,
            }],
            Owner::default(),
        )?;
        self.bin_dir = bin_dir.to_owned();
        Ok(())
    }
}

impl Member {
    /// shared_preload_libraries as the new major can load it.
    pub(crate) fn preload_for(&self, lib_dir: &Path) -> String {
        let current = self
            .document
            .get("postgresql")
            .and_then(|p| p.get("parameters"))
            .and_then(|p| p.get("shared_preload_libraries"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        kept_libraries(current, lib_dir)
    }
}

impl Member {
    /// The bootstrap method's `recovery_conf`: where a clone recovers to.
    pub(crate) fn bootstrap_recovery(&self) -> Vec<(String, String)> {
        let bootstrap = self.document.get("bootstrap");
        let method = bootstrap
            .and_then(|b| b.get("method"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        settings(
            bootstrap
                .and_then(|b| b.get(method))
                .and_then(|m| m.get("recovery_conf")),
        )
    }

    /// The server's settings as Patroni writes them at the bootstrap: the
    /// bootstrap's dynamic ones, the local ones over them, and where it
    /// listens.
    pub(crate) fn server_parameters(&self) -> Vec<(String, String)> {
        let dynamic = self
            .document
            .get("bootstrap")
            .and_then(|b| b.get("dcs"))
            .and_then(|d| d.get("postgresql"))
            .and_then(|p| p.get("parameters"));
        let local = self
            .document
            .get("postgresql")
            .and_then(|p| p.get("parameters"));
        let mut merged: Vec<(String, String)> = settings(dynamic);
        for (name, value) in settings(local) {
            merged.retain(|(n, _)| *n != name);
            merged.push((name, value));
        }
        let listen = self
            .document
            .get("postgresql")
            .and_then(|p| p.get("listen"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let addresses = listen.rsplit_once(':').map_or(listen, |(hosts, _)| hosts);
        for (name, value) in [
            ("listen_addresses", addresses.to_owned()),
            ("port", self.port.to_string()),
            ("cluster_name", self.scope.clone()),
        ] {
            merged.retain(|(n, _)| n != name);
            merged.push((name.to_owned(), value));
        }
        merged
    }

    /// Patroni's pg_hba lines.
    pub(crate) fn pg_hba(&self) -> Vec<String> {
        self.document
            .get("postgresql")
            .and_then(|p| p.get("pg_hba"))
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|line| line.as_str().map(str::to_owned))
            .collect()
    }
}

/// A mapping of settings, its scalar values as PostgreSQL reads them.
fn settings(map: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Mapping(map)) = map else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(name, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if *b { "on" } else { "off" }.to_owned(),
                _ => return None,
            };
            Some((name.as_str()?.to_owned(), value))
        })
        .collect()
}

/// Every string of a document, through `change`.
fn replace_strings(value: &mut Value, change: &dyn Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = change(s),
        Value::Sequence(items) => items.iter_mut().for_each(|v| replace_strings(v, change)),
        Value::Mapping(map) => map.values_mut().for_each(|v| replace_strings(v, change)),
        _ => {}
    }
}

/// The libraries of a shared_preload_libraries list that `lib_dir` has.
fn kept_libraries(list: &str, lib_dir: &Path) -> String {
    list.split(',')
        .map(str::trim)
        .filter(|lib| !lib.is_empty() && lib_dir.join(format!("{lib}.so")).exists())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
scope: demo
name: node1
restapi:
  listen: "*:8008"
  connect_address: "10.0.0.1:8008"
postgresql:
  listen: "*:5433"
  data_dir: /home/postgres/pgdata/pgroot/pgdata
  bin_dir: /usr/lib/postgresql/15/bin
  basebackup_fast_xlog:
    command: "/usr/local/bin/spilo basebackup --major 15 --bin-dir '/usr/lib/postgresql/15/bin'"
  authentication:
    superuser: {username: postgres, password: secret}
    replication: {username: standby, password: other}
  parameters:
    unix_socket_directories: /run/postgresql
    shared_preload_libraries: pg_stat_statements,gone
"#;

    #[test]
    fn reads_and_retargets_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgres.yml");
        std::fs::write(&path, FILE).unwrap();
        let mut member = Member::read(&path).unwrap();
        assert_eq!(member.port, 5433);
        assert_eq!(member.api, "http://127.0.0.1:8008");
        assert_eq!(member.replication.password, "other");
        assert_eq!(
            member.sibling("old"),
            Path::new("/home/postgres/pgdata/pgroot/pgdata_old")
        );
        let lib = dir.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::fs::write(lib.join("pg_stat_statements.so"), "").unwrap();
        member
            .retarget((15, 17), Path::new("/usr/lib/postgresql/17/bin"), &lib)
            .unwrap();
        let again = Member::read(&path).unwrap();
        assert_eq!(again.bin_dir, Path::new("/usr/lib/postgresql/17/bin"));
        assert_eq!(again.name, "node1");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("shared_preload_libraries: pg_stat_statements\n"),
            "{text}"
        );
    }

    #[test]
    fn the_settings_patroni_starts_a_bootstrapped_server_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgres.yml");
        let text = format!(
            "{FILE}  pg_hba: [\"local all all trust\", \"host all all all md5\"]\n\
             bootstrap:\n  method: clone_with_wale\n  clone_with_wale:\n    recovery_conf:\n      \
             recovery_target_time: '2026-12-04 10:00:00+00'\n      recovery_target_inclusive: false\n  \
             dcs:\n    postgresql:\n      parameters:\n        max_connections: 200\n        \
             unix_socket_directories: /elsewhere\n        hot_standby: true\n"
        );
        std::fs::write(&path, text).unwrap();
        let member = Member::read(&path).unwrap();
        assert_eq!(
            member.bootstrap_recovery(),
            [
                (
                    "recovery_target_time".into(),
                    "2026-12-04 10:00:00+00".into()
                ),
                ("recovery_target_inclusive".into(), "off".into())
            ]
        );
        let parameters = member.server_parameters();
        let value = |name: &str| {
            parameters
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("max_connections"), Some("200"));
        assert_eq!(value("hot_standby"), Some("on"));
        assert_eq!(value("unix_socket_directories"), Some("/run/postgresql"));
        assert_eq!(value("listen_addresses"), Some("*"));
        assert_eq!(value("port"), Some("5433"));
        assert_eq!(value("cluster_name"), Some("demo"));
        assert_eq!(
            parameters
                .iter()
                .filter(|(n, _)| n == "unix_socket_directories")
                .count(),
            1
        );
        assert_eq!(
            member.pg_hba(),
            ["local all all trust", "host all all all md5"]
        );
    }

    #[test]
    fn a_file_without_a_data_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postgres.yml");
        std::fs::write(
            &path,
            FILE.replace("  data_dir: /home/postgres/pgdata/pgroot/pgdata\n", ""),
        )
        .unwrap();
        let err = Member::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("postgres.yml: no postgresql.data_dir"),
            "{err}"
        );
    }
}
