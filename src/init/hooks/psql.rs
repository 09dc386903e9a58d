//! The major's own psql, as Spilo uses it: no client library to keep in
//! step with the server. Scripts go to its standard input, so that the
//! admin password never shows in a process list; names and the password
//! reach the SQL as psql variables (`:'admin'`, `:"admin"`), quoted by psql
//! itself.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{HookError, Spec};

/// Every session of the hooks: DDL neither waits for a synchronous standby
/// that may not exist yet nor stops at a user's statement_timeout; notices
/// ("already exists, skipping") are noise; a name the SQL leaves
/// unqualified resolves in pg_catalog only.
const OPTIONS: &str = "-c synchronous_commit=local -c statement_timeout=0 \
                       -c client_min_messages=warning -c search_path=pg_catalog";

/// How the hooks reach the server, and the values of the psql variables.
pub(crate) struct Psql<'a> {
    spec: &'a Spec,
    /// Arguments of the first connection; `\connect` reuses them.
    connection: Vec<String>,
}

impl<'a> Psql<'a> {
    /// Through the connection string Patroni passes to post_init.
    pub(crate) fn with_connection_string(spec: &'a Spec, connection: &str) -> Self {
        Psql {
            spec,
            connection: vec!["-d".into(), connection.into()],
        }
    }

    /// Through the socket, as the superuser, to `postgres` (callbacks get
    /// no connection string).
    pub(crate) fn socket(spec: &'a Spec) -> Self {
        Psql {
            spec,
            connection: vec![
                "-h".into(),
                spec.socket_dir.display().to_string(),
                "-p".into(),
                spec.port.to_string(),
                "-U".into(),
                spec.superuser.clone(),
                "-d".into(),
                "postgres".into(),
            ],
        }
    }

    /// Runs `parts` in one session, in `database` (None: the first
    /// connection's), stopping at the first error; `what` names the step
    /// in the error.
    pub(crate) fn run(
        &self,
        what: &str,
        database: Option<&str>,
        parts: &[&str],
    ) -> Result<(), HookError> {
        let mut script = self.variables();
        if let Some(database) = database {
            script.push_str(&connect(database));
        }
        parts.iter().for_each(|part| script.push_str(part));
        self.execute(what, &[], &script, Stdio::null()).map(drop)
    }

    /// The single value `sql` returns, as text.
    pub(crate) fn value(&self, what: &str, sql: &str) -> Result<String, HookError> {
        let out = self.execute(what, &["-t", "-A"], sql, Stdio::piped())?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    fn program(&self) -> PathBuf {
        self.spec.bin_dir.join("psql")
    }

    /// `\set` lines for the variables the SQL files name.
    fn variables(&self) -> String {
        [
            ("admin", self.spec.admin.as_str()),
            ("admin_password", self.spec.admin_password.as_str()),
            ("human_role", self.spec.human_role.as_str()),
        ]
        .iter()
        .map(|(name, value)| format!("\\set {name} {}\n", meta_quote(value)))
        .collect()
    }

    fn execute(
        &self,
        what: &str,
        args: &[&str],
        script: &str,
        stdout: Stdio,
    ) -> Result<Vec<u8>, HookError> {
        let program = self.program();
        let run_error = |source| HookError::Run {
            program: program.clone(),
            source,
        };
        let mut child = Command::new(&program)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .args(&self.connection)
            .env("PGPASSFILE", &self.spec.pgpass)
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGOPTIONS", OPTIONS)
            .env("PGAPPNAME", "spilo hook")
            .stdin(Stdio::piped())
            .stdout(stdout)
            .spawn()
            .map_err(run_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A failure to write shows as psql's own error below.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(run_error)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(HookError::Psql {
                program,
                what: what.to_owned(),
                status: out.status,
            })
        }
    }
}

/// The meta-command that moves the session to `database`, keeping host,
/// port and user, so that any name (quotes, `=`, spaces) means itself:
/// the name is a conninfo value, the conninfo a double-quoted identifier
/// (`\connect` dequotes its argument as one), and that a psql argument.
fn connect(database: &str) -> String {
    let value = database.replace('\\', "\\\\").replace('\'', "\\'");
    let conninfo = format!("dbname='{value}'");
    let identifier = format!("\"{}\"", conninfo.replace('"', "\"\""));
    format!("\\connect -reuse-previous=on {}\n", meta_quote(&identifier))
}

/// A psql meta-command argument that psql reads back as exactly `value`:
/// in single quotes psql doubles quotes and expands backslash escapes,
/// and the argument must stay on one line.
fn meta_quote(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('\'', "''")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    format!("'{escaped}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_arguments_keep_quotes_backslashes_and_lines() {
        assert_eq!(meta_quote("cola"), "'cola'");
        assert_eq!(meta_quote("it's\\a\nb"), "'it''s\\\\a\\nb'");
    }

    #[test]
    fn connecting_keeps_any_database_name() {
        assert_eq!(
            connect("postgres"),
            r#"\connect -reuse-previous=on '"dbname=''postgres''"'"#.to_owned() + "\n"
        );
        assert_eq!(
            connect(r#"a'b\c"d"#),
            r#"\connect -reuse-previous=on '"dbname=''a\\''b\\\\c""d''"'"#.to_owned() + "\n"
        );
    }
}
