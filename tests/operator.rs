//! The image driven exactly as the Zalando postgres-operator drives it, in
//! a real container engine: pods with the environment the operator writes
//! (tests/fixtures/operator/pod-etcd.env), etcd as the DCS, the calls the
//! operator and people make inside a pod (patronictl, Patroni's REST API
//! through curl, psql through `su postgres`), the pod role labels through a
//! stand-in Kubernetes API server, and pods restarted on a volume laid out
//! as Spilo leaves it.
//!
//! Everything runs on a network and in containers the test makes; all of
//! it is removed when a test ends, also when it fails.

mod common;
mod image_support;
mod tls_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use image_support::{Container, Network, READY, image, serial, wait_for};
use tls_support::{Pem, ip_name, server_certificate};

/// The operator's pod environment, with etcd as the DCS.
const FIXTURE: &str = "pod-etcd.env";
/// The fixture's addresses are on this network.
const SUBNET: &str = "10.89.78.0/24";
/// Where the kubelet mounts a pod's service account.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The operator's data volume mount.
const VOLUME: &str = "/home/postgres/pgdata";
/// Spilo's postgres user and group.
const POSTGRES_UID: u32 = 101;
const POSTGRES_GID: u32 = 103;

/// How a person or the operator calls `patronictl list -f json` in a pod:
/// as root (`kubectl exec`) through the image's PATRONICTL_CONFIG_FILE and
/// through root's default config path, as postgres through `su`, and
/// through a login shell (environment cleared: the default path only).
const PATRONICTL_LIST: [&[&str]; 4] = [
    &["patronictl", "list", "-e", "-f", "json"],
    &[
        "env",
        "-u",
        "PATRONICTL_CONFIG_FILE",
        "patronictl",
        "list",
        "-e",
        "-f",
        "json",
    ],
    &["su", "postgres", "-c", "patronictl list -e -f json"],
    &["su", "-", "postgres", "-c", "patronictl list -e -f json"],
];

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A variable of a fixture.
fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the fixture sets {name}"))
}

/// `-e NAME=value` for each variable.
fn env_options(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .flat_map(|(k, v)| ["-e".to_owned(), format!("{k}={v}")])
        .collect()
}

/// psql as people run it in a pod: `su postgres -c "psql -tAq -d DB -c '...'"`,
/// over the unix socket.
fn psql_in(node: &Container, db: &str, query: &str) -> Result<String, String> {
    assert!(!query.contains('\''), "the query is single-quoted: {query}");
    let command = format!("psql -tAq -v ON_ERROR_STOP=1 -d {db} -c '{query}'");
    let out = node.exec(&["su", "postgres", "-c", &command]);
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(describe(&out))
    }
}

fn psql(node: &Container, query: &str) -> Result<String, String> {
    psql_in(node, "postgres", query)
}

/// An HTTP call made with the image's curl from inside `from`: (status, body).
fn curl(from: &Container, method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    let data = body.map(Value::to_string);
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "150",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ];
    if let Some(data) = &data {
        args.extend(["-H", "Content-Type: application/json", "--data", data]);
    }
    args.push(url);
    let out = from.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    assert!(
        out.status.success() && code != 0,
        "curl -X {method} {url}: {}",
        describe(&out)
    );
    (code, body.to_owned())
}

/// Patroni's REST API of `pod`, read with curl from that pod.
fn rest(pod: &Pod, path: &str) -> Option<Value> {
    let url = format!("http://{}:8008{path}", pod.ip);
    let out = pod.node.exec(&["curl", "-sS", "--max-time", "10", &url]);
    serde_json::from_slice(&out.stdout).ok()
}

/// `patronictl list -f json` of one of the ways above: member → row.
fn patronictl_list(node: &Container, call: &[&str]) -> Result<BTreeMap<String, Value>, String> {
    let out = node.exec(call);
    if !out.status.success() {
        return Err(describe(&out));
    }
    let rows: Vec<Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", describe(&out)))?;
    Ok(rows
        .into_iter()
        .map(|row| (row["Member"].as_str().unwrap_or_default().to_owned(), row))
        .collect())
}

