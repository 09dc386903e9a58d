//! The data volume and the run-time directories, made usable before
//! anything starts: created with the right modes, given to postgres when
//! we are root (fixing only what is wrong, never a blanket `chown -R`),
//! and refused with a clear message when they cannot be used.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::statvfs::statvfs;
use tracing::info;

use crate::config::Paths;
use crate::files::IoError;

use super::account::Account;

/// Less free space than one WAL segment: PostgreSQL cannot even start.
const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{var}={source}")]
    Io { var: &'static str, source: IoError },
    #[error("{var}={}: {reason}", path.display())]
    Unusable {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
}

struct Ctx<'a> {
    account: &'a Account,
}

/// Prepares PGROOT, PGDATA, PGLOG, PGWAL and the directories under RW_DIR
/// that the children write to (`extra`: more private directories there).
pub(crate) fn prepare(
    paths: &Paths,
    account: &Account,
    extra: &[PathBuf],
) -> Result<(), VolumeError> {
    let ctx = Ctx { account };
    ctx.dir("PGROOT", &paths.pgroot, 0o755)?;
    if paths.pgdata.is_dir() {
        ctx.take_over("PGDATA", &paths.pgdata)?;
        ctx.not_full("PGDATA", &paths.pgdata)?;
    } else {
        ctx.not_full("PGROOT", &paths.pgroot)?;
    }
    ctx.dir("PGDATA", &paths.pgdata, 0o700)?;
    ctx.writable("PGDATA", &paths.pgdata)?;
    ctx.private_mode("PGDATA", &paths.pgdata)?;
    ctx.dir("PGLOG", &paths.pglog, 0o755)?;
    if let Some(wal) = &paths.pgwal {
        if wal.is_dir() {
            ctx.take_over("PGWAL", wal)?;
        }
        ctx.dir("PGWAL", wal, 0o700)?;
        ctx.not_full("PGWAL", wal)?;
        ctx.writable("PGWAL", wal)?;
    }
    ctx.dir("RW_DIR", &paths.socket_dir(), 0o755)?;
    ctx.writable("RW_DIR", &paths.socket_dir())?;
    for dir in extra {
        ctx.dir("RW_DIR", dir, 0o700)?;
    }
    Ok(())
}

/// The backup repository in a local directory (WAL_LOCAL_PATH): made and
/// given to postgres as PGDATA is, so that a mount root owns is usable and
/// a read-only one is an error now, not a failing archive later.
pub(crate) fn local_repository(path: &Path, account: &Account) -> Result<(), VolumeError> {
    let ctx = Ctx { account };
    let var = "WAL_LOCAL_PATH";
    if path.is_dir() {
        ctx.take_over(var, path)?;
    }
    ctx.dir(var, path, 0o750)?;
    ctx.writable(var, path)
}

