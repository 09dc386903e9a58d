//! PID 1's duty of collecting every exited process: our children and the
//! orphans the kernel hands us. Outside a container (tests, a shell) we
//! ask to be the subreaper of our tree, so the same rules hold.

use std::fmt;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(Signal),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(signal) => write!(f, "killed by {signal}"),
        }
    }
}

/// Adopts orphaned descendants, as PID 1 does; a no-op when we are PID 1.
pub fn become_subreaper() -> nix::Result<()> {
    if Pid::this().as_raw() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true)
}

/// Collects every child that has exited, without blocking.
pub(crate) fn reap() -> Vec<(Pid, Exit)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => exited.push((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, signal, _)) => exited.push((pid, Exit::Signal(signal))),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    exited
}

/// Our living children (not zombies): after the supervised ones are gone,
/// these are the orphans we adopted.
pub(crate) fn living_children() -> Vec<Pid> {
    living_children_of(Pid::this())
}

/// The living children of `parent`, from the process table.
pub(crate) fn living_children_of(parent: Pid) -> Vec<Pid> {
    let me = parent.as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, ppid)| ppid == me && state != 'Z')
        })
        .map(Pid::from_raw)
        .collect()
}

/// State and parent pid from a /proc/<pid>/stat line; the command name
/// may hold spaces and parentheses, so fields are read after the last ')'.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names() {
        assert_eq!(parse_stat("42 (a) b) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("42 (postgres) Z 1 0"), Some(('Z', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn exits_read_well() {
        assert_eq!(Exit::Code(3).to_string(), "exit status 3");
        assert_eq!(
            Exit::Signal(Signal::SIGKILL).to_string(),
            "killed by SIGKILL"
        );
    }
}
