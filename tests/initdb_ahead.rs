//! initdb run ahead of Patroni, with the real initdb: the runner and the
//! shim on their own (take-over and each fallback), then whole single
//! members through `spilo init` and the real Patroni.

mod init_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use init_support::*;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use spilo::init::initdb_ahead::{Ahead, Request};
use spilo::init::supervisor::{ChildSpec, Restart};

fn postgres() -> (u32, u32) {
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("postgres user: run tests/setup");
    (user.uid.as_raw(), user.gid.as_raw())
}

fn give_to_postgres(path: &Path) {
    let (uid, gid) = postgres();
    chown(path, Some(uid), Some(gid)).expect("chown");
}

/// A run ahead started by `Ahead::start`, as `spilo init` starts it, in
/// `<base>/ahead`, for PGDATA `<base>/data`.
struct Layout {
    dir: PathBuf,
    request: Request,
}

impl Layout {
    fn new(base: &Path) -> Self {
        fs::create_dir_all(base).unwrap();
        give_to_postgres(base);
        let request = Request {
            options: SAME.map(str::to_owned).to_vec(),
            password: Some("s3cret".into()),
            pgdata: base.join("data"),
            staging: base.join(".data.initdb-ahead"),
        };
        let ahead = Ahead {
            dir: base.join("ahead"),
            request: request.clone(),
        };
        let (uid, gid) = postgres();
        let like = ChildSpec {
            name: "patroni".into(),
            program: "patroni".into(),
            args: Vec::new(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            user: Some((Uid::from_raw(uid), Gid::from_raw(gid))),
            dir: "/".into(),
            ready: None,
            restart: Restart {
                limit: 0,
                first_delay: Duration::ZERO,
                max_delay: Duration::ZERO,
                stable_after: Duration::ZERO,
            },
            stop_stage: 0,
            stop_signal: Signal::SIGTERM,
        };
        ahead
            .start(spilo().as_ref(), format!("{PG_BIN}/initdb").as_ref(), &like)
            .expect("start the run ahead");
        Layout {
            dir: ahead.dir,
            request,
        }
    }

    fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
        let (uid, gid) = postgres();
        let mut command = Command::new(program);
        command.uid(uid).gid(gid).current_dir("/");
        command
    }

    /// Waits for the runner (it holds the lock until it is done).
    fn run_ahead(&self) {
        let lock = fs::File::open(self.dir.join("lock")).expect("lock");
        let _held = Flock::lock(lock, FlockArg::LockExclusive).expect("flock");
        assert_eq!(fs::read_to_string(self.dir.join("status")).unwrap(), "ok");
        assert!(self.request.staging.join("PG_VERSION").is_file());
        assert!(!self.dir.join("pwfile").exists(), "the password is removed");
    }

    /// The shim as Patroni calls it: options, --pwfile, PGDATA.
    fn shim(&self, options: &[&str], password: &str) -> Output {
        let pwfile = self.dir.join("patroni-pwfile");
        fs::write(&pwfile, password).unwrap();
        give_to_postgres(&pwfile);
        Self::as_postgres(self.dir.join("initdb"))
            .args(options)
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg(&self.request.pgdata)
            .output()
            .expect("shim")
    }
}

const SAME: [&str; 3] = ["--encoding=UTF8", "--locale=C.UTF-8", "--username=postgres"];

