//! The pod's role label when the pod runs on Kubernetes but the DCS is
//! etcd, Consul or ZooKeeper (Spilo's role callback): the operator's
//! services select the primary and the replicas by that label. With the
//! Kubernetes DCS Patroni labels the pod itself, so there is no target.
//!
//! The API server is called through the `curl` program, so that this
//! binary links no TLS stack; the service account token reaches curl on
//! its standard input, never in its arguments or in a message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, DcsKind};

/// Patroni's callbacks Spilo wires its role callback to: a pod restarted
/// as a replica gets its label back on start (there is no role change),
/// a stopped one loses it.
pub(crate) const CALLBACKS: [&str; 3] = ["on_start", "on_stop", "on_role_change"];

/// Patroni's callback role names for a leader: 4.x says primary, older
/// releases master; `promoted` is the moment of promotion. The hooks'
/// database work runs for the same roles.
pub(crate) const LEADER_ROLES: [&str; 3] = ["primary", "master", "promoted"];

/// What the operator's replica service selects.
const REPLICA_VALUE: &str = "replica";

/// A label change, retries included, ends within this: Patroni runs one
/// callback at a time, and the next one kills this one.
const DEADLINE: Duration = Duration::from_secs(6);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Below this, another attempt is not worth starting.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Answers worth another attempt: the API server is busy or restarting.
const RETRIED_STATUS: [u16; 5] = [429, 500, 502, 503, 504];
/// curl's exit codes for a name, connection or transfer that failed on
/// the way (not a certificate or usage error).
const RETRIED_CURL_EXIT: [i32; 7] = [6, 7, 28, 35, 52, 55, 56];

/// Where and how to label this pod, written into the hooks' spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `https://<host>:<port>` of the API server.
    pub(crate) api: String,
    pub namespace: String,
    /// The member name, which is the pod's name.
    pub pod: String,
    pub(crate) label: String,
    pub(crate) leader_value: String,
    pub(crate) standby_leader_value: String,
    pub(crate) token: PathBuf,
    pub(crate) ca: PathBuf,
    /// The cluster's name: the operator's primary service (and its
    /// Endpoints object) is named after it.
    #[serde(default)]
    pub(crate) scope: String,
    /// Where the primary service sends clients when this pod leads.
    #[serde(default)]
    pub(crate) address: Option<(String, u16)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{change} failed after {attempts} attempt(s): {cause}")]
pub struct LabelError {
    change: String,
    attempts: u32,
    cause: Cause,
}

#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error("service account token {}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("service account token {} is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("cannot run curl: {0}")]
    Spawn(std::io::Error),
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("{message}")]
    Curl { exit: Option<i32>, message: String },
    #[error("curl gave no HTTP status")]
    NoStatus,
}

impl Cause {
    fn retried(&self) -> bool {
        match self {
            Cause::Http { status, .. } => RETRIED_STATUS.contains(status),
            Cause::Curl { exit, .. } => exit.is_some_and(|e| RETRIED_CURL_EXIT.contains(&e)),
            _ => false,
        }
    }
}

impl Target {
    /// On Kubernetes without the Kubernetes DCS only.
    pub(crate) fn from_config(config: &Config) -> Option<Target> {
        if config.dcs.kind == DcsKind::Kubernetes {
            return None;
        }
        let k = config.kubernetes.as_ref()?;
        Some(Target {
            api: api_base(&k.api_host, k.api_port),
            namespace: k.namespace.clone(),
            pod: config.identity.name.clone(),
            label: k.role_label.clone(),
            leader_value: k.leader_label_value.clone(),
            standby_leader_value: k.standby_leader_label_value.clone(),
            token: k.service_account_dir.join("token"),
            ca: k.service_account_dir.join("ca.crt"),
            scope: config.identity.scope.clone(),
            address: Some((config.identity.pod_ip.to_string(), config.identity.pg_port)),
        })
    }

    pub(crate) fn url(&self) -> String {
        self.object_url("pods", &self.pod)
    }

    fn object_url(&self, kind: &str, name: &str) -> String {
        format!(
            "{}/api/v1/namespaces/{}/{kind}/{}",
            self.api,
            segment(&self.namespace),
            segment(name)
        )
    }

    /// The label value for what Patroni reports, as Patroni's Kubernetes
    /// DCS would set it; None removes the label (a stopped server has no
    /// role). Patroni 4 says primary, older releases master.
    pub(crate) fn value<'a>(&'a self, action: &str, role: &'a str) -> Option<&'a str> {
        if action == "on_stop" {
            return None;
        }
        match role {
            r if LEADER_ROLES.contains(&r) => Some(&self.leader_value),
            "standby_leader" => Some(&self.standby_leader_value),
            "replica" => Some(REPLICA_VALUE),
            "uninitialized" => None,
            // demoted: between primary and replica, named as it is.
            other => Some(other),
        }
    }

