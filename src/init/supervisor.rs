//! Runs child specs: starts them in order (each waits for the previous
//! one to be ready), passes their output through, restarts crashed ones
//! with backoff, reaps everything, and stops the tree in stages on a
//! signal. It knows programs, users and policies, not what they are.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use super::logging;
use super::reaper::{self, Exit};

/// One supervised program.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The whole environment: nothing of ours leaks into the child.
    pub env: Vec<(String, String)>,
    /// Switch to this user (we are root); None keeps ours.
    pub user: Option<(Uid, Gid)>,
    pub dir: PathBuf,
    pub ready: Option<Ready>,
    pub restart: Restart,
    /// Shutdown goes stage by stage, lowest first; a stage is signalled
    /// once every child of the earlier ones has exited.
    pub stop_stage: u8,
    /// What asks this child to stop cleanly on SIGTERM or SIGINT (SIGQUIT
    /// is passed on as it is).
    pub stop_signal: Signal,
}

/// When a child counts as started, so that the next may start.
#[derive(Debug, Clone)]
pub enum Ready {
    /// An HTTP GET answering 200.
    Http {
        addr: SocketAddr,
        path: String,
        within: Duration,
        /// Removed once it answered: while it exists, the child's state
        /// is that of a first start that never finished.
        first_start: Option<PathBuf>,
    },
}

/// Restarts after a crash: delays double from `first_delay` up to
/// `max_delay`; after `limit` crashes in a row we give up. A child that
/// ran for `stable_after` starts a new row.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub limit: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub stable_after: Duration,
}

/// Work done at an interval inside the supervisor (instead of cron).
/// The job returns a line worth logging, or an error line.
pub struct Periodic {
    pub(crate) name: &'static str,
    pub(crate) every: Duration,
    pub(crate) job: Box<dyn FnMut() -> Result<Option<String>, String>>,
}

/// Exit status when the tree stopped on request, in time, every child
/// exiting 0 or by the signal it was sent.
pub const CLEAN: u8 = 0;
/// Exit status when a child could not be kept running, failed to stop
/// cleanly, or the grace period ran out.
pub const FAILED: u8 = 1;

const TICK: Duration = Duration::from_millis(200);

struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
    started: Option<Instant>,
    ever_started: bool,
    ready: bool,
    /// The stop signal sent in this shutdown, if any.
    signalled: Option<Signal>,
    failures: u32,
    restart_at: Option<Instant>,
    generation: u64,
}

struct Shutdown {
    signal: Signal,
    deadline: Instant,
    /// SIGQUIT: every child at once, no stages.
    all_at_once: bool,
    killed: bool,
    orphans_signalled: bool,
}

enum Event {
    Ready {
        index: usize,
        generation: u64,
        ok: bool,
    },
}

struct Supervisor {
    children: Vec<Child>,
    shutdown: Option<Shutdown>,
    grace: Duration,
    status: u8,
    events: mpsc::UnboundedSender<Event>,
    /// The tasks passing output through, drained before we return.
    readers: Vec<JoinHandle<()>>,
}

fn stop_signals() -> SigSet {
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT]
        .into_iter()
        .collect()
}

/// Keeps the stop signals pending until `run` handles them: PID 1
/// ignores what it has no handler for, so a stop asked for while init
/// still prepares the volumes would otherwise be lost. Children start
/// with an empty mask (std resets it).
pub fn hold_stop_signals() -> nix::Result<()> {
    stop_signals().thread_block()
}

/// Runs the children until a signal stops them (or they cannot be kept
/// running); returns the exit status for the whole container.
pub async fn run(
    specs: Vec<ChildSpec>,
    mut periodic: Vec<Periodic>,
    grace: Duration,
) -> std::io::Result<u8> {
    // Handlers first: a child that exits at once must not be missed.
    let mut sigchld = signal(SignalKind::child())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigquit = signal(SignalKind::quit())?;
    // What arrived while they were held is handled now.
    stop_signals().thread_unblock()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        children: specs
            .into_iter()
            .map(|spec| Child {
                spec,
                pid: None,
                started: None,
                ever_started: false,
                ready: false,
                signalled: None,
                failures: 0,
                restart_at: None,
                generation: 0,
            })
            .collect(),
        shutdown: None,
        grace,
        status: CLEAN,
        events: tx,
        readers: Vec::new(),
    };
    let now = Instant::now();
    let mut due: Vec<Instant> = periodic.iter().map(|p| now + p.every).collect();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    sup.start_next();
    loop {
        tokio::select! {
            _ = sigchld.recv() => sup.reap(),
            _ = sigterm.recv() => sup.begin_shutdown(Signal::SIGTERM, CLEAN),
            _ = sigint.recv() => sup.begin_shutdown(Signal::SIGINT, CLEAN),
            _ = sigquit.recv() => sup.begin_shutdown(Signal::SIGQUIT, CLEAN),
            Some(event) = rx.recv() => sup.on_event(event),
            _ = tick.tick() => {
                sup.reap();
                sup.on_tick();
                if sup.shutdown.is_none() {
                    run_periodic(&mut periodic, &mut due);
                }
            }
        }
        if let Some(status) = sup.finished() {
            // The last lines a child wrote before exiting may still be in
            // its pipe.
            let deadline = Instant::now() + Duration::from_secs(1);
            for reader in sup.readers.drain(..) {
                let _ = tokio::time::timeout_at(deadline, reader).await;
            }
            return Ok(status);
        }
    }
}

