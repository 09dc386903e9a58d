//! What the backup tests share: an S3 store (moto's server, installed by
//! tests/setup, over HTTPS with a CA and certificate the test makes), a
//! posix repository, and the `spilo backup` commands of a node.
//!
//! Include it after `mod init_support;` (it uses that harness).

#![allow(dead_code)] // each test binary uses its own part

use std::cell::Cell;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::SanType;
use serde_json::Value;

use crate::init_support::{Node, NodeOptions, poll, process_table, tail};

#[path = "../tls_support/mod.rs"]
mod tls_support;

use tls_support::{ip_name, server_certificate};

/// moto's S3 server, as tests/setup installs it (SPILO_TEST_MOTO overrides).
pub fn moto_server() -> PathBuf {
    let path = std::env::var_os("SPILO_TEST_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/spilo-test/moto/bin/moto_server".into());
    assert!(
        path.is_file(),
        "{} missing: run tests/setup",
        path.display()
    );
    assert!(
        Path::new("/usr/bin/pgbackrest").is_file(),
        "/usr/bin/pgbackrest missing: run tests/setup"
    );
    path
}

/// The postgres user of the host (tests/setup's Debian packages).
pub const POSTGRES_UID: u32 = 101;

pub fn postgres_gid() -> u32 {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(POSTGRES_UID))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
        .unwrap_or(POSTGRES_UID)
}

