//! `spilo-build slim`: removes what a running container never reads (the
//! spec's list, static libraries) and turns identical files into hard links,
//! which both the image layer and its gzip store once.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use spilo_layout::IoError;

use super::spec::Spec;
use super::{BuildError, Progress, under};

/// Trees scanned for duplicates: the majors' trees share most of their
/// extension scripts and data files.
const DEDUP_TREES: [&str; 1] = ["/usr"];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub removed_bytes: u64,
    pub linked_files: u64,
    pub linked_bytes: u64,
}

pub fn run(root: &Path, spec: &Spec) -> Result<Report, BuildError> {
    let progress = Progress::start("slim");
    let mut report = Report::default();
    for pattern in &spec.slim.remove {
        let bytes = remove_glob(root, pattern)?;
        if bytes > 0 {
            progress.say(&format!("removed {pattern} ({})", mib(bytes)));
        }
        report.removed_bytes += bytes;
    }
    let statics = remove_static_libraries(&under(root, "/usr/lib"))?;
    progress.say(&format!("removed static libraries ({})", mib(statics)));
    report.removed_bytes += statics;
    for tree in DEDUP_TREES {
        let (files, bytes) = hard_link_duplicates(&under(root, tree))?;
        report.linked_files += files;
        report.linked_bytes += bytes;
    }
    progress.say(&format!(
        "done: {} removed, {} identical files ({}) hard-linked",
        mib(report.removed_bytes),
        report.linked_files,
        mib(report.linked_bytes)
    ));
    Ok(report)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn remove_glob(root: &Path, pattern: &str) -> Result<u64, BuildError> {
    let full = under(root, pattern);
    let paths = glob::glob(&full.to_string_lossy())
        .map_err(|e| BuildError::Check(format!("slim pattern {pattern:?}: {e}")))?;
    let mut bytes = 0;
    for entry in paths {
        let path = entry.map_err(|e| {
            let path = e.path().to_owned();
            IoError::at("read", &path)(e)
        })?;
        bytes += remove(&path)?;
    }
    Ok(bytes)
}

/// Removes a file, link or tree; returns the bytes of regular files freed.
fn remove(path: &Path) -> Result<u64, BuildError> {
    let meta = std::fs::symlink_metadata(path).map_err(IoError::at("inspect", path))?;
    if meta.is_dir() {
        let bytes = tree_size(path)?;
        std::fs::remove_dir_all(path).map_err(IoError::at("remove", path))?;
        Ok(bytes)
    } else {
        std::fs::remove_file(path).map_err(IoError::at("remove", path))?;
        Ok(if meta.is_file() && meta.nlink() == 1 {
            meta.len()
        } else {
            0
        })
    }
}

fn tree_size(dir: &Path) -> Result<u64, BuildError> {
    let mut total = 0;
    walk(dir, &mut |_, meta| {
        if meta.is_file() && meta.nlink() == 1 {
            total += meta.len();
        }
        Ok(())
    })?;
    Ok(total)
}

/// Calls `f` for every non-directory below `dir` (links are not followed).
pub fn walk(
    dir: &Path,
    f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::at("list", dir)(e).into()),
    };
    for entry in read {
        let entry = entry.map_err(IoError::at("list", dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(IoError::at("inspect", &path))?;
        if meta.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path, &meta)?;
        }
    }
    Ok(())
}

fn remove_static_libraries(dir: &Path) -> Result<u64, BuildError> {
    let mut found = Vec::new();
    walk(dir, &mut |path, meta| {
        if meta.is_file() && path.extension().is_some_and(|e| e == "a") {
            found.push((path.to_owned(), meta.len()));
        }
        Ok(())
    })?;
    let mut bytes = 0;
    for (path, len) in found {
        std::fs::remove_file(&path).map_err(IoError::at("remove", &path))?;
        bytes += len;
    }
    Ok(bytes)
}

