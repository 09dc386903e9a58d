//! The Patroni configuration: the template filled from the model, parsed,
//! and the user's SPILO_CONFIGURATION deep-merged over it.

use serde_json::{Map, Value, json};

use super::RenderError;
use crate::config::{Config, merge};

/// The merged configuration as a tree, before it becomes YAML.
pub fn tree(config: &Config) -> Result<Map<String, Value>, RenderError> {
    let id = &config.identity;
    let tls = |t: &crate::config::ssl::Tls| json!({ "cert_file": t.cert_file, "key_file": t.key_file, "ca_file": t.ca_file, "crl_file": t.crl_file });
    let credentials = |c: &crate::config::auth::Credentials| json!({ "username": c.username, "password": c.password });
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
        "pgwal": config.paths.pgwal,
        "bin_dir": config.version.bin_dir,
        "pgpass": config.paths.pgpass(),
        "socket_dir": config.paths.socket_dir(),
        "log_directory": config.paths.log_directory(),
        "superuser": credentials(&config.auth.superuser),
        "replication": credentials(&config.auth.replication),
        "preload_libraries": config.preload_libraries,
        "pg_hba": config.auth.default_hba(),
    });
    let text = super::templates::render("patroni.yml.j2", context)?;
    let mut tree = match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(RenderError::Template(
                "patroni.yml.j2 is not a mapping".into(),
            ));
        }
        Err(e) => {
            return Err(RenderError::Template(format!(
                "patroni.yml.j2 is not YAML: {e}"
            )));
        }
    };
    merge::deep_merge(&mut tree, config.user.clone());
    Ok(tree)
}

/// Replaces passwords and known secret values in a tree (for --dry-run).
pub fn redact(value: &mut Value, secrets: &[String]) {
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
