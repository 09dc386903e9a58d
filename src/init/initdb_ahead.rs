//! initdb while Patroni starts. A new single member spends ~0.6 s in
//! Patroni's Python start-up before Patroni runs initdb (~0.9 s); here
//! initdb runs at once, into a directory beside PGDATA, and Patroni's
//! `bin_name.initdb` is this binary under the name `initdb` (the shim).
//! The shim waits for that run and renames its directory into place only
//! when Patroni asks for exactly the same thing (options, superuser
//! password, data directory) and PGDATA is still empty; in every other
//! case it removes the directory and runs the real initdb. Patroni's
//! bootstrap is otherwise unchanged: no custom method, no trust window.
//!
//! Files, in `$RW_DIR/spilo/initdb-ahead`: `spec.json` (what was run;
//! 0600, it holds the superuser password like postgres.yml does),
//! `lock` (held by the runner while it works), `status` (`ok` once the
//! directory is complete) and `initdb`, the link Patroni calls.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::Paths;
use crate::files::{self, IoError, Owner};
use crate::render::Output;

use super::etcd;
use super::supervisor::ChildSpec;

/// The name Patroni calls the shim by.
const SHIM: &str = "initdb";
/// Options Patroni refuses in `bootstrap.initdb` (it would fail the
/// bootstrap; the real initdb then gives the same error).
const NOT_ALLOWED: [&str; 5] = ["pgdata", "nosync", "pwfile", "sync-only", "version"];

/// What Patroni will ask initdb for, and where the run ahead goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Patroni's options in Patroni's order, without `--pwfile`.
    pub options: Vec<String>,
    /// The superuser password Patroni writes to its pwfile.
    pub password: Option<String>,
    pub pgdata: PathBuf,
    /// Where the run goes: beside PGDATA, on the same file system.
    pub staging: PathBuf,
}

/// The run, as the runner and the shim read it from `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Spec {
    /// The real initdb, of the major that runs.
    pub(crate) initdb: PathBuf,
    #[serde(flatten)]
    pub(crate) request: Request,
}

/// A decided run ahead: its directory under RW_DIR and the request.
#[derive(Debug, Clone)]
pub struct Ahead {
    pub dir: PathBuf,
    pub request: Request,
}

#[derive(Debug, thiserror::Error)]
pub enum AheadError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {source}", path.display())]
    Spec {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {status}", initdb.display())]
    Initdb {
        initdb: PathBuf,
        status: std::process::ExitStatus,
    },
}

/// `<parent>/.<name>.initdb-ahead` for PGDATA `<parent>/<name>`.
fn staging_for(pgdata: &Path) -> Option<PathBuf> {
    let name = pgdata.file_name()?.to_str()?;
    Some(pgdata.parent()?.join(format!(".{name}.initdb-ahead")))
}

/// Removes what an earlier run left (a stopped container, a crash): the
/// staging directory is ours by its name, never PGDATA.
pub(crate) fn clear_stale(paths: &Paths) -> Result<(), AheadError> {
    let dir = paths.initdb_ahead();
    let staging = staging_for(&paths.pgdata);
    for path in staging.iter().chain([&dir]) {
        crate::files::remove_dir_if_present(path)?;
    }
    Ok(())
}

/// A member initdb may run ahead for, as far as the disk tells before the
/// volumes are prepared: a new member of its own cluster (embedded etcd
/// with no data yet), with an empty PGDATA that is not a mount point and
/// no separate WAL volume. Patroni's configuration tells the rest
/// ([`Candidate::request`]).
pub(crate) struct Candidate {
    dir: PathBuf,
    pgdata: PathBuf,
    staging: PathBuf,
}

pub(crate) fn candidate(paths: &Paths, etcd: Option<&etcd::Embedded>) -> Option<Candidate> {
    if !etcd.is_some_and(|e| e.first_start) || paths.pgwal.is_some() {
        return None;
    }
    if !replaceable(&paths.pgdata) {
        return None;
    }
    Some(Candidate {
        dir: paths.initdb_ahead(),
        pgdata: paths.pgdata.clone(),
        staging: staging_for(&paths.pgdata)?,
    })
}

impl Candidate {
    /// The run, when Patroni's configuration (`tree`, without the shim)
    /// bootstraps with its plain initdb and with options we can mirror.
    pub(crate) fn request(self, tree: &Map<String, Value>) -> Option<Ahead> {
        request(tree).map(|(options, password)| Ahead {
            dir: self.dir,
            request: Request {
                options,
                password,
                pgdata: self.pgdata,
                staging: self.staging,
            },
        })
    }
}

