//! Continuous backups and point-in-time recovery with pgBackRest, for
//! real: `spilo init` nodes (PostgreSQL 15, Patroni, etcd) archiving to an
//! S3 store (moto over HTTPS, tests/backup_support) or a posix directory;
//! restores into new clusters (latest and to a time), retention, archiving
//! across a switchover and a crash failover, a store that is down, and a
//! clone that has nothing to restore.

mod backup_support;
mod init_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use backup_support::*;
use init_support::*;
use nix::sys::signal::Signal;

const S3_IP: &str = "127.0.0.30";
const BUCKET: &str = "spilo-backups";

/// The archived copy of `segment` in the repository of `stanza`.
/// A count or an epoch the node answers; None while it cannot.
fn number(node: &Node, query: &str) -> Option<u64> {
    node.psql(query).ok()?.parse().ok()
}

/// A new primary takes writes and archives a segment of `timeline` into
/// the repository; the segment.
fn archives_on_timeline(node: &Node, store: &Store, scope: &str, timeline: &str) -> String {
    wait_writable(node, Duration::from_secs(60));
    let segment = switch_and_wait_archived(node, Duration::from_secs(120));
    assert!(segment.starts_with(timeline), "{segment}");
    assert!(
        archived_in_repository(store, scope, &segment).is_some(),
        "{segment}: {:?}",
        store.repository_files(scope)
    );
    segment
}

fn archived_in_repository(store: &Store, stanza: &str, segment: &str) -> Option<String> {
    store.repository_files(stanza).into_iter().find(|f| {
        f.starts_with(&format!("archive/{stanza}/"))
            && f.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with(&format!("{segment}-")))
    })
}

// ---------------------------------------------------------------- fixture

