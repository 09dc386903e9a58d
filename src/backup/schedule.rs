//! `spilo backup schedule`, supervised by `init` as PostgreSQL's account:
//! every tick it asks the server its role; on the primary it prepares the
//! stanza once (and takes the first backup after bootstrap), takes the
//! BACKUP_SCHEDULE backups, retrying failures with a backoff, and reports
//! on WAL archiving. It never touches PostgreSQL: a failure is a log line.
//! One pgbackrest at a time, by construction: the loop waits for it.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

use super::archiving::{self, Watch};
use super::cron::Schedule;
use super::info::duration;
use super::pgbackrest::Pgbackrest;
use super::replica::{self, Source};
use super::server::{self, Status};
use super::state::{self, State};
use super::{BackupError, FromReplica, Spec, read_spec, stanza_info};

/// How often the server is asked.
const TICK: Duration = Duration::from_secs(10);
/// The first retry after a failure; each next one waits twice as long, up
/// to the last.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LAST_RETRY: Duration = Duration::from_secs(600);
/// How long a stopped pgbackrest may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// How often a running pgbackrest is checked on (signals come at once).
const POLL: Duration = Duration::from_millis(200);

const STANZA_CREATE: &[&str] = &["--log-level-console=info", "stanza-create"];
const CHECK: &[&str] = &["--log-level-console=info", "check"];
const BACKUP: &[&str] = &["--log-level-console=info", "backup", "--type=full"];
const INFO: &[&str] = &["info", "--output=json"];

/// Runs the scheduler until SIGTERM or SIGINT.
pub fn run(spec_path: &Path) -> Result<(), BackupError> {
    let spec = read_spec(spec_path)?;
    let schedule = Schedule::parse(&spec.schedule).map_err(|reason| BackupError::Schedule {
        path: spec_path.to_owned(),
        schedule: spec.schedule.clone(),
        reason,
    })?;
    let mut world = Real {
        spec: &spec,
        signals: Signals::start()?,
    };
    Scheduler::new(&spec, schedule).run(&mut world)
}

/// What the scheduler does to the world, so that tests can play it.
trait World {
    fn wall(&self) -> i64;
    fn monotonic(&self) -> Instant;
    fn status(&mut self) -> Result<Option<Status>, BackupError>;
    /// Runs pgbackrest with `args`, its output on ours.
    fn run(&mut self, args: &[&str]) -> Result<Ran, BackupError>;
    fn info(&mut self) -> Result<Vec<u8>, BackupError>;
    /// The replica a backup may read (WALG_BACKUP_FROM_REPLICA).
    fn streaming_replica(&mut self, from: &FromReplica) -> Result<Option<Source>, BackupError>;
    /// pgBackRest's reason for the last failed push, written since the
    /// unix second `not_before`.
    fn push_error(&self, not_before: i64) -> Option<String>;
    fn say(&mut self, line: String);
    /// Keeps the outcomes for the monitor.
    fn record(&mut self, state: &State);
    /// Waits `timeout`; true when told to stop.
    fn pause(&mut self, timeout: Duration) -> Result<bool, BackupError>;
}

/// How a pgbackrest run ended.
enum Ran {
    Done(Result<(), BackupError>),
    /// A stop signal came: it was stopped.
    Stopped,
}

/// A retry: when, and how long the one before waited.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    at: Instant,
    delay: Duration,
}

impl Backoff {
    /// The retry after a failure at `now`, following `previous`.
    fn after(previous: Option<Backoff>, now: Instant) -> Backoff {
        let delay = previous.map_or(FIRST_RETRY, |b| (b.delay * 2).min(LAST_RETRY));
        Backoff {
            at: now + delay,
            delay,
        }
    }
}

/// A backup to retry: why it was taken, and when to try again.
struct Pending {
    why: String,
    backoff: Backoff,
}

struct Scheduler<'a> {
    spec: &'a Spec,
    schedule: Schedule,
    /// The stanza was created and checked (once per process).
    ready: bool,
    /// When preparing the stanza may be tried again.
    prepare_retry: Option<Backoff>,
    /// The next scheduled backup (wall clock); None: not computed yet,
    /// or never (a schedule that never comes).
    next: Option<i64>,
    pending: Option<Pending>,
    /// This replica period was logged.
    replica_said: bool,
    /// The last problem asking the server, said once.
    problem: Option<String>,
    archiving: Watch,
    outcomes: State,
}

