//! Pod role labels on Kubernetes with another DCS: the hooks' spec and
//! Patroni's callback commands come from the real configuration code, the
//! callback runs the real binary, which runs the real curl against an
//! HTTPS API server on loopback that records what it receives.
//!
//! The hook's database work needs a server: the fixture's major has no
//! psql, so a `primary` callback fails there at once, after the label
//! request (asserted); the other roles have no database work.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use spilo::config::{Config, Env, System};
use spilo::init::hooks::{self, Spec};
use spilo::render::Output;

const POD: &str = "acid-test-0";
const NAMESPACE: &str = "acid";
const SCOPE: &str = "acid-test";
const PATH: &str = "/api/v1/namespaces/acid/pods/acid-test-0";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request as the API server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Recorded {
    requests: Mutex<Vec<Request>>,
    /// Answers to give, in order; then 200.
    replies: Mutex<VecDeque<(u16, String)>>,
}

/// An HTTPS server for 127.0.0.1 and ::1 with a self-signed certificate,
/// which is the pod's ca.crt.
struct ApiServer {
    addr: SocketAddr,
    ca_pem: String,
    recorded: Arc<Recorded>,
}

impl ApiServer {
    fn start(bind: &str) -> ApiServer {
        let params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("certificate params");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind(bind).expect("bind the API server");
        let addr = listener.local_addr().expect("local address");
        let recorded = Arc::new(Recorded::default());
        let rec = recorded.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (config, rec) = (config.clone(), rec.clone());
                thread::spawn(move || serve(conn, config, &rec));
            }
        });
        ApiServer {
            addr,
            ca_pem: cert.pem(),
            recorded,
        }
    }

    fn then_reply(&self, status: u16, body: &str) {
        lock(&self.recorded.replies).push_back((status, body.to_owned()));
    }

    fn requests(&self) -> Vec<Request> {
        lock(&self.recorded.requests).clone()
    }
}

