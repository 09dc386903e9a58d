//! The Patroni configuration: the template filled from the model, parsed,
//! and what `init` adds, then the user's SPILO_CONFIGURATION, deep-merged
//! over it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{RenderError, clone, pgbackrest, standby};
use crate::config::{Config, merge};

/// What `init` adds to Patroni's configuration, beneath the user's (so
/// that SPILO_CONFIGURATION can still replace each key); `configure` adds
/// nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Additions {
    pub(crate) hooks: Option<HookCommands>,
    /// `postgresql.bin_name.initdb`: the shim, when initdb runs ahead.
    pub(crate) initdb: Option<PathBuf>,
}

/// The commands that call Patroni's hooks.
#[derive(Debug, Clone, PartialEq)]
pub struct HookCommands {
    /// `bootstrap.post_init`.
    pub(crate) post_init: String,
    /// `postgresql.callbacks`: the command of each action.
    pub callbacks: Map<String, Value>,
}

impl Additions {
    /// The additions as Patroni keys.
    fn keys(&self) -> Map<String, Value> {
        let mut keys = Map::new();
        if let Some(hooks) = &self.hooks {
            merge::deep_merge(
                &mut keys,
                object(json!({
                    "bootstrap": { "post_init": hooks.post_init },
                    "postgresql": { "callbacks": hooks.callbacks },
                })),
            );
        }
        if let Some(initdb) = &self.initdb {
            merge::deep_merge(
                &mut keys,
                object(json!({ "postgresql": { "bin_name": { "initdb": initdb } } })),
            );
        }
        keys
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The template filled from the model and parsed: rendered once, then
/// merged with what goes over it (cheap) for each tree asked for.
pub(crate) struct Template(Map<String, Value>);

impl Template {
    pub(crate) fn render(config: &Config) -> Result<Self, RenderError> {
        template(config).map(Template)
    }

    /// The configuration Patroni gets, before it becomes YAML.
    pub(crate) fn tree(&self, config: &Config, additions: &Additions) -> Map<String, Value> {
        let mut over = additions.keys();
        merge::deep_merge(&mut over, config.user.clone());
        let mut tree = self.0.clone();
        merge::deep_merge(&mut tree, over);
        if let Some(pgwal) = &config.paths.pgwal {
            add_waldir(&mut tree, pgwal);
        }
        tree
    }
}

/// The template, filled and parsed.
fn template(config: &Config) -> Result<Map<String, Value>, RenderError> {
    let id = &config.identity;
    let tls = |t: &crate::config::ssl::Tls| json!({ "cert_file": t.cert_file, "key_file": t.key_file, "ca_file": t.ca_file, "crl_file": t.crl_file });
    let credentials = |c: &crate::config::auth::Credentials| json!({ "username": c.username, "password": c.password });
    // Instead of initdb: a restore from a repository, or a copy of a
    // running cluster (CLONE_METHOD tells which; never both).
    let bootstrap_method = match (&config.restore, &config.basebackup_clone) {
        (Some(restore), _) => Some((
            pgbackrest::RESTORE_METHOD,
            pgbackrest::restore_method(config, restore),
        )),
        (None, Some(clone)) => Some((clone::METHOD, clone::method(config, clone))),
        (None, None) => None,
    };
    let context = json!({
        "scope": id.scope,
        "name": id.name,
        "dcs": config.dcs.config,
        "api_port": id.api_port,
        "pg_port": id.pg_port,
        "restapi_connect_host": id.restapi_connect_host,
        "pg_connect_host": id.pg_connect_host,
        "restapi_tls": config.ssl.restapi.as_ref().map(tls),
        "tls": tls(&config.ssl.postgres),
        "max_connections": config.sizing.max_connections,
        "shared_buffers_mb": config.sizing.shared_buffers_mb,
        "initdb_locale": config.initdb_locale,
        "pgdata": config.paths.pgdata,
        "bin_dir": config.version.bin_dir,
        "pgpass": config.paths.pgpass(),
        "socket_dir": config.paths.socket_dir(),
        "log_directory": config.paths.log_directory(),
        "superuser": credentials(&config.auth.superuser),
        "replication": credentials(&config.auth.replication),
        "preload_libraries": config.version.preload_libraries(),
        "pg_hba": config.auth.default_hba(),
        "archive_command": pgbackrest::archive_command(config).unwrap_or_else(|| "/bin/true".to_owned()),
        "restore_command": pgbackrest::restore_command(config),
        "standby_cluster": config.standby.as_ref().map(|s| standby::standby_cluster(config, s)),
        "replica_methods": standby::replica_methods(config),
        "bootstrap_method_name": bootstrap_method.as_ref().map(|(name, _)| name),
        "bootstrap_method": bootstrap_method.map(|(_, method)| method),
    });
    let text = super::templates::render("patroni.yml.j2", context)?;
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RenderError::Template(
            "patroni.yml.j2 is not a mapping".into(),
        )),
        Err(e) => Err(RenderError::Template(format!(
            "patroni.yml.j2 is not YAML: {e}"
        ))),
    }
}

