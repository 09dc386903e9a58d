//! The container engine side of the image tests, shared by every test file
//! that runs the image: the engine command, the image built once per test
//! binary through the Dockerfile, and containers and networks that remove
//! themselves when dropped (also when a test fails).
//!
//! The engine is docker (its BuildKit, through the buildx plugin) when
//! `docker buildx version` and `docker info` answer, else podman (built
//! with `--format docker`, tests/podman/containers.conf);
//! CONTAINER_ENGINE overrides, and tests/image_podman.rs always uses
//! podman. CACERT is a CA bundle passed as the build secret `cacert`
//! (default: the host's, when present). The base image is made with
//! debootstrap (scripts/base-image.sh) when the engine lacks it.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const IMAGE: &str = "localhost/spilo-rs:test";
pub const COMPRESSED: &str = "localhost/spilo-rs:test-compressed";
pub const BASE: &str = "docker.io/library/debian:trixie-slim";
/// Debian's psql wrapper: the newest unpacked major's client, in every
/// image whatever its majors, used to reach every server.
pub const PSQL: &str = "/usr/bin/psql";
pub const SUPERUSER: &str = "host=127.0.0.1 user=postgres password=zalando dbname=postgres sslmode=require connect_timeout=5";
/// How long a new container may take to accept connections.
pub const READY: Duration = Duration::from_secs(180);

/// One scenario at a time: they are heavy and share the engine.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static ENGINE: OnceLock<String> = OnceLock::new();

/// The engine of this test binary, chosen once.
pub fn engine() -> &'static str {
    ENGINE.get_or_init(|| match std::env::var("CONTAINER_ENGINE") {
        Ok(chosen) if !chosen.is_empty() => chosen,
        _ if docker_builds() => "docker".into(),
        _ => "podman".into(),
    })
}

/// Makes this test binary use `name`, whatever CONTAINER_ENGINE says;
/// called before anything else uses the engine.
pub fn use_engine(name: &str) {
    let chosen = ENGINE.get_or_init(|| name.to_owned());
    assert_eq!(chosen, name, "the engine was chosen before use_engine");
}

/// Docker with BuildKit: the buildx plugin and a daemon that answers.
fn docker_builds() -> bool {
    let answers = |args: &[&str]| {
        Command::new("timeout")
            .args(["30", "docker"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    answers(&["buildx", "version"]) && answers(&["info"])
}

/// The engine, with the project's podman settings unless the caller has
/// their own.
pub fn engine_command(program: &str) -> Command {
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
pub fn cmd() -> Command {
    let mut cmd = engine_command("timeout");
    cmd.args(["--kill-after=10", "600", engine()]);
    cmd
}

pub fn output(args: &[&str]) -> Output {
    cmd().args(args).output().expect("run the container engine")
}

/// Runs the engine; panics with its output on failure.
pub fn ok(args: &[&str]) -> String {
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

pub fn exists(image: &str) -> bool {
    output(&["image", "inspect", image]).status.success()
}

pub fn build(tag: &str, extra: &[&str]) -> Result<(), String> {
    build_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        tag,
        extra,
        BuildLog::Show,
    )
    .map(|_| ())
}

/// Where a build's output goes.
#[derive(Clone, Copy, PartialEq)]
pub enum BuildLog {
    /// To the test's output, as it comes (a long build shows its progress).
    Show,
    /// Into the result, for a test that reads it.
    Capture,
}

/// Builds the Dockerfile of `context` (this checkout or a copy of it);
/// with `BuildLog::Capture`, the build's output is the value or the error.
pub fn build_in(
    context: &Path,
    tag: &str,
    extra: &[&str],
    log: BuildLog,
) -> Result<String, String> {
    let root = env!("CARGO_MANIFEST_DIR");
    if !exists(BASE) {
        let status = engine_command(&format!("{root}/scripts/base-image.sh"))
            .env("CONTAINER_ENGINE", engine())
            .arg(BASE)
            .status()
            .map_err(|e| format!("scripts/base-image.sh: {e}"))?;
        if !status.success() {
            return Err(format!("scripts/base-image.sh: {status}"));
        }
    }
    let mut build = engine_command(engine());
    let mut args: Vec<String> = vec!["build".into(), "-t".into(), tag.into()];
    if engine() == "docker" {
        build.env("DOCKER_BUILDKIT", "1");
        args.push("--progress=plain".into());
    } else {
        // HEALTHCHECK is part of the docker format only.
        args.extend(["--format".into(), "docker".into()]);
    }
    let cacert =
        std::env::var("CACERT").unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    if Path::new(&cacert).is_file() {
        args.extend(["--secret".into(), format!("id=cacert,src={cacert}")]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(context.display().to_string());
    let started = Instant::now();
    // A cold build takes many minutes: bounded by the CI job, not here.
    build.args(&args);
    let (status, output) = if log == BuildLog::Capture {
        let out = build.output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status, text)
    } else {
        (build.status().map_err(|e| e.to_string())?, String::new())
    };
    eprintln!(
        "built {tag} with {} in {:.0}s",
        engine(),
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{} {}: {status}\n{output}",
            engine(),
            args.join(" ")
        ))
    }
}

/// The image, built once per test binary (a no-op when cached).
pub fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(IMAGE, &[]))
        .as_ref()
        .expect("build the image");
    IMAGE
}

pub fn compressed_image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build(COMPRESSED, &["--build-arg", "COMPRESS=true"]))
        .as_ref()
        .expect("build the compressed image");
    COMPRESSED
}

/// A name no other test (or test process) uses.
pub fn unique(what: &str) -> String {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("spilo-test-{}-{what}-{n}", std::process::id())
}