/// A CA and a server certificate for one IP address, as PEM files in
/// `dir` (all readable by any user: pgBackRest reads the CA as postgres).
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn generate(dir: &Path, ip: &str) -> Self {
        fs::create_dir_all(dir).expect("tls dir");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        // The address as an IP name (curl, Python) and as a DNS name too:
        // pgBackRest's host check reads only the DNS names.
        let dns = SanType::DnsName(ip.try_into().expect("an IA5 string"));
        let pem = server_certificate("spilo-rs test S3 CA", ip, vec![ip_name(ip), dns]);
        let tls = Tls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        fs::write(&tls.ca, pem.ca).expect("write CA");
        fs::write(&tls.cert, pem.cert).expect("write certificate");
        fs::write(&tls.key, pem.key).expect("write key");
        for f in [&tls.ca, &tls.cert] {
            fs::set_permissions(f, fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        fs::set_permissions(&tls.key, fs::Permissions::from_mode(0o600)).expect("chmod");
        tls
    }
}

/// A port nothing listens on at `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

pub const ACCESS_KEY: &str = "AKIASPILOTEST";
pub const SECRET_KEY: &str = "spilo-test-secret-key";
pub const REGION: &str = "us-east-1";

/// moto's S3 over HTTPS on `ip` and a free port, with one bucket; killed
/// on drop. moto itself serves plain HTTP on another loopback port, behind
/// tls_proxy.py: werkzeug ends its connections without TLS's close_notify,
/// which pgBackRest (OpenSSL 3) takes for an error.
pub struct S3 {
    moto: Child,
    proxy: Child,
    pub ip: String,
    pub port: u16,
    pub bucket: String,
    pub tls: Tls,
    pub log: PathBuf,
}

impl S3 {
    pub fn start(dir: &Path, ip: &str, bucket: &str) -> Self {
        let moto = moto_server();
        let python = moto.with_file_name("python");
        let proxy_script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/backup_support/tls_proxy.py");
        let dir = dir.join("s3");
        let tls = Tls::generate(&dir, ip);
        let log = dir.join("moto.log");
        let proxy_log = dir.join("proxy.log");
        let mut errors = Vec::new();
        // A port found free can be taken before it is bound: try again.
        for _ in 0..3 {
            let (http_port, port) = (free_port(ip), free_port(ip));
            let out = fs::File::create(&log).expect("moto log");
            let moto = Command::new(&moto)
                .args(["-H", ip, "-p", &http_port.to_string()])
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .expect("start moto_server");
            let out = fs::File::create(&proxy_log).expect("proxy log");
            let proxy = Command::new(&python)
                .arg(&proxy_script)
                .args([ip, &port.to_string(), ip, &http_port.to_string()])
                .arg(&tls.cert)
                .arg(&tls.key)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .expect("start tls_proxy.py");
            let mut s3 = S3 {
                moto,
                proxy,
                ip: ip.to_owned(),
                port,
                bucket: bucket.to_owned(),
                tls: Tls {
                    ca: tls.ca.clone(),
                    cert: tls.cert.clone(),
                    key: tls.key.clone(),
                },
                log: log.clone(),
            };
            match s3.wait_ready(Duration::from_secs(30)) {
                Ok(()) => {
                    s3.create_bucket(bucket);
                    return s3;
                }
                Err(e) => errors.push(format!(
                    "{e}\n---- proxy ----\n{}",
                    fs::read_to_string(&proxy_log).unwrap_or_default()
                )),
            }
        }
        panic!("moto_server never became ready:\n{}", errors.join("\n"));
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}:{}", self.ip, self.port)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            for child in [&mut self.moto, &mut self.proxy] {
                if let Some(status) = child.try_wait().expect("wait moto") {
                    return Err(format!(
                        "moto_server or its proxy exited ({status}):\n{}",
                        tail(&fs::read_to_string(&self.log).unwrap_or_default(), 30)
                    ));
                }
            }
            if TcpStream::connect((self.ip.as_str(), self.port)).is_ok()
                && self.curl(&["-o", "/dev/null", "-w", "%{http_code}", &self.endpoint()])
                    == Ok("200".into())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on {} within {within:?}:\n{}",
                    self.endpoint(),
                    tail(&fs::read_to_string(&self.log).unwrap_or_default(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// curl with the test CA; its standard output, or its error.
    pub fn curl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.tls.ca)
            .args(args)
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let url = format!("{}/{bucket}", self.endpoint());
        let code = self
            .curl(&["-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", &url])
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
        assert_eq!(code, "200", "create bucket {bucket}: HTTP {code}");
    }

    /// The keys under `prefix` in the bucket (every page).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.objects(prefix)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// The keys under `prefix` with their ETags (their content's MD5).
    pub fn objects(&self, prefix: &str) -> Vec<(String, String)> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{}?list-type=2&prefix={}",
                self.endpoint(),
                self.bucket,
                urlencode(prefix)
            );
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let xml = self
                .curl(&[&url])
                .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
            let keys = xml_values(&xml, "Key");
            let etags = xml_values(&xml, "ETag");
            assert_eq!(
                keys.len(),
                etags.len(),
                "a listing with an ETag per key: {xml}"
            );
            objects.extend(keys.into_iter().zip(etags));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return objects;
            }
        }
    }

    /// WAL_S3_BUCKET and the rest, for a node whose own store this is.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with_endpoint(&self.endpoint())
    }

    pub fn env_with_endpoint(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("WAL_S3_BUCKET", self.bucket.as_str()),
            ("AWS_ENDPOINT", endpoint),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("WALG_S3_CA_CERT_FILE", &self.tls.ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        for child in [&mut self.proxy, &mut self.moto] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The texts of every `<tag>…</tag>` in `xml` (no nesting, no entities
/// beyond the five XML ones).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    found
}

/// Prefixes every variable with CLONE_ (a restore's source store).
pub fn clone_prefixed(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (format!("CLONE_{k}"), v.clone()))
        .collect()
}

/// Where a cluster's backups go.
pub enum Store<'a> {
    S3(&'a S3),
    /// WAL_LOCAL_PATH: a directory postgres owns.
    Posix(PathBuf),
}

impl Store<'_> {
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::S3(s3) => s3.env(),
            Store::Posix(dir) => vec![("WAL_LOCAL_PATH".into(), dir.display().to_string())],
        }
    }

    /// The operator's clone variables (`spec.clone` with the global
    /// bucket and no uid; a test's CA for moto).
    pub fn clone_env(&self, source_scope: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("CLONE_METHOD".to_owned(), "CLONE_WITH_WALE".to_owned()),
            ("CLONE_SCOPE".to_owned(), source_scope.to_owned()),
            ("CLONE_WAL_BUCKET_SCOPE_PREFIX".to_owned(), String::new()),
            ("CLONE_WAL_BUCKET_SCOPE_SUFFIX".to_owned(), String::new()),
        ];
        match self {
            Store::S3(s3) => {
                let endpoint = s3.endpoint();
                env.extend(clone_prefixed(&[
                    ("WAL_S3_BUCKET".to_owned(), s3.bucket.clone()),
                    ("AWS_ENDPOINT".to_owned(), endpoint.clone()),
                    ("WALE_S3_ENDPOINT".to_owned(), endpoint),
                    ("AWS_ACCESS_KEY_ID".to_owned(), ACCESS_KEY.to_owned()),
                    ("AWS_SECRET_ACCESS_KEY".to_owned(), SECRET_KEY.to_owned()),
                    ("AWS_S3_FORCE_PATH_STYLE".to_owned(), "1".to_owned()),
                    (
                        "WALG_S3_CA_CERT_FILE".to_owned(),
                        s3.tls.ca.display().to_string(),
                    ),
                ]));
            }
            Store::Posix(_) => env.extend(clone_prefixed(&self.env())),
        }
        env
    }

    /// The repository's files of `scope` with a fingerprint of each one's
    /// content (S3's ETag; a length and hash of a posix file's bytes).
    pub fn fingerprints(&self, scope: &str) -> Vec<(String, String)> {
        let root = format!("spilo/{scope}/pgbackrest/");
        match self {
            Store::S3(s3) => s3.objects(&root),
            Store::Posix(dir) => self
                .repository_files(scope)
                .into_iter()
                .map(|file| {
                    let bytes = fs::read(dir.join(&root).join(&file)).expect("a repository file");
                    let mut hasher = std::hash::DefaultHasher::new();
                    std::hash::Hash::hash(&bytes, &mut hasher);
                    let print = format!("{}:{:x}", bytes.len(), std::hash::Hasher::finish(&hasher));
                    (file, print)
                })
                .collect(),
        }
    }

    /// The repository's files (paths relative to it) of `scope`:
    /// `spilo/{scope}/pgbackrest/` in the bucket or under the directory.
    pub fn repository_files(&self, scope: &str) -> Vec<String> {
        let root = format!("spilo/{scope}/pgbackrest/");
        match self {
            Store::S3(s3) => s3
                .keys(&root)
                .into_iter()
                .filter_map(|k| k.strip_prefix(&root).map(str::to_owned))
                .collect(),
            Store::Posix(dir) => {
                let base = dir.join(&root);
                let mut files = Vec::new();
                walk(&base, &base, &mut files);
                files
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Store::S3(_) => "s3",
            Store::Posix(_) => "posix",
        }
    }
}