/// The S3 fixture itself: moto over HTTPS answers curl and pgBackRest (as
/// postgres, through the test CA, path style, writes included: a
/// stanza-create of a throwaway server) before any node uses it.
#[test]
fn s3_fixture_serves_pgbackrest_over_tls() {
    let scratch = Scratch::new("backup-fixture");
    let s3 = S3::start(&scratch.path, S3_IP, BUCKET);
    let pg = scratch.path.join("pg");
    let as_postgres = |program: &str| {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    };
    nix::unistd::chown(
        &scratch.path,
        Some(nix::unistd::Uid::from_raw(POSTGRES_UID)),
        None,
    )
    .unwrap();
    let ok = |command: &mut Command, what: &str| {
        let out = command.output().expect(what);
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(
        as_postgres(&format!("{PG_BIN}/initdb"))
            .args(["-A", "trust", "--no-sync", "-D"])
            .arg(&pg),
        "initdb",
    );
    let socket = scratch.path.display().to_string();
    // Stopped however the test ends.
    struct Stop(std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
                .arg("-D")
                .arg(&self.0)
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
    let _stop = Stop(pg.clone());
    ok(
        as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&pg)
            .args(["-w", "-l"])
            .arg(scratch.path.join("pg.log"))
            .args([
                "-o",
                &format!("-k {socket} -p 5499 -c listen_addresses=''"),
                "start",
            ]),
        "pg_ctl start",
    );
    let conf = scratch.path.join("pgbackrest.conf");
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-type=s3\nrepo1-s3-bucket={BUCKET}\nrepo1-s3-endpoint={}\nrepo1-s3-port={}\nrepo1-s3-region={REGION}\nrepo1-s3-key={ACCESS_KEY}\nrepo1-s3-key-secret={SECRET_KEY}\nrepo1-s3-uri-style=path\nrepo1-storage-ca-file={}\nrepo1-path=/spilo/fixture/pgbackrest\nlog-level-file=off\nlock-path={socket}\n[fixture]\npg1-path={}\npg1-port=5499\npg1-socket-path={socket}\n",
            s3.ip,
            s3.port,
            s3.tls.ca.display(),
            pg.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    let pgbackrest = |args: &[&str]| {
        let mut command = as_postgres("pgbackrest");
        command
            .arg(format!("--config={}", conf.display()))
            .args(["--log-level-console=warn", "--io-timeout=10"])
            .args(args);
        command
    };
    ok(&mut pgbackrest(&["repo-ls"]), "pgbackrest repo-ls");
    ok(
        &mut pgbackrest(&["--stanza=fixture", "stanza-create"]),
        "pgbackrest stanza-create",
    );
    let keys = s3.keys("spilo/fixture/pgbackrest/");
    assert!(
        keys.contains(&"spilo/fixture/pgbackrest/backup/fixture/backup.info".to_owned()),
        "{keys:?}"
    );
}

// ------------------------------------------------- backup and restore (a-c)

/// Backups to `store`, then restores into new clusters: to a time (rows
/// 1..200 of 300) and to the latest state (all 300). Retention (2 full
/// backups) on the way.
fn backup_then_restore_to_time_and_latest(tag: &str, store: Store, store_dir: &Path) {
    let source_scope = format!("acid-{tag}-source");
    let mut source_env = store.env();
    source_env.extend(env(&[("BACKUP_NUM_TO_RETAIN", "2")]));
    let scratch = Scratch::new(&format!("backup-{tag}"));
    let _keep = KeepOnFailure {
        tag: tag.to_owned(),
        paths: vec![scratch.path.clone(), store_dir.to_owned()],
    };
    // The source on the embedded etcd, the clones on a test etcd of their
    // own (each its own scope): no key is shared between the clusters.
    let etcd = Etcd::start(&scratch.path);
    let mut source = Node::start(
        &scratch.path,
        options("source", "127.0.0.21", None, &source_scope, source_env),
    );
    wait_writable(&source, Duration::from_secs(90));

    // The scheduler's first full backup after bootstrap.
    let first = wait_full_backups(&source, &source_scope, 1, Duration::from_secs(180));
    eprintln!(
        "{tag}: first backup {first:?} {:.1}s after start",
        source.started.elapsed().as_secs_f64()
    );
    // The monitor's metrics tell when it finished.
    let metric = |node: &Node, name: &str| {
        let (code, body) = http(&format!("{}:8080", node.ip), "GET", "/metrics", None)?;
        body.lines()
            .filter(|_| code == 200)
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse::<f64>().ok())
    };
    let finished = source.wait_for("the backup in the metrics", Duration::from_secs(30), || {
        metric(&source, "spilo_backup_last_success_timestamp_seconds")
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        finished <= now && finished > now - 300.0,
        "{finished} {now}"
    );
    assert!(metric(&source, "spilo_backup_age_seconds").is_some());
    assert!(metric(&source, "spilo_backup_last_failure_timestamp_seconds").is_none());
    let files = store.repository_files(&source_scope);
    for wanted in [
        format!("backup/{source_scope}/backup.info"),
        format!("archive/{source_scope}/archive.info"),
    ] {
        assert!(
            files.contains(&wanted),
            "no {wanted} under spilo/{source_scope}/pgbackrest/ in the {} store: {files:?}",
            store.name()
        );
    }
    let conf = source.dir.join("run/pgbackrest/pgbackrest.conf");
    let mode = fs::metadata(&conf)
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} mode {mode:o}", conf.display());

    sql(
        &source,
        "CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 100)",
    );
    backup_now(&source, Duration::from_secs(300));
    let info = backup_info(&source).expect("backup list");
    let after_now = full_backups(&info, &source_scope);
    assert_eq!(after_now.len(), 2, "{info}");
    sql(&source, "INSERT INTO r SELECT generate_series(101, 200)");
    // pgBackRest picks the backup for a time by whole seconds: the
    // target must be in a later second than that backup's stop.
    let stop = info
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == source_scope.as_str())
        .flat_map(|s| s["backup"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["timestamp"]["stop"].as_u64())
        .max()
        .expect("a stop time");
    source.wait_for(
        "the second after the backup's stop",
        Duration::from_secs(5),
        || {
            let now = number(
                &source,
                "SELECT floor(extract(epoch FROM clock_timestamp()))",
            )?;
            (now > stop).then_some(())
        },
    );
    let target = sql(
        &source,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_secs(1));
    sql(&source, "INSERT INTO r SELECT generate_series(201, 300)");
    let segment = switch_and_wait_archived(&source, Duration::from_secs(120));
    assert!(
        archived_in_repository(&store, &source_scope, &segment).is_some(),
        "{segment} not in the repository: {:?}",
        store.repository_files(&source_scope)
    );
    eprintln!(
        "{tag}: target time {target} (epoch {}), segment {segment} archived",
        sql(
            &source,
            &format!("SELECT extract(epoch FROM '{target}'::timestamptz)")
        )
    );

    // Retention: a third full backup expires the first.
    backup_now(&source, Duration::from_secs(300));
    let info = backup_info(&source).expect("backup list");
    let kept = full_backups(&info, &source_scope);
    assert_eq!(
        kept.len(),
        2,
        "BACKUP_NUM_TO_RETAIN=2, three full backups taken: {info}"
    );
    eprintln!("{tag}: kept {}", describe_backups(&info, &source_scope));
    assert!(
        !kept.contains(&first[0]) && kept.contains(&after_now[1]),
        "the oldest should have gone: first {first:?}, kept {kept:?}"
    );

    // The source stops: what the clones find in its repository stays as
    // it is, byte for byte.
    source.signal(Signal::SIGTERM);
    assert_eq!(source.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let before = store.fingerprints(&source_scope);
    assert!(!before.is_empty());

    // A time after the newest WAL (now: the source is stopped) cannot be
    // reached: recovery says so, and no cluster opens on what it replayed.
    let now = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S+00"])
        .output()
        .expect("date");
    let mut clone_env = store.clone_env(&source_scope);
    clone_env.push((
        "CLONE_TARGET_TIME".into(),
        String::from_utf8_lossy(&now.stdout).trim().to_owned(),
    ));
    let beyond = Node::start(
        &scratch.path,
        options(
            "beyond",
            "127.0.0.24",
            Some(&etcd.hosts),
            &format!("acid-{tag}-beyond"),
            clone_env,
        ),
    );
    beyond.wait_for(
        "recovery to end before the target",
        Duration::from_secs(180),
        || {
            assert_ne!(beyond.role().as_deref(), Some("primary"));
            server_log(&beyond)
                .contains("recovery ended before configured recovery target was reached")
                .then_some(())
        },
    );
    assert!(beyond.psql("INSERT INTO r VALUES (0)").is_err());
    drop(beyond);

    // To a time: the state at `target`, nothing after.
    let mut clone_env = store.clone_env(&source_scope);
    clone_env.push(("CLONE_TARGET_TIME".into(), target.clone()));
    let pitr = Node::start(
        &scratch.path,
        options(
            "pitr",
            "127.0.0.22",
            Some(&etcd.hosts),
            &format!("acid-{tag}-pitr"),
            clone_env,
        ),
    );
    wait_writable(&pitr, Duration::from_secs(240));
    assert_eq!(r_summary(&pitr), "200|1|200", "restored to {target}");
    assert_eq!(pitr.role().as_deref(), Some("primary"));
    eprintln!(
        "{tag}: point-in-time clone writable after {:.1}s",
        pitr.started.elapsed().as_secs_f64()
    );

    // The latest state, into a cluster with its own backups (the same
    // store, its own scope).
    let latest_scope = format!("acid-{tag}-latest");
    let mut clone_env = store.clone_env(&source_scope);
    clone_env.extend(store.env());
    let latest = Node::start(
        &scratch.path,
        options(
            "latest",
            "127.0.0.23",
            Some(&etcd.hosts),
            &latest_scope,
            clone_env,
        ),
    );
    wait_writable(&latest, Duration::from_secs(240));
    assert_eq!(r_summary(&latest), "300|1|300");
    sql(&latest, "INSERT INTO r VALUES (301)");
    eprintln!(
        "{tag}: latest clone writable after {:.1}s",
        latest.started.elapsed().as_secs_f64()
    );
    // Its own repository: a first backup, and its WAL archived there.
    wait_full_backups(&latest, &latest_scope, 1, Duration::from_secs(180));
    let segment = switch_and_wait_archived(&latest, Duration::from_secs(120));
    assert!(
        archived_in_repository(&store, &latest_scope, &segment).is_some(),
        "{segment} of the clone not in its repository: {:?}",
        store.repository_files(&latest_scope)
    );
    // The source's repository is untouched by the clones.
    assert_eq!(store.fingerprints(&source_scope), before);
    drop((pitr, latest));
}

#[test]
fn s3_backups_restore_to_a_time_and_to_the_latest_state() {
    let _serial = serial();
    let scratch = Scratch::new("backup-s3-store");
    let s3 = S3::start(&scratch.path, S3_IP, BUCKET);
    backup_then_restore_to_time_and_latest("s3", Store::S3(&s3), &scratch.path);
}

#[test]
fn posix_backups_restore_to_a_time_and_to_the_latest_state() {
    let _serial = serial();
    let scratch = Scratch::new("backup-posix-store");
    let repo = posix_repository(&scratch.path.join("repository"));
    backup_then_restore_to_time_and_latest("posix", Store::Posix(repo), &scratch.path);
}

// ------------------------------------------- switchover and failover (d)

#[test]
fn archiving_follows_the_primary_through_a_switchover_and_a_crash_failover() {
    let _serial = serial();
    let scope = "acid-ha";
    let scratch = Scratch::new("backup-ha");
    let repo = posix_repository(&scratch.path.join("repository"));
    let store = Store::Posix(repo);
    let etcd = Etcd::start(&scratch.path);
    let mut nodes: Vec<Node> = [
        ("node2", "127.0.0.2"),
        ("node3", "127.0.0.3"),
        ("node4", "127.0.0.4"),
    ]
    .iter()
    .map(|(name, ip)| {
        Node::start(
            &scratch.path,
            options(name, ip, Some(&etcd.hosts), scope, store.env()),
        )
    })
    .collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = wait_healthy(&refs, 2, Duration::from_secs(120));
    let by_name = |nodes: &'_ [Node], name: &str| -> usize {
        nodes
            .iter()
            .position(|n| n.name == name)
            .expect("known node")
    };
    let first = &nodes[by_name(&nodes, &leader)];
    wait_full_backups(first, scope, 1, Duration::from_secs(180));
    let segment = switch_and_wait_archived(first, Duration::from_secs(120));
    assert!(segment.starts_with("00000001"), "{segment}");
    assert!(archived_in_repository(&store, scope, &segment).is_some());

    // Switchover: the new primary archives timeline 2.
    let candidate = nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != leader)
        .unwrap();
    let body = format!(r#"{{"leader": "{leader}", "candidate": "{candidate}"}}"#);
    let (code, answer) = http(
        &format!("{}:8008", first.ip),
        "POST",
        "/switchover",
        Some(&body),
    )
    .expect("switchover request");
    assert_eq!(code, 200, "{answer}");
    let second = &nodes[by_name(&nodes, &candidate)];
    let segment = archives_on_timeline(second, &store, scope, "00000002");
    eprintln!("switchover {leader} -> {candidate}: {segment} archived");

    // Crash of that primary: the next one archives timeline 3, and takes
    // a backup.
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_healthy(&refs, 2, Duration::from_secs(90));
    let index = by_name(&nodes, &candidate);
    nodes[index].kill_tree();
    let refs: Vec<&Node> = nodes.iter().collect();
    let third_name = wait_new_leader(
        &refs,
        &BTreeSet::from([candidate.clone()]),
        Duration::from_secs(60),
    );
    let third = &nodes[by_name(&nodes, &third_name)];
    let segment = archives_on_timeline(third, &store, scope, "00000003");
    eprintln!("crash failover {candidate} -> {third_name}: {segment} archived");
    backup_now(third, Duration::from_secs(300));
    let full = full_backups(&backup_info(third).expect("list"), scope);
    assert!(full.len() >= 2, "{full:?}");
}

