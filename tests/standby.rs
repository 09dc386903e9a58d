//! Standby clusters as the operator makes them, for real: one that
//! streams from a remote primary (STANDBY_HOST, STANDBY_PORT), with two
//! members on its own etcd; one fed from the source's archive only
//! (STANDBY_METHOD=STANDBY_WITH_WALE, STANDBY_WALE_S3_PREFIX, in S3 over
//! HTTPS), also with the operator's standby patch of restore_command; a
//! source with another major; and the promotion the operator makes by
//! removing `standby_cluster` through `PATCH /config`.

mod backup_support;
mod init_support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use backup_support::*;
use init_support::*;

const REPLICATION_PASSWORD: &str = "stream-me";

fn count(node: &Node) -> Option<String> {
    node.psql("SELECT count(*) FROM r").ok()
}

/// Waits until `node` has `rows` rows in r.
fn wait_count(node: &Node, what: &str, rows: &str, within: Duration) {
    node.wait_for(what, within, || {
        (count(node).as_deref() == Some(rows)).then_some(())
    });
}

/// The operator's way to change the cluster's configuration.
fn patch_config(node: &Node, body: &str) {
    let (code, answer) =
        http(&format!("{}:8008", node.ip), "PATCH", "/config", Some(body)).expect("PATCH /config");
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn a_standby_cluster_follows_its_source_and_promotes_into_a_cluster_of_its_own() {
    let _serial = serial();
    let scratch = Scratch::new("standby-stream");
    let password = env(&[("PGPASSWORD_STANDBY", REPLICATION_PASSWORD)]);
    let source = Node::start(
        &scratch.path,
        options(
            "source",
            "127.0.0.51",
            None,
            "acid-source",
            password.clone(),
        ),
    );
    wait_writable(&source, Duration::from_secs(90));
    sql(
        &source,
        "CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 100)",
    );

    let etcd = Etcd::start(&scratch.path);
    let mut standby_env = password;
    standby_env.extend(env(&[
        ("STANDBY_HOST", "127.0.0.51"),
        ("STANDBY_PORT", "5432"),
    ]));
    let members: Vec<Node> = [("standby-1", "127.0.0.52"), ("standby-2", "127.0.0.53")]
        .into_iter()
        .map(|(name, ip)| {
            Node::start(
                &scratch.path,
                options(
                    name,
                    ip,
                    Some(&etcd.hosts),
                    "acid-standby",
                    standby_env.clone(),
                ),
            )
        })
        .collect();
    let leader = wait_for("a standby leader", Duration::from_secs(120), || {
        members
            .iter()
            .find(|m| m.role().as_deref() == Some("standby_leader"))
    });
    leader.assert_logged("replica has been created using basebackup_fast_xlog");
    leader.assert_logged("basebackup: copying PostgreSQL 15 from ");
    let replica = members
        .iter()
        .find(|m| m.name != leader.name)
        .expect("two members");
    replica.wait_for(
        "the standby leader's replica",
        Duration::from_secs(120),
        || (replica.role().as_deref() == Some("replica")).then_some(()),
    );
    for member in &members {
        wait_count(member, "the source's rows", "100", Duration::from_secs(60));
        assert_eq!(sql(member, "SELECT pg_is_in_recovery()"), "t");
        assert!(
            member.psql("INSERT INTO r VALUES (0)").is_err(),
            "{}: a standby took a write",
            member.name
        );
    }

    // New rows stream through the standby leader to its replica.
    sql(&source, "INSERT INTO r SELECT generate_series(101, 150)");
    for member in &members {
        wait_count(member, "the new rows", "150", Duration::from_secs(30));
    }

    // The operator's promotion: standby_cluster removed from the DCS.
    patch_config(leader, r#"{"standby_cluster": null}"#);
    wait_writable(leader, Duration::from_secs(60));
    sql(leader, "INSERT INTO r SELECT generate_series(1001, 1010)");
    wait_count(
        replica,
        "the promoted leader's rows",
        "160",
        Duration::from_secs(60),
    );
    // Its own cluster now: the source's new rows stay there.
    sql(&source, "INSERT INTO r SELECT generate_series(151, 200)");
    assert_eq!(count(&source).as_deref(), Some("200"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(leader).as_deref(), Some("160"));
}

/// The operator's variables for a standby of `source_scope`'s archive in
/// `s3` (its WAL-G path, as `spec.standby.s3_wal_path`), with the
/// STANDBY_-prefixed credentials.
fn archive_standby_env(s3: &S3, source_folder: &str, major: &str) -> Vec<(String, String)> {
    let mut vars = env(&[
        ("STANDBY_METHOD", "STANDBY_WITH_WALE"),
        (
            "STANDBY_WALE_S3_PREFIX",
            &format!("s3://{}/spilo/{source_folder}/wal/{major}", s3.bucket),
        ),
        ("STANDBY_WAL_BUCKET_SCOPE_PREFIX", ""),
    ]);
    vars.extend(
        s3.env()
            .into_iter()
            .filter(|(k, _)| k != "WAL_S3_BUCKET")
            .map(|(k, v)| (format!("STANDBY_{k}"), v)),
    );
    vars
}

/// A PATH with `envdir` (the spilo binary under that name), as the image
/// has it for the operator's restore_command.
fn path_with_envdir(dir: &Path) -> (String, String) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("bin");
    std::os::unix::fs::symlink(spilo(), bin.join("envdir")).expect("envdir link");
    (
        "PATH".to_owned(),
        format!("{}:/usr/bin:/bin", bin.display()),
    )
}

#[test]
fn an_archive_standby_replays_the_sources_archive_and_promotes_into_its_own() {
    let _serial = serial();
    let scratch = Scratch::new("standby-archive");
    let s3 = S3::start(&scratch.path, "127.0.0.54", "standby-backups");
    // The operator's folders: spilo/<scope>/<uid>/.
    let mut source_env = s3.env();
    source_env.extend(env(&[
        ("WAL_BUCKET_SCOPE_PREFIX", ""),
        ("WAL_BUCKET_SCOPE_SUFFIX", "/7e1f-source-uid"),
    ]));
    let mut source = Node::start(
        &scratch.path,
        options("source", "127.0.0.55", None, "acid-source", source_env),
    );
    wait_writable(&source, Duration::from_secs(90));
    sql(
        &source,
        "CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 100)",
    );
    wait_full_backups(&source, "acid-source", 1, Duration::from_secs(180));
    sql(&source, "INSERT INTO r SELECT generate_series(101, 150)");
    switch_and_wait_archived(&source, Duration::from_secs(120));

    let etcd = Etcd::start(&scratch.path);
    let mut standby_env = archive_standby_env(&s3, "acid-source/7e1f-source-uid", "15");
    // Its own store, for when it is promoted.
    standby_env.extend(s3.env());
    standby_env.extend(env(&[
        ("WAL_BUCKET_SCOPE_PREFIX", ""),
        ("WAL_BUCKET_SCOPE_SUFFIX", "/93c2-standby-uid"),
    ]));
    standby_env.push(path_with_envdir(&scratch.path));
    let standby = Node::start(
        &scratch.path,
        options(
            "standby",
            "127.0.0.56",
            Some(&etcd.hosts),
            "acid-standby",
            standby_env,
        ),
    );
    standby.wait_for("a standby leader", Duration::from_secs(180), || {
        (standby.role().as_deref() == Some("standby_leader")).then_some(())
    });
    standby.assert_logged("replica has been created using bootstrap_standby_with_wale");
    wait_count(
        &standby,
        "the archived rows",
        "150",
        Duration::from_secs(60),
    );
    assert!(standby.psql("INSERT INTO r VALUES (0)").is_err());

    // New rows come with the next archived segment.
    sql(&source, "INSERT INTO r SELECT generate_series(151, 200)");
    switch_and_wait_archived(&source, Duration::from_secs(120));
    wait_count(
        &standby,
        "the rows of the next segment",
        "200",
        Duration::from_secs(60),
    );

    // The operator's standby patch, as it sends it (its env-standby and
    // /scripts are under this node's RW_DIR and the repository here).
    let restore_command = format!(
        "envdir \"{}\" {}/image/scripts/restore_command.sh \"%f\" \"%p\"",
        standby.dir.join("run/etc/wal-e.d/env-standby").display(),
        env!("CARGO_MANIFEST_DIR")
    );
    let patch = serde_json::json!({ "standby_cluster": {
        "create_replica_methods": ["bootstrap_standby_with_wale", "basebackup_fast_xlog"],
        "restore_command": restore_command,
        "host": null,
        "port": null,
        "primary_slot_name": null,
    } });
    patch_config(&standby, &patch.to_string());
    standby.wait_for(
        "the patched restore_command",
        Duration::from_secs(60),
        || (sql(&standby, "SHOW restore_command") == restore_command).then_some(()),
    );
    sql(&source, "INSERT INTO r SELECT generate_series(201, 250)");
    switch_and_wait_archived(&source, Duration::from_secs(120));
    wait_count(
        &standby,
        "rows through the operator's restore_command",
        "250",
        Duration::from_secs(60),
    );

    // The source stops; its repository must stay as it is.
    source.signal(nix::sys::signal::Signal::SIGTERM);
    source.wait_exit(Duration::from_secs(60));
    let source_store = Store::S3(&s3);
    let before = source_store.fingerprints("acid-source/7e1f-source-uid");
    assert!(!before.is_empty());

    patch_config(&standby, r#"{"standby_cluster": null}"#);
    wait_writable(&standby, Duration::from_secs(60));
    assert_eq!(count(&standby).as_deref(), Some("250"));
    sql(&standby, "INSERT INTO r SELECT generate_series(1001, 1010)");
    // Its own archive, in its own folder.
    let segment = switch_and_wait_archived(&standby, Duration::from_secs(180));
    let own = source_store.repository_files("acid-standby/93c2-standby-uid");
    assert!(
        own.iter()
            .any(|f| f.starts_with("archive/acid-standby/") && f.contains(&segment)),
        "{segment} not in the promoted cluster's repository: {own:?}"
    );
    assert_eq!(
        source_store.fingerprints("acid-source/7e1f-source-uid"),
        before,
        "the promoted standby changed its source's repository"
    );
}

#[test]
fn a_standby_whose_source_does_not_answer_never_becomes_a_cluster() {
    let _serial = serial();
    let scratch = Scratch::new("standby-unreachable");
    let etcd = Etcd::start(&scratch.path);
    // Nothing listens there.
    let mut node = Node::start(
        &scratch.path,
        options(
            "standby",
            "127.0.0.57",
            Some(&etcd.hosts),
            "acid-standby",
            env(&[("STANDBY_HOST", "127.0.0.58"), ("STANDBY_PORT", "5432")]),
        ),
    );
    never_an_empty_cluster(&mut node, Duration::from_secs(40));
    node.assert_logged("failed to bootstrap clone from remote member");
    node.assert_logged("127.0.0.58");
}
