//! `spilo init` on one node: the single-container default (embedded
//! etcd), an arbitrary non-root uid, bad volumes and data directories,
//! clean stops and zombies.

mod init_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use init_support::*;
use nix::sys::signal::Signal;

/// No child of `pid` stays a zombie: one seen twice, a second apart,
/// was never reaped.
fn assert_no_lasting_zombies(pid: i32) {
    let zombies = || -> Vec<i32> {
        process_table()
            .into_iter()
            .filter(|(_, ppid, state)| *ppid == pid && *state == 'Z')
            .map(|(p, _, _)| p)
            .collect()
    };
    let first = zombies();
    std::thread::sleep(Duration::from_secs(1));
    let lasting: Vec<i32> = zombies()
        .into_iter()
        .filter(|p| first.contains(p))
        .collect();
    assert!(lasting.is_empty(), "zombies not reaped: {lasting:?}");
}

fn stop_cleanly(node: &mut Node) {
    let pid = node.pid().expect("running");
    let tree = descendants(pid);
    node.signal(Signal::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(45));
    assert_eq!(status.code(), Some(0), "{}", tail(&node.log(), 30));
    let left: Vec<i32> = process_table()
        .into_iter()
        .filter(|(p, _, _)| tree.contains(p))
        .map(|(p, _, _)| p)
        .collect();
    assert!(left.is_empty(), "processes left after SIGTERM: {left:?}");
    assert!(node.leftovers().is_empty(), "{:?}", node.leftovers());
}

#[test]
fn single_node_with_embedded_etcd_is_a_writable_primary_and_stops_cleanly() {
    let _serial = serial();
    let scratch = Scratch::new("single");
    // A separate WAL volume, and pgbouncer in front of the server (over its
    // unix socket, so the SSL-only pg_hba does not apply).
    let wal = scratch.path.join("walvol");
    let socket_dir = Node::dir_for(&scratch.path, "single").join("run/postgresql");
    let mut options = NodeOptions::new("single", "127.0.0.2", None);
    options.extra_env = vec![
        ("PGWAL".into(), wal.display().to_string()),
        ("SPILO_PGBOUNCER_BIN".into(), "/usr/sbin/pgbouncer".into()),
        (
            "PGBOUNCER_CONFIGURATION".into(),
            format!(
                "[databases]\npostgres = host={} port=5432 user=postgres\n[pgbouncer]\nlisten_addr = 127.0.0.2\nlisten_port = 6432\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n",
                socket_dir.display(),
                Node::dir_for(&scratch.path, "single")
                    .join("run/pgbouncer/userlist.txt")
                    .display()
            ),
        ),
        (
            "PGBOUNCER_AUTHENTICATION".into(),
            "\"postgres\" \"\"\n".into(),
        ),
    ];
    let mut node = Node::start(&scratch.path, options);
    let took = writable_primary(&node);
    eprintln!(
        "single node: writable primary {:.2}s after exec",
        took.as_secs_f64()
    );

    // The roles post_init creates (the operator's users are IN ROLE these).
    // Patroni may report a primary before post_init has finished.
    let expected = "admin:false:true,cron_admin:false:false,zalandos:false:false";
    let sql = "SELECT string_agg(rolname || ':' || rolcanlogin || ':' || rolcreatedb, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('admin', 'zalandos', 'cron_admin')";
    wait_for(
        "the roles post_init creates",
        Duration::from_secs(30),
        || (node.psql(sql).ok()? == expected).then_some(()),
    );

    // Patroni and PostgreSQL run as postgres, etcd too; init stays root.
    let log = node.log();
    node.assert_logged("etcd is ready");
    wait_for("post_init's report", Duration::from_secs(10), || {
        node.log()
            .contains("spilo hook post-init: roles ensured: admin, zalandos, cron_admin")
            .then_some(())
    });
    let pid = node.pid().expect("running");
    let postgres_uid = nix::unistd::User::from_name("postgres")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for child in descendants(pid) {
        let owner = fs::metadata(format!("/proc/{child}")).map(|m| m.uid());
        assert!(
            owner.is_err() || owner.unwrap() == postgres_uid,
            "pid {child} is not postgres"
        );
    }
    let data = fs::metadata(node.pgdata()).unwrap();
    assert_eq!((data.uid(), data.mode() & 0o777), (postgres_uid, 0o700));

    // initdb --waldir: pg_wal lives on the WAL volume.
    assert_eq!(fs::read_link(node.pgdata().join("pg_wal")).unwrap(), wal);
    assert!(fs::read_dir(&wal).unwrap().count() > 0);
    // Through pgbouncer to the primary.
    let through_bouncer = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.2",
            "-p",
            "6432",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-c", "SELECT count(*) FROM t"])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    assert!(
        through_bouncer.status.success(),
        "psql through pgbouncer: {}\n{}",
        String::from_utf8_lossy(&through_bouncer.stderr),
        tail(&log, 20)
    );
    assert_eq!(String::from_utf8_lossy(&through_bouncer.stdout).trim(), "1");

    // Patroni crashes: it is restarted and takes up the running server.
    let patroni_pid = process_table()
        .into_iter()
        .find(|(p, ppid, _)| {
            *ppid == pid
                && fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("patroni"))
        })
        .map(|(p, _, _)| p)
        .expect("patroni is a child of init");
    send(patroni_pid, Signal::SIGKILL);
    wait_for("patroni restarted", Duration::from_secs(20), || {
        node.log().contains("restarting patroni in").then_some(())
    });
    writable_primary(&node);
    // One row per writable_primary call: nothing was lost.
    assert_eq!(node.psql("SELECT count(*) FROM t").unwrap(), "2");

    assert_no_lasting_zombies(pid);
    stop_cleanly(&mut node);
    // Patroni first, then the companions: pgbouncer, then etcd.
    let log = node.log();
    assert!(!hook_failed(&log), "{}", tail(&log, 30));
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle} not in log"))
    };
    assert!(at("patroni stopped") < at("sending SIGINT to pgbouncer"));
    assert!(at("pgbouncer stopped") < at("sending SIGTERM to etcd"));

    // A volume handed back with some files of another owner (a restore
    // made as root): exactly those are given back to postgres, and the
    // server starts again on the same data.
    for wrong in [
        node.pgdata(),
        node.pgdata().join("PG_VERSION"),
        node.pgdata().join("base"),
    ] {
        std::os::unix::fs::lchown(&wrong, Some(0), Some(0)).unwrap();
    }
    node.restart();
    writable_primary(&node);
    assert!(
        node.log()
            .contains("PGDATA: gave 3 files of the wrong owner to postgres"),
        "{}",
        tail(&node.log(), 40)
    );
    assert_eq!(node.psql("SELECT count(*) FROM t").unwrap(), "3");
    stop_cleanly(&mut node);
}

