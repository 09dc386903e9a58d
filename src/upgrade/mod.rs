//! `spilo upgrade --members N`: a major upgrade of the running cluster in
//! place, on its primary, as the operator asks for one
//! (`/scripts/inplace_upgrade.py N`). Progress goes to stdout; a failure
//! is one line on stderr, the last of the output, and says in which state
//! the cluster was left.
//!
//! 1. Checks (`checks`): nothing changes until they all pass.
//! 2. Patroni is paused; the primary stops cleanly; every replica must
//!    replay its shutdown checkpoint; `pg_upgrade --link`. A failure up
//!    to here puts the old data directory back and starts it again.
//! 3. Past that point the new major stays: the directories are swapped,
//!    the replicas follow through rsync (`replica`) or are made anew,
//!    Patroni restarts on the new major with the DCS's system identifier
//!    reset (`dcs`), and the cluster resumes.
//! 4. Extensions are updated, statistics rebuilt in stages, the backup
//!    stanza upgraded and a full backup taken, the old directory removed.

mod after;
mod api;
mod checks;
mod dcs;
mod member;
mod pgupgrade;
pub mod replica;
mod restart;
pub mod restored;
mod rsyncd;
mod sql;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
use serde_json::json;

use crate::backup;
use crate::files::IoError;
use api::Api;
use checks::Plan;
use member::Member;
use pgupgrade::{control_data, remove_dir, rename, stop};
use rsyncd::{Peer, Rsyncd};
use sql::Psql;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A check failed: nothing was changed.
    #[error("not upgraded, nothing changed: {0}")]
    Refused(String),
    /// Failed on the way, in the state `left`.
    #[error("{reason}; {left}")]
    Failed { reason: String, left: String },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {reason}", file.display())]
    Config { file: PathBuf, reason: String },
    #[error("{program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Step { what: String, reason: String },
}

impl UpgradeError {
    /// For `map_err`: `program` could not be started or waited for.
    pub(crate) fn spawn(program: &Path) -> impl FnOnce(std::io::Error) -> UpgradeError + '_ {
        move |source| UpgradeError::Spawn {
            program: program.display().to_string(),
            source,
        }
    }
}

pub struct Options {
    /// The number of members the cluster must have (the operator's pods).
    pub members: usize,
    /// Patroni's configuration file.
    pub config: PathBuf,
    pub postgres_root: PathBuf,
    /// SPILO_CONFIGURATION and PGVERSION: the target.
    pub spilo_configuration: Option<String>,
    pub pgversion: Option<String>,
}

/// `$RW_DIR/postgres.yml`, where `init` puts it.
pub fn default_config_path() -> PathBuf {
    rw_dir().join("postgres.yml")
}

/// RW_DIR from the environment (default /run).
pub(crate) fn rw_dir() -> PathBuf {
    match std::env::var_os("RW_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/run"),
    }
}

/// How long replicas get to report their rsync.
const RSYNC_LIMIT: Duration = Duration::from_secs(900);

/// A line of progress, on stdout (the operator keeps it).
pub(crate) fn say(line: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    println!(
        "{} spilo upgrade: {line}",
        backup::calendar::format_utc(now)
    );
}

/// The major of a data directory (its PG_VERSION).
pub(crate) fn data_major(data: &Path) -> Result<u32, UpgradeError> {
    let path = data.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(IoError::at("read", &path))?;
    text.trim().parse().map_err(|_| UpgradeError::Config {
        file: path,
        reason: format!("not a PostgreSQL major: {:?}", text.trim()),
    })
}

/// The upgrade; its summary line.
pub fn run(options: &Options) -> Result<String, UpgradeError> {
    let member = Member::read(&options.config)?;
    become_owner_of(&member.data_dir)?;
    let (parent, _) = member.data_parent();
    let _lock = lock(&parent.join(".spilo-upgrade.lock"))?;
    let (new_major, new_bin) = checks::target(
        options.spilo_configuration.as_deref(),
        options.pgversion.as_deref(),
        &options.postgres_root,
    )?;
    let old_major = data_major(&member.data_dir)?;
    if old_major == new_major {
        return Ok(format!(
            "cluster {} already runs PostgreSQL {new_major}: nothing to upgrade",
            member.scope
        ));
    }
    say(&format!(
        "cluster {}, member {}: checking an upgrade from PostgreSQL {old_major} to {new_major} with {} members",
        member.scope, member.name, options.members
    ));
    let api = Api::new(member.api_auth.clone());
    let plan = checks::run(&member, &api, options.members, new_major, &new_bin)?;
    say("every check passed");
    Upgrader {
        member,
        api,
        plan,
        started: Instant::now(),
    }
    .upgrade()
}

