//! A data volume as Spilo leaves it (the cluster in `pgroot/pgdata`, csv
//! logs in `pgroot/pg_log`, files of uid 101 / gid 103) is adopted by
//! `spilo init` as the same cluster: as its only member and as a replica
//! that rejoins a running primary by streaming. Volumes that cannot be
//! adopted are refused with one line, untouched.

mod init_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use init_support::*;
use nix::sys::signal::Signal;

/// Spilo's postgres user and group.
const SPILO_UID: u32 = 101;
const SPILO_GID: u32 = 103;

/// One of the host's PostgreSQL programs, run as Spilo's user.
fn as_spilo(program: &str) -> Command {
    let mut command = Command::new(Path::new(PG_BIN).join(program));
    command
        .uid(SPILO_UID)
        .gid(SPILO_GID)
        .current_dir("/tmp")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs::read_dir(path).expect("read dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// Makes `pgroot` as a Spilo pod leaves it: a cluster with the roles
/// Spilo makes, `rows` rows in table `adopted`, a day of csv logs; every
/// file Spilo's. Returns the cluster's system identifier.
fn spilo_volume(pgroot: &Path, rows: u32) -> String {
    let pgdata = pgroot.join("pgdata");
    let socket = pgroot.join("socket");
    fs::create_dir_all(&socket).expect("socket dir");
    chown_tree(pgroot, SPILO_UID, SPILO_GID);
    let ok = as_spilo("initdb")
        .args([
            "-E",
            "UTF8",
            "--locale",
            "C",
            "--data-checksums",
            "-U",
            "postgres",
            "-D",
        ])
        .arg(&pgdata)
        .status()
        .expect("initdb");
    assert!(ok.success(), "initdb: {ok}");
    let options = format!(
        "-c listen_addresses='' -c port=5432 -c unix_socket_directories={} -c logging_collector=on -c log_destination=csvlog -c log_directory=../pg_log -c log_filename=postgresql-%u.log",
        socket.display()
    );
    let ok = as_spilo("pg_ctl")
        .args(["start", "-w", "-t", "60", "-l"])
        .arg(pgroot.join("startup.log"))
        .arg("-D")
        .arg(&pgdata)
        .args(["-o", &options])
        .status()
        .expect("pg_ctl start");
    assert!(ok.success(), "pg_ctl start: {ok}");
    let sql = format!(
        "CREATE ROLE standby WITH REPLICATION LOGIN PASSWORD 'standby';
         CREATE ROLE admin WITH CREATEDB NOLOGIN;
         CREATE TABLE adopted AS SELECT g AS id FROM generate_series(1, {rows}) g;
         SELECT system_identifier FROM pg_control_system();"
    );
    let sysid = psql_at(&socket, &sql).expect("fill the cluster");
    let ok = as_spilo("pg_ctl")
        .args(["stop", "-w", "-m", "fast", "-D"])
        .arg(&pgdata)
        .status()
        .expect("pg_ctl stop");
    assert!(ok.success(), "pg_ctl stop: {ok}");
    fs::remove_dir_all(&socket).expect("remove the socket dir");
    fs::remove_file(pgroot.join("startup.log")).expect("remove the startup log");
    assert!(
        csv_logs(pgroot)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "csv")),
        "the cluster wrote its csv log"
    );
    sysid
        .lines()
        .last()
        .expect("a system identifier")
        .to_owned()
}

fn csv_logs(pgroot: &Path) -> Vec<PathBuf> {
    fs::read_dir(pgroot.join("pg_log"))
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default()
}

fn sysid(node: &Node) -> String {
    node.psql("SELECT system_identifier FROM pg_control_system()")
        .expect("system identifier")
}

#[test]
fn a_spilo_volume_is_adopted_by_its_only_member() {
    let _serial = serial();
    let scratch = Scratch::new("spilo-vol");
    let options = NodeOptions::new("adopter", "127.0.0.2", None);
    let dir = Node::dir_for(&scratch.path, "adopter");
    let pgroot = dir.join("pgroot");
    let before = spilo_volume(&pgroot, 1000);
    let logs_before = csv_logs(&pgroot);

    let node = Node::start(&scratch.path, options);
    writable_primary(&node);
    assert_eq!(sysid(&node), before, "the same cluster");
    assert_eq!(node.psql("SELECT count(*) FROM adopted").unwrap(), "1000");
    // Patroni runs the volume's cluster where Spilo keeps it.
    let data_dir = node.psql("SHOW data_directory").unwrap();
    assert_eq!(Path::new(&data_dir), pgroot.join("pgdata"));
    assert!(!pgroot.join("data").exists(), "nothing made beside it");
    for log in &logs_before {
        assert!(log.exists(), "{} kept", log.display());
    }
    let log_directory = node.psql("SHOW log_directory").unwrap();
    assert_eq!(log_directory, "../pg_log");
    // Spilo's ids are the image's: nothing had to change owner.
    let meta = fs::metadata(pgroot.join("pgdata/PG_VERSION")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (SPILO_UID, SPILO_GID));
    node.assert_logged("PostgreSQL 15 (data directory's PG_VERSION)");
}