/// The options of initdb and of replicas' pg_basebackup, as (section, key).
const WAL_WRITERS: [(&str, &str); 2] = [("bootstrap", "initdb"), ("postgresql", "basebackup")];

/// With a separate WAL volume (PGWAL), initdb and pg_basebackup must put
/// pg_wal there. Added after the merge because a list from the user
/// replaces ours whole; a waldir the user gives is kept.
fn add_waldir(tree: &mut Map<String, Value>, pgwal: &Path) {
    let waldir = Value::String(pgwal.display().to_string());
    for (section, key) in WAL_WRITERS {
        // Both sections are in the template and stay mappings whatever
        // the user sends (merge::MAPPINGS).
        if let Some(Value::Object(section)) = tree.get_mut(section) {
            add_waldir_option(section.entry(key).or_insert(Value::Null), &waldir);
        }
    }
}

/// Adds waldir to a tool's options as Patroni takes them: a list of
/// strings and one-key mappings, or a mapping.
fn add_waldir_option(options: &mut Value, waldir: &Value) {
    let option = || json!({ "waldir": waldir });
    match options {
        Value::Null => *options = json!([option()]),
        Value::Array(items) if !items.iter().any(sets_waldir) => items.push(option()),
        Value::Object(map) => {
            map.entry("waldir").or_insert_with(|| waldir.clone());
        }
        // Not options at all: Patroni's own validation says so.
        _ => {}
    }
}

/// Whether a list item already sets waldir: `{waldir: DIR}`, or the
/// string form `waldir=DIR`.
fn sets_waldir(item: &Value) -> bool {
    match item {
        Value::Object(map) => map.contains_key("waldir"),
        Value::String(s) => s == "waldir" || s.starts_with("waldir="),
        _ => false,
    }
}

