//! The image, end to end, in a real container engine: built through the
//! Dockerfile exactly as a user does, then run as a single node, per major,
//! as a three-node cluster with etcd, compressed, and under any UID with a
//! read-only root.
//!
//! A cold build takes about five minutes; the scenarios share one build
//! and run one at a time. CONTAINER_ENGINE picks the engine (podman, default, or docker); CACERT a
//! CA bundle passed as the build secret `cacert` (default: the host's, when
//! present). The base image is made with debootstrap when missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

const IMAGE: &str = "localhost/spilo-rs:test";
const COMPRESSED: &str = "localhost/spilo-rs:test-compressed";
const BASE: &str = "docker.io/library/debian:trixie-slim";
/// The default major's client, used to reach every server.
const PSQL: &str = "/usr/lib/postgresql/17/bin/psql";
const SUPERUSER: &str = "host=127.0.0.1 user=postgres password=zalando dbname=postgres sslmode=require connect_timeout=5";

/// One scenario at a time: they are heavy and share the engine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine() -> String {
    std::env::var("CONTAINER_ENGINE").unwrap_or_else(|_| "podman".into())
}

/// The engine, with the project's podman settings unless the caller has
/// their own.
fn engine_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    if engine() == "podman" && std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env(
            "CONTAINERS_CONF",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/podman/containers.conf"),
        );
    }
    cmd
}

/// An engine command bounded in time (runs, execs, inspections).
fn cmd() -> Command {
    let mut cmd = engine_command("timeout");
    cmd.args(["--kill-after=10", "600", &engine()]);
    cmd
}

fn output(args: &[&str]) -> Output {
    cmd().args(args).output().expect("run the container engine")
}

/// Runs the engine; panics with its output on failure.
fn ok(args: &[&str]) -> String {
    let out = output(args);
    assert!(
        out.status.success(),
        "{} {}: {}\n{}{}",
        engine(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exists(image: &str) -> bool {
    output(&["image", "inspect", image]).status.success()
}

fn build(tag: &str, extra: &[&str]) -> Result<(), String> {
    let root = env!("CARGO_MANIFEST_DIR");
    if !exists(BASE) {
        let status = engine_command(&format!("{root}/scripts/base-image.sh"))
            .arg(BASE)
            .status()
            .map_err(|e| format!("scripts/base-image.sh: {e}"))?;
        if !status.success() {
            return Err(format!("scripts/base-image.sh: {status}"));
        }
    }
    let mut args: Vec<String> = vec!["build".into(), "-t".into(), tag.into()];
    if engine() == "podman" {
        // HEALTHCHECK is part of the docker format only.
        args.extend(["--format".into(), "docker".into()]);
    }
    let cacert =
        std::env::var("CACERT").unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    if Path::new(&cacert).is_file() {
        args.extend(["--secret".into(), format!("id=cacert,src={cacert}")]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(root.into());
    let started = Instant::now();
    // A cold build takes many minutes: bounded by the CI job, not here.
    let status = engine_command(&engine())
        .args(&args)
        .status()
        .map_err(|e| e.to_string())?;
    eprintln!("built {tag} in {:.0}s", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} {}: {status}", engine(), args.join(" ")))
    }
}

fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(IMAGE, &[]))
        .as_ref()
        .expect("build the image");
    IMAGE
}

fn compressed_image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(COMPRESSED, &["--build-arg", "COMPRESS=true"]))
        .as_ref()
        .expect("build the compressed image");
    COMPRESSED
}

fn unique(what: &str) -> String {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("spilo-test-{}-{what}-{n}", std::process::id())
}

/// A running container, removed when dropped (also when a test fails).
struct Container {
    name: String,
}

impl Container {
    fn run(image: &str, what: &str, options: &[&str], args: &[&str]) -> Container {
        let name = unique(what);
        let mut all = vec!["run", "-d", "--name", &name, "--hostname", &name];
        all.extend_from_slice(options);
        all.push(image);
        all.extend_from_slice(args);
        let container = Container { name: name.clone() };
        ok(&all);
        container
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(args);
        output(&all)
    }

