//! Host-level harness for `spilo init`: real PostgreSQL 15, Patroni and
//! etcd, one loopback address per node, everything killed on drop.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
mod common;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const TTL: u64 = 20;
pub const LOOP_WAIT: u64 = 2;

/// Tests that use fixed addresses (the embedded etcd's 127.0.0.1:2379,
/// the nodes' 127.0.0.x) take this first.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn spilo() -> &'static str {
    env!("CARGO_BIN_EXE_spilo")
}

/// Patroni, after checking that the rest of the real tree is there too.
pub fn patroni() -> PathBuf {
    common::host_bin_dir();
    assert!(
        Path::new("/usr/bin/etcd").is_file(),
        "/usr/bin/etcd missing: run tests/setup"
    );
    common::patroni()
}

/// A scratch directory under /tmp that postgres (and any uid) can enter.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let path = tempfile::Builder::new()
            .prefix(&format!("spilo-test-{tag}-"))
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// An etcd for cluster tests, on its own ports.
pub struct Etcd {
    members: Vec<Child>,
    pub hosts: String,
}

impl Etcd {
    pub fn start(dir: &Path) -> Self {
        Self::cluster(dir, 1)
    }

    /// An etcd of `size` members on 127.0.0.1, client ports 2479, 2489...
    pub fn cluster(dir: &Path, size: usize) -> Self {
        Self::cluster_on(dir, "127.0.0.1", size)
    }

    /// The same on the address `ip`.
    pub fn cluster_on(dir: &Path, ip: &str, size: usize) -> Self {
        let port = |i: usize, peer: bool| 2479 + 10 * i as u16 + u16::from(peer);
        let url = |i, peer| format!("http://{ip}:{}", port(i, peer));
        let initial: Vec<String> = (0..size)
            .map(|i| format!("test{i}={}", url(i, true)))
            .collect();
        let members = (0..size)
            .map(|i| {
                let log = fs::File::create(dir.join(format!("etcd{i}.log"))).expect("etcd log");
                Command::new("/usr/bin/etcd")
                    .arg("--name")
                    .arg(format!("test{i}"))
                    .arg("--data-dir")
                    .arg(dir.join(format!("etcd{i}")))
                    .args(["--listen-client-urls", &url(i, false)])
                    .args(["--advertise-client-urls", &url(i, false)])
                    .args(["--listen-peer-urls", &url(i, true)])
                    .args(["--initial-advertise-peer-urls", &url(i, true)])
                    .arg(format!("--initial-cluster={}", initial.join(",")))
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .spawn()
                    .expect("start etcd")
            })
            .collect();
        let hosts: Vec<String> = (0..size)
            .map(|i| format!("{ip}:{}", port(i, false)))
            .collect();
        let etcd = Etcd {
            members,
            hosts: hosts.join(","),
        };
        for host in &hosts {
            wait_for("test etcd healthy", Duration::from_secs(20), || {
                http(host, "GET", "/health", None)
                    .filter(|(code, _)| *code == 200)
                    .map(drop)
            });
        }
        etcd
    }

    /// Sends `signal` to member `i` (SIGSTOP: it stops answering, as if
    /// cut off; SIGCONT: back; SIGKILL: gone).
    pub fn signal(&self, i: usize, signal: Signal) {
        send(self.members[i].id() as i32, signal);
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            send(member.id() as i32, Signal::SIGCONT);
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

pub struct NodeOptions {
    pub name: String,
    pub ip: String,
    /// None: the embedded etcd.
    pub etcd_hosts: Option<String>,
    pub synchronous: bool,
    /// Run `spilo init` as this uid (gid 0) instead of root.
    pub uid: Option<u32>,
    pub extra_env: Vec<(String, String)>,
    /// The node's directory seen at this path, the same for every node
    /// that names it (each in a mount namespace of its own), so that its
    /// PGHOME, PGROOT and RW_DIR are the same on every member, as in
    /// pods. Commands that read them run in its namespace (`command`).
    pub shared_dir: Option<PathBuf>,
    /// A network namespace to run in (`ip netns exec`).
    pub netns: Option<String>,
}

impl NodeOptions {
    pub fn new(name: &str, ip: &str, etcd_hosts: Option<&str>) -> Self {
        NodeOptions {
            name: name.into(),
            ip: ip.into(),
            etcd_hosts: etcd_hosts.map(str::to_owned),
            synchronous: false,
            uid: None,
            extra_env: Vec::new(),
            shared_dir: None,
            netns: None,
        }
    }
}

/// One `spilo init` and everything below it.
pub struct Node {
    pub name: String,
    pub ip: String,
    pub dir: PathBuf,
    child: Option<Child>,
    options: NodeOptions,
    pub started: Instant,
}

impl Node {
    pub fn dir_for(base: &Path, name: &str) -> PathBuf {
        base.join(name)
    }

    pub fn env(options: &NodeOptions, dir: &Path) -> Vec<(String, String)> {
        let ip = &options.ip;
        let configuration = json!({
            "postgresql": {
                "listen": format!("{ip}:5432"),
                "parameters": { "shared_buffers": "32MB" },
            },
            "restapi": { "listen": format!("{ip}:8008") },
            "bootstrap": { "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": 4,
                "synchronous_mode": options.synchronous,
                "postgresql": { "parameters": { "max_connections": 100 } },
            } },
        });
        let seen = options.shared_dir.as_deref().unwrap_or(dir);
        let path = |rel: &str| seen.join(rel).display().to_string();
        let mut env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOSTNAME".into(), options.name.clone()),
            ("POD_IP".into(), ip.clone()),
            ("SCOPE".into(), "spilo-test".into()),
            ("PGHOME".into(), path("home")),
            ("PGROOT".into(), path("pgroot")),
            ("RW_DIR".into(), path("run")),
            ("INITDB_LOCALE".into(), "C".into()),
            ("SPILO_PATRONI_BIN".into(), patroni().display().to_string()),
            ("SPILO_STOP_TIMEOUT".into(), "40".into()),
            ("SPILO_CONFIGURATION".into(), configuration.to_string()),
            // Each node's monitor on its own address, as in its own pod.
            ("BGMON_LISTEN_IP".into(), ip.clone()),
        ];
        if let Some(hosts) = &options.etcd_hosts {
            env.push(("ETCD3_HOSTS".into(), hosts.clone()));
        }
        env.extend(options.extra_env.iter().cloned());
        env
    }