/// Whether the loop goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl<'a> Scheduler<'a> {
    fn new(spec: &'a Spec, schedule: Schedule) -> Self {
        Scheduler {
            spec,
            schedule,
            ready: false,
            prepare_retry: None,
            next: None,
            pending: None,
            replica_said: false,
            problem: None,
            archiving: Watch::default(),
            outcomes: State::default(),
        }
    }

    fn run(mut self, world: &mut impl World) -> Result<(), BackupError> {
        self.next = self.schedule.next_after(world.wall());
        let when = match self.next {
            Some(next) => format!("next backup at {}", utc(next)),
            None => "that never comes: no scheduled backups".to_owned(),
        };
        world.say(format!(
            "scheduler started: stanza {}, schedule {:?} (UTC), {when}",
            self.spec.stanza, self.spec.schedule
        ));
        loop {
            if self.tick(world)? == Flow::Stop || world.pause(TICK)? {
                world.say("stopped".to_owned());
                return Ok(());
            }
        }
    }

    fn tick(&mut self, world: &mut impl World) -> Result<Flow, BackupError> {
        let status = match world.status() {
            Ok(Some(status)) => status,
            Ok(None) => return Ok(Flow::Continue),
            Err(e) => {
                let line = format!("warning: cannot ask PostgreSQL: {e}");
                if self.problem.as_ref() != Some(&line) {
                    world.say(line.clone());
                    self.problem = Some(line);
                }
                return Ok(Flow::Continue);
            }
        };
        self.problem = None;
        if status.in_recovery {
            if !self.replica_said {
                world.say("this member is a replica: backups run on the primary only".to_owned());
                self.replica_said = true;
            }
            if self.next.is_some_and(|next| next <= world.wall()) {
                self.next = self.schedule.next_after(world.wall());
            }
            self.pending = None;
            return Ok(Flow::Continue);
        }
        self.replica_said = false;
        let now = world.wall();
        if let Some(line) = self
            .archiving
            .observe(&status.archiver, now, |since| world.push_error(since))
        {
            world.say(line);
        }
        if !self.ready {
            return self.prepare(world);
        }
        if let Some(planned) = self.next.filter(|&next| next <= world.wall()) {
            // A new scheduled time ends the retries of the last one.
            self.pending = None;
            if self.backup(world, format!("scheduled for {}", utc(planned)))? == Flow::Stop {
                return Ok(Flow::Stop);
            }
            self.next = self.schedule.next_after(world.wall());
            if let Some(next) = self.next {
                world.say(format!("next backup at {}", utc(next)));
            }
            return Ok(Flow::Continue);
        }
        match &self.pending {
            Some(pending) if pending.backoff.at <= world.monotonic() => {
                let why = pending.why.clone();
                self.backup(world, why)
            }
            _ => Ok(Flow::Continue),
        }
    }

    /// stanza-create (idempotent) and check, then the first backup when
    /// the stanza has none.
    fn prepare(&mut self, world: &mut impl World) -> Result<Flow, BackupError> {
        if self
            .prepare_retry
            .is_some_and(|retry| retry.at > world.monotonic())
        {
            return Ok(Flow::Continue);
        }
        for (name, args) in [("stanza-create", STANZA_CREATE), ("check", CHECK)] {
            match world.run(args)? {
                Ran::Done(Ok(())) => {}
                Ran::Done(Err(e)) => return Ok(self.prepare_failed(world, name, &e)),
                Ran::Stopped => return Ok(Flow::Stop),
            }
        }
        let stanza = match world
            .info()
            .and_then(|answer| stanza_info(self.spec, &answer))
        {
            Ok(stanza) => stanza,
            Err(e) => return Ok(self.prepare_failed(world, "info", &e)),
        };
        world.say(format!(
            "stanza {} is ready: stanza-create and check passed",
            self.spec.stanza
        ));
        self.ready = true;
        self.prepare_retry = None;
        if let Some(stop) = stanza.last_stop() {
            self.outcomes.last_success = Some(stop);
            world.record(&self.outcomes);
        }
        if stanza.has_backup() {
            return Ok(Flow::Continue);
        }
        self.backup(world, "first backup after bootstrap".to_owned())
    }

    fn prepare_failed(&mut self, world: &mut impl World, name: &str, error: &BackupError) -> Flow {
        let retry = Backoff::after(self.prepare_retry, world.monotonic());
        self.prepare_retry = Some(retry);
        // [028]: the repository holds a stanza of another cluster (a new
        // cluster under an old SCOPE): retrying alone never mends it.
        let message = error.to_string();
        let hint = if message.contains("[028]") {
            "; the repository holds another cluster's stanza: give this cluster its own WAL_BUCKET_SCOPE_SUFFIX, or remove the old stanza (pgbackrest stanza-delete); WAL is kept in pg_wal until then".to_owned()
        } else if message.contains("[050]") {
            // The lock is the archive's: the asynchronous push is still
            // trying the repository, and its failure is the real one.
            let push = world
                .push_error(world.wall() - LAST_RETRY.as_secs() as i64)
                .unwrap_or_else(|| "no failure recorded yet".to_owned());
            format!(
                "; the asynchronous archive-push holds the lock, still trying the repository (its last failure: {push})"
            )
        } else {
            String::new()
        };
        world.say(format!(
            "{name} failed: {error}{hint}; retrying in {}",
            duration(retry.delay.as_secs() as i64)
        ));
        // No backup can be taken until this passes: a failure to the
        // monitor too.
        self.outcomes.last_failure = Some(world.wall());
        self.outcomes.last_error = Some(format!("{name}: {error}"));
        world.record(&self.outcomes);
        Flow::Continue
    }

    /// A full backup; a failure is retried (`pending`) with the backoff.
    fn backup(&mut self, world: &mut impl World, why: String) -> Result<Flow, BackupError> {
        let mut args: Vec<String> = BACKUP.iter().map(|arg| (*arg).to_owned()).collect();
        let reads = match &self.spec.from_replica {
            Some(from) => {
                let found = world.streaming_replica(from);
                let (options, words) = replica::reading(self.spec, from, found);
                args.extend(options);
                format!(", {words}")
            }
            None => String::new(),
        };
        world.say(format!("backup started: full, {why}{reads}"));
        let started = world.monotonic();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = match world.run(&args)? {
            Ran::Done(result) => result,
            Ran::Stopped => return Ok(Flow::Stop),
        };
        let took = duration(world.monotonic().duration_since(started).as_secs() as i64);
        match result {
            Ok(()) => {
                self.pending = None;
                world.say(format!("backup finished: full, {why}, in {took}"));
                self.outcomes.last_success = Some(world.wall());
            }
            Err(e) => {
                self.outcomes.last_failure = Some(world.wall());
                self.outcomes.last_error = Some(e.to_string());
                let previous = self.pending.take().map(|p| p.backoff);
                let backoff = Backoff::after(previous, world.monotonic());
                world.say(format!(
                    "backup failed: full, {why}, after {took}: {e}; retrying in {}",
                    duration(backoff.delay.as_secs() as i64)
                ));
                self.pending = Some(Pending { why, backoff });
            }
        }
        world.record(&self.outcomes);
        Ok(Flow::Continue)
    }
}