    fn sql(&self, query: &str) -> Result<String, String> {
        let out = self.exec(&[PSQL, SUPERUSER, "-v", "ON_ERROR_STOP=1", "-Atc", query]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Patroni's REST API, read from inside the container.
    fn api(&self, path: &str) -> Option<Value> {
        self.api_over("http", path)
    }

    /// The same over `scheme` (https: the certificate is not checked).
    fn api_over(&self, scheme: &str, path: &str) -> Option<Value> {
        let script = format!(
            "import ssl, urllib.request, sys\ntry:\n    r = urllib.request.urlopen('{scheme}://127.0.0.1:8008{path}', timeout=5, context=ssl._create_unverified_context())\nexcept urllib.error.HTTPError as e:\n    r = e\nsys.stdout.write(r.read().decode())"
        );
        let out = self.exec(&["python3", "-c", &script]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The last 60 lines of its output.
    fn logs(&self) -> String {
        self.logs_with(&["--tail", "60"])
    }

    fn logs_with(&self, options: &[&str]) -> String {
        let mut args = vec!["logs"];
        args.extend_from_slice(options);
        args.push(&self.name);
        let out = output(&args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn running(&self) -> bool {
        let out = output(&["inspect", "--format", "{{.State.Running}}", &self.name]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// Waits until PostgreSQL answers as the superuser over TCP with SSL.
    fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            match self.sql("SELECT 1") {
                Ok(one) if one == "1" => return,
                result => {
                    if started.elapsed() > limit || !self.running() {
                        panic!(
                            "{} not ready after {:.0}s (last: {result:?}); logs:\n{}",
                            self.name,
                            started.elapsed().as_secs_f64(),
                            self.logs()
                        );
                    }
                }
            }
            sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(&["rm", "-f", &self.name]);
    }
}

struct Network {
    name: String,
}

impl Network {
    fn create(subnet: &str) -> Network {
        let name = unique("net");
        ok(&["network", "create", "--subnet", subnet, &name]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = output(&["network", "rm", &self.name]);
    }
}

fn manifest(image: &str) -> Value {
    let text = ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/usr/local/bin/spilo",
        image,
        "manifest",
    ]);
    serde_json::from_str(&text).expect("the manifest is JSON")
}

fn majors(manifest: &Value) -> Vec<&Value> {
    manifest["majors"]
        .as_array()
        .expect("majors")
        .iter()
        .collect()
}

const READY: Duration = Duration::from_secs(180);

#[test]
fn a_container_without_configuration_is_a_single_node_cluster() {
    let _serial = serial();
    let node = Container::run(image(), "single", &[], &[]);
    node.wait_ready(READY);
    assert_eq!(node.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
    let patroni = node.api("/patroni").expect("Patroni answers");
    assert_eq!(patroni["role"], "primary", "{patroni}");
    // The default major runs.
    let default = manifest(IMAGE)["default_major"]
        .as_u64()
        .expect("default_major");
    let version = node.sql("SHOW server_version_num").unwrap();
    assert!(version.starts_with(&default.to_string()), "{version}");
    // A new member of its own cluster: initdb ran while Patroni started.
    let logs = node.logs_with(&[]);
    assert!(
        logs.contains("spilo initdb: took over the cluster made ahead"),
        "{logs}"
    );
    if engine() == "podman" {
        // The image's HEALTHCHECK, run on demand.
        ok(&["healthcheck", "run", &node.name]);
    }
    // The OAuth2 PAM module where `pam_oauth2.so` resolves, and the PAM
    // service as a link to the file `spilo configure` renders in RW_DIR.
    let module = node.exec(&["sh", "-c", "ls /usr/lib/*-linux-gnu/security/pam_oauth2.so"]);
    assert!(module.status.success(), "pam_oauth2.so is not installed");
    let link = node.exec(&["readlink", "/etc/pam.d/postgresql"]);
    assert_eq!(
        String::from_utf8_lossy(&link.stdout).trim(),
        "/run/pam.d/postgresql"
    );
}

/// Extensions of the optional packages, and what each needs preloaded.
fn optional_extensions(major: u32) -> BTreeMap<String, &'static str> {
    [
        ("pgvector", "vector"),
        ("cron", "pg_cron"),
        ("pgaudit", "pgaudit"),
        ("hypopg", "hypopg"),
        ("partman", "pg_partman"),
        ("plpgsql-check", "plpgsql_check"),
        ("set-user", "set_user"),
        ("pg-stat-kcache", "pg_stat_kcache"),
    ]
    .into_iter()
    .map(|(suffix, ext)| (format!("postgresql-{major}-{suffix}"), ext))
    .collect()
}

#[test]
fn every_major_creates_its_extensions() {
    let _serial = serial();
    let manifest = manifest(image());
    for entry in majors(&manifest) {
        let major = entry["major"].as_u64().expect("major") as u32;
        let packages = entry["packages"].as_object().expect("packages");
        let optional = optional_extensions(major);
        let shipped: Vec<&str> = optional
            .iter()
            .filter(|(package, _)| packages.contains_key(*package))
            .map(|(_, ext)| *ext)
            .collect();
        let preload: Vec<&str> = [
            "pg_stat_statements",
            "set_user",
            "pg_cron",
            "pg_stat_kcache",
            "pgaudit",
        ]
        .into_iter()
        .filter(|l| *l == "pg_stat_statements" || shipped.contains(l))
        .collect();
        let configuration = format!(
            r#"{{"postgresql": {{"parameters": {{"shared_preload_libraries": "{}"}}}}}}"#,
            preload.join(",")
        );
        let env_version = format!("PGVERSION={major}");
        let env_config = format!("SPILO_CONFIGURATION={configuration}");
        let node = Container::run(
            image(),
            &format!("pg{major}"),
            &["-e", &env_version, "-e", &env_config],
            &[],
        );
        node.wait_ready(READY);
        let version = node.sql("SHOW server_version_num").unwrap();
        assert!(
            version.starts_with(&major.to_string()),
            "PGVERSION={major} runs {version}"
        );
        let mut extensions = vec!["postgis", "pg_repack", "pg_stat_statements", "pgcrypto"];
        extensions.extend(&shipped);
        for ext in extensions {
            node.sql(&format!("CREATE EXTENSION IF NOT EXISTS {ext} CASCADE"))
                .unwrap_or_else(|e| panic!("PostgreSQL {major}: CREATE EXTENSION {ext}: {e}"));
        }
        let postgis = node.sql("SELECT postgis_full_version()").unwrap();
        assert!(postgis.contains("POSTGIS="), "{postgis}");
        // wal2json is an output plugin, not an extension: it must load.
        if packages.contains_key(&format!("postgresql-{major}-wal2json")) {
            node.sql("LOAD 'wal2json'")
                .unwrap_or_else(|e| panic!("PostgreSQL {major}: wal2json: {e}"));
        }
    }
}

/// Members of the cluster as one node's REST API sees them: name → (role, state).
fn members(node: &Container) -> BTreeMap<String, (String, String)> {
    let Some(cluster) = node.api("/cluster") else {
        return BTreeMap::new();
    };
    cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                (
                    m["role"].as_str().unwrap_or_default().to_owned(),
                    m["state"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    last: impl Fn() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        if started.elapsed() > limit {
            panic!("{what}: not within {}s; {}", limit.as_secs(), last());
        }
        sleep(Duration::from_secs(2));
    }
}

#[test]
fn three_nodes_with_etcd_elect_stream_and_fail_over() {
    let _serial = serial();
    let image = image();
    let net = Network::create("10.89.77.0/24");
    let network = format!("--network={}", net.name);
    let etcd = Container::run(
        image,
        "etcd",
        &[&network, "--ip=10.89.77.10", "--entrypoint=/usr/bin/etcd"],
        &[
            "--name=etcd",
            "--data-dir=/run/etcd",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://10.89.77.10:2379",
        ],
    );
    let nodes: Vec<Container> = (1..=3)
        .map(|i| {
            Container::run(
                image,
                &format!("node{i}"),
                &[
                    &network,
                    &format!("--ip=10.89.77.{}", 10 + i),
                    "-e",
                    "SCOPE=demo",
                    "-e",
                    "ETCD3_HOSTS=10.89.77.10:2379",
                ],
                &[],
            )
        })
        .collect();
    let all_members = || {
        nodes
            .iter()
            .map(|n| format!("{}: {:?}", n.name, members(n)))
            .collect::<Vec<_>>()
            .join("; ")
            + &format!("\netcd logs:\n{}", etcd.logs())
    };
    let leader = wait_for(
        Duration::from_secs(300),
        "a leader and two streaming replicas",
        || {
            let m = members(&nodes[0]);
            let leader = m.iter().find(|(_, (role, _))| role == "leader")?.0.clone();
            let streaming = m
                .values()
                .filter(|(role, state)| role == "replica" && state == "streaming")
                .count();
            (m.len() == 3 && streaming == 2).then_some(leader)
        },
        all_members,
    );
    let old = nodes
        .iter()
        .position(|n| n.name == leader)
        .expect("the leader is one of ours");
    ok(&["stop", "-t", "20", &nodes[old].name]);
    let survivor = &nodes[(old + 1) % 3];
    let new = wait_for(
        Duration::from_secs(180),
        "a replica promoted after the leader stopped",
        || {
            let m = members(survivor);
            m.iter()
                .find(|(name, (role, _))| role == "leader" && **name != leader)
                .map(|(name, _)| name.clone())
        },
        || format!("{}: {:?}", survivor.name, members(survivor)),
    );
    let promoted = nodes.iter().find(|n| n.name == new).expect("new leader");
    assert_eq!(promoted.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
}

#[test]
fn the_compressed_image_unpacks_only_the_major_it_runs() {
    let _serial = serial();
    let image = compressed_image();
    let manifest = manifest(image);
    let default = manifest["default_major"].as_u64().expect("default_major");
    let packed: Vec<u64> = majors(&manifest)
        .iter()
        .filter(|m| !m["archive"].is_null())
        .map(|m| m["major"].as_u64().expect("major"))
        .collect();
    assert!(
        !packed.is_empty() && !packed.contains(&default),
        "packed: {packed:?}"
    );
    let major = packed[0];
    let env_version = format!("PGVERSION={major}");
    let node = Container::run(image, &format!("packed{major}"), &["-e", &env_version], &[]);
    node.wait_ready(READY);
    let version = node.sql("SHOW server_version_num").unwrap();
    assert!(version.starts_with(&major.to_string()), "{version}");
    // Exactly one postgres binary was unpacked, and it is this major's.
    let found = node.exec(&["find", "/run", "/tmp", "-path", "*/bin/postgres"]);
    let found = String::from_utf8_lossy(&found.stdout).into_owned();
    let unpacked: Vec<&str> = found.lines().collect();
    assert_eq!(unpacked.len(), 1, "unpacked: {unpacked:?}");
    assert!(
        unpacked[0].contains(&format!("/usr/lib/postgresql/{major}/bin/postgres")),
        "{unpacked:?}"
    );
    node.sql("CREATE EXTENSION postgis")
        .unwrap_or_else(|e| panic!("postgis from the unpacked major: {e}"));
}

#[test]
fn any_uid_with_a_read_only_root_filesystem() {
    let _serial = serial();
    let node = Container::run(
        image(),
        "anyuid",
        &[
            "--user=1000321:0",
            "--read-only",
            "--tmpfs=/run:rw,exec,mode=1777",
            "--tmpfs=/tmp:rw,mode=1777",
            "--tmpfs=/home/postgres/pgdata:rw,mode=1777",
        ],
        &[],
    );
    node.wait_ready(READY);
    let who = node
        .sql("SELECT current_setting('data_directory')")
        .unwrap();
    assert!(who.starts_with("/home/postgres/pgdata"), "{who}");
    let uid = node.exec(&["id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "1000321");
}

#[test]
fn the_healthcheck_follows_the_rest_api_onto_tls() {
    let _serial = serial();
    let pair = spilo::render::certificate::self_signed("localhost").expect("certificate");
    let env = [
        format!("SSL_RESTAPI_CERTIFICATE={}", pair.cert_pem),
        format!("SSL_RESTAPI_PRIVATE_KEY={}", pair.key_pem),
    ];
    let node = Container::run(image(), "apitls", &["-e", &env[0], "-e", &env[1]], &[]);
    node.wait_ready(READY);
    wait_for(
        Duration::from_secs(60),
        "Patroni over HTTPS",
        || {
            node.api_over("https", "/patroni")
                .filter(|p| p["role"] == "primary")
        },
        || node.logs(),
    );
    assert!(node.api("/patroni").is_none(), "plain HTTP still answers");
    if engine() == "podman" {
        ok(&["healthcheck", "run", &node.name]);
    }
}
