//! Major upgrades in place, in the image, as the operator runs them:
//! `/bin/su postgres -c "/usr/bin/python3 /scripts/inplace_upgrade.py N"`
//! in the primary's container, with PGVERSION the target (the operator
//! rolls the pods with the new PGVERSION first; the data directory's major
//! still decides what runs, which tests/configure.rs checks). Real
//! PostgreSQL 15, 17 and 18, Patroni and etcd.

mod image_support;

use std::process::Output;
use std::time::{Duration, Instant};

use image_support::{Container, Network, image, members, serial, wait_for};

/// A cluster of `size` members on 15 in a network of its own.
struct Cluster {
    nodes: Vec<Container>,
    /// Members of another cluster in the same network, gone first.
    _others: Vec<Container>,
    _etcd: Container,
    _net: Network,
}

impl Cluster {
    /// `options` go to every member's `run`.
    fn start(subnet: u8, size: usize, options: &[&str]) -> Cluster {
        let image = image();
        let net = Network::create(&format!("10.89.{subnet}.0/24"));
        let network = format!("--network={}", net.name);
        let etcd = Container::run(
            image,
            "etcd",
            &[
                &network,
                &format!("--ip=10.89.{subnet}.10"),
                "--entrypoint=/usr/bin/etcd",
            ],
            &[
                "--name=etcd",
                "--data-dir=/run/etcd",
                "--listen-client-urls=http://0.0.0.0:2379",
                &format!("--advertise-client-urls=http://10.89.{subnet}.10:2379"),
            ],
        );
        let nodes = (1..=size)
            .map(|i| member(&net, subnet, i, "upgrade", "15", options))
            .collect();
        let cluster = Cluster {
            nodes,
            _others: Vec::new(),
            _etcd: etcd,
            _net: net,
        };
        cluster.wait_streaming(Duration::from_secs(300));
        cluster
    }

    /// The leader, once every other member streams from it.
    fn wait_streaming(&self, limit: Duration) -> &Container {
        let leader = wait_for(
            limit,
            "a leader and every other member streaming",
            || {
                let m = members(&self.nodes[0]);
                let leader = m
                    .iter()
                    .find(|(_, (role, state))| role == "leader" && state == "running")?
                    .0
                    .clone();
                let streaming = m
                    .values()
                    .filter(|(role, state)| role != "leader" && state == "streaming")
                    .count();
                (m.len() == self.nodes.len() && streaming == self.nodes.len() - 1).then_some(leader)
            },
            || self.describe(),
        );
        self.nodes
            .iter()
            .find(|n| n.name == leader)
            .expect("the leader is ours")
    }

    fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}: {:?}\n{}", n.name, members(n), n.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every member's server major, as it answers.
    fn majors(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                n.sql("SELECT current_setting('server_version_num')::int / 10000")
                    .unwrap_or_else(|e| e)
            })
            .collect()
    }

    /// Waits until every member's copy of the data has `rows` rows.
    fn every_member_has(&self, rows: &str) {
        for node in &self.nodes {
            wait_for(
                Duration::from_secs(60),
                &format!("{rows} rows on {}", node.name),
                || (node.sql("SELECT count(*) FROM places").ok()? == rows).then_some(()),
                || format!("{:?}", node.sql("SELECT count(*) FROM places")),
            );
        }
    }
}

/// Member `i` of `scope` on `pgversion`, at 10.89.`subnet`.(10 + i) with
/// the network's etcd; `options` go to its `run`.
fn member(
    net: &Network,
    subnet: u8,
    i: usize,
    scope: &str,
    pgversion: &str,
    options: &[&str],
) -> Container {
    let network = format!("--network={}", net.name);
    let ip = format!("--ip=10.89.{subnet}.{}", 10 + i);
    let etcd = format!("ETCD3_HOSTS=10.89.{subnet}.10:2379");
    let scope = format!("SCOPE={scope}");
    let pgversion = format!("PGVERSION={pgversion}");
    let mut all = vec![
        network.as_str(),
        &ip,
        "-e",
        &scope,
        "-e",
        &pgversion,
        "-e",
        &etcd,
    ];
    all.extend_from_slice(options);
    Container::run(image(), &format!("node{i}"), &all, &[])
}

