//! After a promotion, an analyze-only pass over every database, as Spilo
//! runs one (`vacuumdb -aZ`): the statistics counters autovacuum decides
//! by start from zero on a new primary. It can take long, so it runs
//! detached: not waited for, no inherited input or output (a caller that
//! reads the hook's output to its end never waits for it), in a process
//! group of its own. When the hook exits, init (PID 1 or the child
//! subreaper) adopts and reaps it.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{HookError, Spec};

pub(crate) fn start(spec: &Spec) -> Result<(), HookError> {
    let program = spec.bin_dir.join("vacuumdb");
    let child = Command::new(&program)
        .args(["--all", "--analyze-only", "--quiet", "-h"])
        .arg(&spec.socket_dir)
        .arg("-p")
        .arg(spec.port.to_string())
        .arg("-U")
        .arg(&spec.superuser)
        .env("PGPASSFILE", &spec.pgpass)
        .env("PGAPPNAME", "spilo hook analyze")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| HookError::Run { program, source })?;
    // Not waited for, by design (see above).
    drop(child);
    Ok(())
}