fn utc(unix_seconds: i64) -> String {
    format!("{} UTC", super::calendar::format_utc(unix_seconds))
}

/// SIGTERM and SIGINT, caught by a thread of their own and handed over a
/// channel, so that a pause or a running pgbackrest ends as soon as one
/// comes.
struct Signals(Receiver<Signal>);

impl Signals {
    /// Returns once the handlers are in place.
    fn start() -> Result<Signals, BackupError> {
        let (sender, receiver) = mpsc::channel();
        let (ready_sender, ready) = mpsc::channel();
        thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_sender.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let streams = signal(SignalKind::terminate())
                    .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
                let (mut term, mut int) = match streams {
                    Ok(streams) => streams,
                    Err(e) => {
                        let _ = ready_sender.send(Err(e));
                        return;
                    }
                };
                let _ = ready_sender.send(Ok(()));
                loop {
                    let signal = tokio::select! {
                        Some(()) = term.recv() => Signal::SIGTERM,
                        Some(()) = int.recv() => Signal::SIGINT,
                        else => return,
                    };
                    if sender.send(signal).is_err() {
                        return;
                    }
                }
            });
        });
        match ready.recv() {
            Ok(Ok(())) => Ok(Signals(receiver)),
            Ok(Err(e)) => Err(BackupError::Signals(e)),
            Err(_) => Err(BackupError::SignalsGone),
        }
    }

    /// The signal that came within `timeout`, if one did.
    fn wait(&self, timeout: Duration) -> Result<Option<Signal>, BackupError> {
        match self.0.recv_timeout(timeout) {
            Ok(signal) => Ok(Some(signal)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(BackupError::SignalsGone),
        }
    }
}