/// A directory for a posix backup repository, and its volume option
/// (mounted at /backups).
fn repository() -> (tempfile::TempDir, String) {
    let repository = tempfile::tempdir().expect("a repository");
    std::fs::set_permissions(
        repository.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod");
    let volume = format!("{}:/backups", repository.path().display());
    (repository, volume)
}

/// The operator's command on `node`: output, stderr, the last line.
fn inplace_upgrade(node: &Container, major: u32, members: usize) -> (Output, String) {
    let script = format!("/usr/bin/python3 /scripts/inplace_upgrade.py {members}");
    let out = node.exec_with(
        &["-e", &format!("PGVERSION={major}"), "-w", "/home/postgres"],
        &["/bin/su", "postgres", "-c", &script],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or_default().to_owned();
    (out, last)
}

/// A refused or rolled back upgrade: the last line says why, the old
/// major still serves writes and every replica streams again.
fn still_on(cluster: &Cluster, leader: &Container, major: &str, rows: &mut u32) {
    leader
        .sql("INSERT INTO places (name, geom) VALUES ('after a refusal', ST_MakePoint(1, 2))")
        .expect("the old major takes writes");
    *rows += 1;
    assert_eq!(
        cluster.majors(),
        vec![major.to_owned(); cluster.nodes.len()]
    );
    cluster.wait_streaming(Duration::from_secs(120));
    cluster.every_member_has(&rows.to_string());
}

fn fill(leader: &Container) -> u32 {
    for sql in [
        "CREATE EXTENSION postgis",
        "CREATE EXTENSION pg_repack",
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "CREATE TABLE places (id bigserial PRIMARY KEY, name text, geom geometry(Point, 4326))",
        "INSERT INTO places (name, geom) SELECT 'p' || i, ST_SetSRID(ST_MakePoint(i % 180, i % 90), 4326) FROM generate_series(1, 100000) i",
        "CREATE INDEX ON places USING gist (geom)",
        "CREATE VIEW near_origin AS SELECT id FROM places WHERE ST_DWithin(geom, ST_SetSRID(ST_MakePoint(0, 0), 4326), 1)",
        "ANALYZE places",
    ] {
        leader.sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    100_000
}

/// PostGIS runs the new major's library, the view on it reads,
/// pg_stat_statements answers and pg_repack repacks.
fn the_data_set_works_on(node: &Container, major: u32) {
    let postgis = node.sql("SELECT postgis_full_version()").expect("postgis");
    assert!(
        postgis.contains(&format!("PGSQL=\"{major}0\"")),
        "{postgis}"
    );
    assert!(node.sql("SELECT count(*) FROM near_origin").is_ok());
    assert!(
        node.sql("SELECT count(*) >= 0 FROM pg_stat_statements")
            .is_ok()
    );
    let repack = node.exec(&[
        &format!("/usr/lib/postgresql/{major}/bin/pg_repack"),
        "-h",
        "/run/postgresql",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-t",
        "places",
    ]);
    assert!(
        repack.status.success(),
        "pg_repack on {major}: {}",
        String::from_utf8_lossy(&repack.stderr)
    );
}

#[test]
fn three_members_go_from_15_to_17_to_18() {
    let _serial = serial();
    let cluster = Cluster::start(90, 3, &[]);
    let leader = cluster.wait_streaming(Duration::from_secs(60));
    let mut rows = fill(leader);
    cluster.every_member_has(&rows.to_string());

    // Refusals: nothing changes.
    let (out, last) = inplace_upgrade(leader, 17, 2);
    assert!(!out.status.success());
    assert!(
        last.contains("not upgraded, nothing changed") && last.contains("3 members, not the 2"),
        "{last}"
    );
    still_on(&cluster, leader, "15", &mut rows);

    let replica = cluster
        .nodes
        .iter()
        .find(|n| n.name != leader.name)
        .expect("a replica");
    replica
        .sql("SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    leader
        .sql("CREATE TABLE ballast AS SELECT repeat('x', 1000) AS filler FROM generate_series(1, 40000)")
        .expect("40 MB of WAL");
    let (out, last) = inplace_upgrade(leader, 17, 3);
    assert!(!out.status.success());
    assert!(
        last.contains("not upgraded, nothing changed") && last.contains(&replica.name),
        "{last}"
    );
    replica
        .sql("SELECT pg_wal_replay_resume()")
        .expect("resume replay");
    leader.sql("DROP TABLE ballast").expect("drop");
    still_on(&cluster, leader, "15", &mut rows);

    let control = "/usr/share/postgresql/17/extension/pg_repack.control";
    leader.exec(&["mv", control, &format!("{control}.hidden")]);
    let (out, last) = inplace_upgrade(leader, 17, 3);
    leader.exec(&["mv", &format!("{control}.hidden"), control]);
    assert!(!out.status.success());
    assert!(last.contains("PostgreSQL 17 has no pg_repack"), "{last}");
    still_on(&cluster, leader, "15", &mut rows);

    for major in [17u32, 18] {
        let started = Instant::now();
        let (out, last) = inplace_upgrade(leader, major, 3);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "upgrade to {major}: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cluster.describe()
        );
        assert!(
            stdout.len() >= 100,
            "the operator logs the first 100 bytes: {stdout}"
        );
        assert!(last.contains(&format!("to {major}: 3 members")), "{last}");
        println!("{stdout}");
        println!(
            "upgrade to {major}: {last} ({:.0}s)",
            started.elapsed().as_secs_f64()
        );

        let now_leader = cluster.wait_streaming(Duration::from_secs(120));
        assert_eq!(
            now_leader.name, leader.name,
            "the primary stays the primary"
        );
        assert_eq!(cluster.majors(), vec![major.to_string(); 3]);
        leader
            .sql("INSERT INTO places (name, geom) VALUES ('after the upgrade', ST_MakePoint(3, 4))")
            .expect("the new major takes writes");
        rows += 1;
        cluster.every_member_has(&rows.to_string());
        the_data_set_works_on(leader, major);
        let analyzed = leader
            .sql("SELECT count(*) FROM pg_stats WHERE tablename = 'places'")
            .expect("statistics");
        assert_ne!(analyzed, "0", "statistics after the upgrade");
        let cluster_view = leader.api("/cluster").expect("/cluster");
        let healthy = cluster_view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["state"] == "running" || m["state"] == "streaming")
            .count();
        assert_eq!(healthy, 3, "{cluster_view}");
        assert!(
            cluster_view["pause"].as_bool() != Some(true),
            "resumed: {cluster_view}"
        );
        for node in &cluster.nodes {
            let old = node.exec(&["test", "-e", "/home/postgres/pgdata/pgroot/pgdata_old"]);
            assert!(
                !old.status.success(),
                "{}: the old data directory is removed",
                node.name
            );
        }
    }
}

#[test]
fn a_failed_pg_upgrade_rolls_back_and_a_replica_that_cannot_sync_is_made_anew() {
    let _serial = serial();
    // Backups on: the upgrade ends with a full backup of the new major.
    let (_repository, volume) = repository();
    let cluster = Cluster::start(91, 2, &["-v", &volume, "-e", "WAL_LOCAL_PATH=/backups"]);
    let leader = cluster.wait_streaming(Duration::from_secs(60));
    let replica = cluster
        .nodes
        .iter()
        .find(|n| n.name != leader.name)
        .expect("a replica");
    let mut rows = fill(leader);
    // pg_upgrade itself fails after every check passed: a watcher in the
    // container kills its schema restore into the new cluster (the dump's
    // restore, not --check's `pg_restore -V`).
    let watcher = leader.exec_with(
        &["-d"],
        &[
            "sh",
            "-c",
            "for i in $(seq 1200); do pkill -9 -f 'pg_restor[e].*pg_upgrade_dump' && break; sleep 0.05; done",
        ],
    );
    assert!(watcher.status.success());
    let (out, last) = inplace_upgrade(leader, 17, 2);
    assert!(!out.status.success());
    assert!(
        last.contains("pg_upgrade --link: ")
            && last.contains("rolled back: the cluster runs PostgreSQL 15 with its data"),
        "{last}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(leader.api("/cluster").expect("/cluster")["pause"].as_bool() != Some(true));
    still_on(&cluster, leader, "15", &mut rows);

    // The replica's pull fails (its report still reaches the primary):
    // it is made anew from the primary.
    replica.exec(&["mv", "/usr/bin/rsync", "/usr/bin/rsync.real"]);
    replica.exec(&[
        "sh",
        "-c",
        "printf '#!/bin/sh\\ncase \"$*\" in *5432/pgroot/*) echo injected >&2; exit 23;; esac\\nexec /usr/bin/rsync.real \"$@\"\\n' > /usr/bin/rsync && chmod 755 /usr/bin/rsync",
    ]);
    let (out, last) = inplace_upgrade(leader, 17, 2);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        last.contains(&format!("made anew from the primary: {}", replica.name)),
        "{last}"
    );
    cluster.wait_streaming(Duration::from_secs(300));
    assert_eq!(cluster.majors(), vec!["17".to_owned(); 2]);
    cluster.every_member_has(&rows.to_string());

    let list = leader.exec(&["spilo", "backup", "list", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&list.stdout).expect("pgbackrest info");
    let stanza = &info[0];
    let db17 = stanza["db"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|db| db["version"] == "17")
        .unwrap_or_else(|| panic!("the stanza knows PostgreSQL 17: {info}"));
    let last = stanza["backup"]
        .as_array()
        .and_then(|b| b.last())
        .expect("backups");
    assert_eq!(last["type"], "full", "{info}");
    assert_eq!(
        last["database"]["id"], db17["id"],
        "the last backup is of 17: {info}"
    );
}

/// The backups `node` lists: (type, major) of each.
fn backups(node: &Container) -> Vec<(String, String)> {
    let list = node.exec(&["spilo", "backup", "list", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
    let stanza = &info[0];
    let version = |id: &serde_json::Value| {
        stanza["db"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|db| db["id"] == *id)
            .and_then(|db| db["version"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    stanza["backup"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["type"].as_str().unwrap_or_default().to_owned(),
                version(&b["database"]["id"]),
            )
        })
        .collect()
}

#[test]
fn a_clone_of_an_older_major_is_upgraded_before_it_opens() {
    let _serial = serial();
    let (_repository, volume) = repository();
    let backups_on = ["-v", &volume, "-e", "WAL_LOCAL_PATH=/backups"];
    let source = Cluster::start(92, 1, &backups_on);
    let leader = source.wait_streaming(Duration::from_secs(60));
    let rows = fill(leader);
    wait_for(
        Duration::from_secs(300),
        "a full backup of PostgreSQL 15",
        || {
            backups(leader)
                .contains(&("full".into(), "15".into()))
                .then_some(())
        },
        || format!("{:?}\n{}", backups(leader), leader.logs()),
    );
    leader
        .sql("INSERT INTO places (name) VALUES ('before the target')")
        .expect("insert");
    std::thread::sleep(Duration::from_secs(2));
    let target = leader
        .sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
        .expect("the target time");
    std::thread::sleep(Duration::from_secs(2));
    leader
        .sql("INSERT INTO places (name) VALUES ('after the target')")
        .expect("insert");
    let segment = leader
        .sql("SELECT pg_walfile_name(pg_switch_wal())")
        .expect("switch");
    wait_for(
        Duration::from_secs(120),
        "the last segment archived",
        || {
            let archived = leader
                .sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                .ok()?;
            (archived >= segment).then_some(())
        },
        || leader.logs(),
    );

    // Two members of a clone on 18, as the operator makes them from a
    // manifest with `clone: {cluster: upgrade, timestamp: ...}`.
    let Cluster {
        nodes: source,
        _etcd,
        _net,
        ..
    } = source;
    let clone_env = [
        "CLONE_METHOD=CLONE_WITH_WALE".to_owned(),
        "CLONE_SCOPE=upgrade".to_owned(),
        "CLONE_WAL_LOCAL_PATH=/backups".to_owned(),
        format!("CLONE_TARGET_TIME={target}"),
    ];
    let mut options: Vec<&str> = backups_on.to_vec();
    for var in &clone_env {
        options.extend(["-e", var]);
    }
    let clone = Cluster {
        nodes: (2..=3)
            .map(|i| member(&_net, 92, i, "upgraded", "18", &options))
            .collect(),
        _others: source,
        _etcd,
        _net,
    };
    let primary = clone.wait_streaming(Duration::from_secs(600));
    assert_eq!(clone.majors(), vec!["18".to_owned(); 2]);
    let logs = primary.logs();
    let done = logs
        .lines()
        .find(|l| l.contains("the clone was PostgreSQL 15 and runs PostgreSQL 18"))
        .unwrap_or_else(|| panic!("{logs}"));
    println!("{done}");
    // The state at the target: every row before it, none after.
    clone.every_member_has(&(rows + 1).to_string());
    assert_eq!(
        primary
            .sql("SELECT count(*) FROM places WHERE name = 'after the target'")
            .as_deref(),
        Ok("0")
    );
    the_data_set_works_on(primary, 18);
    // Started with Patroni's settings: nothing waits for a restart.
    assert_eq!(
        primary
            .sql("SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")
            .as_deref(),
        Ok("")
    );
    let patroni = primary.api("/patroni").expect("/patroni");
    assert!(patroni["pending_restart"] != true, "{patroni}");
    assert!(
        primary
            .sql("SELECT pg_is_in_recovery()")
            .is_ok_and(|v| v == "f")
    );
    for path in ["recovery.signal", "standby.signal"] {
        let found = primary.exec(&[
            "test",
            "-e",
            &format!("/home/postgres/pgdata/pgroot/pgdata/{path}"),
        ]);
        assert!(!found.status.success(), "{path} is left");
    }
    for dir in ["pgdata_old", "pgdata_new"] {
        let found = primary.exec(&["test", "-e", &format!("/home/postgres/pgdata/pgroot/{dir}")]);
        assert!(!found.status.success(), "{dir} is left");
    }
    primary
        .sql("INSERT INTO places (name) VALUES ('in the clone')")
        .expect("the clone takes writes");
    // Its own archive and backups, of 18.
    wait_for(
        Duration::from_secs(300),
        "the clone's first backup, of 18",
        || {
            backups(primary)
                .contains(&("full".into(), "18".into()))
                .then_some(())
        },
        || format!("{:?}\n{}", backups(primary), primary.logs()),
    );

    // A clone on 17 copied from the running source on 15.
    let copy = member(
        &clone._net,
        92,
        4,
        "copied",
        "17",
        &[
            "-e",
            "CLONE_METHOD=CLONE_WITH_BASEBACKUP",
            "-e",
            "CLONE_HOST=10.89.92.11",
            "-e",
            "CLONE_USER=standby",
            "-e",
            "CLONE_PASSWORD=standby",
        ],
    );
    wait_for(
        Duration::from_secs(600),
        "the copy leads, on 17",
        || {
            let leads = members(&copy)
                .values()
                .any(|(role, state)| role == "leader" && state == "running");
            let major = copy
                .sql("SELECT current_setting('server_version_num')::int / 10000")
                .ok()?;
            (leads && major == "17").then_some(())
        },
        || copy.logs(),
    );
    let logs = copy.logs();
    assert!(
        logs.contains("the clone was PostgreSQL 15 and runs PostgreSQL 17"),
        "{logs}"
    );
    assert_eq!(
        copy.sql("SELECT count(*) FROM places").as_deref(),
        Ok((rows + 2).to_string().as_str())
    );
    assert_eq!(
        copy.sql("SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")
            .as_deref(),
        Ok("")
    );
    copy.sql("INSERT INTO places (name) VALUES ('in the copy')")
        .expect("the copy takes writes");
}
