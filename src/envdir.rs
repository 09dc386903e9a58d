//! `envdir DIR PROGRAM [ARGS...]`, as daemontools has it: PROGRAM runs
//! with a variable for each file in DIR. The operator's standby patch runs
//! `envdir "/run/etc/wal-e.d/env-standby" /scripts/restore_command.sh`;
//! the image links `envdir` to this binary.
//!
//! A file's first line is the value, without trailing spaces and tabs,
//! NULs read as newlines; an empty file removes the variable.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// daemontools' status for envdir's own failures.
const FAILED: u8 = 111;

#[derive(Debug, thiserror::Error)]
pub enum EnvdirError {
    #[error("usage: envdir DIR PROGRAM [ARGS...]")]
    Usage,
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot run {}: {source}", program.to_string_lossy())]
    Exec {
        program: OsString,
        source: io::Error,
    },
}

/// The variables DIR sets (Some) and removes (None), by file name.
pub fn variables(dir: &Path) -> Result<Vec<(OsString, Option<OsString>)>, EnvdirError> {
    let read = |path: &Path, source| EnvdirError::Read {
        path: path.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| read(dir, e))? {
        let entry = entry.map_err(|e| read(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name.to_string_lossy().contains('=') {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes = fs::read(&path).map_err(|e| read(&path, e))?;
        if bytes.is_empty() {
            found.push((name, None));
            continue;
        }
        let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let end = line
            .iter()
            .rposition(|b| *b != b' ' && *b != b'\t')
            .map_or(0, |at| at + 1);
        let value: Vec<u8> = line[..end]
            .iter()
            .map(|b| if *b == 0 { b'\n' } else { *b })
            .collect();
        found.push((name, Some(OsString::from_vec(value))));
    }
    found.sort();
    Ok(found)
}

/// Runs in place of this process: returns only when it could not.
fn exec(mut args: Vec<OsString>) -> EnvdirError {
    if args.len() < 2 {
        return EnvdirError::Usage;
    }
    let dir = PathBuf::from(args.remove(0));
    let program = args.remove(0);
    let vars = match variables(&dir) {
        Ok(vars) => vars,
        Err(e) => return e,
    };
    let mut command = Command::new(&program);
    command.args(args);
    for (name, value) in vars {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    EnvdirError::Exec {
        program,
        source: command.exec(),
    }
}

pub fn run(args: Vec<OsString>) -> ExitCode {
    eprintln!("envdir: fatal: {}", exec(args));
    ExitCode::from(FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_daemontools_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [
            ("PLAIN", &b"value\nsecond line ignored\n"[..]),
            ("TRAILING", b"spaced \t \n"),
            ("NUL", b"a\0b"),
            ("GONE", b""),
            (".hidden", b"x"),
        ] {
            fs::write(dir.path().join(name), contents).unwrap();
        }
        fs::create_dir(dir.path().join("SUBDIR")).unwrap();
        let os = |s: &str| OsString::from(s);
        assert_eq!(
            variables(dir.path()).unwrap(),
            [
                (os("GONE"), None),
                (os("NUL"), Some(os("a\nb"))),
                (os("PLAIN"), Some(os("value"))),
                (os("TRAILING"), Some(os("spaced"))),
            ]
        );
    }

    #[test]
    fn what_cannot_be_read_or_run_is_named() {
        let missing = Path::new("/nonexistent/env-standby");
        let err = variables(missing).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/env-standby: "), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = exec(vec![
            dir.path().as_os_str().to_owned(),
            "/nonexistent/program".into(),
        ]);
        assert!(
            err.to_string()
                .starts_with("cannot run /nonexistent/program: "),
            "{err}"
        );
        assert!(matches!(exec(vec!["dir".into()]), EnvdirError::Usage));
    }
}
