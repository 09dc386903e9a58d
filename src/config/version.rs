//! Which PostgreSQL major to run, and where its tree is. Decided from the
//! data directory, PGVERSION and the majors installed, without starting
//! PostgreSQL.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;

pub(crate) use spilo_layout::ARCHIVE_SUBDIR;
use spilo_layout::archive::unpacked_root;

/// Libraries preloaded when the major ships them (looked up in its lib
/// directory, so an image without one still starts).
const PRELOAD_CANDIDATES: [&str; 5] = [
    "pg_stat_statements",
    "set_user",
    "timescaledb",
    "pg_cron",
    "pg_stat_kcache",
];

/// Why a major was chosen, for the log line that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    DataDirectory,
    Pgversion,
    Newest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) major: u32,
    pub(crate) source: Source,
    /// The major's programs; for a packed major that `init` unpacks, where
    /// they will be once it is unpacked.
    pub(crate) bin_dir: PathBuf,
    pub(crate) lib_dir: PathBuf,
}

impl Version {
    /// The candidates the major ships. Looked up when Patroni's
    /// configuration is rendered, not when the model is built: the lib
    /// directory of a packed major exists only once it is unpacked.
    pub(crate) fn preload_libraries(&self) -> Vec<&'static str> {
        PRELOAD_CANDIDATES
            .into_iter()
            .filter(|lib| self.lib_dir.join(format!("{lib}.so")).exists())
            .collect()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::DataDirectory => "data directory's PG_VERSION",
            Source::Pgversion => "PGVERSION",
            Source::Newest => "newest installed major",
        })
    }
}

/// The majors under `root` that have a bin directory or an archive,
/// ascending.
pub(crate) fn installed_majors(root: &Path) -> Result<Vec<u32>, ConfigError> {
    let entries = std::fs::read_dir(root).map_err(|source| ConfigError::Read {
        path: root.to_owned(),
        source,
    })?;
    let mut majors: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            e.path().join("bin").is_dir().then_some(major)
        })
        .collect();
    match std::fs::read_dir(root.join(ARCHIVE_SUBDIR)) {
        Ok(archives) => majors.extend(archives.filter_map(Result::ok).filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")?
                .parse::<u32>()
                .ok()
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: root.join(ARCHIVE_SUBDIR),
                source,
            });
        }
    }
    majors.sort_unstable();
    majors.dedup();
    Ok(majors)
}