/// Patroni's initdb options and superuser password, for its plain initdb
/// bootstrap of a new cluster run by its own initdb.
fn request(tree: &Map<String, Value>) -> Option<(Vec<String>, Option<String>)> {
    let bootstrap = tree.get("bootstrap")?;
    let method = bootstrap.get("method").and_then(Value::as_str);
    if method.is_some_and(|m| m != "initdb") || bootstrap["dcs"].get("standby_cluster").is_some() {
        return None;
    }
    let postgresql = tree.get("postgresql")?;
    if postgresql.pointer("/bin_name/initdb").is_some() {
        return None;
    }
    let mut options = patroni_options(bootstrap.get("initdb"))?;
    let superuser = postgresql.pointer("/authentication/superuser");
    if let Some(name) = superuser.and_then(|s| s.get("username")) {
        options.push(format!("--username={}", python_str(name)?));
    }
    let password = superuser
        .and_then(|s| s.get("password"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((options, password))
}

/// PGDATA absent, or an empty directory that a rename can replace (on
/// its parent's file system, not a mount point of its own).
fn replaceable(pgdata: &Path) -> bool {
    let Ok(meta) = fs::metadata(pgdata) else {
        return !pgdata.exists();
    };
    let mounted = pgdata
        .parent()
        .and_then(|p| fs::metadata(p).ok())
        .is_none_or(|parent| parent.dev() != meta.dev());
    meta.is_dir()
        && !mounted
        && fs::read_dir(pgdata).is_ok_and(|mut entries| entries.next().is_none())
}

/// `bootstrap.initdb` as Patroni's `process_user_options` turns it into
/// arguments; None for what Patroni would refuse or we cannot mirror.
fn patroni_options(value: Option<&Value>) -> Option<Vec<String>> {
    let pair = |key: &str, value: &Value| {
        (!NOT_ALLOWED.contains(&key)).then_some(())?;
        Some(format!("--{key}={}", python_str(value)?))
    };
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| pair(k, v)).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(flag) if !NOT_ALLOWED.contains(&flag.as_str()) => {
                    Some(format!("--{flag}"))
                }
                Value::Object(map) if map.len() == 1 => {
                    map.iter().next().and_then(|(k, v)| pair(k, v))
                }
                _ => None,
            })
            .collect(),
        Some(_) => None,
    }
}

/// A scalar as Python's `str()` prints it. Quoted strings are left to
/// Patroni (it unquotes them): no match, so the real initdb runs.
fn python_str(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.starts_with(['"', '\'']) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        _ => None,
    }
}

impl Ahead {
    /// The path Patroni calls initdb by (`bin_name.initdb`, beneath the
    /// user's settings, which `request` checked hold none).
    pub(crate) fn shim(&self) -> PathBuf {
        self.dir.join(SHIM)
    }