// ------------------------------------- backups that read a replica (f)

/// WALG_BACKUP_FROM_REPLICA: the primary's scheduled backups read the
/// streaming replica through its pgBackRest TLS server (certificates
/// derived from the replication password on each member), and the
/// primary when no replica streams. The nodes' paths are the same, each
/// in a mount namespace of its own, as in pods.
#[test]
fn backups_from_a_replica_read_the_replica_and_the_primary_without_one() {
    let _serial = serial();
    let scope = "acid-from-replica";
    let scratch = Scratch::new("backup-from-replica");
    let repo = posix_repository(&scratch.path.join("repository"));
    let store = Store::Posix(repo);
    let etcd = Etcd::start(&scratch.path);
    let mut extra = store.env();
    extra.extend(env(&[
        ("WALG_BACKUP_FROM_REPLICA", "true"),
        ("PGPASSWORD_STANDBY", "standby-secret"),
        ("BACKUP_SCHEDULE", "* * * * *"),
    ]));
    let mut nodes: Vec<Node> = [("node5", "127.0.0.25"), ("node6", "127.0.0.26")]
        .iter()
        .map(|(name, ip)| {
            let mut options = options(name, ip, Some(&etcd.hosts), scope, extra.clone());
            options.shared_dir = Some(scratch.path.join("member"));
            Node::start(&scratch.path, options)
        })
        .collect();
    let primary = wait_leader_index(&nodes, 1, Duration::from_secs(120));
    let replica = 1 - primary;

    let said = format!(
        "reading replica {} ({})",
        nodes[replica].name, nodes[replica].ip
    );
    // A backup the log tells of after its first `since` bytes.
    let finished_after = |node: &Node, since: usize, words: &str, within: Duration| {
        node.wait_for(&format!("a backup {words}"), within, || {
            let log = node.log();
            let from = log.get(since..)?.rfind(words)?;
            log[since + from..]
                .contains("backup finished: full")
                .then_some(())
        });
    };
    finished_after(&nodes[primary], 0, &said, Duration::from_secs(150));
    // pgBackRest's own account of a backup from a standby.
    assert!(
        nodes[primary]
            .log()
            .contains("replay on the standby reached"),
        "{}",
        nodes[primary].log_tail()
    );
    let before = full_backups(&backup_info(&nodes[primary]).expect("list"), scope).len();

    // The replica gone, the primary is read, and backups go on.
    nodes[replica].kill_tree();
    finished_after(
        &nodes[primary],
        nodes[primary].log().len(),
        "reading the primary: no replica is streaming",
        Duration::from_secs(180),
    );
    let after = full_backups(&backup_info(&nodes[primary]).expect("list"), scope).len();
    assert!(after > before, "{before} full backups, then {after}");
}

