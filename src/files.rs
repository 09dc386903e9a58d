//! Putting rendered files on disk: atomically (temp file + rename), with
//! their modes, owned by the account PostgreSQL runs as when we are root
//! (`Account::owner`), and untouched when they already hold the same bytes
//! (so a re-run changes nothing). Also the one I/O error of the runtime:
//! what was done, to which path.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, chown};

use crate::render::Output;

/// The one I/O error of the runtime (and of the build tool).
pub(crate) use spilo_layout::IoError;

/// Who gets what we write: the account's uid and gid when we are root and
/// PostgreSQL runs as another account; None leaves files to us.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Owner(pub(crate) Option<(Uid, Gid)>);

impl Owner {
    fn apply(&self, path: &Path) -> Result<(), IoError> {
        match self.0 {
            Some((uid, gid)) => {
                chown(path, Some(uid), Some(gid)).map_err(IoError::at("chown", path))
            }
            None => Ok(()),
        }
    }
}

/// Writes every output; returns the paths that changed.
pub(crate) fn write_all(outputs: &[Output], owner: Owner) -> Result<Vec<PathBuf>, IoError> {
    let mut changed = Vec::new();
    for output in outputs {
        let did_change = match output {
            Output::File {
                path,
                contents,
                mode,
                ..
            } => write_file(path, contents, *mode, owner)?,
            Output::Symlink { link, target } => symlink(link, target)?,
        };
        if did_change {
            changed.push(crate::render::path_of(output).to_owned());
        }
    }
    Ok(changed)
}

/// Removes a directory tree; one that is not there is no error.
pub(crate) fn remove_dir_if_present(dir: &Path) -> Result<(), IoError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(IoError::at("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// Removes a file; one that is not there is no error.
pub(crate) fn remove_file_if_present(path: &Path) -> Result<(), IoError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(IoError::at("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Creates missing parents, owned like the files in them.
fn ensure_dir(dir: &Path, owner: Owner) -> Result<(), IoError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent, owner)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => owner.apply(dir),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(IoError::at("create directory", dir)(e)),
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32, owner: Owner) -> Result<bool, IoError> {
    if let Ok(meta) = fs::metadata(path) {
        let same_mode = meta.permissions().mode() & 0o7777 == mode;
        if same_mode && fs::read(path).is_ok_and(|old| old == contents) {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    ensure_dir(dir, owner)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(IoError::at("create", &tmp))?;
        file.write_all(contents)
            .map_err(IoError::at("write", &tmp))?;
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(IoError::at("chmod", &tmp))?;
        file.sync_all().map_err(IoError::at("sync", &tmp))?;
        owner.apply(&tmp)?;
        fs::rename(&tmp, path).map_err(IoError::at("rename into place", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Points `link` at `target`, replacing whatever is there atomically.
fn symlink(link: &Path, target: &Path) -> Result<bool, IoError> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let dir = link.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(IoError::at("create directory", dir))?;
    let tmp = dir.join(format!(".postgres.yml.{}.link", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(IoError::at("symlink", &tmp))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        IoError::at("rename into place", link)(e)
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: PathBuf, text: &str, mode: u32) -> Output {
        Output::File {
            path,
            contents: text.as_bytes().to_vec(),
            mode,
            redacted: None,
        }
    }

    #[test]
    fn writes_atomically_with_mode_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("a/b/secret");
        let link = dir.path().join("home/postgres.yml");
        let outputs = vec![
            file(secret.clone(), "s3cret", 0o600),
            Output::Symlink {
                link: link.clone(),
                target: secret.clone(),
            },
        ];
        let changed = write_all(&outputs, Owner(None)).unwrap();
        assert_eq!(changed, vec![secret.clone(), link.clone()]);
        assert_eq!(fs::read_to_string(&secret).unwrap(), "s3cret");
        assert_eq!(
            fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_link(&link).unwrap(), secret);
        assert!(write_all(&outputs, Owner(None)).unwrap().is_empty());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn mode_change_alone_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_all(&[file(path.clone(), "x", 0o644)], Owner(None)).unwrap();
        let changed = write_all(&[file(path.clone(), "x", 0o600)], Owner(None)).unwrap();
        assert_eq!(changed, vec![path.clone()]);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn replaces_a_wrong_link_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("postgres.yml");
        fs::write(&link, "old").unwrap();
        let target = dir.path().join("real.yml");
        write_all(
            &[Output::Symlink {
                link: link.clone(),
                target: target.clone(),
            }],
            Owner(None),
        )
        .unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), target);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, "").unwrap();
        let e = write_all(&[file(blocker.join("x"), "y", 0o644)], Owner(None)).unwrap_err();
        assert!(e.to_string().contains("blocker"), "{e}");
    }
}
