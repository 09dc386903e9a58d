//! The operator's standby restore_command, as it runs it:
//! `envdir "<env-standby>" /scripts/restore_command.sh "%f" "%p"`, with
//! `envdir` the spilo binary under that name and the env-standby directory
//! `spilo configure` writes. pgBackRest is a recording fake here; the
//! standby host tests fetch real WAL through the same script.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/image/scripts/restore_command.sh"
);

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_spilo"), bin.join("envdir"))
            .expect("envdir link");
        // Records how it was called, as pgBackRest would be.
        let fake = bin.join("pgbackrest");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$PGBACKREST_CONFIG|$PGBACKREST_STANZA|$*\" > {}\n",
                dir.path().join("called").display()
            ),
        )
        .expect("fake pgbackrest");
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
        Sandbox { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The env-standby directory of `configure` for these variables.
    fn configure(&self, vars: &[(&str, &str)]) -> PathBuf {
        let rw = self.path("rw");
        let majors = self.path("majors/17/bin");
        fs::create_dir_all(&majors).expect("majors");
        let out = Command::new(env!("CARGO_BIN_EXE_spilo"))
            .args(["configure", "patroni", "--postgres-root"])
            .arg(self.path("majors"))
            .env_clear()
            .envs([("HOSTNAME", "standby-0"), ("POD_IP", "10.0.0.7")])
            .env("RW_DIR", &rw)
            .env("PGHOME", self.path("home"))
            .envs(vars.iter().copied())
            .output()
            .expect("spilo configure");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rw.join("etc/wal-e.d/env-standby")
    }

    fn restore_command(&self, env_dir: &Path) -> Output {
        let path = format!("{}:/usr/bin:/bin", self.path("bin").display());
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "envdir \"{}\" {SCRIPT} \"000000010000000000000003\" \"pg_wal/RECOVERYXLOG\"",
                env_dir.display()
            ))
            .env_clear()
            .env("PATH", path)
            .env("PGBACKREST_STANZA", "from-the-parent")
            .output()
            .expect("restore_command")
    }

    fn called(&self) -> Option<String> {
        fs::read_to_string(self.path("called")).ok()
    }
}

#[test]
fn an_archive_standby_fetches_from_the_sources_repository() {
    let sandbox = Sandbox::new();
    let env_dir = sandbox.configure(&[
        ("SCOPE", "acid-standby"),
        ("STANDBY_METHOD", "STANDBY_WITH_WALE"),
        (
            "STANDBY_WALE_S3_PREFIX",
            "s3://backups/spilo/acid-source/uid/wal/17",
        ),
        ("STANDBY_WAL_BUCKET_SCOPE_PREFIX", ""),
    ]);
    let out = sandbox.restore_command(&env_dir);
    assert!(out.status.success(), "{out:?}");
    let config = sandbox.path("rw/pgbackrest/standby.conf");
    assert_eq!(
        sandbox.called().as_deref(),
        Some(format!(
            "{}|acid-source|archive-get 000000010000000000000003 pg_wal/RECOVERYXLOG\n",
            config.display()
        ))
        .as_deref()
    );
}

#[test]
fn a_streaming_standby_fetches_nothing() {
    let sandbox = Sandbox::new();
    let env_dir = sandbox.configure(&[("SCOPE", "acid-standby"), ("STANDBY_HOST", "acid-source")]);
    let out = sandbox.restore_command(&env_dir);
    // The empty PGBACKREST_STANZA removed the parent's.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(sandbox.called(), None);
}

#[test]
fn envdir_names_what_it_cannot_read() {
    let sandbox = Sandbox::new();
    let out = sandbox.restore_command(&sandbox.path("no-such-dir"));
    assert_eq!(out.status.code(), Some(111), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "envdir: fatal: {}: ",
            sandbox.path("no-such-dir").display()
        )),
        "{stderr}"
    );
    assert_eq!(sandbox.called(), None);
}