    pub fn start(base: &Path, options: NodeOptions) -> Self {
        let dir = Self::dir_for(base, &options.name);
        fs::create_dir_all(&dir).expect("node dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut node = Node {
            name: options.name.clone(),
            ip: options.ip.clone(),
            dir,
            child: None,
            options,
            started: Instant::now(),
        };
        node.restart();
        node
    }

    /// Starts `spilo init` again over the same directories.
    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("node log");
        let mut command = match &self.options.shared_dir {
            Some(shared) => {
                fs::create_dir_all(shared).expect("shared dir");
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
                    .arg("sh")
                    .args([&self.dir, shared])
                    .arg(spilo());
                command
            }
            None => match &self.options.netns {
                Some(netns) => {
                    let mut command = Command::new("ip");
                    command.args(["netns", "exec", netns]).arg(spilo());
                    command
                }
                None => Command::new(spilo()),
            },
        };
        command
            .arg("init")
            .env_clear()
            .envs(Self::env(&self.options, &self.dir))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(uid) = self.options.uid {
            command.uid(uid).gid(0);
        }
        self.started = Instant::now();
        self.child = Some(command.spawn().expect("start spilo init"));
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("init.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The end of the log, under a heading, for a failure's message.
    pub fn log_tail(&self) -> String {
        format!(
            "\n---- {} log (tail) ----\n{}",
            self.name,
            tail(&self.log(), 50)
        )
    }

    /// [`wait_for`] on this node, every 200 ms: the panic shows its log's
    /// tail.
    pub fn wait_for<T>(&self, what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
        let what = format!("{what} on {}", self.name);
        poll(&what, within, Duration::from_millis(200), f, || {
            self.log_tail()
        })
    }

    /// Asserts that a line of its log contains `needle`.
    pub fn assert_logged(&self, needle: &str) {
        let log = self.log();
        assert!(
            log.contains(needle),
            "{}: no {needle:?} in the log:\n{}",
            self.name,
            tail(&log, 30)
        );
    }

    /// `program`, seeing the paths as this node does (in its mount
    /// namespace when it has one).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match (&self.options.shared_dir, self.pid()) {
            (Some(_), Some(pid)) => {
                let mut command = Command::new("nsenter");
                command
                    .args(["--mount", "--target", &pid.to_string(), "--"])
                    .arg(program);
                command
            }
            _ => Command::new(program),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run/postgresql")
    }

    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgroot/pgdata")
    }

    /// GET /patroni of this node.
    pub fn patroni_status(&self) -> Option<Value> {
        let (code, body) = http(&format!("{}:8008", self.ip), "GET", "/patroni", None)?;
        (code == 200 || code == 503).then(|| serde_json::from_str(&body).ok())?
    }

    pub fn role(&self) -> Option<String> {
        let status = self.patroni_status()?;
        (status["state"] == "running").then(|| status["role"].as_str().map(str::to_owned))?
    }

    /// SQL through the node's socket as the superuser; rows as text.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        psql_at(&self.socket_dir(), sql)
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            send(pid, signal);
        }
    }

    /// Waits for `spilo init` to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("node was started");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: spilo init still running after {within:?}\n{}",
                self.name,
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL to `spilo init` and every process below it, stopped first
    /// so that none can react.
    pub fn kill_tree(&mut self) {
        let Some(pid) = self.pid() else { return };
        let tree = descendants(pid);
        send(pid, Signal::SIGSTOP);
        for &p in &tree {
            send(p, Signal::SIGSTOP);
        }
        send(pid, Signal::SIGKILL);
        for &p in &tree {
            send(p, Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Processes still running with this node's directory in their
    /// command line (what a clean stop must not leave behind).
    pub fn leftovers(&self) -> Vec<String> {
        processes_mentioning(&self.dir)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- {} log (tail) ----\n{}",
                self.name,
                tail(&self.log(), 60)
            );
        }
        self.kill_tree();
        for pid in processes_mentioning(&self.dir)
            .iter()
            .filter_map(|l| l.split(' ').next()?.parse().ok())
        {
            send(pid, Signal::SIGKILL);
        }
    }
}

