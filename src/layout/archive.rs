//! A packed major: `<postgres root>/archives/<N>.tar.zst` (or `.tar.gz`)
//! with `<N>.json` ([`ArchiveInfo`]) beside it. `spilo-build compress`
//! writes them; [`unpack_if_needed`] is what `spilo init` calls to unpack
//! the one major it runs into a writable place before Patroni starts.
//!
//! An unpacked major is relocated: PostgreSQL finds its share and lib
//! directories relative to its binaries, and the libraries it brought are
//! found through `library_path` (LD_LIBRARY_PATH). None of them shadow a
//! library of the image: each was removed from it.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{ARCHIVE_SUBDIR, IoError, LayoutError, POSTGRES_ROOT, under};

/// zstd's long-distance window (128 MiB, as `zstd --long`): the majors'
/// trees repeat content far apart. The decoder must be allowed as much.
pub const WINDOW_LOG: u32 = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// zstd -19 with a long window: a third of gzip's size, unpacks in well
    /// under a second.
    Zstd,
    /// gzip (flate2): no smaller than the image layer's own gzip.
    Gzip,
}

impl Format {
    /// The archive's file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Zstd => "tar.zst",
            Format::Gzip => "tar.gz",
        }
    }
}

/// `<N>.json` next to an archive: how to use it, and what `manifest` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    pub major: u32,
    pub format: Format,
    /// File name inside the archive directory.
    pub file: String,
    pub bytes: u64,
    pub unpacked_bytes: u64,
    pub files: u64,
    /// Directories (relative to the unpack root) holding shared libraries.
    pub library_dirs: Vec<PathBuf>,
    pub extensions: Vec<String>,
    /// The packages whose files are packed.
    pub packages: Vec<String>,
    /// Unpack time measured at build.
    pub unpack_seconds: f64,
}

pub fn archive_dir(postgres_root: &Path) -> PathBuf {
    postgres_root.join(ARCHIVE_SUBDIR)
}

pub fn info_path(postgres_root: &Path, major: u32) -> PathBuf {
    archive_dir(postgres_root).join(format!("{major}.json"))
}

