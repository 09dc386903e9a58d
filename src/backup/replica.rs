//! WALG_BACKUP_FROM_REPLICA: the backup still runs on the primary (one
//! at a time, by construction), but pgBackRest reads the files of a
//! streaming replica through that replica's TLS server, which takes the
//! reading, compression and checksums off the primary. The replica is
//! the first streaming one by name in Patroni's view of the cluster.

use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::geteuid;
use serde::Deserialize;

use super::pgbackrest::run_as;
use super::{BackupError, FromReplica, Spec};

/// The replica a backup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) host: String,
}

/// One member in `patronictl list --format json`.
#[derive(Deserialize)]
struct Member {
    #[serde(rename = "Member")]
    name: String,
    #[serde(rename = "Host", default)]
    host: String,
    #[serde(rename = "Role", default)]
    role: String,
    #[serde(rename = "State", default)]
    state: String,
}

/// The first streaming replica by name, as Patroni sees the cluster now.
pub(crate) fn streaming(spec: &Spec, from: &FromReplica) -> Result<Option<Source>, BackupError> {
    let program = from.patronictl.display().to_string();
    let mut command = Command::new(&from.patronictl);
    command
        .arg("--config-file")
        .arg(&from.patroni_config)
        .args(["list", "--format", "json"])
        .stdin(Stdio::null());
    if let Some((uid, gid)) = run_as(spec.owner, geteuid().is_root()) {
        command.uid(uid).gid(gid);
    }
    let out = output_within(command, PATRONICTL_TIMEOUT).map_err(|source| BackupError::Run {
        program: program.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(BackupError::Patronictl(format!(
            "{program} list: {}: {}",
            out.status,
            last.unwrap_or("no output")
        )));
    }
    pick(&out.stdout, spec.port)
        .map_err(|e| BackupError::Patronictl(format!("{program} list: not the JSON expected: {e}")))
}

/// patronictl waits on an unreachable DCS: the backup does not.
const PATRONICTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The command's output, or a TimedOut error once it ran `limit` (it is
/// killed). Its pipes are read meanwhile, so a long answer cannot block it.
fn output_within(mut command: Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no answer within {}s", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// A pipe read to its end by a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn pick(answer: &[u8], port: u16) -> Result<Option<Source>, serde_json::Error> {
    let members: Vec<Member> = serde_json::from_slice(answer)?;
    let mut streaming: Vec<Source> = members
        .into_iter()
        .filter(|m| m.state == "streaming" && !m.role.contains("Leader") && !m.host.is_empty())
        .map(|m| Source {
            host: host_without_port(&m.host, port),
            name: m.name,
        })
        .collect();
    streaming.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(streaming.into_iter().next())
}

/// patronictl shows `host:port` when some member's port is not 5432 or
/// two share a host.
fn host_without_port(host: &str, port: u16) -> String {
    match host.strip_suffix(&format!(":{port}")) {
        Some(bare) if host.parse::<IpAddr>().is_err() => bare.to_owned(),
        _ => host.to_owned(),
    }
}

/// Where a backup reads, from what asking Patroni `found`: pgBackRest's
/// extra options, and the words that say so in the log. Without a
/// streaming replica the primary is read: a backup is never skipped.
pub(crate) fn reading(
    spec: &Spec,
    from: &FromReplica,
    found: Result<Option<Source>, BackupError>,
) -> (Vec<String>, String) {
    match found {
        Ok(Some(source)) => (
            options(spec, from, &source),
            format!("reading replica {} ({})", source.name, source.host),
        ),
        Ok(None) => (
            Vec::new(),
            "reading the primary: no replica is streaming".to_owned(),
        ),
        Err(e) => (
            Vec::new(),
            format!("reading the primary: which replicas stream is not known: {e}"),
        ),
    }
}

/// pgBackRest's options for a backup that reads `source`: it is pg2,
/// reached over TLS, and this primary stays pg1. Its socket, port and
/// user are the replica's own configuration's (where it is here: every
/// member has the same paths).
fn options(spec: &Spec, from: &FromReplica, source: &Source) -> Vec<String> {
    vec![
        "--backup-standby".to_owned(),
        format!("--pg2-host={}", source.host),
        "--pg2-host-type=tls".to_owned(),
        format!("--pg2-host-port={}", from.tls_port),
        format!("--pg2-host-ca-file={}", from.ca_file.display()),
        format!("--pg2-host-cert-file={}", from.cert_file.display()),
        format!("--pg2-host-key-file={}", from.key_file.display()),
        format!("--pg2-path={}", from.pgdata.display()),
        format!("--pg2-host-config={}", spec.config.display()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_streaming_replica_by_name() {
        let answer = br#"[
            {"Cluster": "acid", "Member": "node2", "Host": "10.0.0.2", "Role": "Leader", "State": "running", "TL": 1},
            {"Cluster": "acid", "Member": "node5", "Host": "10.0.0.5", "Role": "Replica", "State": "streaming", "TL": 1},
            {"Cluster": "acid", "Member": "node3", "Host": "10.0.0.3", "Role": "Replica", "State": "starting", "TL": 1},
            {"Cluster": "acid", "Member": "node4", "Host": "10.0.0.4:5432", "Role": "Sync Standby", "State": "streaming", "TL": 1}
        ]"#;
        assert_eq!(
            pick(answer, 5432).unwrap(),
            Some(Source {
                name: "node4".into(),
                host: "10.0.0.4".into()
            })
        );
        let alone =
            br#"[{"Member": "node2", "Host": "10.0.0.2", "Role": "Leader", "State": "running"}]"#;
        assert_eq!(pick(alone, 5432).unwrap(), None);
        assert!(pick(b"not json", 5432).is_err());
    }

    #[test]
    fn a_patronictl_that_hangs_is_given_up_on() {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("10");
        let started = Instant::now();
        let err = output_within(sleeper, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut echo = Command::new("echo");
        echo.arg("[]");
        let out = output_within(echo, Duration::from_secs(5)).unwrap();
        assert_eq!(pick(&out.stdout, 5432).unwrap(), None);
    }

    #[test]
    fn a_port_is_taken_off_the_host_but_not_off_an_ipv6_address() {
        assert_eq!(host_without_port("10.0.0.4:5433", 5433), "10.0.0.4");
        assert_eq!(host_without_port("acid-0.acid:5432", 5432), "acid-0.acid");
        assert_eq!(host_without_port("fd00::5432", 5432), "fd00::5432");
        assert_eq!(host_without_port("10.0.0.4", 5432), "10.0.0.4");
    }
}
