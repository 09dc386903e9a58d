//! `spilo-build compress`: every major but the default is packed into its
//! own archive (what only that major needs: its tree and the libraries no
//! other part of the image uses). The archive format, and the unpacking
//! `spilo init` does, are `spilo_layout::archive`'s.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use spilo_layout::archive::{WINDOW_LOG, unpack};
use spilo_layout::{IoError, POSTGRES_ROOT};

use super::dpkg::{self, Installed};
use super::install::Selection;
use super::slim::{mib, walk};
use super::spec::Spec;
use super::{BuildError, Progress, under};

/// What `pack` writes and where, for whoever packs a major (the host tests
/// too).
pub use spilo_layout::archive::{ArchiveInfo, Format, archive_dir};

/// Parts of an exclusive package that are packed. Anything else of it (data
/// under /usr/share, programs in /usr/bin) stays, since libraries find data
/// by absolute path.
const PACKED: [&str; 2] = ["/usr/lib/", "/usr/share/postgresql/"];

/// The level used when none is given: zstd's best before its "ultra"
/// levels, gzip's best.
fn default_level(format: Format) -> i32 {
    match format {
        Format::Zstd => 19,
        Format::Gzip => 9,
    }
}

pub fn run(root: &Path, spec: &Spec, format: Format, level: Option<i32>) -> Result<(), BuildError> {
    let progress = Progress::start("compress");
    let level = level.unwrap_or(default_level(format));
    let selection = Selection::load(root)?;
    let installed = Installed::query()?;
    let default = spec.image.default_major;
    let postgres_root = under(root, POSTGRES_ROOT);
    for (&major, packages) in selection.majors.iter().filter(|(m, _)| **m != default) {
        let mut others: Vec<&String> = spec
            .bootstrap
            .packages
            .iter()
            .chain(&selection.global)
            .collect();
        for (_, list) in selection.majors.iter().filter(|(m, _)| **m != major) {
            others.extend(list);
        }
        let keep = installed.closure(others);
        let exclusive: BTreeSet<String> = installed
            .closure(packages)
            .difference(&keep)
            .cloned()
            .collect();
        // The major's own trees whole (package scripts add files there, e.g.
        // PostGIS's control files as alternatives), plus the libraries of
        // the packages only it needs.
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        for tree in [
            format!("/usr/lib/postgresql/{major}"),
            format!("/usr/share/postgresql/{major}"),
        ] {
            walk(&under(root, &tree), &mut |path, _| {
                if let Ok(inside) = path.strip_prefix(root) {
                    paths.insert(Path::new("/").join(inside));
                }
                Ok(())
            })?;
        }
        paths.extend(dpkg::files_of(&exclusive)?.into_iter().filter(|p| {
            PACKED
                .iter()
                .any(|prefix| p.starts_with(prefix) && p.as_os_str().len() > prefix.len())
        }));
        let paths: Vec<PathBuf> = paths.into_iter().collect();
        progress.say(&format!(
            "PostgreSQL {major}: {} packages only it needs; packing with {format:?} level {level}",
            exclusive.len()
        ));
        let extensions = extensions_of(root, major)?;
        let started = Instant::now();
        let file = format!("{major}.{}", format.extension());
        let archive = archive_dir(&postgres_root).join(&file);
        let (files, unpacked_bytes) = pack(root, &paths, &archive, format, level)?;
        let bytes = std::fs::metadata(&archive)
            .map_err(IoError::at("inspect", &archive))?
            .len();
        progress.say(&format!(
            "PostgreSQL {major}: {files} files, {} → {} in {:.1}s",
            mib(unpacked_bytes),
            mib(bytes),
            started.elapsed().as_secs_f64()
        ));
        let mut info = ArchiveInfo {
            major,
            format,
            file,
            bytes,
            unpacked_bytes,
            files,
            library_dirs: Vec::new(),
            extensions,
            packages: exclusive.into_iter().collect(),
            unpack_seconds: 0.0,
        };
        // Check the archive before the originals go: unpack it, find its
        // libraries, and see every program and module resolve its own.
        let scratch = tempdir(root, major)?;
        let started = Instant::now();
        unpack(&archive, format, &scratch)?;
        info.unpack_seconds = started.elapsed().as_secs_f64();
        info.library_dirs = library_dirs(&scratch)?;
        let unpacked_extensions = extensions_of(&scratch, major)?;
        if unpacked_extensions != info.extensions {
            return Err(BuildError::Check(format!(
                "PostgreSQL {major} unpacked has extensions {unpacked_extensions:?}, the image had {:?}",
                info.extensions
            )));
        }
        remove_packed(root, &paths)?;
        let checked = check_links(&scratch, major, &info.library_dirs);
        std::fs::remove_dir_all(&scratch).map_err(IoError::at("remove", &scratch))?;
        checked?;
        progress.say(&format!(
            "PostgreSQL {major}: unpacks in {:.2}s; libraries in {}",
            info.unpack_seconds,
            info.library_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        info.write(&postgres_root)?;
    }
    progress.say("done");
    Ok(())
}

/// Extension names a major ships (its `*.control` files).
pub fn extensions_of(root: &Path, major: u32) -> Result<Vec<String>, BuildError> {
    let dir = under(root, format!("/usr/share/postgresql/{major}/extension"));
    let read = std::fs::read_dir(&dir).map_err(IoError::at("list", &dir))?;
    let mut names: Vec<String> = read
        .filter_map(Result::ok)
        // A link that leads nowhere is no extension.
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".control")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Packs the existing files and links among `paths` (absolute, as in the
/// image) into `archive`. Returns (entries, bytes of regular files).
pub fn pack(
    root: &Path,
    paths: &[PathBuf],
    archive: &Path,
    format: Format,
    level: i32,
) -> Result<(u64, u64), BuildError> {
    if let Some(parent) = archive.parent() {
        std::fs::create_dir_all(parent).map_err(IoError::at("create", parent))?;
    }
    let out = File::create(archive).map_err(IoError::at("create", archive))?;
    let out = BufWriter::new(out);
    let io = |e: std::io::Error| IoError::at("write", archive)(e);
    match format {
        Format::Zstd => {
            let mut enc = zstd::Encoder::new(out, level).map_err(io)?;
            enc.long_distance_matching(true).map_err(io)?;
            enc.window_log(WINDOW_LOG).map_err(io)?;
            let (count, bytes, enc) = append_all(root, paths, enc, archive)?;
            enc.finish().map_err(io)?.flush().map_err(io)?;
            Ok((count, bytes))
        }
        Format::Gzip => {
            let enc = flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(level.clamp(0, 9) as u32),
            );
            let (count, bytes, enc) = append_all(root, paths, enc, archive)?;
            enc.finish().map_err(io)?.flush().map_err(io)?;
            Ok((count, bytes))
        }
    }
}

fn append_all<W: Write>(
    root: &Path,
    paths: &[PathBuf],
    out: W,
    archive: &Path,
) -> Result<(u64, u64, W), BuildError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let (mut count, mut bytes) = (0, 0);
    for path in paths {
        let full = under(root, path);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            // Removed by slim.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(IoError::at("inspect", &full)(e).into()),
        };
        if meta.is_dir() {
            continue;
        }
        let name = path.strip_prefix("/").unwrap_or(path);
        // A link to an absolute path (alternatives, mostly) would leave the
        // relocated tree: packed as the file it leads to.
        let source = match std::fs::read_link(&full) {
            Ok(target) if target.is_absolute() => resolve(root, &full)?,
            _ => full.clone(),
        };
        builder
            .append_path_with_name(&source, name)
            .map_err(IoError::at("pack", &full))?;
        count += 1;
        if meta.is_file() {
            bytes += meta.len();
        }
    }
    let out = builder
        .into_inner()
        .map_err(IoError::at("write", archive))?;
    Ok((count, bytes, out))
}