#[test]
fn a_spilo_replica_volume_rejoins_by_streaming() {
    let _serial = serial();
    let scratch = Scratch::new("spilo-rep");
    let etcd = Etcd::start(&scratch.path);
    let primary = Node::start(
        &scratch.path,
        NodeOptions::new("keeper", "127.0.0.2", Some(&etcd.hosts)),
    );
    writable_primary(&primary);
    let mut replica = Node::start(
        &scratch.path,
        NodeOptions::new("returner", "127.0.0.3", Some(&etcd.hosts)),
    );
    wait_healthy(&[&primary, &replica], 1, Duration::from_secs(90));
    primary
        .psql("CREATE TABLE kept AS SELECT g AS id FROM generate_series(1, 500) g")
        .unwrap();

    // The pod goes away; its volume comes back as Spilo leaves it, with
    // a fresh RW_DIR, while the primary goes on writing.
    replica.signal(Signal::SIGTERM);
    assert!(replica.wait_exit(Duration::from_secs(60)).success());
    let pgroot = replica.dir.join("pgroot");
    chown_tree(&pgroot, SPILO_UID, SPILO_GID);
    let marker = replica.pgdata().join("spilo-volume-marker");
    fs::write(
        &marker,
        "this file survives only if the data directory does",
    )
    .unwrap();
    fs::remove_dir_all(replica.dir.join("run")).unwrap();
    primary
        .psql("INSERT INTO kept SELECT g FROM generate_series(501, 700) g")
        .unwrap();
    let log_offset = replica.log().len();

    replica.restart();
    wait_healthy(&[&primary, &replica], 1, Duration::from_secs(90));
    wait_for(
        "the replica to replay the new rows",
        Duration::from_secs(30),
        || (replica.psql("SELECT count(*) FROM kept").ok()? == "700").then_some(()),
    );
    assert_eq!(sysid(&replica), sysid(&primary));
    assert_eq!(replica.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    assert!(marker.exists(), "the data directory was rebuilt");
    let restarted = replica.log()[log_offset..].to_owned();
    for rebuilt in [
        "bootstrap from leader",
        "Removing data directory",
        "basebackup",
    ] {
        assert!(!restarted.contains(rebuilt), "{rebuilt:?} in:\n{restarted}");
    }
}

/// `spilo init` run once, to fail: its status and stderr.
fn init_fails(dir: &Path) -> (Option<i32>, String) {
    let options = NodeOptions::new("refused", "127.0.0.2", Some("127.0.0.1:1"));
    let out = Command::new(spilo())
        .arg("init")
        .env_clear()
        .envs(Node::env(&options, dir))
        .stdin(Stdio::null())
        .output()
        .expect("run spilo init");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tree(dir: &Path) -> Vec<(PathBuf, u64, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("stat");
        out.push((path.clone(), meta.len(), meta.mode()));
        if meta.is_dir() {
            stack.extend(
                fs::read_dir(&path)
                    .expect("read")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
    out.sort();
    out
}

#[test]
fn volumes_that_cannot_be_adopted_are_refused_untouched() {
    let scratch = Scratch::new("spilo-bad");

    // A cluster in spilo-rs's old default place, PGDATA's default empty.
    let dir = scratch.path.join("old");
    let old = dir.join("pgroot/data");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("PG_VERSION"), "15\n").unwrap();
    fs::create_dir_all(dir.join("pgroot/pgdata")).unwrap();
    let before = tree(&dir);
    let (code, stderr) = init_fails(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("PGDATA={}", dir.join("pgroot/pgdata").display())),
        "{stderr}"
    );
    assert!(stderr.contains(&old.display().to_string()), "{stderr}");
    assert_eq!(tree(&dir), before);

    // PGDATA is a file.
    let dir = scratch.path.join("file");
    fs::create_dir_all(dir.join("pgroot")).unwrap();
    fs::write(dir.join("pgroot/pgdata"), "not a cluster").unwrap();
    let before = tree(&dir);
    let (code, stderr) = init_fails(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("pgroot/pgdata: exists and is not a directory"),
        "{stderr}"
    );
    assert_eq!(tree(&dir), before);
}