impl ArchiveInfo {
    /// Writes it as `<N>.json` into the archive directory of `postgres_root`.
    pub fn write(&self, postgres_root: &Path) -> Result<(), LayoutError> {
        let path = info_path(postgres_root, self.major);
        let text = serde_json::to_string_pretty(self).map_err(|source| LayoutError::Json {
            action: "encode",
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(IoError::at("write", &path))?;
        Ok(())
    }
}

pub fn read_info(postgres_root: &Path, major: u32) -> Result<ArchiveInfo, LayoutError> {
    let path = info_path(postgres_root, major);
    let text = std::fs::read_to_string(&path).map_err(IoError::at("read", &path))?;
    serde_json::from_str(&text).map_err(|source| LayoutError::Json {
        action: "parse",
        path,
        source,
    })
}

/// The postgres root of `major` unpacked into `dest`: the image's layout
/// beneath `<dest>/<major>`.
pub fn unpacked_root(dest: &Path, major: u32) -> PathBuf {
    under(&dest.join(major.to_string()), POSTGRES_ROOT)
}

/// Unpacks `archive` into `dest` (created).
pub fn unpack(archive: &Path, format: Format, dest: &Path) -> Result<(), LayoutError> {
    let file = File::open(archive).map_err(IoError::at("open", archive))?;
    let file = BufReader::new(file);
    std::fs::create_dir_all(dest).map_err(IoError::at("create", dest))?;
    let unpack = |reader: &mut dyn std::io::Read| {
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.set_preserve_mtime(true);
        tar.unpack(dest)
            .map_err(|e| LayoutError::from(IoError::at("unpack", archive)(e)))
    };
    match format {
        Format::Zstd => {
            let mut dec = zstd::Decoder::with_buffer(file).map_err(IoError::at("open", archive))?;
            dec.window_log_max(WINDOW_LOG)
                .map_err(IoError::at("open", archive))?;
            unpack(&mut dec)
        }
        Format::Gzip => unpack(&mut flate2::read::GzDecoder::new(file)),
    }
}

/// An unpacked major: configure with `postgres_root`, run PostgreSQL with
/// `library_path` in LD_LIBRARY_PATH.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub postgres_root: PathBuf,
    pub library_path: Vec<PathBuf>,
    /// False when an earlier start of this container had unpacked it.
    pub fresh: bool,
    pub seconds: f64,
}

/// Unpacks `major` into `<dest>/<major>` unless it is installed uncompressed
/// (`None`) or already unpacked there. Only that major is touched.
pub fn unpack_if_needed(
    postgres_root: &Path,
    major: u32,
    dest: &Path,
) -> Result<Option<Unpacked>, LayoutError> {
    if postgres_root.join(major.to_string()).join("bin").is_dir() {
        return Ok(None);
    }
    let info = read_info(postgres_root, major)?;
    let archive = archive_dir(postgres_root).join(&info.file);
    let target = dest.join(major.to_string());
    let marker = target.join(".spilo-unpacked");
    let stamp = format!("{} {}\n", info.file, info.bytes);
    let started = Instant::now();
    let fresh = match std::fs::read_to_string(&marker) {
        Ok(text) if text == stamp => false,
        _ => {
            // A partial unpack from an interrupted start is replaced whole.
            let tmp = dest.join(format!(".{major}.unpacking"));
            for stale in [&tmp, &target] {
                if stale.exists() {
                    std::fs::remove_dir_all(stale).map_err(IoError::at("remove", stale))?;
                }
            }
            unpack(&archive, info.format, &tmp)?;
            std::fs::write(tmp.join(".spilo-unpacked"), &stamp)
                .map_err(IoError::at("write", &tmp))?;
            std::fs::rename(&tmp, &target).map_err(IoError::at("rename", &tmp))?;
            true
        }
    };
    Ok(Some(Unpacked {
        postgres_root: unpacked_root(dest, major),
        library_path: info.library_dirs.iter().map(|d| target.join(d)).collect(),
        fresh,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A postgres root holding major 15 packed: one program, no libraries.
    /// (Packing as the build does it is tested with `spilo-build compress`.)
    fn packed(dir: &Path) -> PathBuf {
        let pg_root = dir.join("postgres-root");
        let archive = archive_dir(&pg_root).join("15.tar.zst");
        std::fs::create_dir_all(archive_dir(&pg_root)).unwrap();
        let mut tar =
            tar::Builder::new(zstd::Encoder::new(File::create(&archive).unwrap(), 1).unwrap());
        let program = b"#!/bin/true\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(program.len() as u64);
        header.set_mode(0o755);
        tar.append_data(
            &mut header,
            "usr/lib/postgresql/15/bin/postgres",
            &program[..],
        )
        .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let info = ArchiveInfo {
            major: 15,
            format: Format::Zstd,
            file: "15.tar.zst".into(),
            bytes: std::fs::metadata(&archive).unwrap().len(),
            unpacked_bytes: program.len() as u64,
            files: 1,
            library_dirs: vec!["usr/lib/x86_64-linux-gnu".into()],
            extensions: vec![],
            packages: vec![],
            unpack_seconds: 0.0,
        };
        info.write(&pg_root).unwrap();
        pg_root
    }

    #[test]
    fn unpacks_once_relocated() {
        let dir = tempfile::tempdir().unwrap();
        let pg_root = packed(dir.path());
        let dest = dir.path().join("majors");
        let first = unpack_if_needed(&pg_root, 15, &dest).unwrap().unwrap();
        assert!(first.fresh);
        assert_eq!(first.postgres_root, dest.join("15/usr/lib/postgresql"));
        assert!(first.postgres_root.join("15/bin/postgres").is_file());
        assert_eq!(
            first.library_path,
            vec![dest.join("15/usr/lib/x86_64-linux-gnu")]
        );
        let again = unpack_if_needed(&pg_root, 15, &dest).unwrap().unwrap();
        assert!(!again.fresh);
    }

    #[test]
    fn an_installed_major_is_not_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let pg_root = packed(dir.path());
        std::fs::create_dir_all(pg_root.join("17/bin")).unwrap();
        assert_eq!(
            unpack_if_needed(&pg_root, 17, &dir.path().join("dest")).unwrap(),
            None
        );
        assert!(!dir.path().join("dest").exists());
    }

    #[test]
    fn an_interrupted_unpack_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let pg_root = packed(dir.path());
        let dest = dir.path().join("dest");
        std::fs::create_dir_all(dest.join("15/usr")).unwrap();
        std::fs::write(dest.join("15/usr/half"), "x").unwrap();
        let unpacked = unpack_if_needed(&pg_root, 15, &dest).unwrap().unwrap();
        assert!(unpacked.fresh);
        assert!(!dest.join("15/usr/half").exists());
    }

    #[test]
    fn a_major_without_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_if_needed(dir.path(), 13, &dir.path().join("d")).unwrap_err();
        assert!(err.to_string().contains("13.json"), "{err}");
    }
}