#[test]
fn an_arbitrary_uid_runs_with_only_its_volumes_writable() {
    let _serial = serial();
    let scratch = Scratch::new("uid");
    let uid = 12345;
    let dir = Node::dir_for(&scratch.path, "anyuid");
    // The image's PGHOME is read-only, with the link to RW_DIR's config
    // made at build time; the data volume and RW_DIR belong to the uid.
    fs::create_dir_all(dir.join("home")).unwrap();
    std::os::unix::fs::symlink(dir.join("run/postgres.yml"), dir.join("home/postgres.yml"))
        .unwrap();
    for writable in ["pgroot", "run"] {
        fs::create_dir_all(dir.join(writable)).unwrap();
        std::os::unix::fs::chown(dir.join(writable), Some(uid), Some(0)).unwrap();
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut options = NodeOptions::new("anyuid", "127.0.0.2", None);
    options.uid = Some(uid);
    let mut node = Node::start(&scratch.path, options);
    let took = writable_primary(&node);
    eprintln!(
        "uid {uid}: writable primary {:.2}s after exec",
        took.as_secs_f64()
    );

    // initdb ran ahead as the uid too (it needs the passwd entry below).
    node.assert_logged("spilo initdb: took over the cluster made ahead");

    // nss_wrapper gave the uid a name; /etc/passwd was not touched.
    let passwd = fs::read_to_string(dir.join("run/nss/passwd")).expect("nss passwd");
    assert!(passwd.contains(&format!("postgres:x:{uid}:0:")), "{passwd}");
    assert!(
        !fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains(&uid.to_string())
    );
    let postmaster = fs::read_to_string(node.pgdata().join("postmaster.pid")).unwrap();
    let postmaster_pid = postmaster.lines().next().unwrap();
    assert_eq!(
        fs::metadata(format!("/proc/{postmaster_pid}"))
            .unwrap()
            .uid(),
        uid
    );
    let current = node.psql("SELECT current_user").unwrap();
    assert_eq!(current, "postgres");
    stop_cleanly(&mut node);
    // Nothing of the uid's outside its volumes, even in world-writable /tmp
    // (a read-only root filesystem leaves nothing else).
    let stray: Vec<String> = owned_by(Path::new("/tmp"), uid)
        .into_iter()
        .filter(|p| !p.starts_with(&scratch.path))
        .map(|p| p.display().to_string())
        .collect();
    assert!(stray.is_empty(), "written outside its volumes: {stray:?}");
}

/// Files under `dir` owned by `uid` (not following links).
fn owned_by(dir: &Path, uid: u32) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == uid {
            found.push(path.clone());
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    found
}

fn run_init_expecting_failure(env: Vec<(String, String)>, uid: Option<u32>) -> String {
    let mut command = Command::new(spilo());
    command.arg("init").env_clear().envs(env);
    if let Some(uid) = uid {
        std::os::unix::process::CommandExt::uid(&mut command, uid);
        std::os::unix::process::CommandExt::gid(&mut command, 0);
    }
    let started = Instant::now();
    let out = command.output().expect("run spilo init");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
    stderr
}

/// A listing of a tree with contents and modes, to prove it unchanged.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let contents = if meta.is_file() {
            fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        out.push(format!(
            "{} {:o} {} {:?}",
            path.display(),
            meta.mode(),
            meta.uid(),
            contents
        ));
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_locale_that_is_not_installed_stops_init_before_anything_starts() {
    let scratch = Scratch::new("locale");
    let mut options = NodeOptions::new("nolocale", "127.0.0.2", Some("127.0.0.1:1"));
    // A locale no system has (this host lacks the default en_US too).
    options.extra_env = vec![("INITDB_LOCALE".into(), "xx_NOWHERE".into())];
    let dir = Node::dir_for(&scratch.path, "nolocale");
    let stderr = run_init_expecting_failure(Node::env(&options, &dir), None);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(
            "INITDB_LOCALE=xx_NOWHERE: the locale xx_NOWHERE.UTF-8 is not installed here (available: "
        ) && errors[0].contains("C.utf8"),
        "{stderr}"
    );
    assert!(!dir.join("pgroot/pgdata").exists(), "PGDATA was prepared");
    assert!(
        !dir.join("run/postgres.yml").exists(),
        "configuration written"
    );
}