/// Replaces passwords and known secret values in a tree (for --dry-run).
pub(crate) fn redact(value: &mut Value, secrets: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if (key.contains("password") || key.contains("secret")) && !v.is_object() {
                    *v = json!(super::REDACTED);
                } else {
                    redact(v, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        Value::String(s) if super::holds_secret(s, secrets) => *s = super::REDACTED.to_owned(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, System};

    fn tree(config: &Config) -> Result<Map<String, Value>, RenderError> {
        Ok(Template::render(config)?.tree(config, &Additions::default()))
    }

    /// The model for these variables (plus a pod identity).
    fn config_for(extra: &[(&str, &str)]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("majors/17/bin")).unwrap();
        let mut pairs = vec![("HOSTNAME", "node-0"), ("POD_IP", "10.0.0.5")];
        pairs.extend_from_slice(extra);
        let system = System {
            postgres_root: dir.path().join("majors"),
            ..System::default()
        };
        Config::build(&Env::from_pairs(pairs), &system).unwrap()
    }

    /// The merged tree for these variables (plus a pod identity).
    fn tree_for(extra: &[(&str, &str)]) -> Map<String, Value> {
        tree(&config_for(extra)).unwrap()
    }

    #[test]
    fn additions_go_beneath_the_users_configuration() {
        let config = config_for(&[(
            "SPILO_CONFIGURATION",
            "{postgresql: {pg_ident: [a], callbacks: {on_start: mine}}}",
        )]);
        let additions = Additions {
            hooks: Some(HookCommands {
                post_init: "spilo hook post-init".into(),
                callbacks: object(json!({ "on_role_change": "spilo hook on-role-change" })),
            }),
            initdb: Some("/run/spilo/initdb-ahead/initdb".into()),
        };
        let tree = Template::render(&config).unwrap().tree(&config, &additions);
        let postgresql = tree["postgresql"].as_object().unwrap();
        let keys: Vec<&str> = postgresql.keys().map(String::as_str).collect();
        assert_eq!(
            keys[keys.len() - 3..],
            ["callbacks", "bin_name", "pg_ident"]
        );
        assert_eq!(
            postgresql["callbacks"],
            json!({ "on_role_change": "spilo hook on-role-change", "on_start": "mine" })
        );
        assert_eq!(
            postgresql["bin_name"],
            json!({ "initdb": "/run/spilo/initdb-ahead/initdb" })
        );
        assert_eq!(tree["bootstrap"]["post_init"], "spilo hook post-init");
        let plain = tree_for(&[]);
        assert!(plain["postgresql"].get("callbacks").is_none());
        assert!(plain["bootstrap"].get("post_init").is_none());
    }

    #[test]
    fn utility_statements_are_not_tracked_when_pg_stat_statements_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let major = dir.path().join("majors/17");
        std::fs::create_dir_all(major.join("bin")).unwrap();
        std::fs::create_dir_all(major.join("lib")).unwrap();
        let system = System {
            postgres_root: dir.path().join("majors"),
            ..System::default()
        };
        let env = Env::from_pairs(vec![("HOSTNAME", "node-0"), ("POD_IP", "10.0.0.5")]);
        let parameters =
            |config: &Config| tree(config).unwrap()["postgresql"]["parameters"].clone();
        let without = parameters(&Config::build(&env, &system).unwrap());
        assert!(without.get("pg_stat_statements.track_utility").is_none());
        std::fs::write(major.join("lib/pg_stat_statements.so"), "").unwrap();
        let with = parameters(&Config::build(&env, &system).unwrap());
        assert_eq!(with["shared_preload_libraries"], "pg_stat_statements");
        assert_eq!(with["pg_stat_statements.track_utility"], "off");
    }

    fn options<'a>(tree: &'a Map<String, Value>, section: &str, key: &str) -> &'a Value {
        &tree[section][key]
    }

    #[test]
    fn a_standby_cluster_streams_from_its_source() {
        let tree = tree_for(&[
            ("STANDBY_HOST", "acid-source.default"),
            ("STANDBY_PRIMARY_SLOT_NAME", "standby_slot"),
        ]);
        assert_eq!(
            tree["bootstrap"]["dcs"]["standby_cluster"],
            json!({
                "host": "acid-source.default",
                "port": 5432,
                "create_replica_methods": [standby::BASEBACKUP],
                "primary_slot_name": "standby_slot",
            })
        );
        // The methods the operator's standby patch names are defined.
        for method in [standby::BASEBACKUP, standby::FROM_ARCHIVE] {
            assert!(
                tree["postgresql"][method]["command"].is_string(),
                "{method}"
            );
        }
        let plain = tree_for(&[]);
        assert_eq!(plain["bootstrap"]["dcs"].get("standby_cluster"), None);
        assert!(plain["postgresql"][standby::BASEBACKUP]["command"].is_string());
    }

    #[test]
    fn waldir_for_initdb_and_basebackup_with_a_wal_volume() {
        let tree = tree_for(&[("PGWAL", "/wal/pg_wal")]);
        assert_eq!(
            options(&tree, "bootstrap", "initdb"),
            &json!([
                { "encoding": "UTF8" },
                { "locale": "en_US.UTF-8" },
                "data-checksums",
                { "waldir": "/wal/pg_wal" },
            ])
        );
        assert_eq!(
            options(&tree, "postgresql", "basebackup"),
            &json!([{ "waldir": "/wal/pg_wal" }])
        );

        let tree = tree_for(&[]);
        let initdb = options(&tree, "bootstrap", "initdb");
        assert!(!initdb.to_string().contains("waldir"), "{initdb}");
        assert_eq!(tree["postgresql"].get("basebackup"), None);
    }

    #[test]
    fn waldir_survives_the_users_own_options() {
        let tree = tree_for(&[
            ("PGWAL", "/wal/pg_wal"),
            (
                "SPILO_CONFIGURATION",
                r#"{bootstrap: {initdb: [data-checksums, {auth-host: md5}]},
                    postgresql: {basebackup: {max-rate: 100M, checkpoint: fast}}}"#,
            ),
        ]);
        assert_eq!(
            options(&tree, "bootstrap", "initdb"),
            &json!(["data-checksums", { "auth-host": "md5" }, { "waldir": "/wal/pg_wal" }])
        );
        assert_eq!(
            options(&tree, "postgresql", "basebackup"),
            &json!({ "max-rate": "100M", "checkpoint": "fast", "waldir": "/wal/pg_wal" })
        );
    }

    #[test]
    fn the_users_waldir_is_kept() {
        let tree = tree_for(&[
            ("PGWAL", "/wal/pg_wal"),
            (
                "SPILO_CONFIGURATION",
                r#"{bootstrap: {initdb: [{waldir: /mine}]},
                    postgresql: {basebackup: ["waldir=/mine", {max-rate: 100M}]}}"#,
            ),
        ]);
        assert_eq!(
            options(&tree, "bootstrap", "initdb"),
            &json!([{ "waldir": "/mine" }])
        );
        assert_eq!(
            options(&tree, "postgresql", "basebackup"),
            &json!(["waldir=/mine", { "max-rate": "100M" }])
        );
    }
}
