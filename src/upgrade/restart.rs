//! Restarting this member's Patroni: it reads its configuration (the new
//! bin_dir) and the system identifier only when it starts. SIGTERM while
//! the cluster is paused stops Patroni alone (it keeps the leader key and
//! leaves PostgreSQL as it is); `spilo init` starts it again.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::UpgradeError;

/// Stops the Patroni that runs with `config` and waits until it exited.
pub(crate) fn patroni(config: &Path) -> Result<(), UpgradeError> {
    let pid = find(config).ok_or_else(|| UpgradeError::Step {
        what: "restarting Patroni".into(),
        reason: format!("no Patroni process runs with {}", config.display()),
    })?;
    kill(pid, Signal::SIGTERM).map_err(|e| UpgradeError::Step {
        what: "restarting Patroni".into(),
        reason: format!("SIGTERM to {pid}: {e}"),
    })?;
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The process whose command line is Patroni's with `config`.
fn find(config: &Path) -> Option<Pid> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let is_patroni = args
            .iter()
            .take(2)
            .any(|a| a.ends_with(b"/patroni") || *a == b"patroni");
        let with_config = args.iter().skip(1).any(|a| {
            let path = Path::new(std::str::from_utf8(a).unwrap_or_default());
            std::fs::canonicalize(path).is_ok_and(|p| p == config)
        });
        (is_patroni && with_config).then(|| Pid::from_raw(pid))
    })
}
