//! Patroni's REST API, through curl (in the image for the operator's own
//! calls): this member's and the others', over http or https, with the
//! API's basic auth when it has one. The credentials go to curl's stdin,
//! never to its command line.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::UpgradeError;
use super::member::Credentials;

pub(crate) struct Api {
    auth: Option<Credentials>,
}

impl Api {
    pub(crate) fn new(auth: Option<Credentials>) -> Self {
        Api { auth }
    }

    /// GET `url` answering 200 with JSON.
    pub(crate) fn get(&self, url: &str) -> Result<Value, UpgradeError> {
        let (status, body) = self.call("GET", url, None)?;
        if status != 200 {
            return Err(api_error(url, format!("HTTP {status}: {}", body.trim())));
        }
        serde_json::from_str(&body).map_err(|e| api_error(url, format!("not JSON: {e}")))
    }

    /// `method` with a JSON body; the status and the answer.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        body: &Value,
    ) -> Result<(u16, String), UpgradeError> {
        self.call(method, url, Some(&body.to_string()))
    }

    fn call(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), UpgradeError> {
        let mut config = String::new();
        if let Some(auth) = &self.auth {
            config.push_str(&format!(
                "user = \"{}\"\n",
                escape(&format!("{}:{}", auth.username, auth.password))
            ));
        }
        if let Some(body) = body {
            config.push_str("header = \"Content-Type: application/json\"\n");
            config.push_str(&format!("data = \"{}\"\n", escape(body)));
        }
        let mut child = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "10", "-K", "-", "-X", method])
            .args(["-w", "\n%{http_code}", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(UpgradeError::spawn(Path::new("curl")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(config.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(UpgradeError::spawn(Path::new("curl")))?;
        if !out.status.success() {
            return Err(api_error(url, super::sql::last_line(&out.stderr)));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status
            .trim()
            .parse()
            .map_err(|_| api_error(url, format!("no HTTP status in {status:?}")))?;
        Ok((status, body.to_owned()))
    }
}

fn api_error(url: &str, reason: String) -> UpgradeError {
    UpgradeError::Step {
        what: format!("Patroni API {url}"),
        reason,
    }
}

/// A value in double quotes of a curl config file.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// One member of `/cluster`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterMember {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) state: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) api_url: String,
    /// Bytes behind the leader (Patroni's `lag`), when it reports one.
    pub(crate) lag: Option<u64>,
}

/// `/cluster`: the members and whether the cluster is paused.
pub(crate) fn members(cluster: &Value) -> (Vec<ClusterMember>, bool) {
    let members = cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| ClusterMember {
            name: m["name"].as_str().unwrap_or_default().to_owned(),
            role: m["role"].as_str().unwrap_or_default().to_owned(),
            state: m["state"].as_str().unwrap_or_default().to_owned(),
            host: m["host"].as_str().unwrap_or_default().to_owned(),
            port: m["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(5432),
            api_url: m["api_url"].as_str().unwrap_or_default().to_owned(),
            lag: m["lag"].as_u64(),
        })
        .collect();
    (members, cluster["pause"].as_bool().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cluster() {
        let cluster = serde_json::json!({
            "members": [
                {"name": "a", "role": "leader", "state": "running", "host": "10.0.0.1",
                 "port": 5432, "api_url": "http://10.0.0.1:8008/patroni", "timeline": 1},
                {"name": "b", "role": "replica", "state": "streaming", "host": "10.0.0.2",
                 "port": 5432, "api_url": "http://10.0.0.2:8008/patroni", "lag": 0},
                {"name": "c", "role": "replica", "state": "streaming", "host": "10.0.0.3",
                 "port": 5432, "api_url": "http://10.0.0.3:8008/patroni", "lag": "unknown"}
            ],
            "pause": true
        });
        let (members, paused) = members(&cluster);
        assert!(paused);
        assert_eq!(members.len(), 3);
        assert_eq!(members[1].lag, Some(0));
        assert_eq!(members[2].lag, None);
    }

    #[test]
    fn config_values_are_quoted() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