pub fn send(pid: i32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

pub fn psql_at(socket_dir: &Path, sql: &str) -> Result<String, String> {
    psql_as(socket_dir, 5432, "postgres", "postgres", sql)
}

/// SQL over the socket as `user`; `database` is a name or a connection
/// string. Rows as text, quiet.
pub fn psql_as(
    socket_dir: &Path,
    port: u16,
    user: &str,
    database: &str,
    sql: &str,
) -> Result<String, String> {
    let mut command = Command::new(format!("{PG_BIN}/psql"));
    command
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket_dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            database,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5");
    rows(&mut command)
}

/// Runs a psql command: its rows as text, or its error.
pub fn rows(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Every process below `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let table = process_table();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp, _) in &table {
            if *pp == parent && !found.contains(p) {
                found.push(*p);
                frontier.push(*p);
            }
        }
    }
    found
}

/// (pid, ppid, state) of every process.
pub fn process_table() -> Vec<(i32, i32, char)> {
    // Unreadable, the table would be empty and "no children left" vacuous.
    fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

/// "pid cmdline" of the living processes whose command line mentions `dir`.
pub fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    process_table()
        .into_iter()
        .filter(|(pid, _, state)| *pid != me && *state != 'Z')
        .filter_map(|(pid, _, _)| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{pid} {cmdline}"))
        })
        .collect()
}

/// A minimal HTTP/1.0 exchange: (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// Polls `f` until it gives a value; panics naming `what` after `within`.
pub fn wait_for<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(what, within, Duration::from_millis(100), f, String::new)
}

/// [`wait_for`], polling every `every`: the panic adds `context()` (the
/// last state seen, a log's tail).
pub fn poll<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}{}", context());
        }
        std::thread::sleep(every);
    }
}

/// Whether a hook reported a failure in this log (`spilo hook <name>:
/// error: ...`).
pub fn hook_failed(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("spilo hook ") && l.contains(": error: "))
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The cluster as one node's REST API sees it: name → (role, state).
pub fn members(node: &Node) -> Option<Vec<(String, String, String)>> {
    let (code, body) = http(&format!("{}:8008", node.ip), "GET", "/cluster", None)?;
    if code != 200 {
        return None;
    }
    let cluster: Value = serde_json::from_str(&body).ok()?;
    Some(
        cluster["members"]
            .as_array()?
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                (s("name"), s("role"), s("state"))
            })
            .collect(),
    )
}

/// As `wait_healthy`, for nodes owned together: the leader's index.
pub fn wait_leader_index(nodes: &[Node], replicas: usize, within: Duration) -> usize {
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = wait_healthy(&refs, replicas, within);
    nodes
        .iter()
        .position(|n| n.name == leader)
        .expect("the leader is one of the nodes")
}

/// Threads that load or watch a cluster, told to stop and joined when
/// dropped: declared after the nodes they use, so that those are dropped
/// (and stopped) after them, also when a test fails.
#[derive(Default)]
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Runs `work`, which polls the flag it gets and returns once it is set.
    pub fn spawn(&mut self, work: impl FnOnce(&std::sync::atomic::AtomicBool) + Send + 'static) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || work(&stop)));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Waits for one running leader and `replicas` streaming members; returns
/// the leader's name.
pub fn wait_healthy(nodes: &[&Node], replicas: usize, within: Duration) -> String {
    wait_for(
        &format!("a leader and {replicas} streaming replicas"),
        within,
        || {
            let view = nodes.iter().find_map(|n| members(n))?;
            let leader = view
                .iter()
                .find(|(_, role, state)| role == "leader" && state == "running")?;
            let streaming = view
                .iter()
                .filter(|(_, role, state)| role != "leader" && state == "streaming")
                .count();
            (streaming == replicas).then(|| leader.0.clone())
        },
    )
}

/// Waits for a writable primary (one more row in table t); returns how
/// long it took from the node's start.
pub fn writable_primary(node: &Node) -> Duration {
    wait_for("a writable primary", Duration::from_secs(60), || {
        (node.role().as_deref() == Some("primary"))
            .then(|| {
                node.psql("CREATE TABLE IF NOT EXISTS t (id int); INSERT INTO t VALUES (1)")
                    .ok()
            })
            .flatten()
    });
    node.started.elapsed()
}

/// Waits until a node other than those in `not` is a running leader.
pub fn wait_new_leader(nodes: &[&Node], not: &BTreeSet<String>, within: Duration) -> String {
    wait_for("a new leader", within, || {
        nodes
            .iter()
            .filter(|n| !not.contains(&n.name))
            .find_map(|n| (n.role().as_deref() == Some("primary")).then(|| n.name.clone()))
    })
}