    /// Sets (or removes) the label for this callback; returns the line to
    /// log. Retries what may pass, within [`DEADLINE`].
    pub(crate) fn apply(&self, action: &str, role: &str) -> Result<String, LabelError> {
        let value = self.value(action, role);
        let body = json!({ "metadata": { "labels": { &self.label: value } } }).to_string();
        let pod = format!("{}/{}", self.namespace, self.pod);
        let change = match value {
            Some(v) => format!("pod label {}={v} on {pod}", self.label),
            None => format!("removal of pod label {} from {pod}", self.label),
        };
        self.patch_retried(&self.url(), &body, change)
    }

    /// A new leader points the primary service's Endpoints (named after
    /// the cluster, as the operator makes them) at itself, as Spilo's
    /// callback does: with another DCS than Kubernetes nobody else does.
    /// None when this callback makes no leader.
    pub(crate) fn point_endpoints(
        &self,
        action: &str,
        role: &str,
    ) -> Option<Result<String, LabelError>> {
        let (ip, port) = self.address.as_ref()?;
        if action == "on_stop" || !LEADER_ROLES.contains(&role) || self.scope.is_empty() {
            return None;
        }
        let body = json!({ "subsets": [{
            "addresses": [{ "ip": ip }],
            "ports": [{ "name": "postgresql", "port": port, "protocol": "TCP" }],
        }] })
        .to_string();
        let change = format!("endpoints {}/{} to {ip}:{port}", self.namespace, self.scope);
        let url = self.object_url("endpoints", &self.scope);
        Some(self.patch_retried(&url, &body, change))
    }

    /// PATCHes `url`, retrying what may pass within [`DEADLINE`]; returns
    /// the line to log.
    fn patch_retried(&self, url: &str, body: &str, change: String) -> Result<String, LabelError> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cause = match self.patch(url, body, DEADLINE.saturating_sub(started.elapsed())) {
                Ok(()) => return Ok(format!("{change}: done")),
                Err(cause) => cause,
            };
            if !cause.retried()
                || attempts >= MAX_ATTEMPTS
                || started.elapsed() + backoff + MIN_ATTEMPT > DEADLINE
            {
                return Err(LabelError {
                    change,
                    attempts,
                    cause,
                });
            }
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }

    /// One PATCH through curl, allowed `time_left`.
    fn patch(&self, url: &str, body: &str, time_left: Duration) -> Result<(), Cause> {
        // Read at every attempt: Kubernetes rotates the token.
        let token = std::fs::read_to_string(&self.token).map_err(|source| Cause::Token {
            path: self.token.clone(),
            source,
        })?;
        let token = token.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(Cause::EmptyToken {
                path: self.token.clone(),
            });
        }
        let mut child = Command::new("curl")
            .args(curl_args(&self.ca, body, time_left))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Cause::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A failure to write shows as the API server's 401 below.
            let _ = writeln!(stdin, "Authorization: Bearer {token}");
        }
        let output = child.wait_with_output().map_err(Cause::Spawn)?;
        answer(&output)
    }
}

/// curl's arguments but the URL. `-q` (first) ignores any .curlrc; the
/// API server is reached directly, as Patroni's own Kubernetes client
/// does; `-H @-` reads the Authorization header from standard input.
fn curl_args(ca: &Path, body: &str, time_left: Duration) -> Vec<String> {
    [
        "-q",
        "--silent",
        "--show-error",
        "--globoff",
        "--noproxy",
        "*",
        "--proto",
        "=https",
        "--cacert",
        &ca.display().to_string(),
        "--connect-timeout",
        &seconds(CONNECT_TIMEOUT.min(time_left)),
        "--max-time",
        &seconds(time_left),
        "--request",
        "PATCH",
        "--header",
        "Content-Type: application/merge-patch+json",
        "--header",
        "Accept: application/json",
        "--header",
        "@-",
        "--data-raw",
        body,
        "--write-out",
        "\n%{http_code}",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64().max(0.001))
}