/// The cluster's system identifier: it differs between two initdb runs.
fn system_id(pgdata: &Path) -> String {
    let out = Command::new(format!("{PG_BIN}/pg_controldata"))
        .arg(pgdata)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("Database system identifier"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_shim_takes_over_only_the_same_request() {
    let scratch = Scratch::new("ahead-shim");

    // The same options, password and PGDATA: the directory is moved in.
    let base = scratch.path.join("same");
    let layout = Layout::new(&base);
    layout.run_ahead();
    let made = system_id(&layout.request.staging);
    fs::create_dir(&layout.request.pgdata).unwrap();
    give_to_postgres(&layout.request.pgdata);
    let out = layout.shim(&SAME, "s3cret");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("took over the cluster made ahead"),
        "{stderr}"
    );
    assert!(!layout.request.staging.exists());
    assert_eq!(system_id(&layout.request.pgdata), made);
    let mode = fs::metadata(&layout.request.pgdata).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // Used once: a second bootstrap gets the real initdb (which refuses
    // the now populated directory).
    let out = layout.shim(&SAME, "s3cret");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run ahead is ready"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(system_id(&layout.request.pgdata), made);

    // Other options, or another password: the real initdb makes the
    // cluster Patroni asked for, and the run ahead is removed.
    for (case, options, password, why) in [
        (
            "options",
            ["--encoding=SQL_ASCII", "--locale=C", "--username=postgres"],
            "s3cret",
            "asked for options",
        ),
        (
            "password",
            SAME,
            "n0t-the-same",
            "another superuser password",
        ),
    ] {
        let layout = Layout::new(&scratch.path.join(case));
        layout.run_ahead();
        let ahead = system_id(&layout.request.staging);
        let out = layout.shim(&options, password);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{case}: {stderr}");
        assert!(stderr.contains(why), "{case}: {stderr}");
        assert!(!stderr.contains(password), "{case}: the password leaked");
        assert!(!layout.request.staging.exists(), "{case}");
        let made = system_id(&layout.request.pgdata);
        assert!(!made.is_empty() && made != ahead, "{case}: {made} {ahead}");
    }

    // PGDATA filled meanwhile: never replaced; the real initdb refuses.
    let layout = Layout::new(&scratch.path.join("filled"));
    layout.run_ahead();
    fs::create_dir(&layout.request.pgdata).unwrap();
    fs::write(layout.request.pgdata.join("precious"), "data").unwrap();
    let out = layout.shim(&SAME, "s3cret");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an empty directory any more"));
    assert_eq!(
        fs::read_to_string(layout.request.pgdata.join("precious")).unwrap(),
        "data"
    );
    assert_eq!(fs::read_dir(&layout.request.pgdata).unwrap().count(), 1);
    assert!(!layout.request.staging.exists());
}

fn staging(node: &Node) -> PathBuf {
    node.dir.join("pgroot/.data.initdb-ahead")
}

#[test]
fn a_new_single_member_takes_over_initdb_run_ahead() {
    let _serial = serial();
    let scratch = Scratch::new("ahead-node");
    let mut node = Node::start(&scratch.path, NodeOptions::new("ahead", "127.0.0.2", None));
    writable_primary(&node);
    node.assert_logged("initdb runs ahead into");
    node.assert_logged("spilo initdb: took over the cluster made ahead");
    assert!(!staging(&node).exists());
    // Patroni's options and superuser password are the cluster's.
    assert_eq!(node.psql("SHOW data_checksums").unwrap(), "on");
    assert_eq!(node.psql("SHOW lc_collate").unwrap(), "C.UTF-8");
    let login = Command::new(format!("{PG_BIN}/psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
        .arg("host=127.0.0.2 port=5432 user=postgres dbname=postgres sslmode=require")
        .env("PGPASSWORD", "zalando")
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&login.stdout).trim(),
        "postgres",
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );

    // A restart over the same volume runs nothing ahead.
    node.signal(Signal::SIGTERM);
    assert_eq!(node.wait_exit(Duration::from_secs(45)).code(), Some(0));
    node.restart();
    writable_primary(&node);
    assert_eq!(node.log().matches("initdb runs ahead").count(), 1);
    assert_eq!(node.psql("SELECT count(*) FROM t").unwrap(), "2");
    // SIGINT (a terminal's ^C) is a clean stop too.
    node.signal(Signal::SIGINT);
    let status = node.wait_exit(Duration::from_secs(45));
    assert_eq!(status.code(), Some(0), "{}", tail(&node.log(), 30));
    node.assert_logged("SIGINT received: stopping");
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

#[test]
fn a_stop_during_the_run_ahead_leaves_nothing_and_the_next_start_works() {
    let _serial = serial();
    let scratch = Scratch::new("ahead-stop");
    let mut node = Node::start(&scratch.path, NodeOptions::new("stop", "127.0.0.2", None));
    wait_for("the run ahead", Duration::from_secs(10), || {
        node.log().contains("initdb runs ahead into").then_some(())
    });
    node.signal(Signal::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(45));
    assert_eq!(status.code(), Some(0), "{}", tail(&node.log(), 30));
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());

    node.restart();
    writable_primary(&node);
    assert!(!staging(&node).exists());
    let data = fs::metadata(node.pgdata()).unwrap();
    assert_eq!(data.permissions().mode() & 0o777, 0o700);
    node.signal(Signal::SIGTERM);
    assert_eq!(node.wait_exit(Duration::from_secs(45)).code(), Some(0));
}
