//! Running pgbackrest for the spec's stanza: always with its configuration
//! file and stanza, as PostgreSQL's account when started as root (so that
//! the repository, spool and lock files it makes stay PostgreSQL's), and
//! with the lines it printed last kept for the error.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};

use super::{BackupError, Spec};

/// How many lines of pgbackrest's output an error keeps.
const KEPT_LINES: usize = 20;

/// How often a stopping pgbackrest is checked on.
const POLL: Duration = Duration::from_millis(100);

/// pgbackrest for one spec.
pub(crate) struct Pgbackrest<'a> {
    spec: &'a Spec,
}

impl<'a> Pgbackrest<'a> {
    pub(crate) fn new(spec: &'a Spec) -> Self {
        Pgbackrest { spec }
    }

    /// Runs `args`, returning what it printed on stdout (`info`).
    pub(crate) fn output(&self, args: &[&str]) -> Result<Vec<u8>, BackupError> {
        let (mut command, line) = self.command(args);
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(BackupError::Pgbackrest {
            command: line,
            status: out.status,
            reason: reason(&lines(&out.stderr), &lines(&out.stdout)),
        })
    }

    /// Starts `args` with stdout shared with this process and stderr
    /// passed on line by line (and kept for the error); a terminal's
    /// Ctrl-C reaches it as it reaches us.
    pub(crate) fn start(&self, args: &[&str]) -> Result<Running, BackupError> {
        self.spawn(args, false)
    }

    /// As `start`, in a process group of its own, so that `stop` reaches
    /// the processes it starts as well (a backup's workers would otherwise
    /// finish the file they copy, or more, after it is gone).
    pub(crate) fn start_in_own_group(&self, args: &[&str]) -> Result<Running, BackupError> {
        self.spawn(args, true)
    }

    fn spawn(&self, args: &[&str], own_group: bool) -> Result<Running, BackupError> {
        let (mut command, line) = self.command(args);
        if own_group {
            command.process_group(0);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        let stderr = child
            .stderr
            .take()
            .map(|pipe| thread::spawn(move || tee(pipe, &mut std::io::stderr())));
        Ok(Running {
            child,
            own_group,
            stderr,
            command: line,
            program: self.spec.pgbackrest.display().to_string(),
        })
    }

    /// The command and how it reads in a message.
    fn command(&self, args: &[&str]) -> (Command, String) {
        let spec = self.spec;
        let mut config = OsString::from("--config=");
        config.push(&spec.config);
        let stanza = format!("--stanza={}", spec.stanza);
        let mut command = Command::new(&spec.pgbackrest);
        command.arg(&config).arg(&stanza).args(args);
        if let Some((uid, gid)) = run_as(spec.owner, geteuid().is_root()) {
            // std drops the supplementary groups itself when root.
            command.uid(uid).gid(gid);
        }
        let line = [
            spec.pgbackrest.display().to_string(),
            config.to_string_lossy().into_owned(),
            stanza,
        ]
        .into_iter()
        .chain(args.iter().map(|arg| (*arg).to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
        (command, line)
    }

    fn spawn_error(&self, source: std::io::Error) -> BackupError {
        BackupError::Run {
            program: self.spec.pgbackrest.display().to_string(),
            source,
        }
    }
}

/// The account pgbackrest runs as: PostgreSQL's when this process is root
/// and the spec names a non-root owner; None leaves it to ours.
pub(crate) fn run_as(owner: Option<(u32, u32)>, root: bool) -> Option<(u32, u32)> {
    owner.filter(|&(uid, _)| root && uid != 0)
}

/// A pgbackrest that was started.
pub(crate) struct Running {
    child: Child,
    /// It leads a process group of its own: signals go to the group.
    own_group: bool,
    stderr: Option<JoinHandle<Vec<String>>>,
    command: String,
    program: String,
}

impl Running {
    /// Its exit status once it has exited.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>, BackupError> {
        self.child
            .try_wait()
            .map_err(|source| self.wait_error(source))
    }

    /// Sends SIGTERM, waits up to `grace`, then kills it (its group, when
    /// it has one).
    pub(crate) fn stop(&mut self, grace: Duration) -> Result<ExitStatus, BackupError> {
        // It may have exited already: its status below says so.
        let _ = self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                if self.own_group {
                    // Workers still copying stop at once.
                    let _ = self.signal(Signal::SIGKILL);
                }
                return Ok(status);
            }
            thread::sleep(POLL);
        }
        let _ = self.signal(Signal::SIGKILL);
        self.child.wait().map_err(|source| self.wait_error(source))
    }