struct Upgrader {
    member: Member,
    api: Api,
    plan: Plan,
    started: Instant,
}

impl Upgrader {
    fn upgrade(mut self) -> Result<String, UpgradeError> {
        let (old, new) = (self.plan.old_major, self.plan.new_major);
        // Written out while writes still go on: the shutdown checkpoint,
        // inside the outage, then has little left to write.
        say("checkpoint before the stop");
        if let Err(e) = self
            .local()
            .value("CHECKPOINT")
            .and_then(|_| self.pause(true))
        {
            return Err(self.refuse(e));
        }
        let down = Instant::now();
        let (checkpoint, rsyncd) = match self.stop_and_link() {
            Ok(done) => done,
            Err((rsyncd, reason)) => {
                drop(rsyncd);
                return Err(self.roll_back(reason));
            }
        };
        // The point of no return: the old directory's files are the new
        // one's too, and the new server is about to start.
        let old_dir = self.member.sibling("old");
        remove_dir(&old_dir)?;
        rename(&self.member.data_dir, &old_dir)?;
        rename(&self.plan.upgrade.new_data, &self.member.data_dir)?;
        copy_if_present(&old_dir, &self.member.data_dir, "patroni.dynamic.json")?;
        say(&format!(
            "pg_upgrade done: {} is PostgreSQL {new}",
            self.member.data_dir.display()
        ));
        let recreated = self.replicas(&checkpoint, rsyncd);
        let lib_dir = replica::lib_dir_of(&self.plan.new_bin);
        let new_bin = self.plan.new_bin.clone();
        let left = format!(
            "the primary's data is PostgreSQL {new} (PostgreSQL {old}'s in {}) and its pod starts it; the cluster is paused until `patronictl resume`",
            old_dir.display()
        );
        self.member
            .retarget((old, new), &new_bin, &lib_dir)
            .map_err(|e| failed(e, &left))?;
        let spec = backup::read_spec(&backup::default_spec_path()).ok();
        if let Some(spec) = &spec {
            match backup::stanza_upgrade(spec) {
                Ok(()) => say(&format!("pgBackRest's stanza now follows PostgreSQL {new}")),
                Err(e) => say(&format!("warning: stanza-upgrade: {e}")),
            }
        }
        self.start_new().map_err(|e| failed(e, &left))?;
        let refused_writes = down.elapsed();
        say(&format!(
            "the primary runs PostgreSQL {new} and takes writes again after {:.1}s",
            refused_writes.as_secs_f64()
        ));
        self.pause(false)
            .map_err(|e| failed(e, "the primary runs the new major, paused"))?;
        self.wait_members(&recreated)
            .map_err(|e| failed(e, "the primary runs the new major"))?;
        after::update_extensions(&self.local(), &self.plan.recreated, new)?;
        say(&checks::helpers_again());
        after::analyze(&self.new_server(), self.plan.upgrade.jobs)?;
        if let Some(spec) = &spec {
            say("taking a full backup of the new major");
            match backup::full_backup(spec) {
                Ok(()) => say("the full backup is done"),
                Err(e) => say(&format!("warning: the full backup failed: {e}")),
            }
        }
        remove_dir(&old_dir)?;
        let mut summary = format!(
            "upgraded cluster {} from PostgreSQL {old} to {new}: {} member{}, writes refused for {:.1}s, {:.0}s in all",
            self.member.scope,
            self.plan.replicas.len() + 1,
            if self.plan.replicas.is_empty() {
                ""
            } else {
                "s"
            },
            refused_writes.as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        if !recreated.is_empty() {
            summary.push_str(&format!(
                "; made anew from the primary: {}",
                recreated.join(", ")
            ));
        }
        Ok(summary)
    }

    /// Stops the primary, waits for the replicas to replay its shutdown
    /// checkpoint and runs pg_upgrade: the checkpoint and the rsync
    /// daemon. An error names what failed (the caller rolls back).
    fn stop_and_link(&mut self) -> Result<(String, Option<Rsyncd>), (Option<Rsyncd>, String)> {
        let member = &self.member;
        say("stopping the primary cleanly");
        stop(&member.bin_dir, &member.data_dir).map_err(|e| (None, e.to_string()))?;
        let (state, checkpoint) =
            control_data(&member.bin_dir, &member.data_dir).map_err(|e| (None, e.to_string()))?;
        if state != "shut down" {
            return Err((
                None,
                format!("the primary stopped as {state:?}, not \"shut down\""),
            ));
        }
        let target = sql::parse_lsn(&checkpoint).ok_or_else(|| {
            (
                None,
                format!("no checkpoint location in pg_controldata ({checkpoint:?})"),
            )
        })?;
        let mut rsyncd = None;
        if !self.plan.replicas.is_empty() {
            let peers: Vec<Peer> = self
                .plan
                .replicas
                .iter()
                .map(|r| Peer {
                    name: &r.name,
                    host: &r.host,
                })
                .collect();
            let (parent, _) = member.data_parent();
            // Outside the directory it serves.
            let dir = rw_dir().join("spilo-upgrade-rsyncd");
            rsyncd = Some(
                Rsyncd::start(
                    &dir,
                    parent,
                    member.port,
                    &peers,
                    &member.replication.password,
                )
                .map_err(|e| (None, e.to_string()))?,
            );
            say(&format!(
                "waiting for the replicas to replay the shutdown checkpoint {checkpoint}"
            ));
            for replica in &self.plan.replicas {
                let psql = checks::remote(member, replica);
                let replayed = wait(Duration::from_secs(120), || {
                    psql.value("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint")
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .filter(|lsn| *lsn > target)
                });
                if replayed.is_none() {
                    return Err((
                        rsyncd,
                        format!(
                            "replica {} did not replay the primary's shutdown checkpoint",
                            replica.name
                        ),
                    ));
                }
            }
        }
        say(&format!(
            "pg_upgrade --link from PostgreSQL {} to {}",
            self.plan.old_major, self.plan.new_major
        ));
        match self.plan.upgrade.link() {
            Ok(()) => Ok((checkpoint, rsyncd)),
            Err(e) => Err((rsyncd, e.to_string())),
        }
    }

    /// Nothing stopped yet: the pause lifted, the helpers made again.
    fn refuse(&self, e: UpgradeError) -> UpgradeError {
        let mut reason = e.to_string();
        if let Err(e) = self.pause(false) {
            reason.push_str(&format!("; resuming failed ({e}): `patronictl resume`"));
        }
        if !self.plan.dropped.is_empty() {
            reason.push_str(&format!("; {}", checks::helpers_again()));
        }
        UpgradeError::Refused(reason)
    }

    /// Before the point of no return: the old data directory as it was,
    /// its server started again, the cluster resumed.
    fn roll_back(&mut self, reason: String) -> UpgradeError {
        let old = self.plan.old_major;
        say(&format!("{reason}: rolling back to PostgreSQL {old}"));
        let control = self.member.data_dir.join("global/pg_control");
        let disabled = self.member.data_dir.join("global/pg_control.old");
        let restored = (|| -> Result<(), UpgradeError> {
            // A server pg_upgrade left running (it was killed).
            let upgrade = &self.plan.upgrade;
            for (bin, dir) in [
                (&upgrade.new_bin, &upgrade.new_data),
                (&upgrade.old_bin, &upgrade.old_data),
            ] {
                if dir.join("postmaster.pid").exists() {
                    let _ = stop(bin, dir);
                }
            }
            // Link mode disables the old cluster this way once it links.
            if disabled.exists() && !control.exists() {
                rename(&disabled, &control)?;
            }
            self.plan.upgrade.keep_logs();
            remove_dir(&self.plan.upgrade.new_data)?;
            self.start_postgres()?;
            self.pause(false)
        })();
        match restored {
            Ok(()) => {
                let mut left = format!(
                    "rolled back: the cluster runs PostgreSQL {old} with its data, as before"
                );
                if !self.plan.dropped.is_empty() {
                    left.push_str(&format!("; {}", checks::helpers_again()));
                }
                UpgradeError::Failed { reason, left }
            }
            Err(e) => UpgradeError::Failed {
                reason,
                left: format!(
                    "rolling back failed ({e}): the old data is in {}, PostgreSQL {old}; the cluster may still be paused",
                    self.member.data_dir.display()
                ),
            },
        }
    }

    /// Starts the replicas' part and waits for their reports; the names
    /// of those made anew instead.
    fn replicas(&self, checkpoint: &str, rsyncd: Option<Rsyncd>) -> Vec<String> {
        let Some(mut rsyncd) = rsyncd else {
            return Vec::new();
        };
        let program =
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/spilo"));
        let command = format!(
            "{} upgrade-replica --config {} --major {} --bin-dir {} --primary {} --port {} --checkpoint {}",
            program.display(),
            self.member.file.display(),
            self.plan.new_major,
            self.plan.new_bin.display(),
            self.plan.host,
            self.member.port,
            checkpoint
        );
        let mut recreated = Vec::new();
        let mut started = Vec::new();
        for replica in &self.plan.replicas {
            let psql = checks::remote(&self.member, replica);
            let script = "SELECT format('COPY (SELECT 1) TO PROGRAM %L', :'command' || ' --backend ' || pg_backend_pid()) \\gexec\n";
            match psql.script(script, &[("command", &command)]) {
                Ok(_) => started.push(replica.name.clone()),
                Err(e) => {
                    say(&format!(
                        "warning: replica {} could not be started on its part: {e}; it keeps PostgreSQL {}: make it anew (remove its data volume)",
                        replica.name, self.plan.old_major
                    ));
                    recreated.push(replica.name.clone());
                }
            }
        }
        say(&format!(
            "replicas {} pull what changed from this member",
            started.join(", ")
        ));
        let outcomes = rsyncd.outcomes(&started, RSYNC_LIMIT);
        for (name, outcome) in started.iter().zip(outcomes) {
            match outcome.as_deref() {
                Some("ok") => say(&format!(
                    "replica {name} is PostgreSQL {}",
                    self.plan.new_major
                )),
                Some(other) => {
                    say(&format!("replica {name}: {other}"));
                    recreated.push(name.clone());
                }
                None => {
                    say(&format!(
                        "replica {name} did not report within {}s",
                        RSYNC_LIMIT.as_secs()
                    ));
                    recreated.push(name.clone());
                }
            }
        }
        recreated
    }

    /// Patroni on the new major, the primary started by it.
    fn start_new(&self) -> Result<(), UpgradeError> {
        let config = &self.member.file;
        dcs::remove_initialize_key(config)?;
        restart::patroni(config)?;
        // The old Patroni may have written the key back before it exited.
        dcs::remove_initialize_key(config)?;
        wait(Duration::from_secs(60), || {
            self.api.get(&format!("{}/patroni", self.member.api)).ok()
        })
        .ok_or_else(|| {
            step(
                "Patroni after its restart",
                "its API did not answer within 60s",
            )
        })?;
        self.start_postgres()?;
        let key = dcs::initialize_key(config)?;
        if key == self.plan.system_identifier {
            dcs::remove_initialize_key(config)?;
        }
        Ok(())
    }

    /// POST /restart while paused: Patroni starts the server it has.
    fn start_postgres(&self) -> Result<(), UpgradeError> {
        let url = format!("{}/restart", self.member.api);
        let mut last = String::new();
        let started = wait(Duration::from_secs(120), || {
            match self.api.send("POST", &url, &json!({})) {
                Ok((status, _)) if status < 300 => Some(()),
                Ok((status, body)) => {
                    last = format!("HTTP {status}: {}", body.trim());
                    None
                }
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        started.ok_or_else(|| step("POST /restart", &last))?;
        let local = self.local();
        wait(Duration::from_secs(300), || {
            local
                .value("SELECT pg_is_in_recovery()")
                .ok()
                .filter(|v| v == "f")
        })
        .ok_or_else(|| {
            step(
                "starting the primary",
                "it did not accept writes within 300s",
            )
        })
        .map(drop)
    }

    /// The new major's server, where the old one ran.
    fn new_server(&self) -> after::Server {
        after::Server {
            major: self.plan.new_major,
            bin_dir: self.plan.new_bin.clone(),
            socket_dir: self.member.socket_dir.clone(),
            port: self.member.port,
            user: self.member.superuser.username.clone(),
        }
    }

    fn local(&self) -> Psql {
        Psql::socket(
            &self.member.bin_dir,
            &self.member.socket_dir,
            self.member.port,
            &self.member.superuser.username,
        )
    }

    /// Sets the pause and waits until every member runs with it.
    fn pause(&self, paused: bool) -> Result<(), UpgradeError> {
        let (status, body) = self.api.send(
            "PATCH",
            &format!("{}/config", self.member.api),
            &json!({"pause": paused}),
        )?;
        if status >= 300 {
            let what = if paused {
                "pausing the cluster"
            } else {
                "resuming the cluster"
            };
            return Err(step(what, &format!("HTTP {status}: {}", body.trim())));
        }
        let mut urls = vec![format!("{}/patroni", self.member.api)];
        if paused {
            urls.extend(self.plan.replicas.iter().map(|r| r.api_url.clone()));
        }
        wait(Duration::from_secs(60), || {
            checks::all_see_pause(&self.api, &urls, paused).then_some(())
        })
        .ok_or_else(|| {
            step(
                if paused { "pausing" } else { "resuming" },
                "not every member saw it within 60s",
            )
        })?;
        say(if paused {
            "Patroni is paused"
        } else {
            "Patroni resumed"
        });
        Ok(())
    }

    /// Every member back: the replicas streaming from the new primary.
    fn wait_members(&self, recreated: &[String]) -> Result<(), UpgradeError> {
        let limit = if recreated.is_empty() { 300 } else { 1800 };
        let expected = self.plan.replicas.len();
        if expected == 0 {
            return Ok(());
        }
        say(&format!("waiting for {expected} replicas to stream"));
        wait(Duration::from_secs(limit), || {
            let cluster = self.api.get(&format!("{}/cluster", self.member.api)).ok()?;
            let (members, _) = api::members(&cluster);
            let streaming = members
                .iter()
                .filter(|m| m.role != "leader" && m.state == "streaming")
                .count();
            (streaming == expected).then_some(())
        })
        .ok_or_else(|| {
            step(
                "after the upgrade",
                &format!("not every replica streams within {limit}s"),
            )
        })
    }
}

fn step(what: &str, reason: &str) -> UpgradeError {
    UpgradeError::Step {
        what: what.into(),
        reason: reason.into(),
    }
}

fn failed(e: UpgradeError, left: &str) -> UpgradeError {
    UpgradeError::Failed {
        reason: e.to_string(),
        left: left.to_owned(),
    }
}

/// Polls `check` every second until it gives a value, at most `limit`.
fn wait<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn copy_if_present(from: &Path, to: &Path, name: &str) -> Result<(), UpgradeError> {
    match std::fs::copy(from.join(name), to.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(IoError::at("copy", &from.join(name))(e).into())
        }
        _ => Ok(()),
    }
}

/// Started as root (`docker exec`): becomes the data directory's owner,
/// as PostgreSQL's programs must run.
fn become_owner_of(data: &Path) -> Result<(), UpgradeError> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(data).map_err(IoError::at("stat", data))?;
    let (uid, gid) = (
        Uid::from_raw(std::os::unix::fs::MetadataExt::uid(&meta)),
        Gid::from_raw(std::os::unix::fs::MetadataExt::gid(&meta)),
    );
    let switch = setgroups(&[gid])
        .and_then(|()| setgid(gid))
        .and_then(|()| setuid(uid));
    switch.map_err(|e| step("switching to the data directory's owner", &e.to_string()))
}

/// One upgrade at a time on this volume.
fn lock(path: &Path) -> Result<Flock<File>, UpgradeError> {
    let file = File::create(path).map_err(IoError::at("create", path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| UpgradeError::Refused("another spilo upgrade runs on this member".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upgrade_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".spilo-upgrade.lock");
        let held = lock(&path).unwrap();
        let err = lock(&path).unwrap_err().to_string();
        assert!(err.contains("another spilo upgrade runs"), "{err}");
        drop(held);
        assert!(lock(&path).is_ok());
    }
}