/// The leader when `rows` are one running leader and two streaming replicas.
fn healthy(rows: &BTreeMap<String, Value>) -> Option<String> {
    let leaders: Vec<&String> = rows
        .iter()
        .filter(|(_, r)| r["Role"] == "Leader" && r["State"] == "running")
        .map(|(name, _)| name)
        .collect();
    let streaming = rows
        .values()
        .filter(|r| r["Role"] == "Replica" && r["State"] == "streaming")
        .count();
    (rows.len() == 3 && leaders.len() == 1 && streaming == 2).then(|| leaders[0].clone())
}

/// A pod of the cluster: its container, name (= host name = member), IP,
/// its data volume (mounted where the operator mounts it) and what it was
/// started with, to start it again on the same volume.
struct Pod {
    node: Container,
    name: String,
    ip: String,
    volume: PathBuf,
    options: Vec<String>,
}

/// The cluster the operator would make: three pods, etcd, and a stand-in
/// for the Kubernetes API server, each on the test's network. Fields drop
/// in order: containers first, then the network, then the files.
struct Cluster {
    pods: Vec<Pod>,
    etcd: Container,
    api: Container,
    _network: Network,
    token: String,
    scope: String,
    namespace: String,
    role_label: String,
    _files: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let image = image();
        let fixture = common::operator_fixture(FIXTURE);
        let scope = var(&fixture, "SCOPE").to_owned();
        let etcd_ip = var(&fixture, "ETCD3_HOSTS")
            .split(':')
            .next()
            .expect("host:port")
            .to_owned();
        let api_ip = var(&fixture, "KUBERNETES_SERVICE_HOST").to_owned();
        let api_port = var(&fixture, "KUBERNETES_SERVICE_PORT").to_owned();
        let namespace = var(&fixture, "POD_NAMESPACE").to_owned();
        let role_label = var(&fixture, "KUBERNETES_ROLE_LABEL").to_owned();

        let files = tempfile::tempdir().expect("tempdir");
        readable(files.path());
        let token = format!(
            "test-token-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let Pem { ca, cert, key } = server_certificate(
            "operator test cluster CA",
            "kube-apiserver",
            vec![ip_name(&api_ip)],
        );
        let account = files.path().join("serviceaccount");
        write_readable(&account.join("token"), &token);
        write_readable(&account.join("ca.crt"), &ca);
        write_readable(&account.join("namespace"), &namespace);
        let tls = files.path().join("api");
        write_readable(&tls.join("tls.crt"), &cert);
        write_readable(&tls.join("tls.key"), &key);

