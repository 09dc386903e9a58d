//! A replica's part of an upgrade (`spilo upgrade-replica`), started by
//! the primary through `COPY ... TO PROGRAM` in a superuser session: the
//! only way in that every replica has (its server runs; nothing else of
//! ours listens). It runs with the server's environment, so everything
//! comes from its arguments and Patroni's configuration file.
//!
//! The program checks it was started by that session, then leaves a
//! worker of its own (own process group: the server's shutdown does not
//! reach it) and returns, so that the COPY ends. The worker stops the
//! server, checks it replayed the primary's last checkpoint, renames the
//! data directory to `<data>_old` and pulls both directories from the
//! primary's rsync daemon: with `--hard-links --size-only` only what
//! pg_upgrade rewrote travels, relation files become links into the old
//! ones as on the primary. When any of that fails, the data directory is
//! emptied instead: once the cluster resumes, Patroni makes the replica
//! anew from the upgraded primary. Either way Patroni is restarted on the
//! new major and the outcome is left in the primary's feedback module.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::member::Member;
use super::pgupgrade::{control_data, remove_dir, rename, stop};
use super::rsyncd::{FEEDBACK, MODULE};
use super::sql::last_line;
use super::{UpgradeError, data_major, say};
use crate::files::IoError;

/// What the primary passes (`spilo upgrade-replica`'s arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Patroni's configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// The major to follow the primary onto.
    #[arg(long)]
    pub major: u32,
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// The primary's address; its rsync daemon listens on `port`.
    #[arg(long)]
    pub primary: String,
    #[arg(long)]
    pub port: u16,
    /// The primary's shutdown checkpoint, which this replica must have
    /// replayed for its files to be the primary's.
    #[arg(long)]
    pub checkpoint: String,
    /// The session that started us.
    #[arg(long)]
    pub backend: i32,
    /// The worker, in a process group of its own.
    #[arg(long)]
    pub detached: bool,
}

/// Where the worker's log goes (beside the data directory).
const LOG: &str = "upgrade-replica.log";

pub fn run(options: &Options) -> Result<(), UpgradeError> {
    if options.detached {
        return work(options);
    }
    if !started_by(options.backend) {
        return Err(UpgradeError::Refused(format!(
            "not started by PostgreSQL backend {}",
            options.backend
        )));
    }
    let member = Member::read(&options.config)?;
    if data_major(&member.data_dir)? >= options.major {
        return Ok(());
    }
    let (parent, _) = member.data_parent();
    let log_path = parent.join(LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(IoError::at("open", &log_path))?;
    let err = log.try_clone().map_err(IoError::at("open", &log_path))?;
    let program =
        std::env::current_exe().map_err(IoError::at("find", Path::new("/proc/self/exe")))?;
    Command::new(&program)
        .args(std::env::args_os().skip(1))
        .arg("--detached")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(UpgradeError::spawn(&program))?;
    Ok(())
}

/// Whether `backend` is our parent (or the shell between us).
fn started_by(backend: i32) -> bool {
    let parent = |pid: &str| -> Option<i32> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The field after the command, which may hold spaces.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let Some(first) = parent("self") else {
        return false;
    };
    first == backend || parent(&first.to_string()) == Some(backend)
}

fn work(options: &Options) -> Result<(), UpgradeError> {
    let started = Instant::now();
    while Path::new(&format!("/proc/{}", options.backend)).exists()
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut member = Member::read(&options.config)?;
    let old_major = data_major(&member.data_dir)?;
    say(&format!(
        "{}: stopping PostgreSQL to follow the primary onto {}",
        member.name, options.major
    ));
    let outcome = sync(options, &member);
    let lib_dir = lib_dir_of(&options.bin_dir);
    let report = match &outcome {
        Ok(()) => "ok".to_owned(),
        Err(reason) => {
            say(&format!(
                "{}: {reason}; emptying the data directory: Patroni makes this replica anew from the primary",
                member.name
            ));
            empty(&member)?;
            format!("re-created from the primary ({reason})")
        }
    };
    member.retarget((old_major, options.major), &options.bin_dir, &lib_dir)?;
    let reported = feedback(options, &member, &report);
    super::restart::patroni(&member.file)?;
    remove_dir(&member.sibling("old"))?;
    say(&format!(
        "{}: {report}; Patroni restarted on PostgreSQL {}",
        member.name, options.major
    ));
    reported
}

/// Stop, check, rename and pull. Errors are reasons (the caller empties
/// the data directory).
fn sync(options: &Options, member: &Member) -> Result<(), String> {
    stop(&member.bin_dir, &member.data_dir).map_err(|e| e.to_string())?;
    let (state, checkpoint) =
        control_data(&member.bin_dir, &member.data_dir).map_err(|e| e.to_string())?;
    if state != "shut down in recovery" || checkpoint != options.checkpoint {
        return Err(format!(
            "its server stopped as {state:?} at checkpoint {checkpoint}, not in recovery at the primary's {}",
            options.checkpoint
        ));
    }
    let old = member.sibling("old");
    remove_dir(&old).map_err(|e| e.to_string())?;
    rename(&member.data_dir, &old).map_err(|e| e.to_string())?;
    let (parent, name) = member.data_parent();
    let out = Command::new("rsync")
        .args([
            "--archive",
            "--delete",
            "--hard-links",
            "--size-only",
            "--omit-dir-times",
            "--no-inc-recursive",
        ])
        // The old WAL is of no use: the first rule that matches wins.
        .arg(format!("--exclude=/{name}_old/pg_wal/*"))
        .arg(format!("--include=/{name}/***"))
        .arg(format!("--include=/{name}_old/***"))
        .arg("--exclude=*")
        .arg(format!(
            "rsync://{}@{}:{}/{MODULE}/",
            member.name, options.primary, options.port
        ))
        .arg(format!("{}/", parent.display()))
        .env("RSYNC_PASSWORD", &member.replication.password)
        .output()
        .map_err(|e| format!("rsync: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rsync from {}: {}",
            options.primary,
            last_line(&out.stderr)
        ));
    }
    match data_major(&member.data_dir) {
        Ok(major) if major == options.major => Ok(()),
        Ok(major) => Err(format!(
            "after rsync the data directory is PostgreSQL {major}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// An empty data directory, nothing of the old one left.
fn empty(member: &Member) -> Result<(), UpgradeError> {
    remove_dir(&member.data_dir)?;
    remove_dir(&member.sibling("old"))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&member.data_dir)
        .map_err(|e| IoError::at("create directory", &member.data_dir)(e).into())
}

/// Leaves `report` in the primary's feedback module as our name.
fn feedback(options: &Options, member: &Member, report: &str) -> Result<(), UpgradeError> {
    let (parent, _) = member.data_parent();
    let file = parent.join(format!(".spilo-upgrade-{}", member.name));
    fs::write(&file, report).map_err(IoError::at("write", &file))?;
    let out = Command::new("rsync")
        .arg(&file)
        .arg(format!(
            "rsync://{}@{}:{}/{FEEDBACK}/{}",
            member.name, options.primary, options.port, member.name
        ))
        .env("RSYNC_PASSWORD", &member.replication.password)
        .output();
    let _ = fs::remove_file(&file);
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(UpgradeError::Step {
            what: "reporting to the primary".into(),
            reason: last_line(&out.stderr),
        }),
        Err(source) => Err(UpgradeError::spawn(Path::new("rsync"))(source)),
    }
}

/// A major's lib directory beside its bin directory.
pub(crate) fn lib_dir_of(bin_dir: &Path) -> PathBuf {
    bin_dir.parent().unwrap_or(Path::new("/")).join("lib")
}
