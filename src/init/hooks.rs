//! Patroni's hooks, run by Patroni as subcommands of this binary:
//! `post_init` after bootstrap and `on_role_change` on promotion create
//! the roles Patroni 4 no longer creates (admin, HUMAN_ROLE, cron_admin),
//! idempotently. They talk to PostgreSQL through the major's own psql,
//! as Spilo does: no client library to keep in step with the server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{Config, merge};
use crate::render::Output;

/// What the hooks need, written by `init` next to the Patroni config
/// (mode 0600: it holds the admin password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub bin_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub pgpass: PathBuf,
    pub superuser: String,
    pub admin: String,
    pub admin_password: String,
    pub human_role: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a hook spec: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {source}", program.display())]
    Run {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("psql failed ({0}); roles not created")]
    Psql(String),
}

/// Patroni's callback role names for a primary (4.x says primary, older
/// releases master).
const PRIMARY_ROLES: [&str; 2] = ["primary", "master"];

/// How long `on_role_change` waits for a promoted server to accept writes.
const PROMOTION_WAIT: Duration = Duration::from_secs(60);

/// The spec file and the Patroni keys that call the hooks; the keys go
/// under the user's configuration, so that SPILO_CONFIGURATION can still
/// replace them.
pub fn install(config: &mut Config, program: &Path) -> Result<Output, serde_json::Error> {
    let spec = Spec {
        bin_dir: config.version.bin_dir.clone(),
        socket_dir: config.paths.socket_dir(),
        port: config.identity.pg_port,
        pgpass: config.paths.pgpass(),
        superuser: config.auth.superuser.username.clone(),
        admin: config.auth.admin.username.clone(),
        admin_password: config.auth.admin.password.clone(),
        human_role: config.auth.human_role.clone(),
    };
    let path = config.paths.rw_dir.join("hooks.json");
    let command = |hook: &str| {
        format!(
            "{} hook {hook} {}",
            shell_quote(&program.display().to_string()),
            shell_quote(&path.display().to_string())
        )
    };
    let mut ours = match json!({
        "bootstrap": { "post_init": command("post-init") },
        "postgresql": { "callbacks": { "on_role_change": command("on-role-change") } },
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    merge::deep_merge(&mut ours, std::mem::take(&mut config.user));
    config.user = ours;
    Ok(Output::File {
        contents: serde_json::to_vec_pretty(&spec)?,
        path,
        mode: 0o600,
        redacted: None,
    })
}

pub fn read_spec(path: &Path) -> Result<Spec, HookError> {
    let text = std::fs::read(path).map_err(|source| HookError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| HookError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// `post_init`: Patroni gives a connection string for the superuser.
pub fn post_init(spec: &Spec, connection: &str) -> Result<(), HookError> {
    psql(spec, &["-d", connection], &roles_sql(spec))
}

/// `on_role_change ACTION ROLE SCOPE`: on promotion, make sure the roles
/// exist (a primary restored from a backup may lack them). Other roles
/// have nothing to do.
pub fn on_role_change(spec: &Spec, role: &str) -> Result<bool, HookError> {
    if !PRIMARY_ROLES.contains(&role) {
        return Ok(false);
    }
    let port = spec.port.to_string();
    let socket = spec.socket_dir.display().to_string();
    let args = [
        "-h",
        socket.as_str(),
        "-p",
        port.as_str(),
        "-U",
        spec.superuser.as_str(),
        "-d",
        "postgres",
    ];
    let sql = roles_sql(spec);
    let started = Instant::now();
    loop {
        match psql(spec, &args, &sql) {
            Ok(()) => return Ok(true),
            // Just promoted: read-only for a moment.
            Err(HookError::Psql(_)) if started.elapsed() < PROMOTION_WAIT => {
                std::thread::sleep(Duration::from_secs(1))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The line a hook prints when it has done its work.
pub fn summary(spec: &Spec) -> String {
    format!(
        "roles ensured: {}, {}, cron_admin",
        spec.admin, spec.human_role
    )
}

fn psql(spec: &Spec, args: &[&str], sql: &str) -> Result<(), HookError> {
    let program = spec.bin_dir.join("psql");
    let mut child = Command::new(&program)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGPASSFILE", &spec.pgpass)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|source| HookError::Run {
            program: program.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A failure to write shows as psql's own error below.
        let _ = stdin.write_all(sql.as_bytes());
    }
    let status = child.wait().map_err(|source| HookError::Run {
        program: program.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Psql(status.to_string()))
    }
}

/// Creates each role when missing and sets its attributes either way.
/// Statements are not logged (log_statement = ddl would log the
/// password) and do not wait for a synchronous standby that may not
/// exist yet.
fn roles_sql(spec: &Spec) -> String {
    let mut sql = String::from("SET log_statement = 'none';\nSET synchronous_commit = 'local';\n");
    let roles = [
        (
            spec.admin.as_str(),
            format!(
                "NOLOGIN CREATEDB CREATEROLE PASSWORD {}",
                literal(&spec.admin_password)
            ),
        ),
        (spec.human_role.as_str(), "NOLOGIN".to_owned()),
        ("cron_admin", "NOLOGIN".to_owned()),
    ];
    for (name, attributes) in roles {
        let name_literal = literal(name);
        sql.push_str(&format!(
            "SELECT format('CREATE ROLE %I', {name_literal}) WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {name_literal})\n\\gexec\n"
        ));
        sql.push_str(&format!(
            "ALTER ROLE {} WITH {attributes};\n",
            identifier(name)
        ));
    }
    sql
}

/// A string literal that reads the same whatever standard_conforming_strings says.
fn literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

fn identifier(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quoting for Patroni, which splits commands with shlex.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            socket_dir: "/run/postgresql".into(),
            port: 5432,
            pgpass: "/run/postgresql/pgpass".into(),
            superuser: "postgres".into(),
            admin: "admin".into(),
            admin_password: "it's\\secret".into(),
            human_role: "zalandos".into(),
        }
    }

    #[test]
    fn roles_are_created_idempotently_and_quoted() {
        let sql = roles_sql(&spec());
        assert!(sql.starts_with("SET log_statement = 'none';"));
        assert!(sql.contains("SELECT format('CREATE ROLE %I', 'admin') WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'admin')\n\\gexec\n"));
        assert!(sql.contains(
            "ALTER ROLE \"admin\" WITH NOLOGIN CREATEDB CREATEROLE PASSWORD E'it''s\\\\secret';"
        ));
        assert!(sql.contains("ALTER ROLE \"zalandos\" WITH NOLOGIN;"));
        assert!(sql.contains("ALTER ROLE \"cron_admin\" WITH NOLOGIN;"));
    }

    #[test]
    fn quoting() {
        assert_eq!(literal("a'b"), "'a''b'");
        assert_eq!(identifier("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(shell_quote("/usr/bin/spilo"), "/usr/bin/spilo");
        assert_eq!(shell_quote("/my dir/spilo"), "'/my dir/spilo'");
    }

    #[test]
    fn replicas_have_nothing_to_do() {
        assert!(!on_role_change(&spec(), "replica").unwrap());
        assert!(!on_role_change(&spec(), "demoted").unwrap());
    }

    #[test]
    fn the_spec_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.json");
        std::fs::write(&path, serde_json::to_vec(&spec()).unwrap()).unwrap();
        assert_eq!(read_spec(&path).unwrap(), spec());
        let err = read_spec(&dir.path().join("none")).unwrap_err().to_string();
        assert!(err.contains("none"), "{err}");
    }
}