#[test]
fn a_data_directory_of_a_missing_major_is_refused_untouched() {
    let scratch = Scratch::new("major");
    let options = NodeOptions::new("old", "127.0.0.2", Some("127.0.0.1:1"));
    let dir = Node::dir_for(&scratch.path, "old");
    let data = dir.join("pgroot/pgdata");
    fs::create_dir_all(data.join("base")).unwrap();
    fs::write(data.join("PG_VERSION"), "11\n").unwrap();
    fs::write(data.join("base/16384"), "precious").unwrap();
    let before = snapshot(&dir);
    let stderr = run_init_expecting_failure(Node::env(&options, &dir), None);
    assert!(stderr.contains("PG_VERSION"), "{stderr}");
    assert!(stderr.contains("PostgreSQL 11"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert_eq!(snapshot(&dir), before);

    // The same line as a JSON object for log shippers.
    let mut env = Node::env(&options, &dir);
    env.push(("SPILO_LOG_FORMAT".into(), "json".into()));
    let stderr = run_init_expecting_failure(env, None);
    let line: serde_json::Value = serde_json::from_str(stderr.trim()).expect("one JSON object");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["message"].as_str().unwrap().contains("PostgreSQL 11"),
        "{line}"
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn an_unwritable_data_volume_is_refused_untouched() {
    let scratch = Scratch::new("rovol");
    let uid = 12346;
    let options = NodeOptions::new("ro", "127.0.0.2", Some("127.0.0.1:1"));
    let dir = Node::dir_for(&scratch.path, "ro");
    fs::create_dir_all(dir.join("pgroot")).unwrap();
    fs::create_dir_all(dir.join("run")).unwrap();
    std::os::unix::fs::chown(dir.join("run"), Some(uid), Some(0)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();

    // PGROOT belongs to root: the uid cannot create PGDATA in it.
    let stderr = run_init_expecting_failure(Node::env(&options, &dir), Some(uid));
    assert!(stderr.contains("PGDATA="), "{stderr}");
    assert!(stderr.contains("cannot create the directory"), "{stderr}");
    assert!(!dir.join("pgroot/pgdata").exists());

    // An existing data directory of another owner is not taken over.
    let data = dir.join("pgroot/pgdata");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&dir.join("pgroot"));
    let stderr = run_init_expecting_failure(Node::env(&options, &dir), Some(uid));
    assert!(stderr.contains("cannot take it over"), "{stderr}");
    assert_eq!(snapshot(&dir.join("pgroot")), before);
}

/// A tmpfs mounted for the length of a test.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mounting a tmpfs needs root (tests run as root)");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_data_volume_is_refused_untouched() {
    let scratch = Scratch::new("full");
    let options = NodeOptions::new("full", "127.0.0.2", Some("127.0.0.1:1"));
    let dir = Node::dir_for(&scratch.path, "full");
    // 8 MB: less than one WAL segment's worth of room.
    let _volume = Tmpfs::mount(&dir.join("pgroot"), "8m");
    let stderr = run_init_expecting_failure(Node::env(&options, &dir), None);
    assert!(stderr.contains("PGROOT="), "{stderr}");
    assert!(stderr.contains("the volume is full"), "{stderr}");
    assert_eq!(fs::read_dir(dir.join("pgroot")).unwrap().count(), 0);
}

/// Every file and link under `dir` (what `spilo-build compress` packs).
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_packed_major_is_unpacked_under_rw_dir_and_run() {
    use spilo_build::compress::{self, ArchiveInfo, Format};
    let _serial = serial();
    let scratch = Scratch::new("packed");
    // The host's PostgreSQL 15, packed as a compressed image keeps it.
    let root = scratch.path.join("postgres-root");
    let mut paths = entries(Path::new("/usr/lib/postgresql/15"));
    paths.extend(entries(Path::new("/usr/share/postgresql/15")));
    let archive = compress::archive_dir(&root).join("15.tar.zst");
    let (files, bytes) = compress::pack(Path::new("/"), &paths, &archive, Format::Zstd, 1).unwrap();
    let info = ArchiveInfo {
        major: 15,
        format: Format::Zstd,
        file: "15.tar.zst".into(),
        bytes: fs::metadata(&archive).unwrap().len(),
        unpacked_bytes: bytes,
        files,
        library_dirs: Vec::new(),
        extensions: Vec::new(),
        packages: Vec::new(),
        unpack_seconds: 0.0,
    };
    info.write(&root).unwrap();

    let mut options = NodeOptions::new("packed", "127.0.0.2", None);
    options.extra_env = vec![("SPILO_POSTGRES_ROOT".into(), root.display().to_string())];
    let mut node = Node::start(&scratch.path, options);
    writable_primary(&node);
    node.assert_logged("PostgreSQL 15: unpacked in");
    let postmaster = fs::read_to_string(node.pgdata().join("postmaster.pid")).unwrap();
    let exe = fs::read_link(format!("/proc/{}/exe", postmaster.lines().next().unwrap())).unwrap();
    let unpacked = node
        .dir
        .join("run/spilo/majors/15/usr/lib/postgresql/15/bin/postgres");
    assert_eq!(exe, unpacked);
    stop_cleanly(&mut node);
}

#[test]
fn a_missing_certificate_is_refused_before_anything_is_written() {
    let scratch = Scratch::new("cert");
    let options = NodeOptions::new("cert", "127.0.0.2", Some("127.0.0.1:1"));
    let dir = Node::dir_for(&scratch.path, "cert");
    let key = scratch.path.join("given.key");
    fs::write(&key, "not really a key").unwrap();
    let mut env = Node::env(&options, &dir);
    env.push((
        "SSL_CERTIFICATE_FILE".into(),
        scratch.path.join("missing.crt").display().to_string(),
    ));
    env.push(("SSL_PRIVATE_KEY_FILE".into(), key.display().to_string()));
    let stderr = run_init_expecting_failure(env, None);
    assert!(stderr.contains("SSL_CERTIFICATE_FILE="), "{stderr}");
    assert!(!dir.exists(), "nothing may be written: {:?}", entries(&dir));
}

/// SHA-256 fingerprint of the certificate PostgreSQL serves on `ip`, if
/// it serves one.
fn served_fingerprint(ip: &str) -> Option<String> {
    let served = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("{ip}:5432"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    fingerprint_of(&served.stdout)
}

/// None when `pem` holds no certificate; a missing openssl panics (two
/// Nones would compare equal).
fn fingerprint_of(pem: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run openssl");
    x509.stdin
        .take()
        .expect("openssl's stdin")
        .write_all(pem)
        .expect("write to openssl");
    let out = x509.wait_with_output().expect("wait for openssl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload_without_a_restart() {
    let _serial = serial();
    let scratch = Scratch::new("renew");
    let mut node = Node::start(&scratch.path, NodeOptions::new("renew", "127.0.0.2", None));
    writable_primary(&node);
    let certs = node.dir.join("run/certs");
    let first = fs::read(certs.join("server.crt")).unwrap();
    let first_fingerprint = fingerprint_of(&first).expect("server.crt is a certificate");
    assert_eq!(
        served_fingerprint("127.0.0.2"),
        Some(first_fingerprint.clone())
    );
    let postmaster = || {
        let pid_file = fs::read_to_string(node.pgdata().join("postmaster.pid")).unwrap();
        pid_file.lines().next().unwrap_or_default().to_owned()
    };
    let before = postmaster();

    // A renewed pair, swapped in the way a secret update does: new files
    // renamed over the old ones.
    let renewed = spilo::render::certificate::self_signed("renewed").expect("certificate");
    let (uid, gid) = {
        let meta = fs::metadata(certs.join("server.key")).unwrap();
        (meta.uid(), meta.gid())
    };
    for (name, pem) in [
        ("server.key", &renewed.key_pem),
        ("server.crt", &renewed.cert_pem),
    ] {
        let new = scratch.path.join(name);
        fs::write(&new, pem).unwrap();
        std::os::unix::fs::chown(&new, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&new, fs::Permissions::from_mode(0o600)).unwrap();
        fs::rename(&new, certs.join(name)).unwrap();
    }
    let wanted = fingerprint_of(&fs::read(certs.join("server.crt")).unwrap())
        .expect("the renewed server.crt is a certificate");
    assert_ne!(wanted, first_fingerprint);
    wait_for("the renewed certificate", Duration::from_secs(30), || {
        (served_fingerprint("127.0.0.2").as_ref() == Some(&wanted)).then_some(())
    });
    node.assert_logged("certificates: ");
    assert_eq!(postmaster(), before, "the server was restarted");
    stop_cleanly(&mut node);
}

#[test]
fn an_embedded_etcd_stopped_before_it_was_ready_starts_anew() {
    let _serial = serial();
    let scratch = Scratch::new("etcd-unready");
    let dir = Node::dir_for(&scratch.path, "unready");
    let data = dir.join("run/etcd");
    fs::create_dir_all(&data).unwrap();
    // A first start cut short (init marked it, etcd never answered): the
    // member's configuration (here: a second member that never comes) is in
    // its WAL, and no quorum can ever be.
    fs::write(dir.join("run/etcd.first-start"), "").unwrap();
    let mut etcd = Command::new("/usr/bin/etcd")
        .args(["--name", "spilo", "--data-dir"])
        .arg(&data)
        .args([
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=spilo=http://127.0.0.1:2380,gone=http://127.0.0.1:2390",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    wait_for("etcd's member directory", Duration::from_secs(20), || {
        data.join("member/wal").is_dir().then_some(())
    });
    etcd.kill().unwrap();
    etcd.wait().unwrap();

    let mut node = Node::start(
        &scratch.path,
        NodeOptions::new("unready", "127.0.0.2", None),
    );
    writable_primary(&node);
    let removed = "removed the data of an embedded etcd whose first start never finished";
    node.assert_logged(removed);
    stop_cleanly(&mut node);
    // Once ready, its data is kept.
    assert!(!dir.join("run/etcd.first-start").exists());
    node.restart();
    writable_primary(&node);
    assert_eq!(node.log().matches(removed).count(), 1);
    stop_cleanly(&mut node);
}