impl Ctx<'_> {
    /// Creates `path` (and missing parents), owned by the account.
    fn dir(&self, var: &'static str, path: &Path, mode: u32) -> Result<(), VolumeError> {
        if !path.is_dir() {
            if let Some(parent) = path.parent() {
                if !parent.as_os_str().is_empty() && !parent.is_dir() {
                    self.dir(var, parent, 0o755)?;
                }
            }
            match fs::create_dir(path) {
                Ok(()) => {
                    set_mode(var, path, mode)?;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(var, path, "cannot create the directory")(e)),
            }
        }
        self.owner(var, path)
    }

    /// Gives `path` itself to the account when it is not (root only).
    fn owner(&self, var: &'static str, path: &Path) -> Result<(), VolumeError> {
        if !self.account.switch {
            return Ok(());
        }
        let meta = fs::symlink_metadata(path).map_err(io(var, path, "stat"))?;
        if meta.uid() != self.account.uid.as_raw() {
            std::os::unix::fs::lchown(
                path,
                Some(self.account.uid.as_raw()),
                Some(self.account.gid.as_raw()),
            )
            .map_err(io(var, path, "chown"))?;
        }
        Ok(())
    }

    /// An existing directory of another owner: as root, give it (and
    /// whatever inside is wrong too) to the account; otherwise refuse.
    fn take_over(&self, var: &'static str, path: &Path) -> Result<(), VolumeError> {
        let meta = fs::metadata(path).map_err(io(var, path, "stat"))?;
        let (uid, gid) = (self.account.uid.as_raw(), self.account.gid.as_raw());
        // The group is left alone: Kubernetes' fsGroup owns it.
        if meta.uid() == uid {
            return Ok(());
        }
        if !self.account.switch {
            return Err(VolumeError::Unusable {
                var,
                path: path.to_owned(),
                reason: format!(
                    "owned by uid {}, but spilo runs as uid {uid} (not root) and cannot take it over: give the volume to uid {uid} (e.g. fsGroup / chown)",
                    meta.uid()
                ),
            });
        }
        let fixed = fix_owner(path, uid, gid).map_err(|source| VolumeError::Io { var, source })?;
        info!(
            "{var}: gave {fixed} files of the wrong owner to {}",
            self.account.name
        );
        Ok(())
    }

    /// Creates and removes a file: catches read-only mounts and wrong
    /// permissions before PostgreSQL does, with a better message.
    fn writable(&self, var: &'static str, dir: &Path) -> Result<(), VolumeError> {
        let probe = dir.join(format!(".spilo-write-check.{}", std::process::id()));
        fs::write(&probe, b"").map_err(io(var, dir, "not writable"))?;
        fs::remove_file(&probe).map_err(io(var, &probe, "remove"))
    }

    fn not_full(&self, var: &'static str, dir: &Path) -> Result<(), VolumeError> {
        let stat = statvfs(dir).map_err(|e| io(var, dir, "statvfs")(e.into()))?;
        let free = stat.blocks_available() * stat.fragment_size();
        if free < MIN_FREE_BYTES {
            return Err(VolumeError::Unusable {
                var,
                path: dir.to_owned(),
                reason: format!(
                    "the volume is full ({} KiB free, PostgreSQL needs at least {} MiB)",
                    free / 1024,
                    MIN_FREE_BYTES / 1024 / 1024
                ),
            });
        }
        Ok(())
    }

    /// PostgreSQL accepts 0700 or 0750 on its data directory.
    fn private_mode(&self, var: &'static str, path: &Path) -> Result<(), VolumeError> {
        let meta = fs::metadata(path).map_err(io(var, path, "stat"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode != 0o700 && mode != 0o750 {
            set_mode(var, path, 0o700)?;
        }
        Ok(())
    }
}

fn set_mode(var: &'static str, path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(var, path, "chmod"))
}

/// The error of `action` on `path`, for the variable that names it.
fn io(
    var: &'static str,
    path: &Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |e| VolumeError::Io {
        var,
        source: IoError::at(action, path)(e),
    }
}

/// Gives the entries under `path` owned by another uid to `uid`:`gid`
/// (not following links); returns how many were changed.
fn fix_owner(path: &Path, uid: u32, gid: u32) -> Result<u64, IoError> {
    let meta = fs::symlink_metadata(path).map_err(IoError::at("stat", path))?;
    let mut fixed = 0;
    if meta.uid() != uid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(IoError::at("chown", path))?;
        fixed += 1;
    }
    if meta.is_dir() {
        let list = |e| IoError::at("read directory", path)(e);
        for entry in fs::read_dir(path).map_err(list)? {
            fixed += fix_owner(&entry.map_err(list)?.path(), uid, gid)?;
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use nix::unistd::{Gid, Uid};

    use super::*;
    use crate::config::env::Vars;

    fn paths(root: &Path) -> Paths {
        Paths::from_vars(&Vars {
            pgroot: Some(root.join("pgroot").display().to_string()),
            rw_dir: Some(root.join("run").display().to_string()),
            ..Vars::default()
        })
        .unwrap()
    }

    fn me() -> Account {
        Account {
            uid: Uid::current(),
            gid: Gid::current(),
            name: "me".into(),
            switch: false,
            in_passwd: true,
        }
    }

    #[test]
    fn creates_the_layout_with_private_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        prepare(&p, &me(), &[p.etcd_data()]).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p.pgdata), 0o700);
        assert_eq!(mode(&p.etcd_data()), 0o700);
        assert!(p.pglog.is_dir() && p.socket_dir().is_dir());
        // No probe left behind; a second run changes nothing.
        assert_eq!(fs::read_dir(&p.pgdata).unwrap().count(), 0);
        prepare(&p, &me(), &[]).unwrap();
    }

    #[test]
    fn a_local_repository_is_made_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("backups/spilo/demo/pgbackrest");
        local_repository(&repo, &me()).unwrap();
        assert!(repo.is_dir());
        local_repository(&repo, &me()).unwrap();
        // Unusable even for root: a file where the directory goes.
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let err = local_repository(&file, &me()).unwrap_err().to_string();
        assert!(err.starts_with("WAL_LOCAL_PATH="), "{err}");
        assert!(err.contains("not writable"), "{err}");
    }

    #[test]
    fn a_loose_data_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::create_dir_all(&p.pgdata).unwrap();
        fs::set_permissions(&p.pgdata, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(p.pgdata.join("PG_VERSION"), "15\n").unwrap();
        prepare(&p, &me(), &[]).unwrap();
        assert_eq!(
            fs::metadata(&p.pgdata).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_to_string(p.pgdata.join("PG_VERSION")).unwrap(),
            "15\n"
        );
    }

    #[test]
    fn another_owner_is_refused_when_not_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::create_dir_all(&p.pgdata).unwrap();
        let stranger = Account {
            uid: Uid::from_raw(Uid::current().as_raw() + 4242),
            ..me()
        };
        let err = prepare(&p, &stranger, &[]).unwrap_err().to_string();
        assert!(err.starts_with("PGDATA="), "{err}");
        assert!(err.contains("cannot take it over"), "{err}");
    }

    // Needs root (chown to another uid): the host tier.
    #[cfg(feature = "host-tests")]
    #[test]
    fn the_owner_walk_fixes_only_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("base/1")).unwrap();
        fs::write(data.join("base/1/123"), "x").unwrap();
        std::os::unix::fs::lchown(data.join("base/1/123"), Some(4242), Some(4242)).unwrap();
        assert_eq!(fix_owner(&data, 4242, 4242).unwrap(), 3);
        assert_eq!(fix_owner(&data, 4242, 4242).unwrap(), 0);
    }
}