/// The real world: the server, pgbackrest, our stdout, the clocks.
struct Real<'a> {
    spec: &'a Spec,
    signals: Signals,
}

impl World for Real<'_> {
    fn wall(&self) -> i64 {
        match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) => since.as_secs() as i64,
            Err(before) => -(before.duration().as_secs() as i64),
        }
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn status(&mut self) -> Result<Option<Status>, BackupError> {
        server::status(self.spec)
    }

    fn run(&mut self, args: &[&str]) -> Result<Ran, BackupError> {
        let mut running = match Pgbackrest::new(self.spec).start_in_own_group(args) {
            Ok(running) => running,
            Err(e) => return Ok(Ran::Done(Err(e))),
        };
        loop {
            let signal = match self.signals.wait(POLL) {
                Ok(signal) => signal,
                Err(e) => {
                    running.stop(STOP_GRACE)?;
                    return Err(e);
                }
            };
            if let Some(signal) = signal {
                let what = args.iter().find(|arg| !arg.starts_with("--"));
                self.say(format!(
                    "stopping on {signal}: stopping pgbackrest {}",
                    what.unwrap_or(&"")
                ));
                running.stop(STOP_GRACE)?;
                return Ok(Ran::Stopped);
            }
            match running.try_wait() {
                Ok(Some(status)) => return Ok(Ran::Done(running.result(status))),
                Ok(None) => {}
                Err(e) => {
                    // Never a second pgbackrest beside one we lost track of.
                    running.stop(STOP_GRACE)?;
                    return Ok(Ran::Done(Err(e)));
                }
            }
        }
    }

    fn info(&mut self) -> Result<Vec<u8>, BackupError> {
        Pgbackrest::new(self.spec).output(INFO)
    }

    fn streaming_replica(&mut self, from: &FromReplica) -> Result<Option<Source>, BackupError> {
        replica::streaming(self.spec, from)
    }

    fn push_error(&self, not_before: i64) -> Option<String> {
        archiving::push_error(&self.spec.spool, &self.spec.stanza, not_before)
    }

    fn say(&mut self, line: String) {
        use std::io::Write;
        // Nowhere to report a closed stdout: the supervisor is gone.
        let _ = writeln!(std::io::stdout(), "{line}");
    }

    fn record(&mut self, outcomes: &State) {
        if let Err(e) = outcomes.write(&state::path(&self.spec.spool)) {
            self.say(format!("warning: the backup state for the monitor: {e}"));
        }
    }

    fn pause(&mut self, timeout: Duration) -> Result<bool, BackupError> {
        let signal = self.signals.wait(timeout)?;
        if let Some(signal) = signal {
            self.say(format!("stopping on {signal}"));
        }
        Ok(signal.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;
    use crate::backup::server::Archiver;

    /// 2026-12-02 00:59:30 UTC.
    const START: i64 = 1_796_173_170;
    const INFO_WITH_BACKUPS: &[u8] = include_bytes!("testdata/info.json");
    const INFO_EMPTY: &[u8] = br#"[{"archive":[],"backup":[],"name":"demo","status":{"code":2,"message":"no valid backups"}}]"#;

    /// A world played by the test: each pgbackrest run takes `job` seconds
    /// and ends as the next of `results` says (Ok when none is left).
    struct Fake {
        wall: i64,
        monotonic: Instant,
        /// None: the server does not answer; Some(true): a replica.
        in_recovery: Option<bool>,
        archiver: Archiver,
        info: Vec<u8>,
        /// What Patroni says of the replicas.
        replica: Result<Option<Source>, &'static str>,
        results: VecDeque<Result<(), &'static str>>,
        /// A stop signal comes during the run whose arguments hold this.
        stop_during: Option<&'static str>,
        job: i64,
        ran: Vec<String>,
        said: Vec<String>,
        recorded: Vec<State>,
        pauses: usize,
    }

    impl Fake {
        fn new(in_recovery: Option<bool>, info: &[u8]) -> Self {
            Fake {
                wall: START,
                monotonic: Instant::now(),
                in_recovery,
                archiver: Archiver {
                    failed_count: 0,
                    last_failed_wal: String::new(),
                    last_failed_time: String::new(),
                    last_archived_wal: "W1".into(),
                },
                info: info.to_vec(),
                replica: Ok(None),
                results: VecDeque::new(),
                stop_during: None,
                job: 5,
                ran: Vec::new(),
                said: Vec::new(),
                recorded: Vec::new(),
                pauses: 0,
            }
        }

        fn advance(&mut self, seconds: i64) {
            self.wall += seconds;
            self.monotonic += Duration::from_secs(seconds as u64);
        }

        /// What was run and said since the last call.
        fn take(&mut self) -> (Vec<String>, Vec<String>) {
            (
                std::mem::take(&mut self.ran),
                std::mem::take(&mut self.said),
            )
        }
    }

    impl World for Fake {
        fn wall(&self) -> i64 {
            self.wall
        }

        fn monotonic(&self) -> Instant {
            self.monotonic
        }

        fn status(&mut self) -> Result<Option<Status>, BackupError> {
            Ok(self.in_recovery.map(|in_recovery| Status {
                in_recovery,
                archiver: self.archiver.clone(),
            }))
        }

        fn run(&mut self, args: &[&str]) -> Result<Ran, BackupError> {
            let line = args.join(" ");
            self.ran.push(line.clone());
            self.advance(self.job);
            if self.stop_during.is_some_and(|stop| line.contains(stop)) {
                return Ok(Ran::Stopped);
            }
            Ok(Ran::Done(
                self.results
                    .pop_front()
                    .unwrap_or(Ok(()))
                    .map_err(|reason| BackupError::Pgbackrest {
                        command: format!("pgbackrest {line}"),
                        status: ExitStatus::from_raw(27 << 8),
                        reason: reason.to_owned(),
                    }),
            ))
        }

        fn info(&mut self) -> Result<Vec<u8>, BackupError> {
            self.ran.push("info".into());
            Ok(self.info.clone())
        }

        fn streaming_replica(&mut self, _: &FromReplica) -> Result<Option<Source>, BackupError> {
            self.replica
                .clone()
                .map_err(|e| BackupError::Patronictl(e.to_owned()))
        }

        fn push_error(&self, _: i64) -> Option<String> {
            Some("[104] permission denied".into())
        }

        fn say(&mut self, line: String) {
            self.said.push(line);
        }

        fn record(&mut self, state: &State) {
            self.recorded.push(state.clone());
        }

        fn pause(&mut self, timeout: Duration) -> Result<bool, BackupError> {
            self.advance(timeout.as_secs() as i64);
            self.pauses = self.pauses.saturating_sub(1);
            Ok(self.pauses == 0)
        }
    }

    fn spec() -> Spec {
        Spec {
            pgbackrest: "/usr/bin/pgbackrest".into(),
            config: "/run/pgbackrest.conf".into(),
            stanza: "demo".into(),
            schedule: "0 1 * * *".into(),
            psql: "psql".into(),
            socket_dir: "/run/postgresql".into(),
            port: 5432,
            superuser: "postgres".into(),
            spool: "/spool".into(),
            owner: None,
            from_replica: None,
        }
    }

    fn scheduler<'a>(spec: &'a Spec, world: &Fake) -> Scheduler<'a> {
        let schedule = Schedule::parse(&spec.schedule).unwrap();
        let mut scheduler = Scheduler::new(spec, schedule);
        scheduler.next = scheduler.schedule.next_after(world.wall);
        scheduler
    }

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    const PREPARED: [&str; 3] = [
        "--log-level-console=info stanza-create",
        "--log-level-console=info check",
        "info",
    ];
    const FULL: &str = "--log-level-console=info backup --type=full";

    #[test]
    fn the_first_backup_after_bootstrap() {
        let spec = spec();
        let mut world = Fake::new(None, INFO_EMPTY);
        let mut scheduler = scheduler(&spec, &world);
        // Not answering: nothing happens.
        assert_eq!(scheduler.tick(&mut world).unwrap(), Flow::Continue);
        assert_eq!(world.take(), (vec![], vec![]));

        world.in_recovery = Some(false);
        scheduler.tick(&mut world).unwrap();
        let (ran, said) = world.take();
        assert_eq!(ran, strings(&[PREPARED[0], PREPARED[1], PREPARED[2], FULL]));
        assert_eq!(
            said,
            strings(&[
                "stanza demo is ready: stanza-create and check passed",
                "backup started: full, first backup after bootstrap",
                "backup finished: full, first backup after bootstrap, in 5s",
            ])
        );
        // Once per process.
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take(), (vec![], vec![]));
    }

    #[test]
    fn a_backup_from_a_replica_reads_the_first_streaming_one_or_else_the_primary() {
        let spec = Spec {
            from_replica: Some(FromReplica {
                patronictl: "patronictl".into(),
                patroni_config: "/run/postgres.yml".into(),
                pgdata: "/home/postgres/pgdata/pgroot/data".into(),
                tls_port: 8432,
                ca_file: "/run/tls/ca.crt".into(),
                cert_file: "/run/tls/client.crt".into(),
                key_file: "/run/tls/member.key".into(),
            }),
            ..spec()
        };
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        world.replica = Ok(Some(Source {
            name: "node4".into(),
            host: "10.0.0.4".into(),
        }));
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        world.take();
        scheduler.backup(&mut world, "asked".into()).unwrap();
        let (ran, said) = world.take();
        assert_eq!(
            ran,
            [format!(
                "{FULL} --backup-standby --pg2-host=10.0.0.4 --pg2-host-type=tls \
                 --pg2-host-port=8432 --pg2-host-ca-file=/run/tls/ca.crt \
                 --pg2-host-cert-file=/run/tls/client.crt --pg2-host-key-file=/run/tls/member.key \
                 --pg2-path=/home/postgres/pgdata/pgroot/data \
                 --pg2-host-config=/run/pgbackrest.conf"
            )]
        );
        assert_eq!(
            said[0],
            "backup started: full, asked, reading replica node4 (10.0.0.4)"
        );
        world.replica = Err("patronictl list: exit status: 1: etcd is down");
        scheduler.backup(&mut world, "asked".into()).unwrap();
        let (ran, said) = world.take();
        assert_eq!(ran, [FULL]);
        assert_eq!(
            said[0],
            "backup started: full, asked, reading the primary: which replicas stream is not known: \
             patronictl list: exit status: 1: etcd is down"
        );
    }

    #[test]
    fn no_first_backup_when_there_is_one() {
        let spec = spec();
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        let (ran, said) = world.take();
        assert_eq!(ran, strings(&PREPARED));
        assert_eq!(
            said,
            strings(&["stanza demo is ready: stanza-create and check passed"])
        );
    }

    #[test]
    fn a_lock_held_by_the_archive_push_names_the_push_failure() {
        let spec = spec();
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        world.results = VecDeque::from([Err(
            "ERROR: [050]: unable to acquire lock on file '/run/spilo/pgbackrest/lock/demo-archive.lock'",
        )]);
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        let said = world.take().1;
        assert!(
            said[0].ends_with(
                "; the asynchronous archive-push holds the lock, still trying the repository \
                 (its last failure: [104] permission denied); retrying in 30s"
            ),
            "{said:?}"
        );
    }

    #[test]
    fn preparing_is_retried_with_a_growing_backoff() {
        let spec = spec();
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        world.job = 0;
        world.results = VecDeque::from([
            Err("ERROR: [027]: no database found"),
            Ok(()),
            Err("ERROR: [082]: WAL segment was not archived"),
        ]);
        world
            .results
            .extend(std::iter::repeat_n(Err("ERROR: again"), 6));
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        let (ran, said) = world.take();
        assert_eq!(ran, strings(&[PREPARED[0]]));
        assert_eq!(
            said,
            strings(&[
                "stanza-create failed: pgbackrest --log-level-console=info stanza-create: \
                 exit status: 27: ERROR: [027]: no database found; retrying in 30s"
            ])
        );
        world.advance(29);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take(), (vec![], vec![]));
        world.advance(1);
        scheduler.tick(&mut world).unwrap();
        let (ran, said) = world.take();
        assert_eq!(ran, strings(&[PREPARED[0], PREPARED[1]]));
        assert!(said[0].starts_with("check failed: "), "{said:?}");
        assert!(said[0].ends_with("; retrying in 1m 00s"), "{said:?}");
        let mut delays = Vec::new();
        for _ in 0..6 {
            world.advance(600);
            scheduler.tick(&mut world).unwrap();
            let said = world.take().1;
            delays.push(said[0].rsplit("retrying in ").next().unwrap().to_owned());
        }
        assert_eq!(
            delays,
            [
                "2m 00s", "4m 00s", "8m 00s", "10m 00s", "10m 00s", "10m 00s"
            ]
        );
        world.advance(600);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take().0, strings(&PREPARED));
        assert!(scheduler.ready);
    }

    #[test]
    fn scheduled_backups_and_their_retries() {
        let spec = spec();
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        world.take();
        // The repository's newest backup is the last success so far.
        let newest = world.recorded.last().and_then(|s| s.last_success);
        assert!(newest.is_some(), "{:?}", world.recorded);
        // 01:00:00 has come.
        world.advance(30);
        world.results = VecDeque::from([Err("ERROR: [056]: unable to connect"), Err("ERROR: no")]);
        scheduler.tick(&mut world).unwrap();
        let (ran, said) = world.take();
        assert_eq!(ran, strings(&[FULL]));
        assert_eq!(
            said,
            strings(&[
                "backup started: full, scheduled for 2026-12-02 01:00:00 UTC",
                "backup failed: full, scheduled for 2026-12-02 01:00:00 UTC, after 5s: \
                 pgbackrest --log-level-console=info backup --type=full: exit status: 27: \
                 ERROR: [056]: unable to connect; retrying in 30s",
                "next backup at 2026-12-03 01:00:00 UTC",
            ])
        );
        world.advance(30);
        scheduler.tick(&mut world).unwrap();
        let said = world.take().1;
        assert_eq!(
            said[0],
            "backup started: full, scheduled for 2026-12-02 01:00:00 UTC"
        );
        assert!(said[1].ends_with("retrying in 1m 00s"), "{said:?}");
        assert_eq!(said.len(), 2);
        let failed = world.recorded.last().cloned().unwrap();
        assert_eq!(
            (failed.last_success, failed.last_failure),
            (newest, Some(world.wall))
        );
        assert!(failed.last_error.is_some_and(|e| e.contains("ERROR: no")));
        world.advance(60);
        scheduler.tick(&mut world).unwrap();
        let done = world.recorded.last().cloned().unwrap();
        assert_eq!(done.last_success, Some(world.wall));
        assert_eq!(done.last_failure, failed.last_failure);
        assert_eq!(
            world.take().1,
            strings(&[
                "backup started: full, scheduled for 2026-12-02 01:00:00 UTC",
                "backup finished: full, scheduled for 2026-12-02 01:00:00 UTC, in 5s",
            ])
        );
        world.advance(3600);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take(), (vec![], vec![]));
    }

    #[test]
    fn the_next_scheduled_time_ends_the_retries() {
        let mut spec = spec();
        spec.schedule = "*/2 * * * *".into();
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        world.job = 0;
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        world.take();
        world.results = VecDeque::from([Err("ERROR: one"), Err("ERROR: two"), Err("ERROR: three")]);
        world.advance(30); // 01:00:00
        scheduler.tick(&mut world).unwrap();
        world.advance(30);
        scheduler.tick(&mut world).unwrap();
        let said = world.take().1;
        assert_eq!(said[2], "next backup at 2026-12-02 01:02:00 UTC");
        assert!(
            said[4].ends_with("ERROR: two; retrying in 1m 00s"),
            "{said:?}"
        );
        world.advance(60); // 01:01:30
        scheduler.tick(&mut world).unwrap();
        assert!(world.take().1[1].ends_with("ERROR: three; retrying in 2m 00s"));
        // 01:02:00: the next time comes before the retry (01:03:30) and
        // starts over.
        world.results = VecDeque::from([Err("ERROR: four")]);
        world.advance(30);
        scheduler.tick(&mut world).unwrap();
        let said = world.take().1;
        assert_eq!(
            said[0],
            "backup started: full, scheduled for 2026-12-02 01:02:00 UTC"
        );
        assert!(
            said[1].ends_with("ERROR: four; retrying in 30s"),
            "{said:?}"
        );
        assert_eq!(said[2], "next backup at 2026-12-02 01:04:00 UTC");
    }

    #[test]
    fn a_replica_skips_and_says_so_once() {
        let spec = spec();
        let mut world = Fake::new(Some(true), INFO_EMPTY);
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(
            world.take(),
            (
                vec![],
                strings(&["this member is a replica: backups run on the primary only"])
            )
        );
        world.advance(60);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take(), (vec![], vec![]));
        assert_eq!(
            scheduler
                .next
                .map(crate::backup::calendar::format_utc)
                .as_deref(),
            Some("2026-12-03 01:00:00")
        );
        // Promoted: the stanza, the first backup; demoted again: said again.
        world.in_recovery = Some(false);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take().0.len(), 4);
        world.in_recovery = Some(true);
        scheduler.tick(&mut world).unwrap();
        assert_eq!(world.take().1.len(), 1);
    }

    #[test]
    fn archiving_failures_are_reported() {
        let spec = spec();
        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        let mut scheduler = scheduler(&spec, &world);
        scheduler.tick(&mut world).unwrap();
        world.take();
        world.archiver.failed_count = 3;
        world.archiver.last_failed_wal = "W2".into();
        world.archiver.last_failed_time = "2026-12-02 00:59:40".into();
        scheduler.tick(&mut world).unwrap();
        let said = world.take().1;
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("warning: WAL archiving fails since 2026-12-0")
                && said[0].ends_with(
                    ": W2 at 2026-12-02 00:59:40 UTC (PostgreSQL retries it; WAL stays in pg_wal): [104] permission denied"
                ),
            "{said:?}"
        );
        world.archiver.last_archived_wal = "W2".into();
        scheduler.tick(&mut world).unwrap();
        assert_eq!(
            world.take().1,
            strings(&["WAL archiving works again: W2 archived"])
        );
    }

    #[test]
    fn a_stop_during_a_backup_stops_the_loop() {
        let spec = spec();
        let mut world = Fake::new(Some(false), INFO_EMPTY);
        world.stop_during = Some("backup");
        let mut first = scheduler(&spec, &world);
        assert_eq!(first.tick(&mut world).unwrap(), Flow::Stop);
        world.take();

        let mut world = Fake::new(Some(false), INFO_WITH_BACKUPS);
        world.stop_during = Some("backup");
        let mut scheduled = scheduler(&spec, &world);
        scheduled.tick(&mut world).unwrap();
        world.advance(30);
        assert_eq!(scheduled.tick(&mut world).unwrap(), Flow::Stop);
        assert_eq!(
            world.take().1.last().map(String::as_str),
            Some("backup started: full, scheduled for 2026-12-02 01:00:00 UTC")
        );

        let mut world = Fake::new(Some(false), INFO_EMPTY);
        world.stop_during = Some("backup");
        let schedule = Schedule::parse(&spec.schedule).unwrap();
        Scheduler::new(&spec, schedule).run(&mut world).unwrap();
        let said = world.take().1;
        assert_eq!(
            said.first().map(String::as_str),
            Some(
                "scheduler started: stanza demo, schedule \"0 1 * * *\" (UTC), \
                 next backup at 2026-12-02 01:00:00 UTC"
            )
        );
        assert_eq!(said.last().map(String::as_str), Some("stopped"));
    }

    #[test]
    fn the_loop_ticks_until_a_signal() {
        let mut spec = spec();
        spec.schedule = "0 0 30 2 *".into();
        let mut world = Fake::new(None, INFO_EMPTY);
        world.pauses = 3;
        let schedule = Schedule::parse(&spec.schedule).unwrap();
        Scheduler::new(&spec, schedule).run(&mut world).unwrap();
        assert_eq!(world.wall, START + 30);
        assert_eq!(
            world.take().1,
            strings(&[
                "scheduler started: stanza demo, schedule \"0 0 30 2 *\" (UTC), \
                 that never comes: no scheduled backups",
                "stopped",
            ])
        );
    }
}