/// Chooses the major: the data directory's own (never another), else
/// PGVERSION, else the newest installed. A packed major (no bin directory
/// under `root`) is found where it is unpacked when `unpacked` says where.
pub(crate) fn choose(
    root: &Path,
    installed: &[u32],
    pgdata: &Path,
    pgversion: Option<&str>,
    unpacked: Option<&Path>,
) -> Result<Version, ConfigError> {
    let listed = || list(installed);
    let wanted = pgversion
        .map(|raw| {
            raw.trim().parse::<u32>().map_err(|_| {
                ConfigError::invalid("PGVERSION", raw, "not a PostgreSQL major version")
            })
        })
        .transpose()?;

    let pg_version_file = pgdata.join("PG_VERSION");
    let (major, source) = match std::fs::read_to_string(&pg_version_file) {
        Ok(text) => {
            let major = text.trim().parse::<u32>().map_err(|_| ConfigError::File {
                path: pg_version_file.clone(),
                reason: format!("not a PostgreSQL major version: {:?}", text.trim()),
            })?;
            if !installed.contains(&major) {
                return Err(ConfigError::File {
                    path: pg_version_file,
                    reason: format!(
                        "the data directory is PostgreSQL {major}, which this image does not have (installed: {}); refusing to start it with other binaries",
                        listed()
                    ),
                });
            }
            (major, Source::DataDirectory)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match wanted {
            Some(major) if installed.contains(&major) => (major, Source::Pgversion),
            Some(major) => {
                return Err(ConfigError::invalid(
                    "PGVERSION",
                    &major.to_string(),
                    format!(
                        "PostgreSQL {major} is not installed (installed: {})",
                        listed()
                    ),
                ));
            }
            None => match installed.last() {
                Some(&major) => (major, Source::Newest),
                None => {
                    return Err(ConfigError::File {
                        path: root.to_owned(),
                        reason: "no PostgreSQL major is installed here".into(),
                    });
                }
            },
        },
        Err(source) => {
            return Err(ConfigError::Read {
                path: pg_version_file,
                source,
            });
        }
    };
    let tree = match unpacked {
        Some(dir) if !root.join(major.to_string()).join("bin").is_dir() => {
            unpacked_root(dir, major)
        }
        _ => root.to_owned(),
    };
    Ok(Version {
        major,
        source,
        bin_dir: tree.join(major.to_string()).join("bin"),
        lib_dir: tree.join(major.to_string()).join("lib"),
    })
}

fn list(installed: &[u32]) -> String {
    if installed.is_empty() {
        return "none".into();
    }
    installed
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(majors: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for m in majors {
            std::fs::create_dir_all(dir.path().join(m).join("bin")).unwrap();
        }
        dir
    }

    #[test]
    fn installed_majors_are_bin_directories() {
        let root = tree(&["15", "17", "9"]);
        std::fs::create_dir_all(root.path().join("16")).unwrap(); // no bin
        std::fs::create_dir_all(root.path().join("common/bin")).unwrap();
        assert_eq!(installed_majors(root.path()).unwrap(), vec![9, 15, 17]);
    }

    #[test]
    fn archived_majors_count_as_installed() {
        let root = tree(&["17"]);
        let archives = root.path().join(ARCHIVE_SUBDIR);
        std::fs::create_dir_all(&archives).unwrap();
        for name in ["15.json", "15.tar.zst", "17.json", "notes.json"] {
            std::fs::write(archives.join(name), "").unwrap();
        }
        assert_eq!(installed_majors(root.path()).unwrap(), vec![15, 17]);
    }

    #[test]
    fn newest_without_pgversion_or_data() {
        let root = tree(&["15", "17"]);
        let data = tempfile::tempdir().unwrap();
        let v = choose(root.path(), &[15, 17], data.path(), None, None).unwrap();
        assert_eq!((v.major, v.source), (17, Source::Newest));
        assert_eq!(v.bin_dir, root.path().join("17/bin"));
    }

    #[test]
    fn a_packed_major_is_where_init_unpacks_it() {
        let root = tree(&["17"]);
        let data = tempfile::tempdir().unwrap();
        let run = Path::new("/run/spilo/majors");
        let v = choose(root.path(), &[15, 17], data.path(), Some("15"), Some(run)).unwrap();
        assert_eq!(
            v.bin_dir,
            Path::new("/run/spilo/majors/15/usr/lib/postgresql/15/bin")
        );
        let v = choose(root.path(), &[15, 17], data.path(), Some("17"), Some(run)).unwrap();
        assert_eq!(v.bin_dir, root.path().join("17/bin"));
    }

    #[test]
    fn pgversion_selects() {
        let data = tempfile::tempdir().unwrap();
        let v = choose(Path::new("/r"), &[15, 17], data.path(), Some("15"), None).unwrap();
        assert_eq!((v.major, v.source), (15, Source::Pgversion));
        assert_eq!(v.bin_dir, Path::new("/r/15/bin"));
        assert_eq!(v.lib_dir, Path::new("/r/15/lib"));
    }

    #[test]
    fn data_directory_wins_over_pgversion() {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("PG_VERSION"), "15\n").unwrap();
        let v = choose(Path::new("/r"), &[15, 17], data.path(), Some("17"), None).unwrap();
        assert_eq!((v.major, v.source), (15, Source::DataDirectory));
    }

    #[test]
    fn data_directory_of_a_missing_major_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("PG_VERSION"), "13\n").unwrap();
        let err = choose(Path::new("/r"), &[15, 17], data.path(), Some("17"), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PG_VERSION"), "{msg}");
        assert!(msg.contains("PostgreSQL 13"), "{msg}");
        assert!(msg.contains("15, 17"), "{msg}");
    }

    #[test]
    fn bad_pgversion() {
        let data = tempfile::tempdir().unwrap();
        let err = choose(Path::new("/r"), &[15], data.path(), Some("abc"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PGVERSION=abc: not a PostgreSQL major version"
        );
        let err = choose(Path::new("/r"), &[15], data.path(), Some("16"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PGVERSION=16: PostgreSQL 16 is not installed (installed: 15)"
        );
    }

    #[test]
    fn nothing_installed() {
        let data = tempfile::tempdir().unwrap();
        let err = choose(Path::new("/r"), &[], data.path(), None, None).unwrap_err();
        assert!(err.to_string().contains("no PostgreSQL major"));
    }
}