    fn signal(&self, signal: Signal) -> nix::Result<()> {
        // Our own child: its group id stays in use while any of its
        // workers lives, so the signal cannot reach another process.
        let pid = self.child.id() as i32;
        kill(
            Pid::from_raw(if self.own_group { -pid } else { pid }),
            signal,
        )
    }

    /// Waits for it to exit.
    pub(crate) fn wait(&mut self) -> Result<ExitStatus, BackupError> {
        self.child.wait().map_err(|source| self.wait_error(source))
    }

    /// Success, or the error with what it printed last on stderr.
    pub(crate) fn result(mut self, status: ExitStatus) -> Result<(), BackupError> {
        let stderr = self
            .stderr
            .take()
            .and_then(|tee| tee.join().ok())
            .unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(BackupError::Pgbackrest {
            command: self.command,
            status,
            reason: reason(&stderr, &[]),
        })
    }

    fn wait_error(&self, source: std::io::Error) -> BackupError {
        BackupError::Wait {
            program: self.program.clone(),
            source,
        }
    }
}

/// Copies `pipe` to `out` line by line; returns the last lines.
fn tee(pipe: impl Read, out: &mut impl Write) -> Vec<String> {
    let mut kept = VecDeque::with_capacity(KEPT_LINES);
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        // Where our stderr went is not pgbackrest's business: keep reading.
        let _ = out.write_all(&line);
        if !line.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
        line.clear();
    }
    kept.into()
}