/// Replaces regular files with the same content, mode and owner by hard
/// links to one of them. Returns (files linked, bytes saved).
pub fn hard_link_duplicates(dir: &Path) -> Result<(u64, u64), BuildError> {
    // (size, mode, uid, gid) → files; already-linked inodes counted once.
    let mut groups: HashMap<(u64, u32, u32, u32), Vec<PathBuf>> = HashMap::new();
    let mut seen_inodes = std::collections::HashSet::new();
    walk(dir, &mut |path, meta| {
        if meta.is_file() && meta.len() > 0 && seen_inodes.insert((meta.dev(), meta.ino())) {
            groups
                .entry((meta.len(), meta.mode(), meta.uid(), meta.gid()))
                .or_default()
                .push(path.to_owned());
        }
        Ok(())
    })?;
    let (mut files, mut bytes) = (0, 0);
    let mut candidates: Vec<_> = groups.into_iter().filter(|(_, v)| v.len() > 1).collect();
    candidates.sort_by_key(|(key, _)| *key);
    for ((size, ..), mut paths) in candidates {
        paths.sort();
        let mut originals: Vec<PathBuf> = Vec::new();
        for path in paths {
            let mut matched = None;
            for original in &originals {
                if same_content(original, &path)? {
                    matched = Some(original.clone());
                    break;
                }
            }
            match matched {
                Some(original) => {
                    replace_with_link(&original, &path)?;
                    files += 1;
                    bytes += size;
                }
                None => originals.push(path),
            }
        }
    }
    Ok((files, bytes))
}

fn same_content(a: &Path, b: &Path) -> Result<bool, BuildError> {
    let open = |p: &Path| std::fs::File::open(p).map_err(IoError::at("open", p));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(IoError::at("read", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(IoError::at("read", b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Links `path` to `original` through a temporary name, so `path` is never
/// missing.
fn replace_with_link(original: &Path, path: &Path) -> Result<(), BuildError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".spilo-link");
    let tmp = PathBuf::from(tmp);
    std::fs::hard_link(original, &tmp).map_err(IoError::at("link", &tmp))?;
    std::fs::rename(&tmp, path).map_err(IoError::at("rename", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(remove: &[&str]) -> Spec {
        let mut spec = Spec::parse(include_str!("../../image/spec.toml")).unwrap();
        spec.slim.remove = remove.iter().map(|s| s.to_string()).collect();
        spec
    }

    fn put(root: &Path, path: &str, text: &str) {
        let p = under(root, path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn removes_globs_and_static_libraries_and_links_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "/usr/share/doc/pkg/copyright", "c");
        put(root, "/usr/share/doc/pkg/README", "readme");
        put(root, "/usr/share/man/man1/x.1", "man");
        put(root, "/usr/lib/x86_64-linux-gnu/libfoo.a", "static");
        put(root, "/usr/lib/x86_64-linux-gnu/libfoo.so.1", "shared");
        put(
            root,
            "/usr/share/postgresql/15/extension/a.sql",
            "same script",
        );
        put(
            root,
            "/usr/share/postgresql/17/extension/a.sql",
            "same script",
        );
        put(
            root,
            "/usr/share/postgresql/17/extension/b.sql",
            "other script",
        );
        let report = run(
            root,
            &spec_with(&["/usr/share/doc/*/[!c]*", "/usr/share/man"]),
        )
        .unwrap();

        assert!(under(root, "/usr/share/doc/pkg/copyright").exists());
        assert!(!under(root, "/usr/share/doc/pkg/README").exists());
        assert!(!under(root, "/usr/share/man").exists());
        assert!(!under(root, "/usr/lib/x86_64-linux-gnu/libfoo.a").exists());
        assert!(under(root, "/usr/lib/x86_64-linux-gnu/libfoo.so.1").exists());
        let a15 =
            std::fs::metadata(under(root, "/usr/share/postgresql/15/extension/a.sql")).unwrap();
        let a17 =
            std::fs::metadata(under(root, "/usr/share/postgresql/17/extension/a.sql")).unwrap();
        assert_eq!(a15.ino(), a17.ino());
        assert_eq!(report.linked_files, 1);
        assert_eq!(
            report.removed_bytes,
            ("readme".len() + "man".len() + "static".len()) as u64
        );
        // Idempotent: a second run finds nothing more to do.
        let again = run(root, &spec_with(&["/usr/share/man"])).unwrap();
        assert_eq!(again, Report::default());
    }

    #[test]
    fn files_that_differ_in_mode_are_not_linked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "/a", "x");
        put(dir.path(), "/b", "x");
        std::fs::set_permissions(dir.path().join("b"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(hard_link_duplicates(dir.path()).unwrap(), (0, 0));
    }
}