// ------------------------------------------------- the store is down (e)

#[test]
fn an_unreachable_store_leaves_the_database_writable_and_wal_in_pg_wal() {
    let _serial = serial();
    let scratch = Scratch::new("backup-down");
    // A CA like a real store's, an endpoint nothing listens on.
    let tls = Tls::generate(&scratch.path.join("tls"), S3_IP);
    let port = free_port(S3_IP);
    let endpoint = format!("https://{S3_IP}:{port}");
    let store_env = env(&[
        ("WAL_S3_BUCKET", BUCKET),
        ("AWS_ENDPOINT", &endpoint),
        ("AWS_S3_FORCE_PATH_STYLE", "true"),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("WALG_S3_CA_CERT_FILE", &tls.ca.display().to_string()),
    ]);
    let node = Node::start(
        &scratch.path,
        options("down", "127.0.0.21", None, "acid-down", store_env),
    );
    wait_writable(&node, Duration::from_secs(90));
    sql(
        &node,
        "CREATE TABLE r (id int); INSERT INTO r SELECT generate_series(1, 1000)",
    );
    let segment = sql(&node, "SELECT pg_walfile_name(pg_switch_wal())");
    let failed = node.wait_for(
        "pg_stat_archiver.failed_count > 0",
        Duration::from_secs(180),
        || number(&node, "SELECT failed_count FROM pg_stat_archiver").filter(|&n| n > 0),
    );
    let archived = sql(&node, "SELECT archived_count FROM pg_stat_archiver");
    assert_eq!(archived, "0", "nothing can have been archived");
    let pg_wal = node.pgdata().join("pg_wal");
    assert!(pg_wal.join(&segment).is_file(), "{segment} left pg_wal");
    assert!(
        pg_wal
            .join("archive_status")
            .join(format!("{segment}.ready"))
            .is_file(),
        "{segment} not marked .ready: {:?}",
        fs::read_dir(pg_wal.join("archive_status")).map(|d| d
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect::<Vec<_>>())
    );
    // Reported in spilo init's output by the scheduler, with
    // pgBackRest's reason.
    let report = node.wait_for(
        "the scheduler's \"WAL archiving fails\" in spilo init's output",
        Duration::from_secs(120),
        || {
            node.log()
                .lines()
                .find(|l| l.contains("WAL archiving fails since"))
                .map(str::to_owned)
        },
    );
    let backup_lines: Vec<String> = node
        .log()
        .lines()
        .filter(|l| l.contains(" backup: "))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "---- the scheduler's lines ----\n{}",
        tail(&backup_lines.join("\n"), 40)
    );
    eprintln!("failed_count {failed}; reported: {report}");
    // pgBackRest's own reason, not a bare timeout.
    assert!(report.contains("Connection refused"), "{report}");
    // The monitor's metrics: a failure, no success, and archiving's own
    // failures counted.
    let (code, metrics) =
        http(&format!("{}:8080", node.ip), "GET", "/metrics", None).expect("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("\nspilo_backup_last_failure_timestamp_seconds "),
        "{metrics}"
    );
    assert!(!metrics.contains("spilo_backup_last_success_timestamp_seconds "));
    assert!(!metrics.contains("\nspilo_postgres_wal_archive_failures_total 0\n"));
    // Still taking writes, still primary, spilo init still running.
    sql(&node, "INSERT INTO r SELECT generate_series(1001, 2000)");
    assert_eq!(sql(&node, "SELECT count(*) FROM r"), "2000");
    assert_eq!(node.role().as_deref(), Some("primary"));
    assert!(
        !exited(&node),
        "spilo init exited:\n{}",
        tail(&node.log(), 40)
    );
}

// ------------------------------------------ a clone with nothing (f)

#[test]
fn a_clone_of_a_scope_without_backups_never_becomes_an_empty_new_cluster() {
    let _serial = serial();
    let scratch = Scratch::new("backup-noclone");
    let repo = posix_repository(&scratch.path.join("repository"));
    let store = Store::Posix(repo);
    let mut node = Node::start(
        &scratch.path,
        options(
            "orphan",
            "127.0.0.21",
            None,
            "acid-orphan",
            store.clone_env("acid-nothing-here"),
        ),
    );
    never_an_empty_cluster(&mut node, Duration::from_secs(150));
    let log = node.log();
    assert!(
        log.to_lowercase().contains("restore") || log.to_lowercase().contains("bootstrap"),
        "no word of the failed restore:\n{}",
        tail(&log, 40)
    );
}