/// Follows `link` (inside `root`) to what is not a link.
fn resolve(root: &Path, link: &Path) -> Result<PathBuf, BuildError> {
    let mut current = link.to_owned();
    for _ in 0..40 {
        let target = match std::fs::read_link(&current) {
            Ok(target) => target,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Ok(current),
            Err(e) => return Err(IoError::at("follow", &current)(e).into()),
        };
        current = if target.is_absolute() {
            under(root, target)
        } else {
            current.parent().unwrap_or(Path::new("/")).join(target)
        };
    }
    Err(BuildError::Check(format!(
        "{}: too many levels of links",
        link.display()
    )))
}

/// Directories holding shared libraries, outside PostgreSQL's own tree
/// (its modules are loaded by path).
fn library_dirs(unpacked: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut dirs = BTreeSet::new();
    let own = unpacked.join("usr/lib/postgresql");
    walk(unpacked, &mut |path, _| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(".so") && !path.starts_with(&own) {
            if let Some(parent) = path.parent().and_then(|p| p.strip_prefix(unpacked).ok()) {
                dirs.insert(parent.to_owned());
            }
        }
        Ok(())
    })?;
    Ok(dirs.into_iter().collect())
}

fn remove_packed(root: &Path, paths: &[PathBuf]) -> Result<(), BuildError> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        let full = under(root, path);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                dirs.insert(full);
            }
            Ok(_) => {
                std::fs::remove_file(&full).map_err(IoError::at("remove", &full))?;
                dirs.extend(
                    full.ancestors()
                        .skip(1)
                        .filter(|d| d.starts_with(root) && *d != root)
                        .map(Path::to_owned),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoError::at("inspect", &full)(e).into()),
        }
    }
    // Deepest first, so a major's tree goes whole; directories still used
    // by other packages are not empty and stay.
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::NotFound
                ) => {}
            Err(e) => return Err(IoError::at("remove", &dir)(e).into()),
        }
    }
    Ok(())
}

