//! `spilo clone-basebackup`: Patroni's bootstrap of a clone of a running
//! cluster (CLONE_METHOD=CLONE_WITH_BASEBACKUP). The source's major is
//! checked before anything is copied: a copy of another major would start
//! with the wrong binaries, or be removed and copied again at every try.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

/// What to copy, from where (rendered by `render::clone`).
#[derive(Debug)]
pub struct Basebackup {
    /// This cluster's major, whose binaries run.
    pub major: u32,
    pub bin_dir: PathBuf,
    pub pgdata: PathBuf,
    pub waldir: Option<PathBuf>,
    /// The source's connection string (its password in a pgpass file).
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("cannot run {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error("{} failed ({status}){}", program.display(), output_suffix(output))]
    Failed {
        program: PathBuf,
        status: ExitStatus,
        output: String,
    },
    #[error("the source answered server_version_num {0:?}: not a version")]
    Version(String),
    #[error(
        "the source runs PostgreSQL {source_major}, this cluster {major} (PGVERSION): a clone needs the source's major; nothing was copied"
    )]
    Major { source_major: u32, major: u32 },
    #[error("the copy in {} is not PostgreSQL {major}: PG_VERSION says {found:?}", path.display())]
    Copied {
        path: PathBuf,
        major: u32,
        found: String,
    },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// Checks the source's major, copies it with pg_basebackup (WAL
/// streamed), and checks the copy.
pub fn run(clone: &Basebackup) -> Result<(), CloneError> {
    let source_major = source_major(clone)?;
    if source_major != clone.major {
        return Err(CloneError::Major {
            source_major,
            major: clone.major,
        });
    }
    eprintln!(
        "clone-basebackup: copying PostgreSQL {source_major} from {} into {}",
        clone.source,
        clone.pgdata.display()
    );
    let program = clone.bin_dir.join("pg_basebackup");
    let mut command = Command::new(&program);
    command
        .arg("--pgdata")
        .arg(&clone.pgdata)
        .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"])
        .args(["--dbname", &clone.source]);
    if let Some(waldir) = &clone.waldir {
        command.arg("--waldir").arg(waldir);
    }
    let status = command.status().map_err(|source| CloneError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !status.success() {
        return Err(CloneError::Failed {
            program,
            status,
            output: String::new(),
        });
    }
    let path = clone.pgdata.join("PG_VERSION");
    let found = fs::read_to_string(&path).map_err(|source| CloneError::Read {
        path: path.clone(),
        source,
    })?;
    if found.trim() != clone.major.to_string() {
        return Err(CloneError::Copied {
            path,
            major: clone.major,
            found: found.trim().to_owned(),
        });
    }
    eprintln!("clone-basebackup: copied");
    Ok(())
}

fn source_major(clone: &Basebackup) -> Result<u32, CloneError> {
    let program = clone.bin_dir.join("psql");
    let output = Command::new(&program)
        .args(["-X", "-A", "-t", "-w", "-c", "SHOW server_version_num"])
        .args(["-d", &clone.source])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CloneError::Spawn {
            program: program.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(CloneError::Failed {
            program,
            status: output.status,
            output: one_line(&output.stderr),
        });
    }
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    major_of(&answer).ok_or(CloneError::Version(answer))
}

/// The major of a server_version_num of PostgreSQL 10 or later.
fn major_of(version_num: &str) -> Option<u32> {
    let num: u32 = version_num.parse().ok()?;
    (num >= 100_000).then_some(num / 10_000)
}

fn one_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    /// Whether `path` is an empty or missing directory.
    fn untouched(path: &Path) -> bool {
        fs::read_dir(path).map_or(true, |mut d| d.next().is_none())
    }

    #[test]
    fn majors_of_version_numbers() {
        assert_eq!(major_of("150018"), Some(15));
        assert_eq!(major_of("180001"), Some(18));
        assert_eq!(major_of("90624"), None);
        assert_eq!(major_of("fifteen"), None);
    }

    /// A bin directory whose psql answers `version` and whose
    /// pg_basebackup writes PG_VERSION `copied`.
    fn fake_bin(dir: &Path, version: &str, copied: &str) -> PathBuf {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let script = |name: &str, body: String| {
            let path = bin.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("psql", format!("echo {version}"));
        script(
            "pg_basebackup",
            format!("mkdir -p \"$2\" && echo {copied} > \"$2/PG_VERSION\""),
        );
        bin
    }

    fn spec(dir: &Path, bin_dir: PathBuf) -> Basebackup {
        Basebackup {
            major: 17,
            bin_dir,
            pgdata: dir.join("pgdata"),
            waldir: None,
            source: "host=source user=standby".into(),
        }
    }

    #[test]
    fn another_major_is_refused_before_any_copy() {
        let dir = tempfile::tempdir().unwrap();
        let clone = spec(dir.path(), fake_bin(dir.path(), "150018", "15"));
        let err = run(&clone).unwrap_err().to_string();
        assert_eq!(
            err,
            "the source runs PostgreSQL 15, this cluster 17 (PGVERSION): a clone needs the source's major; nothing was copied"
        );
        assert!(untouched(&clone.pgdata));
    }

    #[test]
    fn the_same_major_is_copied_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let clone = spec(dir.path(), fake_bin(dir.path(), "170007", "17"));
        run(&clone).unwrap();
        assert_eq!(
            fs::read_to_string(clone.pgdata.join("PG_VERSION")).unwrap(),
            "17\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let odd = spec(dir.path(), fake_bin(dir.path(), "170007", "16"));
        let err = run(&odd).unwrap_err().to_string();
        assert!(
            err.contains("is not PostgreSQL 17: PG_VERSION says \"16\""),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_source_names_psql_and_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_bin(dir.path(), "x", "17");
        fs::write(
            bin.join("psql"),
            "#!/bin/sh\necho 'psql: error: connection refused' >&2\nexit 2\n",
        )
        .unwrap();
        let err = run(&spec(dir.path(), bin)).unwrap_err().to_string();
        assert!(
            err.ends_with("psql failed (exit status: 2): psql: error: connection refused"),
            "{err}"
        );
    }
}