fn serve(conn: TcpStream, config: Arc<rustls::ServerConfig>, rec: &Recorded) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(server) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(server, conn);
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut start = lines.next().unwrap_or_default().split_whitespace();
    let method = start.next().unwrap_or_default().to_owned();
    let path = start.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    lock(&rec.requests).push(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (status, body) = lock(&rec.replies)
        .pop_front()
        .unwrap_or((200, r#"{"kind":"Pod"}"#.to_owned()));
    let answer = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(answer.as_bytes());
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
}

/// A pod's environment and service account, a curl on PATH that records
/// its arguments, and the spec the configuration code writes.
struct Pod {
    dir: tempfile::TempDir,
    token: String,
    spec: PathBuf,
    /// Patroni's callback commands, by action.
    callbacks: serde_json::Map<String, Value>,
}

impl Pod {
    /// On Kubernetes at `host:port`, the DCS etcd.
    fn new(host: &str, port: u16, ca_pem: &str) -> Pod {
        Pod::with(host, port, ca_pem, &[("ETCD3_HOSTS", "127.0.0.1:2379")])
    }

    fn with(host: &str, port: u16, ca_pem: &str, extra: &[(&str, &str)]) -> Pod {
        let dir = tempfile::tempdir().expect("tempdir");
        let sa = dir.path().join("serviceaccount");
        std::fs::create_dir_all(&sa).expect("service account dir");
        let token = format!("token-{}-{}", std::process::id(), port);
        std::fs::write(sa.join("token"), &token).expect("token");
        std::fs::write(sa.join("ca.crt"), ca_pem).expect("ca.crt");
        std::fs::write(sa.join("namespace"), NAMESPACE).expect("namespace");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let curl = bin.join("curl");
        std::fs::write(
            &curl,
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> \"$CURL_ARGV_LOG\"\nexec /usr/bin/curl \"$@\"\n",
        )
        .expect("curl wrapper");
        let mut perms = std::fs::metadata(&curl)
            .expect("curl wrapper")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&curl, perms).expect("chmod curl wrapper");
        let root = dir.path().join("postgresql");
        std::fs::create_dir_all(root.join("15/bin")).expect("majors tree");

        let port = port.to_string();
        let rw = dir.path().join("run");
        let home = dir.path().join("home");
        let mut pairs: Vec<(String, String)> = vec![
            ("KUBERNETES_SERVICE_HOST".into(), host.into()),
            ("KUBERNETES_SERVICE_PORT".into(), port),
            ("SPILO_SERVICE_ACCOUNT_DIR".into(), sa.display().to_string()),
            ("HOSTNAME".into(), POD.into()),
            ("SCOPE".into(), SCOPE.into()),
            ("POD_IP".into(), "127.0.0.1".into()),
            ("RW_DIR".into(), rw.display().to_string()),
            ("PGHOME".into(), home.display().to_string()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let system = System {
            postgres_root: root,
            program: env!("CARGO_BIN_EXE_spilo").into(),
            ..System::default()
        };
        let config = Config::build(&Env::from_pairs(pairs), &system).expect("valid pod");
        let install = hooks::install(&config).expect("hook spec");
        let spec = match install.spec {
            Output::File { path, contents, .. } => {
                std::fs::create_dir_all(&rw).expect("RW_DIR");
                std::fs::write(&path, contents).expect("write the spec");
                path
            }
            Output::Symlink { .. } => panic!("the hook spec is a file"),
        };
        Pod {
            dir,
            token,
            spec,
            callbacks: install.commands.callbacks,
        }
    }

    fn read_spec(&self) -> Spec {
        hooks::read_spec(&self.spec).expect("spec")
    }

    /// Patroni's callback commands, by action.
    fn callbacks(&self) -> serde_json::Map<String, Value> {
        self.callbacks.clone()
    }

    /// Runs the callback as Patroni does: its command, then action, role
    /// and scope.
    fn callback(&self, action: &str, role: &str) -> Run {
        let callbacks = self.callbacks();
        let command = callbacks[action].as_str().expect("a callback command");
        let mut words = command.split_whitespace();
        let program = words.next().expect("a program");
        let log = self.dir.path().join("curl-argv");
        let started = Instant::now();
        let out = Command::new(program)
            .args(words)
            .args([action, role, SCOPE])
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            )
            .env("CURL_ARGV_LOG", &log)
            .output()
            .expect("run the hook");
        Run {
            ok: out.status.success(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
            curl_argv: std::fs::read_to_string(&log).unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
struct Run {
    ok: bool,
    stderr: String,
    elapsed: Duration,
    curl_argv: String,
}

fn label_body(value: Value) -> Value {
    json!({ "metadata": { "labels": { "spilo-role": value } } })
}

fn assert_no_token(pod: &Pod, run: &Run) {
    assert!(!run.stderr.contains(&pod.token), "{run:?}");
    assert!(!run.curl_argv.contains(&pod.token), "{run:?}");
}

#[test]
fn a_replica_is_labelled_through_the_api_with_the_service_account() {
    let api = ApiServer::start("127.0.0.1:0");
    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    let run = pod.callback("on_role_change", "replica");
    assert!(run.ok, "{run:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.path, PATH);
    let bearer = format!("Bearer {}", pod.token);
    assert_eq!(r.header("authorization"), Some(bearer.as_str()));
    assert_eq!(
        r.header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(r.json(), label_body(json!("replica")));
    assert!(
        run.stderr
            .contains("pod label spilo-role=replica on acid/acid-test-0: done"),
        "{run:?}"
    );
    // curl was the one on PATH, with the pod's CA, and never saw the token
    // in its arguments.
    let ca = pod.dir.path().join("serviceaccount/ca.crt");
    assert!(
        run.curl_argv
            .contains(&format!("--cacert\n{}\n", ca.display())),
        "{run:?}"
    );
    assert!(run.curl_argv.contains("--header\n@-\n"), "{run:?}");
    assert_no_token(&pod, &run);
}

#[test]
fn a_primary_is_labelled_master_before_the_database_work() {
    let api = ApiServer::start("127.0.0.1:0");
    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    let run = pod.callback("on_role_change", "primary");
    // The fixture major has no psql: the database work fails, after the
    // label and the primary service's Endpoints.
    assert!(!run.ok, "{run:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].path, PATH);
    assert_eq!(requests[0].json(), label_body(json!("master")));
    assert_eq!(requests[1].method, "PATCH");
    assert_eq!(
        requests[1].path,
        "/api/v1/namespaces/acid/endpoints/acid-test"
    );
    assert_eq!(
        requests[1].header("Content-Type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        requests[1].json(),
        json!({ "subsets": [{
            "addresses": [{ "ip": "127.0.0.1" }],
            "ports": [{ "name": "postgresql", "port": 5432, "protocol": "TCP" }],
        }] })
    );
    let label = run
        .stderr
        .find("pod label spilo-role=master on acid/acid-test-0: done")
        .expect("the label line");
    let sql = run.stderr.find("psql").expect("the database error");
    assert!(label < sql, "{run:?}");
    assert_no_token(&pod, &run);
}

#[test]
fn refused_endpoints_do_not_keep_the_label_from_being_set() {
    let api = ApiServer::start("127.0.0.1:0");
    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    api.then_reply(200, "{}");
    api.then_reply(
        404,
        r#"{"kind":"Status","message":"endpoints \"acid-test\" not found"}"#,
    );
    let run = pod.callback("on_start", "primary");
    assert!(run.ok, "{run:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].json(), label_body(json!("master")));
    assert!(
        run.stderr.contains(
            "on_start: warning: endpoints acid/acid-test to 127.0.0.1:5432 failed after 1 attempt(s): HTTP 404: endpoints \"acid-test\" not found"
        ),
        "{run:?}"
    );
}

#[test]
fn start_stop_and_every_role_set_their_value() {
    let api = ApiServer::start("127.0.0.1:0");
    let pod = Pod::with(
        "127.0.0.1",
        api.addr.port(),
        &api.ca_pem,
        &[
            ("ZOOKEEPER_HOSTS", "127.0.0.1:2181"),
            ("KUBERNETES_STANDBY_LEADER_LABEL_VALUE", "standby-master"),
        ],
    );
    let keys: Vec<String> = pod.callbacks().keys().cloned().collect();
    assert_eq!(keys, ["on_start", "on_stop", "on_role_change"]);
    for (action, role, value) in [
        ("on_start", "replica", json!("replica")),
        ("on_role_change", "standby_leader", json!("standby-master")),
        ("on_role_change", "demoted", json!("demoted")),
        ("on_stop", "replica", Value::Null),
    ] {
        let before = api.requests().len();
        let run = pod.callback(action, role);
        assert!(run.ok, "{action} {role}: {run:?}");
        let requests = api.requests();
        assert_eq!(requests.len(), before + 1, "{action} {role}");
        assert_eq!(requests[before].path, PATH);
        assert_eq!(
            requests[before].json(),
            label_body(value),
            "{action} {role}"
        );
    }
}

#[test]
fn transient_errors_are_retried() {
    let api = ApiServer::start("127.0.0.1:0");
    api.then_reply(503, r#"{"kind":"Status","message":"the server is busy"}"#);
    api.then_reply(500, "internal error");
    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    let run = pod.callback("on_role_change", "replica");
    assert!(run.ok, "{run:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.json() == label_body(json!("replica")))
    );
    assert!(run.elapsed < Duration::from_secs(6), "{run:?}");
    assert_no_token(&pod, &run);
}

#[test]
fn a_refusal_is_one_line_and_not_retried() {
    let api = ApiServer::start("127.0.0.1:0");
    api.then_reply(
        403,
        r#"{"kind":"Status","message":"pods \"acid-test-0\" is forbidden: no patch","code":403}"#,
    );
    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    let run = pod.callback("on_role_change", "replica");
    assert!(!run.ok, "{run:?}");
    assert_eq!(api.requests().len(), 1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "spilo hook on_role_change: error: pod label spilo-role=replica on acid/acid-test-0 failed after 1 attempt(s): HTTP 403: pods \"acid-test-0\" is forbidden: no patch"
        ]
    );
    assert_no_token(&pod, &run);
}

#[test]
fn a_dead_api_server_is_given_up_within_the_bound() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pod = Pod::new("127.0.0.1", port, "no CA needed");
    let run = pod.callback("on_role_change", "replica");
    assert!(!run.ok, "{run:?}");
    assert!(run.elapsed < Duration::from_secs(8), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].starts_with(
            "spilo hook on_role_change: error: pod label spilo-role=replica on acid/acid-test-0 failed after 5 attempt(s): curl: (7)"
        ),
        "{run:?}"
    );
    assert_no_token(&pod, &run);
}

#[test]
fn a_missing_token_is_reported_without_a_request() {
    let api = ApiServer::start("127.0.0.1:0");
    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    let token = pod.dir.path().join("serviceaccount/token");
    std::fs::remove_file(&token).expect("remove the token");
    let run = pod.callback("on_start", "replica");
    assert!(!run.ok, "{run:?}");
    assert!(api.requests().is_empty());
    assert!(
        run.stderr.contains(&format!(
            "failed after 1 attempt(s): service account token {}: No such file",
            token.display()
        )),
        "{run:?}"
    );
}

#[test]
fn an_ipv6_api_server_is_reached_in_brackets() {
    let api = ApiServer::start("[::1]:0");
    let pod = Pod::new("::1", api.addr.port(), &api.ca_pem);
    let run = pod.callback("on_role_change", "replica");
    assert!(run.ok, "{run:?}");
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, PATH);
    let url = format!("https://[::1]:{}{PATH}", api.addr.port());
    assert!(run.curl_argv.contains(&url), "{run:?}");
}

#[test]
fn no_target_with_the_kubernetes_dcs_or_off_kubernetes() {
    let api = ApiServer::start("127.0.0.1:0");
    let pod = Pod::with(
        "127.0.0.1",
        api.addr.port(),
        &api.ca_pem,
        &[("DCS_ENABLE_KUBERNETES_API", "true")],
    );
    assert_eq!(pod.read_spec().pod_labels, None);
    let keys: Vec<String> = pod.callbacks().keys().cloned().collect();
    assert_eq!(keys, ["on_role_change"]);
    let run = pod.callback("on_role_change", "replica");
    assert!(run.ok, "{run:?}");
    assert!(api.requests().is_empty());
    assert_eq!(run.curl_argv, "");

    let pod = Pod::with("", 443, "", &[("ETCD3_HOSTS", "127.0.0.1:2379")]);
    assert_eq!(pod.read_spec().pod_labels, None);

    let pod = Pod::new("127.0.0.1", api.addr.port(), &api.ca_pem);
    let target = pod.read_spec().pod_labels.expect("a target with etcd");
    assert_eq!(
        (target.namespace.as_str(), target.pod.as_str()),
        (NAMESPACE, POD)
    );
}

#[test]
fn a_certificate_the_pods_ca_did_not_sign_is_refused() {
    let api = ApiServer::start("127.0.0.1:0");
    let other = ApiServer::start("127.0.0.1:0");
    let pod = Pod::new("127.0.0.1", api.addr.port(), &other.ca_pem);
    let run = pod.callback("on_role_change", "replica");
    assert!(!run.ok, "{run:?}");
    assert!(api.requests().is_empty());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].contains("on acid/acid-test-0 failed after 1 attempt(s): curl: (60)"),
        "{run:?}"
    );
    assert_no_token(&pod, &run);
}