/// Runs ldd on the unpacked major's programs and modules with only the
/// unpacked libraries added; any library not found fails the build.
fn check_links(unpacked: &Path, major: u32, library_dirs: &[PathBuf]) -> Result<(), BuildError> {
    let tree = unpacked.join(format!("usr/lib/postgresql/{major}"));
    let mut objects = Vec::new();
    walk(&tree, &mut |path, meta| {
        if meta.is_file() && is_elf(path)? {
            objects.push(path.to_owned());
        }
        Ok(())
    })?;
    if !tree.join("bin/postgres").is_file() {
        return Err(BuildError::Check(format!(
            "PostgreSQL {major}: the archive has no bin/postgres"
        )));
    }
    let path = std::env::join_paths(library_dirs.iter().map(|d| unpacked.join(d)))
        .map_err(|e| BuildError::Check(format!("library path: {e}")))?;
    let mut missing = Vec::new();
    for chunk in objects.chunks(64) {
        let out = Command::new("ldd")
            .args(chunk)
            .env("LD_LIBRARY_PATH", &path)
            .output()
            .map_err(|e| BuildError::Command {
                command: "ldd".into(),
                reason: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut current = String::new();
        for line in text.lines() {
            if !line.starts_with(['\t', ' ']) {
                current = line.trim_end_matches(':').to_owned();
            } else if line.contains("not found") {
                missing.push(format!("{current}: {}", line.trim()));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Check(format!(
            "PostgreSQL {major} unpacked alone misses libraries:\n  {}",
            missing.join("\n  ")
        )))
    }
}

fn is_elf(path: &Path) -> Result<bool, BuildError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(IoError::at("open", path))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"\x7fELF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(IoError::at("read", path)(e).into()),
    }
}

fn tempdir(root: &Path, major: u32) -> Result<PathBuf, BuildError> {
    let dir = under(root, format!("/tmp/spilo-check-{major}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(IoError::at("remove", &dir))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, path: &str, text: &str) {
        let p = under(root, path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A major packed from an image root; returns the scratch directory,
    /// the postgres root and the archive.
    fn fixture(format: Format) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("image");
        put(
            &root,
            "/usr/lib/postgresql/15/bin/postgres",
            "#!/bin/true\n",
        );
        put(
            &root,
            "/usr/lib/x86_64-linux-gnu/libgdal.so.32.3.6.2",
            "lib",
        );
        std::os::unix::fs::symlink(
            "libgdal.so.32.3.6.2",
            under(&root, "/usr/lib/x86_64-linux-gnu/libgdal.so.32"),
        )
        .unwrap();
        // An alternatives link, absolute at every step.
        put(
            &root,
            "/usr/share/postgresql/15/extension/postgis-3.control",
            "c",
        );
        put(&root, "/etc/alternatives/.keep", "");
        std::os::unix::fs::symlink(
            "/usr/share/postgresql/15/extension/postgis-3.control",
            under(&root, "/etc/alternatives/pg15-postgis.control"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/etc/alternatives/pg15-postgis.control",
            under(&root, "/usr/share/postgresql/15/extension/postgis.control"),
        )
        .unwrap();
        let paths: Vec<PathBuf> = [
            "/usr/share/postgresql/15/extension/postgis-3.control",
            "/usr/lib/postgresql/15/bin/postgres",
            "/usr/share/postgresql/15/extension/postgis.control",
            "/usr/lib/x86_64-linux-gnu/libgdal.so.32.3.6.2",
            "/usr/lib/x86_64-linux-gnu/libgdal.so.32",
            "/usr/lib/x86_64-linux-gnu/gone.so",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let pg_root = under(&root, POSTGRES_ROOT);
        let archive = archive_dir(&pg_root).join(format!("15.{}", format.extension()));
        let (files, bytes) = pack(&root, &paths, &archive, format, 3).unwrap();
        assert_eq!(files, 5);
        // The link counts as the link, though packed as the file it leads to.
        assert_eq!(bytes, ("#!/bin/true\n".len() + 1 + 3) as u64);
        remove_packed(&root, &paths).unwrap();
        (dir, pg_root, archive)
    }

    /// Unpacking as `spilo init` does is `spilo_layout::archive`'s test;
    /// here: what `pack` puts in, relocatable.
    #[test]
    fn packs_one_major_relocatable() {
        for format in [Format::Zstd, Format::Gzip] {
            let (dir, pg_root, archive) = fixture(format);
            assert!(!pg_root.join("15").exists(), "packed files are removed");
            let dest = dir.path().join("unpacked");
            unpack(&archive, format, &dest).unwrap();
            assert!(dest.join("usr/lib/postgresql/15/bin/postgres").is_file());
            let control = dest.join("usr/share/postgresql/15/extension/postgis.control");
            assert!(std::fs::symlink_metadata(&control).unwrap().is_file());
            assert_eq!(std::fs::read_to_string(control).unwrap(), "c");
            let link =
                std::fs::read_link(dest.join("usr/lib/x86_64-linux-gnu/libgdal.so.32")).unwrap();
            assert_eq!(link, Path::new("libgdal.so.32.3.6.2"));
            assert_eq!(
                library_dirs(&dest).unwrap(),
                vec![PathBuf::from("usr/lib/x86_64-linux-gnu")]
            );
        }
    }
}