fn walk(base: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            walk(base, &path, found);
        } else if let Ok(rel) = path.strip_prefix(base) {
            found.push(rel.display().to_string());
        }
    }
}

/// A directory for WAL_LOCAL_PATH, owned by postgres.
pub fn posix_repository(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).expect("repository dir");
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(POSTGRES_UID)),
        Some(nix::unistd::Gid::from_raw(postgres_gid())),
    )
    .expect("chown repository");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).expect("chmod");
    dir.to_owned()
}

/// The spec `spilo init` writes for the backup commands.
pub fn spec_path(node: &Node) -> PathBuf {
    node.dir.join("run/backup.json")
}

/// `spilo backup ARGS --spec SPEC` as root, killed after `within`:
/// (success, stdout, stderr).
pub fn spilo_backup_within(node: &Node, args: &[&str], within: Duration) -> (bool, String, String) {
    let dir = node.dir.join("backup-cli");
    fs::create_dir_all(&dir).expect("output dir");
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = node
        .command(crate::init_support::spilo())
        .arg("backup")
        .args(args)
        .arg("--spec")
        .arg(spec_path(node))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout"))
        .stderr(fs::File::create(&err_path).expect("stderr"))
        .spawn()
        .expect("run spilo backup");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait spilo backup") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{}: `spilo backup {}` still running after {within:?}\nstdout: {}\nstderr: {}\n---- node log ----\n{}",
                node.name,
                args.join(" "),
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default(),
                tail(&node.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.success(),
        fs::read_to_string(&out_path).unwrap_or_default(),
        fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

pub fn spilo_backup(node: &Node, args: &[&str]) -> (bool, String, String) {
    spilo_backup_within(node, args, Duration::from_secs(60))
}

/// `spilo backup now`, which must succeed within `within`.
pub fn backup_now(node: &Node, within: Duration) {
    let started = Instant::now();
    let (ok, out, err) = spilo_backup_within(node, &["now"], within);
    assert!(
        ok,
        "{}: `spilo backup now` failed\nstdout: {out}\nstderr: {err}\n---- node log ----\n{}",
        node.name,
        tail(&node.log(), 40)
    );
    eprintln!(
        "{}: spilo backup now: {:.1}s",
        node.name,
        started.elapsed().as_secs_f64()
    );
}

/// `spilo backup list --json`, parsed; Err with its output otherwise.
pub fn backup_info(node: &Node) -> Result<Value, String> {
    let (ok, out, err) = spilo_backup(node, &["list", "--json"]);
    if !ok {
        return Err(format!("spilo backup list failed: {err}{out}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("not JSON ({e}): {out}{err}"))
}

/// The backups of `stanza` in pgBackRest's info, as it lists them.
fn stanza_backups<'a>(info: &'a Value, stanza: &'a str) -> impl Iterator<Item = &'a Value> {
    info.as_array()
        .into_iter()
        .flatten()
        .filter(move |s| s["name"] == stanza)
        .flat_map(|s| s["backup"].as_array().into_iter().flatten())
}

/// The backups of `stanza` in pgBackRest's info: (label, type).
pub fn backups(info: &Value, stanza: &str) -> Vec<(String, String)> {
    stanza_backups(info, stanza)
        .map(|b| {
            (
                b["label"].as_str().unwrap_or_default().to_owned(),
                b["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub fn full_backups(info: &Value, stanza: &str) -> Vec<String> {
    backups(info, stanza)
        .into_iter()
        .filter(|(_, kind)| kind == "full")
        .map(|(label, _)| label)
        .collect()
}

/// Waits for at least `count` full backups of `stanza` in the node's list.
pub fn wait_full_backups(node: &Node, stanza: &str, count: usize, within: Duration) -> Vec<String> {
    let last = Cell::new(String::new());
    poll(
        &format!("{count} full backups of {stanza} on {}", node.name),
        within,
        Duration::from_millis(500),
        || {
            match backup_info(node) {
                Ok(info) => {
                    let full = full_backups(&info, stanza);
                    if full.len() >= count {
                        return Some(full);
                    }
                    last.set(info.to_string());
                }
                Err(e) => last.set(e),
            }
            None
        },
        || format!("; last list: {}{}", last.take(), node.log_tail()),
    )
}

/// The node's PostgreSQL server log (csvlog under PGROOT/pg_log).
pub fn server_log(node: &Node) -> String {
    let dir = node.dir.join("pgroot/pg_log");
    let mut text = String::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for p in paths {
            text.push_str(&fs::read_to_string(&p).unwrap_or_default());
        }
    }
    text
}

/// On a failing test, copies the given directories (node logs, server
/// logs, the repository) to /tmp/spilo-backup-failed-* before their
/// Scratch removes them. Declare it after the Scratches, before the nodes.
pub struct KeepOnFailure {
    pub tag: String,
    pub paths: Vec<PathBuf>,
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let dest = PathBuf::from(format!("/tmp/spilo-backup-failed-{}-{stamp}", self.tag));
        let _ = fs::create_dir_all(&dest);
        for path in &self.paths {
            let _ = Command::new("cp").arg("-a").arg(path).arg(&dest).status();
        }
        eprintln!("kept for inspection: {}", dest.display());
    }
}

/// label, type and stop time (UTC) of each backup of `stanza`, for messages.
pub fn describe_backups(info: &Value, stanza: &str) -> String {
    stanza_backups(info, stanza)
        .map(|b| {
            format!(
                "{} {} start {} stop {}",
                b["label"].as_str().unwrap_or_default(),
                b["type"].as_str().unwrap_or_default(),
                b["timestamp"]["start"],
                b["timestamp"]["stop"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A schedule that does not fire while a test runs: the tests take their
/// backups with `spilo backup now` (the scheduler's own first backup
/// after bootstrap still runs).
pub const QUIET_SCHEDULE: &str = "0 0 1 1 *";

/// Variables from pairs.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A node of `scope` with a schedule that stays quiet, and `extra`.
pub fn options(
    name: &str,
    ip: &str,
    etcd: Option<&str>,
    scope: &str,
    extra: Vec<(String, String)>,
) -> NodeOptions {
    let mut options = NodeOptions::new(name, ip, etcd);
    options.extra_env = env(&[("SCOPE", scope), ("BACKUP_SCHEDULE", QUIET_SCHEDULE)]);
    options.extra_env.extend(extra);
    options
}

pub fn sql(node: &Node, query: &str) -> String {
    node.psql(query)
        .unwrap_or_else(|e| panic!("{}: {query}: {e}\n{}", node.name, tail(&node.log(), 30)))
}

/// A primary that takes writes (a row in table t).
pub fn wait_writable(node: &Node, within: Duration) {
    node.wait_for("a writable primary", within, || {
        (node.role().as_deref() == Some("primary"))
            .then(|| {
                node.psql("CREATE TABLE IF NOT EXISTS t (id int); INSERT INTO t VALUES (1)")
                    .ok()
            })
            .flatten()
    });
}

/// count|min|max of table r's ids.
pub fn r_summary(node: &Node) -> String {
    sql(
        node,
        "SELECT count(*) || '|' || min(id) || '|' || max(id) FROM r",
    )
}

/// Whether spilo init ended (or never ran).
pub fn exited(node: &Node) -> bool {
    let Some(pid) = node.pid() else { return true };
    process_table()
        .iter()
        .find(|(p, _, _)| *p == pid)
        .is_none_or(|(_, _, state)| *state == 'Z')
}

/// A clone or restore that cannot get its data: for `within` (or until
/// spilo init gives up, never with success) no primary, no PostgreSQL, no
/// PG_VERSION in PGDATA, no initdb ahead.
pub fn never_an_empty_cluster(node: &mut Node, within: Duration) {
    let pgdata = node.pgdata();
    let initdb_ahead = pgdata.with_file_name(".pgdata.initdb-ahead");
    let deadline = Instant::now() + within;
    let check = |node: &Node| {
        assert_ne!(
            node.role().as_deref(),
            Some("primary"),
            "a clone without its data became a primary:\n{}",
            tail(&node.log(), 40)
        );
        assert!(
            node.psql("SELECT 1").is_err(),
            "a PostgreSQL answers on the clone's socket:\n{}",
            tail(&node.log(), 40)
        );
        assert!(
            !pgdata.join("PG_VERSION").exists(),
            "{} has a PG_VERSION (an initdb?):\n{}",
            pgdata.display(),
            tail(&node.log(), 40)
        );
        assert!(
            !initdb_ahead.join("PG_VERSION").exists(),
            "an initdb ran ahead for a clone"
        );
    };
    while Instant::now() < deadline && !exited(node) {
        check(node);
        std::thread::sleep(Duration::from_millis(500));
    }
    check(node);
    if exited(node) {
        let status = node.wait_exit(Duration::from_secs(5));
        assert!(
            !status.success(),
            "spilo init exited 0:\n{}",
            tail(&node.log(), 40)
        );
        eprintln!("spilo init exited with {status}");
    } else {
        eprintln!("spilo init still running, no primary, after {within:?}");
    }
}

/// Ends the current WAL segment (after a write, so that there is one) and
/// waits until the node's archiver reports it archived; its name.
pub fn switch_and_wait_archived(node: &Node, within: Duration) -> String {
    sql(
        node,
        "CREATE TABLE IF NOT EXISTS switches (at timestamptz); INSERT INTO switches VALUES (now())",
    );
    let segment = sql(node, "SELECT pg_walfile_name(pg_switch_wal())");
    assert_eq!(segment.len(), 24, "a segment name: {segment:?}");
    let last = std::cell::RefCell::new(String::new());
    poll(
        &format!("{segment} archived on {}", node.name),
        within,
        Duration::from_millis(200),
        || {
            if let Ok(status) = node.psql(
                "SELECT coalesce(last_archived_wal, '') || '|' || archived_count || '|' || failed_count || '|' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
            ) {
                *last.borrow_mut() = status;
            }
            let last = last.borrow();
            let archived = last.split('|').next().unwrap_or_default();
            // Same timeline and at least as far (the names are fixed-width
            // hex; a history file sorts before its timeline's segments).
            (archived.len() == 24 && archived[..8] == segment[..8] && archived >= segment.as_str())
                .then_some(())
        },
        || {
            format!(
                "; pg_stat_archiver (last archived|archived|failed|last failed): {}{}",
                last.borrow(),
                node.log_tail()
            )
        },
    );
    segment
}