        let network = Network::create(SUBNET);
        let on_network = format!("--network={}", network.name);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-apiserver.py");
        let api = Container::run(
            image,
            "kube-api",
            &[
                &on_network,
                &format!("--ip={api_ip}"),
                "--entrypoint=python3",
                "-v",
                &format!("{}:/srv/kube-apiserver.py:ro", script.display()),
                "-v",
                &format!("{}:/srv/tls:ro", tls.display()),
            ],
            &[
                "/srv/kube-apiserver.py",
                &api_port,
                "/srv/tls/tls.crt",
                "/srv/tls/tls.key",
                &token,
            ],
        );
        let etcd = Container::run(
            image,
            "etcd",
            &[
                &on_network,
                &format!("--ip={etcd_ip}"),
                "--entrypoint=/usr/bin/etcd",
            ],
            &[
                "--name=etcd",
                "--data-dir=/run/etcd",
                "--listen-client-urls=http://0.0.0.0:2379",
                &format!("--advertise-client-urls=http://{etcd_ip}:2379"),
            ],
        );
        let first_ip: std::net::Ipv4Addr = var(&fixture, "POD_IP").parse().expect("POD_IP");
        let pods = (0..3u8)
            .map(|i| {
                let name = format!("{scope}-{i}");
                let octets = first_ip.octets();
                let ip = std::net::Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3] + i)
                    .to_string();
                // The kubelet's per-pod values; everything else as written.
                let env: Vec<(String, String)> = fixture
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        "HOSTNAME" => (k.clone(), name.clone()),
                        "POD_IP" => (k.clone(), ip.clone()),
                        _ => (k.clone(), v.clone()),
                    })
                    .collect();
                let volume = files.path().join(format!("volume{i}"));
                std::fs::create_dir_all(&volume).expect("pod volume");
                let mut options = vec![
                    on_network.clone(),
                    format!("--ip={ip}"),
                    "-v".into(),
                    format!("{}:{SERVICE_ACCOUNT}:ro", account.display()),
                    "-v".into(),
                    format!("{}:{VOLUME}", volume.display()),
                ];
                options.extend(env_options(&env));
                let node = start_pod(&name, &options);
                Pod {
                    node,
                    name,
                    ip,
                    volume,
                    options,
                }
            })
            .collect();
        Cluster {
            pods,
            etcd,
            api,
            _network: network,
            token,
            scope,
            namespace,
            role_label,
            _files: files,
        }
    }

    /// Stops a pod as Kubernetes does (SIGTERM, a grace period), runs
    /// `while_stopped`, and starts a new one with the same name, address
    /// and volume.
    fn restart_pod_with(&mut self, name: &str, while_stopped: impl FnOnce()) {
        let pod = self
            .pods
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not one of the pods"));
        image_support::ok(&["stop", "-t", "60", &pod.node.name]);
        image_support::ok(&["rm", "-f", &pod.node.name]);
        while_stopped();
        pod.node = start_pod(&pod.name, &pod.options);
    }

    fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not one of the pods"))
    }

    /// Each pod's view (patronictl as root) and its last log lines.
    fn state(&self) -> String {
        let mut text = String::new();
        for pod in &self.pods {
            text += &format!(
                "\n== {}: {:?}\n{}",
                pod.name,
                patronictl_list(&pod.node, PATRONICTL_LIST[0]),
                pod.node.logs()
            );
        }
        text + &format!("\n== etcd\n{}", self.etcd.logs())
    }

    /// Waits until every pod's patronictl, called each of these ways,
    /// reports one running leader (`want`, when given) and two streaming
    /// replicas; returns the leader.
    fn wait_healthy(
        &self,
        limit: Duration,
        what: &str,
        calls: &[&[&str]],
        want: Option<&str>,
    ) -> String {
        wait_for(
            limit,
            what,
            || {
                let mut leader = None;
                for pod in &self.pods {
                    for call in calls {
                        let found = healthy(&patronictl_list(&pod.node, call).ok()?)?;
                        if leader.get_or_insert_with(|| found.clone()) != &found
                            || want.is_some_and(|w| w != found)
                        {
                            return None;
                        }
                    }
                }
                leader
            },
            || self.state(),
        )
    }

    /// The requests the stand-in API server recorded, in order.
    fn requests(&self) -> Vec<Value> {
        self.api
            .logs_with(&[])
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record.get("method").is_some())
            .collect()
    }

    /// Waits until the last label patch of each pod sets `expected[pod]`,
    /// each one made as the API server wants it (method, path, token,
    /// content type, a merge patch of the role label only).
    fn wait_labels(&self, expected: &BTreeMap<String, &str>, what: &str) -> Result<(), String> {
        let bearer = format!("Bearer {}", self.token);
        let check = || -> Result<(), String> {
            let requests = self.requests();
            // The leader points the primary service's Endpoints at itself.
            if let Some((leader, _)) = expected.iter().find(|(_, v)| **v == "master") {
                let path = format!(
                    "/api/v1/namespaces/{}/endpoints/{}",
                    self.namespace, self.scope
                );
                let last = requests
                    .iter()
                    .rfind(|r| r["path"] == path)
                    .ok_or_else(|| format!("no request for {path}"))?;
                let body: Value = serde_json::from_str(last["body"].as_str().unwrap_or_default())
                    .map_err(|e| format!("{path}: body {}: {e}", last["body"]))?;
                let ip = &self.pod(leader).ip;
                if last["method"] != "PATCH"
                    || last["headers"]["authorization"] != bearer.as_str()
                    || body["subsets"][0]["addresses"] != json!([{ "ip": ip }])
                    || body["subsets"][0]["ports"][0]["port"] != 5432
                {
                    return Err(format!("{path}: last request {last}, want {leader}'s {ip}"));
                }
            }
            for (pod, value) in expected {
                let path = format!("/api/v1/namespaces/{}/pods/{pod}", self.namespace);
                let patches: Vec<&Value> = requests.iter().filter(|r| r["path"] == path).collect();
                let last = patches
                    .last()
                    .ok_or_else(|| format!("no request for {path}"))?;
                let body: Value = serde_json::from_str(last["body"].as_str().unwrap_or_default())
                    .map_err(|e| format!("{path}: body {}: {e}", last["body"]))?;
                let want = json!({ "metadata": { "labels": { &self.role_label: value } } });
                let headers = &last["headers"];
                if last["method"] != "PATCH"
                    || headers["authorization"] != bearer.as_str()
                    || headers["content-type"] != "application/merge-patch+json"
                    || body != want
                {
                    return Err(format!("{path}: last request {last}, want PATCH of {want}"));
                }
            }
            Ok(())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match check() {
                Ok(()) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(format!(
                        "{what}: {e}\nrecorded requests:\n{}",
                        self.requests()
                            .iter()
                            .map(Value::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        }
    }

    /// The label values after `leader` leads: master, every other replica.
    fn expected_labels(&self, leader: &str) -> BTreeMap<String, &'static str> {
        self.pods
            .iter()
            .map(|p| {
                let value = if p.name == leader {
                    "master"
                } else {
                    "replica"
                };
                (p.name.clone(), value)
            })
            .collect()
    }

    /// Waits until `query` gives `want` on every pod.
    fn wait_everywhere(&self, query: &str, want: &str) {
        wait_for(
            Duration::from_secs(90),
            &format!("{query} = {want} on every pod"),
            || {
                self.pods
                    .iter()
                    .all(|p| psql(&p.node, query).is_ok_and(|v| v == want))
                    .then_some(())
            },
            || {
                self.pods
                    .iter()
                    .map(|p| format!("{}: {:?}", p.name, psql(&p.node, query)))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        );
    }
}

fn readable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A file every uid in a container can read, as the kubelet mounts them.
fn write_readable(path: &Path, text: &str) {
    let dir = path.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("create dir");
    readable(dir);
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

#[test]
fn the_operator_drives_a_three_pod_cluster() {
    let _serial = serial();
    let default_major = image_support::manifest(image())["default_major"]
        .as_u64()
        .expect("default_major");
    let mut cluster = Cluster::start();
    // Label mismatches are reported at the end, the rest runs regardless.
    let mut failures: Vec<String> = Vec::new();

    // patronictl without -c, every way, on every pod.
    let leader = cluster.wait_healthy(
        Duration::from_secs(300),
        "one leader and two streaming replicas in patronictl list -f json",
        &PATRONICTL_LIST,
        None,
    );

    // What the hooks made after bootstrap, with the default major and its
    // extensions, and no hook failed on any pod.
    // (psql_in single-quotes the query: literals are dollar-quoted.)
    let made = [
        (
            "template1",
            "SELECT to_regproc($$user_management.create_user$$) IS NOT NULL",
            "t",
        ),
        (
            "postgres",
            "SELECT count(*) >= 0 FROM metric_helpers.table_bloat",
            "t",
        ),
        ("postgres", "SELECT count(*) >= 0 FROM postgres_log", "t"),
        (
            "postgres",
            "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = $$pg_cron$$",
            "pg_catalog",
        ),
        (
            "postgres",
            "SELECT pg_has_role($$admin$$, $$cron_admin$$, $$MEMBER$$) AND NOT rolcreaterole FROM pg_roles WHERE rolname = $$admin$$",
            "t",
        ),
    ];
    let first = &cluster.pod(&leader).node;
    for (db, query, want) in made {
        assert_eq!(
            psql_in(first, db, query).as_deref(),
            Ok(want),
            "{db}: {query}"
        );
    }
    for pod in &cluster.pods {
        let logs = pod.node.logs_with(&[]);
        assert!(
            !logs
                .lines()
                .any(|l| l.contains("spilo hook ") && l.contains(": error: ")),
            "{}: a hook failed:\n{logs}",
            pod.name
        );
    }

    // psql as people run it in a pod, over the unix socket, the default
    // major's client.
    for pod in &cluster.pods {
        let one = pod.node.exec(&[
            "su",
            "postgres",
            "-c",
            "psql -tAq -d postgres -c 'select 1'",
        ]);
        assert_eq!(stdout(&one), "1", "{}: {}", pod.name, describe(&one));
        let socket = pod.node.exec(&[
            "su",
            "postgres",
            "-c",
            "psql -tA -c 'SELECT current_user, inet_server_addr() IS NULL'",
        ]);
        assert_eq!(
            stdout(&socket),
            "postgres|t",
            "{}: {}",
            pod.name,
            describe(&socket)
        );
        let root = pod
            .node
            .exec(&["psql", "-U", "postgres", "-tAq", "-c", "SELECT 1"]);
        assert_eq!(
            stdout(&root),
            "1",
            "{} as root: {}",
            pod.name,
            describe(&root)
        );
        let version = pod.node.exec(&["su", "postgres", "-c", "psql --version"]);
        assert!(
            stdout(&version).starts_with(&format!("psql (PostgreSQL) {default_major}.")),
            "{}",
            describe(&version)
        );
    }
    let first_leader = cluster.pod(&leader);
    assert_eq!(
        psql(&first_leader.node, "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );

    // The role labels after bootstrap.
    if let Err(e) = cluster.wait_labels(&cluster.expected_labels(&leader), "after bootstrap") {
        failures.push(e);
    }

    // PATCH /config: ttl, a parameter applied on reload, one that needs a
    // restart.
    let max_connections: u32 = psql(&first_leader.node, "SHOW max_connections")
        .unwrap()
        .parse()
        .expect("a number");
    let raised = (max_connections + 10).to_string();
    let patch = json!({
        "ttl": 40,
        "postgresql": { "parameters": { "work_mem": "12MB", "max_connections": raised } }
    });
    let url = |pod: &Pod, path: &str| format!("http://{}:8008{path}", pod.ip);
    let (code, body) = curl(
        &cluster.pods[0].node,
        "PATCH",
        &url(first_leader, "/config"),
        Some(&patch),
    );
    assert_eq!(code, 200, "PATCH /config: {body}");
    for pod in &cluster.pods {
        let config = rest(pod, "/config").expect("GET /config");
        assert_eq!(config["ttl"], 40, "{}: {config}", pod.name);
        assert_eq!(
            config["postgresql"]["parameters"]["work_mem"], "12MB",
            "{config}"
        );
    }
    for call in [
        &["patronictl", "show-config"][..],
        &["su", "postgres", "-c", "patronictl show-config"],
    ] {
        let shown = cluster.pods[1].node.exec(call);
        assert!(
            stdout(&shown).lines().any(|l| l == "ttl: 40"),
            "{call:?}: {}",
            describe(&shown)
        );
    }
    cluster.wait_everywhere("SHOW work_mem", "12MB");
    wait_for(
        Duration::from_secs(90),
        "pending_restart on every member after max_connections changed",
        || {
            let rows = patronictl_list(&cluster.pods[2].node, PATRONICTL_LIST[2]).ok()?;
            let api_says = cluster
                .pods
                .iter()
                .all(|p| rest(p, "/patroni").is_some_and(|s| s["pending_restart"] == true));
            (api_says && rows.len() == 3 && rows.values().all(|r| r["Pending restart"] == "*"))
                .then_some(())
        },
        || cluster.state(),
    );
    for pod in &cluster.pods {
        assert_eq!(
            psql(&pod.node, "SHOW max_connections").unwrap(),
            max_connections.to_string(),
            "{}: changed without a restart",
            pod.name
        );
    }
    // POST /restart on each member, replicas first.
    let mut order: Vec<&Pod> = cluster.pods.iter().filter(|p| p.name != leader).collect();
    order.push(first_leader);
    for pod in order {
        let (code, body) = curl(
            &cluster.pods[0].node,
            "POST",
            &url(pod, "/restart"),
            Some(&json!({})),
        );
        assert_eq!(code, 200, "POST /restart on {}: {body}", pod.name);
    }
    cluster.wait_everywhere("SHOW max_connections", &raised);
    wait_for(
        Duration::from_secs(90),
        "pending_restart cleared",
        || {
            let rows = patronictl_list(&cluster.pods[0].node, PATRONICTL_LIST[0]).ok()?;
            let api_says = cluster
                .pods
                .iter()
                .all(|p| rest(p, "/patroni").is_some_and(|s| s.get("pending_restart").is_none()));
            // Patroni shows the column only while a member has a value.
            let listed = rows
                .values()
                .all(|r| r.get("Pending restart").is_none_or(|v| v == ""));
            (api_says && listed).then_some(())
        },
        || cluster.state(),
    );
    assert_eq!(
        cluster.wait_healthy(
            Duration::from_secs(120),
            "healthy after the restarts",
            &PATRONICTL_LIST[..1],
            None,
        ),
        leader,
        "a restart changed the leader"
    );

    // POST /switchover with leader and candidate.
    let candidate = cluster
        .pods
        .iter()
        .find(|p| p.name != leader)
        .expect("a replica");
    psql(
        &first_leader.node,
        "CREATE TABLE switched AS SELECT generate_series(1, 100) AS id",
    )
    .unwrap();
    let (code, body) = curl(
        &cluster.pods[2].node,
        "POST",
        &url(first_leader, "/switchover"),
        Some(&json!({ "leader": leader, "candidate": candidate.name })),
    );
    assert_eq!(code, 200, "POST /switchover: {body}");
    cluster.wait_healthy(
        Duration::from_secs(180),
        "the candidate leads, the old leader streams",
        &PATRONICTL_LIST,
        Some(&candidate.name),
    );
    assert_eq!(
        psql(&candidate.node, "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    assert_eq!(
        psql(&first_leader.node, "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );
    cluster.wait_everywhere("SELECT count(*) FROM switched", "100");
    let history = candidate
        .node
        .exec(&["su", "postgres", "-c", "patronictl history -f json"]);
    let history: Vec<Value> = serde_json::from_slice(&history.stdout)
        .unwrap_or_else(|e| panic!("patronictl history: {e}: {}", describe(&history)));
    assert_eq!(
        history.last().map(|h| &h["New Leader"]),
        Some(&json!(candidate.name)),
        "{history:?}"
    );

    // The role labels follow the switchover.
    if let Err(e) = cluster.wait_labels(
        &cluster.expected_labels(&candidate.name),
        "after the switchover",
    ) {
        failures.push(e);
    }

    // A replica's pod goes away and comes back on its volume while the
    // leader writes: it streams again, from the same data directory.
    let returning = leader.clone();
    let candidate_name = candidate.name.clone();
    let marker = cluster
        .pod(&returning)
        .volume
        .join("pgroot/pgdata/spilo-volume-marker");
    cluster.restart_pod_with(&returning, || {
        std::fs::write(&marker, "kept only if the data directory is").expect("marker")
    });
    psql(
        &cluster.pod(&candidate_name).node,
        "INSERT INTO switched SELECT generate_series(101, 150)",
    )
    .unwrap();
    cluster.wait_healthy(
        Duration::from_secs(180),
        "the restarted replica streams again",
        &PATRONICTL_LIST[..1],
        Some(&candidate_name),
    );
    cluster.wait_everywhere("SELECT count(*) FROM switched", "150");
    assert!(
        marker.exists(),
        "{returning}: the data directory was rebuilt"
    );
    let logs = cluster.pod(&returning).node.logs_with(&[]);
    for rebuilt in ["bootstrap from leader", "basebackup"] {
        assert!(
            !logs.contains(rebuilt),
            "{returning}: {rebuilt:?} in\n{logs}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn start_pod(name: &str, options: &[String]) -> Container {
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    Container::run_with_hostname(image(), "pod", name, &options, &[])
}

/// A host directory laid out as Spilo leaves the operator's data volume:
/// the cluster of `major` in `pgroot/pgdata` with a few rows, csv logs in
/// `pgroot/pg_log`, everything owned by 101:103. Returns the cluster's
/// system identifier and the rows' digest.
fn spilo_volume(volume: &Path, major: u32) -> (String, String) {
    std::fs::create_dir_all(volume).expect("volume");
    std::os::unix::fs::chown(volume, Some(POSTGRES_UID), Some(POSTGRES_GID)).expect("chown");
    let script = format!(
        r#"set -e
bin=/usr/lib/postgresql/{major}/bin
root={VOLUME}/pgroot
mkdir -p "$root/pg_log"
"$bin/initdb" -D "$root/pgdata" -U postgres --encoding=UTF8 --locale=en_US.UTF-8 \
  --data-checksums --auth-local=trust --auth-host=md5 >/dev/null
"$bin/pg_ctl" -D "$root/pgdata" -w -l /tmp/start.log -o "-c listen_addresses= \
  -c unix_socket_directories=/tmp -c logging_collector=on -c log_destination=csvlog \
  -c log_directory=../pg_log -c log_filename=postgresql-%u.log" start >/dev/null
sql() {{ "$bin/psql" -h /tmp -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }}
sql -d postgres -c "CREATE DATABASE app"
sql -d app -c "CREATE TABLE items (id int PRIMARY KEY, note text)" \
  -c "INSERT INTO items SELECT i, md5(i::text) FROM generate_series(1, 1000) AS i"
echo "rows=$(sql -d app -c "{ROWS}")"
"$bin/pg_ctl" -D "$root/pgdata" -m fast -w stop >/dev/null
ls "$root"/pg_log/*.csv >/dev/null
echo "sysid=$("$bin/pg_controldata" "$root/pgdata" | sed -n 's/^Database system identifier: *//p')"
"#
    );
    let out = image_support::output(&[
        "run",
        "--rm",
        "--user",
        &format!("{POSTGRES_UID}:{POSTGRES_GID}"),
        "-v",
        &format!("{}:{VOLUME}", volume.display()),
        "--entrypoint",
        "/bin/sh",
        image(),
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "making the volume: {}",
        describe(&out)
    );
    let text = stdout(&out);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    (value("sysid="), value("rows="))
}

/// The rows of the volume's table, as one digest.
const ROWS: &str = "SELECT count(*) || chr(32) || md5(string_agg(id || chr(61) || note, chr(44) ORDER BY id)) FROM items";

/// Every entry under `dir` whose owner is not 101:103.
fn not_postgres_owned(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut wrong = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.uid() != POSTGRES_UID || meta.gid() != POSTGRES_GID {
            wrong.push(path.clone());
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                todo.push(entry.expect("directory entry").path());
            }
        }
    }
    wrong
}

/// A pod of the operator restarted on a Spilo volume of `major`, with
/// `pgversion` (none, or another major) in its environment: the same
/// cluster comes back as the primary, on the data directory's major.
fn restarted_on_a_spilo_volume(major: u32, pgversion: Option<u32>) {
    let _serial = serial();
    let scratch = tempfile::tempdir().expect("tempdir");
    readable(scratch.path());
    let volume = scratch.path().join("pgdata");
    let (sysid, rows) = spilo_volume(&volume, major);
    let root = volume.join("pgroot");
    let logs_before: Vec<PathBuf> = std::fs::read_dir(root.join("pg_log"))
        .expect("pg_log")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!logs_before.is_empty(), "no csv log was written");
    let wrong = not_postgres_owned(&volume);
    assert!(wrong.is_empty(), "not owned by 101:103: {wrong:?}");

    // The operator's pod, alone: no DCS of its own (the embedded etcd),
    // not on Kubernetes, the container's own address and host name.
    let mut env: Vec<(String, String)> = common::operator_fixture(FIXTURE)
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "ETCD3_HOSTS"
                    | "KUBERNETES_SERVICE_HOST"
                    | "KUBERNETES_SERVICE_PORT"
                    | "KUBERNETES_SERVICE_PORT_HTTPS"
                    | "POD_IP"
                    | "HOSTNAME"
                    | "PGVERSION"
            )
        })
        .collect();
    if let Some(v) = pgversion {
        assert_ne!(v, major, "PGVERSION must differ from the volume's major");
        env.push(("PGVERSION".into(), v.to_string()));
    }
    let mut options = vec!["-v".to_owned(), format!("{}:{VOLUME}", volume.display())];
    options.extend(env_options(&env));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let node = Container::run(image(), &format!("volume{major}"), &options, &[]);

    wait_for(
        READY,
        "the restarted pod is a writable primary",
        || {
            let primary = node
                .api("/patroni")
                .is_some_and(|p| p["role"] == "primary" && p["state"] == "running");
            (primary && psql(&node, "SELECT pg_is_in_recovery()").is_ok_and(|r| r == "f"))
                .then_some(())
        },
        || node.logs(),
    );
    assert_eq!(
        psql(&node, "SELECT system_identifier FROM pg_control_system()").unwrap(),
        sysid,
        "another cluster"
    );
    assert_eq!(psql_in(&node, "app", ROWS).unwrap(), rows, "rows changed");
    let version = psql(&node, "SHOW server_version_num").unwrap();
    assert!(
        version.starts_with(&major.to_string()),
        "the volume's major is {major}, the server runs {version}"
    );
    assert_eq!(
        psql(&node, "SHOW data_directory").unwrap(),
        format!("{VOLUME}/pgroot/pgdata")
    );
    psql_in(&node, "app", "INSERT INTO items VALUES (1001, chr(120))").unwrap();
    // No cluster was made beside it, the old logs stay, the owner is kept.
    assert!(!root.join("data").exists(), "a new data directory appeared");
    for log in &logs_before {
        assert!(log.exists(), "{} was removed", log.display());
    }
    let wrong = not_postgres_owned(&root.join("pgdata"));
    assert!(wrong.is_empty(), "not owned by 101:103: {wrong:?}");
}

#[test]
fn a_pod_restarted_on_a_spilo_volume_of_17_with_another_pgversion() {
    restarted_on_a_spilo_volume(17, Some(15));
}

#[test]
fn a_pod_restarted_on_a_spilo_volume_of_15_without_pgversion() {
    restarted_on_a_spilo_volume(15, None);
}