/// A running container, removed when dropped (also when a test fails).
pub struct Container {
    pub name: String,
}

impl Container {
    /// Runs `image` detached, its host name the container's own name.
    pub fn run(image: &str, what: &str, options: &[&str], args: &[&str]) -> Container {
        let name = unique(what);
        Container::run_as(image, &name, &name, options, args)
    }

    /// The same with a host name of the caller's (a pod's name).
    pub fn run_with_hostname(
        image: &str,
        what: &str,
        hostname: &str,
        options: &[&str],
        args: &[&str],
    ) -> Container {
        Container::run_as(image, &unique(what), hostname, options, args)
    }

    fn run_as(
        image: &str,
        name: &str,
        hostname: &str,
        options: &[&str],
        args: &[&str],
    ) -> Container {
        let mut all = vec!["run", "-d", "--name", name, "--hostname", hostname];
        all.extend_from_slice(options);
        all.push(image);
        all.extend_from_slice(args);
        let container = Container {
            name: name.to_owned(),
        };
        ok(&all);
        container
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with(&[], args)
    }

    /// `exec` with options of its own (`-e`, `-w`, `-u`).
    pub fn exec_with(&self, options: &[&str], args: &[&str]) -> Output {
        let mut all = vec!["exec"];
        all.extend_from_slice(options);
        all.push(&self.name);
        all.extend_from_slice(args);
        output(&all)
    }

    pub fn sql(&self, query: &str) -> Result<String, String> {
        let out = self.exec(&[PSQL, SUPERUSER, "-v", "ON_ERROR_STOP=1", "-Atc", query]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Patroni's REST API, read from inside the container.
    pub fn api(&self, path: &str) -> Option<Value> {
        self.api_over("http", path)
    }

    /// Whether Patroni (over http or https) reports this member as the
    /// running leader of its cluster.
    fn leads(&self) -> bool {
        ["http", "https"].iter().any(|scheme| {
            self.api_over(scheme, "/cluster").is_some_and(|cluster| {
                cluster["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["role"] == "leader" && m["state"] == "running")
            })
        })
    }

    /// The same over `scheme` (https: the certificate is not checked).
    pub fn api_over(&self, scheme: &str, path: &str) -> Option<Value> {
        let script = format!(
            "import ssl, urllib.request, sys\ntry:\n    r = urllib.request.urlopen('{scheme}://127.0.0.1:8008{path}', timeout=5, context=ssl._create_unverified_context())\nexcept urllib.error.HTTPError as e:\n    r = e\nsys.stdout.write(r.read().decode())"
        );
        let out = self.exec(&["python3", "-c", &script]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The monitor's answer on 8080 at `path`, read from inside the
    /// container: (status, body).
    pub fn monitor(&self, path: &str) -> (u16, String) {
        let script = format!(
            "import urllib.request, sys\ntry:\n    r = urllib.request.urlopen('http://127.0.0.1:8080{path}', timeout=5)\nexcept urllib.error.HTTPError as e:\n    r = e\nsys.stdout.write(str(r.status) + '\\n' + r.read().decode())"
        );
        let out = self.exec(&["python3", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, body) = text.split_once('\n').unwrap_or(("0", ""));
        (status.parse().unwrap_or(0), body.to_owned())
    }

    /// The last 60 lines of its output.
    pub fn logs(&self) -> String {
        self.logs_with(&["--tail", "60"])
    }

    pub fn logs_with(&self, options: &[&str]) -> String {
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

    /// A field of `inspect`, e.g. `{{.State.Running}}`.
    pub fn inspect(&self, format: &str) -> String {
        ok(&["inspect", "--format", format, &self.name])
            .trim()
            .to_owned()
    }

    pub fn running(&self) -> bool {
        let out = output(&["inspect", "--format", "{{.State.Running}}", &self.name]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// Waits until the image's HEALTHCHECK passes. Podman runs it on
    /// demand (its timers need systemd); docker runs it every interval
    /// (30 s) and reports the result.
    pub fn wait_healthy(&self) {
        if engine() == "podman" {
            ok(&["healthcheck", "run", &self.name]);
            return;
        }
        wait_for(
            Duration::from_secs(150),
            &format!("{} healthy", self.name),
            || match self.inspect("{{.State.Health.Status}}").as_str() {
                "healthy" => Some(()),
                "unhealthy" => panic!(
                    "{} unhealthy: {}",
                    self.name,
                    self.inspect("{{json .State.Health}}")
                ),
                _ => None,
            },
            || self.inspect("{{json .State.Health}}"),
        );
    }

    /// Waits until PostgreSQL answers as the superuser over TCP with SSL
    /// and Patroni's bootstrap is over: the member holds the leader key
    /// and runs. PostgreSQL answers earlier, during the bootstrap, which
    /// may still restart or remove it.
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            match self.sql("SELECT 1") {
                Ok(one) if one == "1" && self.leads() => return,
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
        let _ = output(&["rm", "-f", "-v", &self.name]);
    }
}

/// A network of the test's own, removed when dropped.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(subnet: &str) -> Network {
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

/// The image's own manifest (`spilo manifest`).
pub fn manifest(image: &str) -> Value {
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

pub fn majors(manifest: &Value) -> Vec<&Value> {
    manifest["majors"]
        .as_array()
        .expect("majors")
        .iter()
        .collect()
}

/// Members of the cluster as one node's REST API sees them: name → (role, state).
pub fn members(node: &Container) -> BTreeMap<String, (String, String)> {
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

/// Polls `check` every 2 s until it gives a value; panics with `last()`
/// after `limit`.
pub fn wait_for<T>(
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
