//! The primary's rsync daemon while its server is down, on the server's
//! own port (reachable from every replica, and free then). Module
//! `pgroot` serves the directory the data directories are in, read-only;
//! module `feedback` takes each replica's outcome as a file named after
//! it. Only the replicas' addresses, each as its member name with the
//! replication password, get in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::UpgradeError;
use crate::files::IoError;

pub(crate) const MODULE: &str = "pgroot";
pub(crate) const FEEDBACK: &str = "feedback";

pub(crate) struct Rsyncd {
    dir: PathBuf,
    child: Child,
}

/// A replica allowed in: its member name and address.
pub(crate) struct Peer<'a> {
    pub(crate) name: &'a str,
    pub(crate) host: &'a str,
}

impl Rsyncd {
    /// Starts it, its files in `dir` (made afresh, private).
    pub(crate) fn start(
        dir: &Path,
        pgroot: &Path,
        port: u16,
        peers: &[Peer],
        password: &str,
    ) -> Result<Self, UpgradeError> {
        super::pgupgrade::remove_dir(dir)?;
        let feedback = dir.join(FEEDBACK);
        fs::create_dir_all(&feedback).map_err(IoError::at("create directory", &feedback))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(IoError::at("chmod", dir))?;
        let users: Vec<&str> = peers.iter().map(|p| p.name).collect();
        let hosts: Vec<&str> = peers.iter().map(|p| p.host).collect();
        let secrets = dir.join("rsyncd.secrets");
        let config = dir.join("rsyncd.conf");
        let common = format!(
            "auth users = {}\nsecrets file = {}\nhosts allow = {}\nhosts deny = *\ntimeout = 600\n",
            users.join(","),
            secrets.display(),
            hosts.join(","),
        );
        let text = format!(
            "port = {port}\nuse chroot = false\npid file = {}\nlog file = {}\n\n[{MODULE}]\npath = {}\nread only = true\n{common}\n[{FEEDBACK}]\npath = {}\nread only = false\n{common}",
            dir.join("rsyncd.pid").display(),
            dir.join("rsyncd.log").display(),
            pgroot.display(),
            feedback.display(),
        );
        write_private(&config, &text)?;
        let lines: String = users.iter().map(|u| format!("{u}:{password}\n")).collect();
        write_private(&secrets, &lines)?;
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", config.display()))
            // Its log is a file: the operator counts any stderr as failure.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(UpgradeError::spawn(Path::new("rsync")))?;
        Ok(Rsyncd {
            dir: dir.to_owned(),
            child,
        })
    }

    /// Waits until every replica of `names` reported, or `limit`; the
    /// outcome of each ("ok", or its reason), None when it never did.
    pub(crate) fn outcomes(&mut self, names: &[String], limit: Duration) -> Vec<Option<String>> {
        let started = Instant::now();
        loop {
            let outcomes: Vec<Option<String>> = names
                .iter()
                .map(|name| fs::read_to_string(self.dir.join(FEEDBACK).join(name)).ok())
                .map(|text| text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
                .collect();
            let gone = matches!(self.child.try_wait(), Ok(Some(_)));
            if gone || outcomes.iter().all(Option::is_some) || started.elapsed() > limit {
                return outcomes;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Rsyncd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), UpgradeError> {
    fs::write(path, text).map_err(IoError::at("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| IoError::at("chmod", path)(e).into())
}
