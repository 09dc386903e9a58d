//! The servers' own psql, for the few statements an upgrade runs: local
//! ones over the socket (trust), a replica's over TCP as the superuser.
//! Errors carry psql's message: it is the reason an upgrade stops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::UpgradeError;

/// Sessions neither wait for a synchronous standby nor stop at a user's
/// statement_timeout; unqualified names resolve in pg_catalog only.
const OPTIONS: &str = "-c synchronous_commit=local -c statement_timeout=0 \
                       -c client_min_messages=warning -c search_path=pg_catalog";

/// Columns of `rows`, separated by the unit separator (never in names).
const SEPARATOR: &str = "\x1f";

#[derive(Debug, Clone)]
pub(crate) struct Psql {
    program: PathBuf,
    connection: Vec<(&'static str, String)>,
    /// Where it runs from: psql reads nothing there, but a child of ours
    /// may be in a directory that is about to be renamed.
    dir: PathBuf,
}

impl Psql {
    /// The local server, over its socket.
    pub(crate) fn socket(bin_dir: &Path, socket_dir: &Path, port: u16, user: &str) -> Self {
        Psql {
            program: bin_dir.join("psql"),
            connection: vec![
                ("PGHOST", socket_dir.display().to_string()),
                ("PGPORT", port.to_string()),
                ("PGUSER", user.to_owned()),
                ("PGDATABASE", "postgres".to_owned()),
            ],
            dir: "/".into(),
        }
    }

    /// Another member, over TCP with TLS, as `user` with `password`.
    pub(crate) fn remote(
        bin_dir: &Path,
        host: &str,
        port: u16,
        user: &str,
        password: &str,
    ) -> Self {
        Psql {
            program: bin_dir.join("psql"),
            connection: vec![
                ("PGHOST", host.to_owned()),
                ("PGPORT", port.to_string()),
                ("PGUSER", user.to_owned()),
                ("PGPASSWORD", password.to_owned()),
                ("PGSSLMODE", "require".to_owned()),
                ("PGDATABASE", "postgres".to_owned()),
            ],
            dir: "/".into(),
        }
    }

    /// The same server, another database.
    pub(crate) fn database(&self, name: &str) -> Self {
        let mut other = self.clone();
        other.connection.retain(|(var, _)| *var != "PGDATABASE");
        other.connection.push(("PGDATABASE", name.to_owned()));
        other
    }

    /// The one value `sql` returns.
    pub(crate) fn value(&self, sql: &str) -> Result<String, UpgradeError> {
        Ok(self.run(sql, &[])?.trim().to_owned())
    }

    /// Every row `sql` returns, as columns.
    pub(crate) fn rows(&self, sql: &str) -> Result<Vec<Vec<String>>, UpgradeError> {
        Ok(self
            .run(sql, &["-F", SEPARATOR])?
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split(SEPARATOR).map(str::to_owned).collect())
            .collect())
    }

    /// Runs `script` (statements and psql meta-commands) from stdin, with
    /// `variables` set; stops at the first error.
    pub(crate) fn script(
        &self,
        script: &str,
        variables: &[(&str, &str)],
    ) -> Result<String, UpgradeError> {
        let mut args = Vec::new();
        for (name, value) in variables {
            args.push("-v".to_owned());
            args.push(format!("{name}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.execute(None, &args, script)
    }

    fn run(&self, sql: &str, args: &[&str]) -> Result<String, UpgradeError> {
        self.execute(Some(sql), args, "")
    }

    fn execute(
        &self,
        command: Option<&str>,
        args: &[&str],
        stdin: &str,
    ) -> Result<String, UpgradeError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .envs(self.connection.iter().map(|(k, v)| (*k, v)))
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGOPTIONS", OPTIONS)
            .env("PGAPPNAME", "spilo upgrade")
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(sql) = command {
            cmd.args(["-c", sql]);
        }
        let mut child = cmd.spawn().map_err(UpgradeError::spawn(&self.program))?;
        if let Some(mut input) = child.stdin.take() {
            // A failure to write shows as psql's own error below.
            let _ = input.write_all(stdin.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(UpgradeError::spawn(&self.program))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let target = self
            .connection
            .iter()
            .filter(|(var, _)| matches!(*var, "PGHOST" | "PGDATABASE"))
            .map(|(_, value)| value.as_str())
            .collect::<Vec<_>>()
            .join("/");
        Err(UpgradeError::Step {
            what: format!("psql ({target})"),
            reason: last_line(&out.stderr),
        })
    }
}

/// The last non-empty line a program printed: its reason.
pub(crate) fn last_line(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

/// An LSN as a number (`16/B374D848`).
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_are_numbers() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1/xyz"), None);
    }

    #[test]
    fn the_reason_is_the_last_line() {
        assert_eq!(last_line(b"a\nERROR:  b\n\n"), "ERROR:  b");
        assert_eq!(last_line(b""), "no message");
    }
}