fn lines(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One line saying why pgbackrest failed: its last `ERROR:` and what
/// follows (the hint), else its last lines on stderr, else on stdout.
fn reason(stderr: &[String], stdout: &[String]) -> String {
    let meaningful = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|line| !line.is_empty())
            .collect()
    };
    let (stderr, stdout) = (meaningful(stderr), meaningful(stdout));
    let chosen = match stderr.iter().rposition(|line| line.starts_with("ERROR:")) {
        Some(start) => &stderr[start..],
        None if !stderr.is_empty() => &stderr[stderr.len().saturating_sub(3)..],
        None => &stdout[stdout.len().saturating_sub(3)..],
    };
    if chosen.is_empty() {
        "it printed nothing".to_owned()
    } else {
        chosen.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::*;

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    /// A fake pgbackrest: a shell script.
    fn spec(dir: &Path, script: &str) -> Spec {
        let program = dir.join("pgbackrest");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Spec {
            pgbackrest: program,
            config: PathBuf::from("/etc/pgbackrest/pgbackrest.conf"),
            stanza: "demo".into(),
            schedule: "0 1 * * *".into(),
            psql: PathBuf::from("psql"),
            socket_dir: PathBuf::from("/run/postgresql"),
            port: 5432,
            superuser: "postgres".into(),
            spool: dir.join("spool"),
            owner: None,
            from_replica: None,
        }
    }

    #[test]
    fn the_reason_is_the_last_error_and_its_hint() {
        let stderr = strings(&[
            "WARN: unable to check pg1: [DbConnectError] unable to connect",
            "      \tIs the server running locally?",
            "ERROR: [027]: no database found",
            "       HINT: check indexed pg-path/pg-host configurations",
        ]);
        assert_eq!(
            reason(&stderr, &[]),
            "ERROR: [027]: no database found HINT: check indexed pg-path/pg-host configurations"
        );
        assert_eq!(reason(&strings(&["a", "b", "c", "d", ""]), &[]), "b c d");
        assert_eq!(reason(&[], &strings(&["INFO: x"])), "INFO: x");
        assert_eq!(reason(&[], &[]), "it printed nothing");
    }

    #[test]
    fn root_runs_it_as_the_owner() {
        assert_eq!(run_as(Some((101, 103)), true), Some((101, 103)));
        assert_eq!(run_as(Some((101, 103)), false), None);
        assert_eq!(run_as(Some((0, 0)), true), None);
        assert_eq!(run_as(None, true), None);
    }

    #[test]
    fn tee_copies_and_keeps_the_last_lines() {
        let input: String = (1..=25).map(|n| format!("line {n}\n")).collect::<String>() + "end";
        let mut out = Vec::new();
        let kept = tee(input.as_bytes(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), input.clone() + "\n");
        assert_eq!(kept.len(), KEPT_LINES);
        assert_eq!(kept[0], "line 7");
        assert_eq!(kept[KEPT_LINES - 1], "end");
    }

    #[test]
    fn arguments_and_captured_output() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), r#"echo "$@""#);
        let out = Pgbackrest::new(&spec)
            .output(&["info", "--output=json"])
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "--config=/etc/pgbackrest/pgbackrest.conf --stanza=demo info --output=json\n"
        );
    }

    #[test]
    fn failures_name_the_command_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(
            dir.path(),
            "echo 'ERROR: [055]: unable to open missing file' >&2; exit 55",
        );
        let program = spec.pgbackrest.display().to_string();
        let error = Pgbackrest::new(&spec).output(&["info"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{program} --config=/etc/pgbackrest/pgbackrest.conf --stanza=demo info: \
                 exit status: 55: ERROR: [055]: unable to open missing file"
            )
        );
        let mut running = Pgbackrest::new(&spec).start(&["check"]).unwrap();
        let status = running.wait().unwrap();
        let error = running.result(status).unwrap_err().to_string();
        assert!(
            error.ends_with("check: exit status: 55: ERROR: [055]: unable to open missing file"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_program_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(dir.path(), "");
        spec.pgbackrest = dir.path().join("absent");
        let Err(error) = Pgbackrest::new(&spec).start(&["check"]) else {
            panic!("started a missing program");
        };
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", spec.pgbackrest.display()))
        );
    }

    #[test]
    fn stop_reaches_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("worker");
        // A worker that ignores nothing but outlives its parent.
        let script = format!(
            "sh -c 'echo $$ > {}; while :; do sleep 0.05; done' & \
             trap 'exit 3' TERM; while :; do sleep 0.05; done",
            pids.display()
        );
        let spec = spec(dir.path(), &script);
        let mut running = Pgbackrest::new(&spec)
            .start_in_own_group(&["backup"])
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        let worker: i32 = std::fs::read_to_string(&pids)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            running.stop(Duration::from_secs(10)).unwrap().code(),
            Some(3)
        );
        let started = Instant::now();
        // Gone, not only reparented (the test harness may reap it or not).
        while std::fs::read_to_string(format!("/proc/{worker}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the worker lives on"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn stop_terminates_then_kills() {
        let dir = tempfile::tempdir().unwrap();
        let polite = spec(
            dir.path(),
            "trap 'exit 3' TERM; while :; do sleep 0.05; done",
        );
        let mut running = Pgbackrest::new(&polite).start(&["backup"]).unwrap();
        thread::sleep(Duration::from_millis(200));
        let status = running.stop(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));

        let stubborn = spec(dir.path(), "trap '' TERM; while :; do sleep 0.05; done");
        let mut running = Pgbackrest::new(&stubborn).start(&["backup"]).unwrap();
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let status = running.stop(Duration::from_millis(300)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