    /// Writes the spec and the shim, owned by `like`'s user, then starts
    /// the runner as `like` (Patroni's user, environment and directory)
    /// and returns once it holds the lock, so that the shim cannot miss
    /// it. `initdb` is the real one of the major that runs.
    pub fn start(&self, program: &Path, initdb: &Path, like: &ChildSpec) -> Result<(), AheadError> {
        let spec = Spec {
            initdb: initdb.to_owned(),
            request: self.request.clone(),
        };
        let path = self.dir.join("spec.json");
        let contents = serde_json::to_vec_pretty(&spec).map_err(|source| AheadError::Spec {
            path: path.clone(),
            source,
        })?;
        let outputs = [
            Output::File {
                path,
                contents,
                mode: 0o600,
                redacted: None,
            },
            Output::File {
                path: self.dir.join("lock"),
                contents: Vec::new(),
                mode: 0o600,
                redacted: None,
            },
            Output::Symlink {
                link: self.shim(),
                target: program.to_owned(),
            },
        ];
        files::write_all(&outputs, Owner(like.user))?;
        // write_all makes the directory; it is shared with postgres only.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(IoError::at("chmod", &self.dir))?;

        let mut command = Command::new(program);
        command
            .arg("initdb-ahead")
            .arg(&self.dir)
            .env_clear()
            .envs(like.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&like.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some((uid, gid)) = like.user {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let mut runner = command
            .spawn()
            .map_err(IoError::at("starting initdb ahead", program))?;
        let mut line = String::new();
        if let Some(out) = runner.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        // PID 1 reaps it; std's handle is not waited on.
        drop(runner);
        if line.trim() == LOCKED {
            info!("initdb runs ahead into {}", spec.request.staging.display());
        } else {
            warn!("initdb could not run ahead: Patroni runs it");
        }
        Ok(())
    }
}

const LOCKED: &str = "locked";

fn read_spec(dir: &Path) -> Result<Spec, AheadError> {
    let path = dir.join("spec.json");
    let text = fs::read(&path).map_err(IoError::at("read", &path))?;
    serde_json::from_slice(&text).map_err(|source| AheadError::Spec { path, source })
}

fn lock(dir: &Path) -> Result<Flock<File>, AheadError> {
    let path = dir.join("lock");
    let file = File::open(&path).map_err(IoError::at("open", &path))?;
    Ok(Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| IoError::at("flock", &path)(e))?)
}

/// `spilo initdb-ahead DIR`: takes the lock, says so on stdout, runs
/// initdb into the staging directory and records its success.
pub fn run(dir: &Path) -> ExitCode {
    let result = (|| -> Result<(), AheadError> {
        let spec = read_spec(dir)?;
        let _lock = lock(dir)?;
        println!("{LOCKED}");
        let pwfile = dir.join("pwfile");
        let mut command = Command::new(&spec.initdb);
        command.args(&spec.request.options).stdout(Stdio::null());
        // A stop signals us (init's orphans); initdb must hear of it too
        // and clean up after itself.
        // SAFETY: prctl is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        if let Some(password) = &spec.request.password {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pwfile)
                .and_then(|mut f| f.write_all(password.as_bytes()))
                .map_err(IoError::at("write", &pwfile))?;
            command.arg(format!("--pwfile={}", pwfile.display()));
        }
        // One syncfs below instead of initdb's fsync of every file: the
        // same durability (PostgreSQL 17's --sync-method=syncfs), without
        // a thousand fsyncs queueing behind etcd's.
        let status = command.arg("--no-sync").arg(&spec.request.staging).status();
        let _ = fs::remove_file(&pwfile);
        let status = status.map_err(IoError::at("run", &spec.initdb))?;
        if !status.success() {
            return Err(AheadError::Initdb {
                initdb: spec.initdb,
                status,
            });
        }
        sync_file_system(&spec.request.staging)?;
        let done = dir.join("status");
        Ok(fs::write(&done, "ok").map_err(IoError::at("write", &done))?)
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spilo initdb-ahead: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Flushes the file system holding `dir` to disk.
fn sync_file_system(dir: &Path) -> Result<(), AheadError> {
    let handle = File::open(dir).map_err(IoError::at("open", dir))?;
    Ok(nix::unistd::syncfs(handle.as_raw_fd()).map_err(IoError::at("syncfs", dir))?)
}

/// Whether this process is the shim (called as `initdb`).
pub fn called_as_shim(argv0: &Path) -> bool {
    argv0.file_name().is_some_and(|n| n == SHIM)
}

/// The shim: Patroni's `initdb [OPTION...] --pwfile=F PGDATA`.
pub fn shim(argv0: &Path, args: Vec<OsString>) -> ExitCode {
    let Some(dir) = argv0.parent() else {
        eprintln!("spilo initdb: cannot tell the run-ahead directory from {argv0:?}");
        return ExitCode::FAILURE;
    };
    let spec = match read_spec(dir) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("spilo initdb: {e}");
            return ExitCode::FAILURE;
        }
    };
    match take_over(dir, &spec.request, &args) {
        Ok(()) => {
            eprintln!(
                "spilo initdb: took over the cluster made ahead ({})",
                spec.request.pgdata.display()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("spilo initdb: running {}: {why}", spec.initdb.display());
            let e = Command::new(&spec.initdb).args(&args).exec();
            eprintln!("spilo initdb: {}: {e}", spec.initdb.display());
            ExitCode::FAILURE
        }
    }
}

/// Waits for the run, then moves it into place if it is what Patroni
/// asks for; otherwise removes it and says why.
fn take_over(dir: &Path, request: &Request, args: &[OsString]) -> Result<(), String> {
    let _lock = lock(dir).map_err(|e| e.to_string())?;
    let status = dir.join("status");
    let ready = fs::read_to_string(&status).is_ok_and(|s| s == "ok");
    // Used once: a second bootstrap runs the real initdb.
    let _ = fs::remove_file(&status);
    let result = matches(request, args).and_then(|()| {
        if !ready {
            return Err("no run ahead is ready (it failed, or was used)".into());
        }
        if !replaceable(&request.pgdata) {
            return Err(format!(
                "{} is not an empty directory any more",
                request.pgdata.display()
            ));
        }
        fs::rename(&request.staging, &request.pgdata).map_err(|e| {
            format!(
                "{} -> {}: {e}",
                request.staging.display(),
                request.pgdata.display()
            )
        })?;
        // The rename itself must survive a crash too.
        match request.pgdata.parent() {
            Some(parent) => sync_file_system(parent).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&request.staging);
    }
    result
}

/// Whether Patroni's arguments are the request's: the same options in the
/// same order, the same data directory, a pwfile with the same password.
fn matches(request: &Request, args: &[OsString]) -> Result<(), String> {
    let mut args: Vec<String> = args
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or("an argument is not UTF-8")
        })
        .collect::<Result<_, _>>()?;
    let pgdata = args.pop().ok_or("no data directory given")?;
    let pwfile = args
        .iter()
        .position(|a| a.starts_with("--pwfile="))
        .map(|i| args.remove(i)["--pwfile=".len()..].to_owned());
    let password = pwfile
        .map(|f| fs::read_to_string(&f).map_err(|e| format!("{f}: {e}")))
        .transpose()?;
    if Path::new(&pgdata) != request.pgdata {
        return Err(format!("asked for {pgdata}"));
    }
    if args != request.options {
        return Err(format!("asked for options {}", args.join(" ")));
    }
    if password != request.password {
        return Err("another superuser password".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn options_as_patroni_formats_them() {
        let list =
            json!(["data-checksums", {"encoding": "UTF8"}, {"wal-segsize": 64}, {"x": true}]);
        assert_eq!(
            patroni_options(Some(&list)).unwrap(),
            [
                "--data-checksums",
                "--encoding=UTF8",
                "--wal-segsize=64",
                "--x=True"
            ]
        );
        let map = json!({"locale": "C.UTF-8", "encoding": "UTF8"});
        assert_eq!(
            patroni_options(Some(&map)).unwrap(),
            ["--locale=C.UTF-8", "--encoding=UTF8"]
        );
        assert_eq!(patroni_options(None).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn what_patroni_refuses_or_unquotes_is_left_to_it() {
        for value in [
            json!(["nosync"]),
            json!([{"pwfile": "/x"}]),
            json!([{"a": "1", "b": "2"}]),
            json!([{"locale": "\"C\""}]),
            json!([["nested"]]),
            json!("data-checksums"),
        ] {
            assert_eq!(patroni_options(Some(&value)), None, "{value}");
        }
    }

    fn request(dir: &Path) -> Request {
        Request {
            options: vec!["--encoding=UTF8".into(), "--username=postgres".into()],
            password: Some("s3cret".into()),
            pgdata: dir.join("data"),
            staging: dir.join(".data.initdb-ahead"),
        }
    }

    #[test]
    fn only_the_same_request_matches() {
        let dir = tempfile::tempdir().unwrap();
        let request = request(dir.path());
        let pwfile = dir.path().join("pw");
        fs::write(&pwfile, "s3cret").unwrap();
        let args = |options: &[&str], pgdata: &Path| -> Vec<OsString> {
            options
                .iter()
                .map(OsString::from)
                .chain([
                    format!("--pwfile={}", pwfile.display()).into(),
                    pgdata.into(),
                ])
                .collect()
        };
        let same = ["--encoding=UTF8", "--username=postgres"];
        assert_eq!(matches(&request, &args(&same, &request.pgdata)), Ok(()));
        let reordered = ["--username=postgres", "--encoding=UTF8"];
        assert!(matches(&request, &args(&reordered, &request.pgdata)).is_err());
        assert!(matches(&request, &args(&same, &dir.path().join("other"))).is_err());
        fs::write(&pwfile, "changed").unwrap();
        let err = matches(&request, &args(&same, &request.pgdata)).unwrap_err();
        assert!(!err.contains("changed"), "the password is not printed");
        let without_pwfile: Vec<OsString> = same
            .iter()
            .map(OsString::from)
            .chain([request.pgdata.clone().into()])
            .collect();
        assert!(matches(&request, &without_pwfile).is_err());
    }

    #[test]
    fn an_empty_pgdata_is_replaceable_a_populated_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("data");
        assert!(replaceable(&pgdata));
        fs::create_dir(&pgdata).unwrap();
        assert!(replaceable(&pgdata));
        fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
        assert!(!replaceable(&pgdata));
        assert_eq!(
            staging_for(&pgdata),
            Some(dir.path().join(".data.initdb-ahead"))
        );
    }
}