/// What curl's run says: the status `--write-out` printed after the body,
/// or curl's own error.
fn answer(output: &Output) -> Result<(), Cause> {
    if !output.status.success() {
        // `curl: (N) what`, which a certificate error follows with advice.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
        let message = lines
            .clone()
            .find(|l| l.starts_with("curl: ("))
            .or_else(|| lines.next())
            .map_or_else(|| format!("curl {}", output.status), str::to_owned);
        return Err(Cause::Curl {
            exit: output.status.code(),
            message,
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (body, status) = stdout.rsplit_once('\n').ok_or(Cause::NoStatus)?;
    let status: u16 = status.trim().parse().map_err(|_| Cause::NoStatus)?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(Cause::Http {
        status,
        message: status_message(body),
    })
}

/// The `message` of a Kubernetes Status answer, else the body itself, on
/// one line of a readable length.
fn status_message(body: &str) -> String {
    const MAX: usize = 300;
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    let flat: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if flat.trim().is_empty() {
        "(no message)".to_owned()
    } else {
        flat.trim().to_owned()
    }
}

/// `https://host:port`, with an IPv6 address in brackets.
fn api_base(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// One path segment, percent-encoded but for RFC 3986's unreserved bytes.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            api: api_base("10.96.0.1", 443),
            namespace: "acid".into(),
            pod: "acid-test-0".into(),
            label: "spilo-role".into(),
            leader_value: "master".into(),
            standby_leader_value: "standby".into(),
            token: "/sa/token".into(),
            ca: "/sa/ca.crt".into(),
            scope: "acid-test".into(),
            address: Some(("10.0.0.5".into(), 5432)),
        }
    }

    #[test]
    fn urls_bracket_ipv6_and_encode_names() {
        assert_eq!(api_base("10.96.0.1", 443), "https://10.96.0.1:443");
        assert_eq!(
            api_base("fd00:10:96::1", 443),
            "https://[fd00:10:96::1]:443"
        );
        assert_eq!(api_base("[::1]", 6443), "https://[::1]:6443");
        assert_eq!(
            api_base("kubernetes.default.svc", 443),
            "https://kubernetes.default.svc:443"
        );
        assert_eq!(
            target().url(),
            "https://10.96.0.1:443/api/v1/namespaces/acid/pods/acid-test-0"
        );
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn roles_map_to_the_operators_values() {
        let t = target();
        for (action, role, value) in [
            ("on_role_change", "primary", Some("master")),
            ("on_role_change", "master", Some("master")),
            ("on_start", "primary", Some("master")),
            ("on_role_change", "standby_leader", Some("standby")),
            ("on_role_change", "replica", Some("replica")),
            ("on_start", "replica", Some("replica")),
            ("on_role_change", "demoted", Some("demoted")),
            ("on_role_change", "uninitialized", None),
            ("on_stop", "primary", None),
            ("on_stop", "replica", None),
        ] {
            assert_eq!(t.value(action, role), value, "{action} {role}");
        }
    }

    #[test]
    fn answers() {
        use std::os::unix::process::ExitStatusExt;
        let run = |exit: i32, stdout: &str, stderr: &str| {
            answer(&Output {
                status: std::process::ExitStatus::from_raw(exit << 8),
                stdout: stdout.as_bytes().to_vec(),
                stderr: stderr.as_bytes().to_vec(),
            })
        };
        assert!(run(0, "{}\n200", "").is_ok());
        let err = run(
            0,
            r#"{"kind":"Status","message":"pods \"x\" is forbidden"}
403"#,
            "",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), r#"HTTP 403: pods "x" is forbidden"#);
        assert!(!err.retried());
        let err = run(0, "busy\n503", "").unwrap_err();
        assert_eq!(err.to_string(), "HTTP 503: busy");
        assert!(err.retried());
        let err = run(7, "\n000", "curl: (7) Failed to connect\n").unwrap_err();
        assert_eq!(err.to_string(), "curl: (7) Failed to connect");
        assert!(err.retried());
        let err = run(
            60,
            "",
            "curl: (60) SSL certificate problem: self-signed certificate\nMore details here: https://curl.se/docs/sslcerts.html\n\ncurl failed to verify...\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "curl: (60) SSL certificate problem: self-signed certificate"
        );
        assert!(!err.retried());
        assert!(matches!(run(0, "", ""), Err(Cause::NoStatus)));
    }

    #[test]
    fn the_token_is_not_an_argument() {
        let args = curl_args(Path::new("/sa/ca.crt"), "{}", DEADLINE);
        assert_eq!(args[0], "-q");
        assert!(args.windows(2).any(|w| w == ["--header", "@-"]));
        assert!(!args.iter().any(|a| a.contains("Bearer")));
        assert!(args.windows(2).any(|w| w == ["--max-time", "6.000"]));
        assert!(args.windows(2).any(|w| w == ["--connect-timeout", "2.000"]));
    }
}