fn run_periodic(periodic: &mut [Periodic], due: &mut [Instant]) {
    let now = Instant::now();
    for (job, at) in periodic.iter_mut().zip(due.iter_mut()) {
        if now < *at {
            continue;
        }
        *at = now + job.every;
        match (job.job)() {
            Ok(Some(line)) => info!("{}: {line}", job.name),
            Ok(None) => {}
            Err(line) => warn!("{}: {line}", job.name),
        }
    }
}

impl Supervisor {
    /// Starts, in order, the children that never ran, stopping at one
    /// that is not ready yet.
    fn start_next(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        for index in 0..self.children.len() {
            if !self.children[index].ever_started {
                self.spawn(index);
            }
            let child = &self.children[index];
            if self.shutdown.is_some() || (child.pid.is_some() && !child.ready) {
                return;
            }
        }
    }

    fn spawn(&mut self, index: usize) {
        let child = &mut self.children[index];
        let spec = &child.spec;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a terminal's ^C reaches us, not the child,
            // so that shutdown keeps its order.
            .process_group(0);
        if let Some((uid, gid)) = spec.user {
            // std drops supplementary groups when root switches uid.
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        child.ever_started = true;
        match command.spawn() {
            Ok(mut process) => {
                let pid = Pid::from_raw(process.id() as i32);
                let name: Arc<str> = spec.name.as_str().into();
                self.readers.retain(|r| !r.is_finished());
                let out = process.stdout.take().map(OwnedFd::from);
                let err = process.stderr.take().map(OwnedFd::from);
                self.readers.extend(
                    [out, err]
                        .into_iter()
                        .flatten()
                        .filter_map(|fd| forward(name.clone(), fd)),
                );
                // The reaper collects it; std's handle is not waited on.
                drop(process);
                info!("{} started (pid {pid})", spec.name);
                child.pid = Some(pid);
                child.started = Some(Instant::now());
                child.signalled = None;
                child.generation += 1;
                child.ready = spec.ready.is_none();
                if let Some(ready) = spec.ready.clone() {
                    let events = self.events.clone();
                    let generation = child.generation;
                    tokio::spawn(async move {
                        let ok = wait_ready(&ready).await;
                        let _ = events.send(Event::Ready {
                            index,
                            generation,
                            ok,
                        });
                    });
                }
            }
            Err(e) => {
                error!(
                    "{}: cannot start {}: {e}",
                    spec.name,
                    spec.program.display()
                );
                self.begin_shutdown(Signal::SIGTERM, FAILED);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let Event::Ready {
            index,
            generation,
            ok,
        } = event;
        let child = &mut self.children[index];
        if child.generation != generation || child.pid.is_none() {
            return;
        }
        if ok {
            child.ready = true;
            info!("{} is ready", child.spec.name);
            if let Some(Ready::Http {
                first_start: Some(mark),
                ..
            }) = &child.spec.ready
            {
                match std::fs::remove_file(mark) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        warn!("{}: {e}", mark.display())
                    }
                    _ => {}
                }
            }
            self.start_next();
        } else if let Some(Ready::Http {
            addr, path, within, ..
        }) = &child.spec.ready
        {
            error!(
                "{} did not answer http://{addr}{path} within {within:?}",
                child.spec.name
            );
            self.begin_shutdown(Signal::SIGTERM, FAILED);
        }
    }

    fn reap(&mut self) {
        for (pid, exit) in reaper::reap() {
            match self.children.iter().position(|c| c.pid == Some(pid)) {
                Some(index) => self.exited(index, exit),
                None => info!("reaped pid {pid} ({exit})"),
            }
        }
    }

    fn exited(&mut self, index: usize, exit: Exit) {
        let child = &mut self.children[index];
        child.pid = None;
        let ran = child.started.map(|s| s.elapsed()).unwrap_or_default();
        let name = child.spec.name.clone();
        if self.shutdown.is_some() {
            // Exiting 0 or by the signal we sent is a clean stop.
            if exit == Exit::Code(0)
                || child
                    .signalled
                    .is_some_and(|sent| exit == Exit::Signal(sent))
            {
                info!("{name} stopped ({exit})");
            } else {
                warn!("{name} stopped with {exit}");
                self.status = FAILED;
            }
            self.advance_shutdown();
            return;
        }
        let policy = child.spec.restart;
        if ran >= policy.stable_after {
            child.failures = 0;
        }
        child.failures += 1;
        warn!("{name} exited ({exit}) after {:.1}s", ran.as_secs_f64());
        if child.failures > policy.limit {
            error!("{name} failed {} times in a row: giving up", child.failures);
            self.begin_shutdown(Signal::SIGTERM, FAILED);
            return;
        }
        let delay = policy
            .first_delay
            .saturating_mul(1 << (child.failures - 1).min(16))
            .min(policy.max_delay);
        info!("restarting {name} in {:.1}s", delay.as_secs_f64());
        child.restart_at = Some(Instant::now() + delay);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        match &mut self.shutdown {
            None => {
                for index in 0..self.children.len() {
                    if self.children[index].restart_at.is_some_and(|at| at <= now) {
                        self.children[index].restart_at = None;
                        self.spawn(index);
                    }
                }
            }
            Some(shutdown) if !shutdown.killed && now >= shutdown.deadline => {
                shutdown.killed = true;
                error!(
                    "grace period of {}s is over: killing what is left",
                    self.grace.as_secs()
                );
                self.status = FAILED;
                for child in &self.children {
                    if let Some(pid) = child.pid {
                        // The whole group: helpers the child left behind.
                        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                }
                for orphan in reaper::living_children() {
                    let _ = kill(orphan, Signal::SIGKILL);
                }
            }
            Some(_) => self.advance_shutdown(),
        }
    }

    fn begin_shutdown(&mut self, signal: Signal, status: u8) {
        self.status = self.status.max(status);
        if let Some(shutdown) = &mut self.shutdown {
            if signal == Signal::SIGQUIT && !shutdown.all_at_once {
                info!("SIGQUIT received: passing it to every child now");
                shutdown.all_at_once = true;
                shutdown.signal = signal;
                self.children.iter_mut().for_each(|c| c.signalled = None);
                self.advance_shutdown();
            }
            return;
        }
        if status == CLEAN {
            info!(
                "{signal} received: stopping within {}s",
                self.grace.as_secs()
            );
        }
        for child in &mut self.children {
            child.restart_at = None;
        }
        self.shutdown = Some(Shutdown {
            signal,
            deadline: Instant::now() + self.grace,
            all_at_once: signal == Signal::SIGQUIT,
            killed: false,
            orphans_signalled: false,
        });
        self.advance_shutdown();
    }

    /// Signals the running children of the lowest stage left (or all of
    /// them for SIGQUIT); with none left, the orphans we adopted.
    fn advance_shutdown(&mut self) {
        let Some(shutdown) = &mut self.shutdown else {
            return;
        };
        let running = self.children.iter().filter(|c| c.pid.is_some());
        let Some(stage) = running.map(|c| c.spec.stop_stage).min() else {
            if !shutdown.orphans_signalled {
                shutdown.orphans_signalled = true;
                for orphan in reaper::living_children() {
                    info!("stopping orphan pid {orphan}");
                    let _ = kill(orphan, Signal::SIGTERM);
                }
            }
            return;
        };
        for child in &mut self.children {
            let Some(pid) = child.pid else { continue };
            if child.signalled.is_some()
                || !(shutdown.all_at_once || child.spec.stop_stage == stage)
            {
                continue;
            }
            let signal = if shutdown.all_at_once {
                shutdown.signal
            } else {
                child.spec.stop_signal
            };
            child.signalled = Some(signal);
            info!("sending {signal} to {} (pid {pid})", child.spec.name);
            if let Err(e) = kill(pid, signal) {
                warn!("{}: {signal}: {e}", child.spec.name);
            }
        }
    }

    /// The exit status, once a shutdown has nothing left to wait for.
    fn finished(&mut self) -> Option<u8> {
        self.shutdown.as_ref()?;
        // Collect what exited since the last SIGCHLD was handled: nothing
        // is left a zombie when we return.
        self.reap();
        let shutdown = self.shutdown.as_ref()?;
        if self.children.iter().any(|c| c.pid.is_some()) {
            return None;
        }
        if !shutdown.orphans_signalled {
            self.advance_shutdown();
        }
        if !reaper::living_children().is_empty() {
            return None;
        }
        self.reap();
        Some(self.status)
    }
}

/// Passes a child's output through line by line, tagged with its name.
fn forward(name: Arc<str>, fd: OwnedFd) -> Option<JoinHandle<()>> {
    let receiver = match pipe::Receiver::from_owned_fd(fd) {
        Ok(receiver) => receiver,
        Err(e) => {
            warn!("{name}: cannot read its output: {e}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let mut reader = BufReader::new(receiver);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    logging::child_line(&name, text.trim_end_matches(['\n', '\r']));
                }
            }
        }
    }))
}

async fn wait_ready(ready: &Ready) -> bool {
    let Ready::Http {
        addr, path, within, ..
    } = ready;
    let deadline = Instant::now() + *within;
    while Instant::now() < deadline {
        if http_ok(*addr, path).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Whether `GET path` answers 200 (HTTP/1.0, so the server closes).
async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(answer)) => {
            let status = answer.split(|&b| b == b'\r').next().unwrap_or_default();
            status.starts_with(b"HTTP/1.") && status.windows(5).any(|w| w == b" 200 ")
        }
        _ => false,
    }
}
