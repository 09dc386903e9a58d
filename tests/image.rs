//! The image, end to end, in a real container engine: built through the
//! Dockerfile exactly as a user does, then run as a single node, per major,
//! as a three-node cluster with etcd, compressed, and under any UID with a
//! read-only root.
//!
//! A cold build takes about five minutes; the scenarios share one build
//! and run one at a time. The engine (docker when it builds with BuildKit,
//! else podman; CONTAINER_ENGINE overrides), CACERT, the build, containers
//! and networks are tests/image_support.

mod image_support;

use std::collections::BTreeMap;
use std::time::Duration;

use image_support::{
    Container, IMAGE, Network, READY, compressed_image, image, majors, manifest, members, ok,
    output, serial, wait_for,
};

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
    // Spilo's data checksums (18's initdb has them on by default; Spilo
    // asks for them on every major, see every_major_creates_its_extensions),
    // and 18's asynchronous I/O with its default worker processes: io_uring
    // needs system calls a container's seccomp profile may refuse.
    assert_eq!(node.sql("SHOW data_checksums").unwrap(), "on");
    if default >= 18 {
        assert_eq!(node.sql("SHOW io_method").unwrap(), "worker");
    }
    // A new member of its own cluster: initdb ran while Patroni started.
    let logs = node.logs_with(&[]);
    assert!(
        logs.contains("spilo initdb: took over the cluster made ahead"),
        "{logs}"
    );
    // The image's HEALTHCHECK, as the engine reports it.
    node.wait_healthy();
    // The OAuth2 PAM module where `pam_oauth2.so` resolves, loadable and
    // with PAM's entry point (no stub passes), and the PAM service as a
    // link to the file `spilo configure` renders in RW_DIR.
    let module = node.exec(&[
        "python3",
        "-c",
        "import ctypes, glob\n\
         [m] = glob.glob('/usr/lib/*-linux-gnu/security/pam_oauth2.so')\n\
         ctypes.CDLL(m).pam_sm_authenticate",
    ]);
    assert!(
        module.status.success(),
        "pam_oauth2.so is not installed or lacks pam_sm_authenticate: {}",
        String::from_utf8_lossy(&module.stderr)
    );
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
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL {major}: CREATE EXTENSION {ext}: {e}; logs:\n{}",
                        node.logs()
                    )
                });
        }
        let postgis = node.sql("SELECT postgis_full_version()").unwrap();
        for part in ["POSTGIS=", "GEOS=", "PROJ="] {
            assert!(postgis.contains(part), "PostgreSQL {major}: {postgis}");
        }
        assert_eq!(
            node.sql("SHOW data_checksums").unwrap(),
            "on",
            "PostgreSQL {major}"
        );
        repack_a_table(&node, major);
        if entry["source"] == "build" {
            let built = &entry["built"];
            assert_eq!(
                built[format!("postgresql-{major}")]["packaging"],
                "debian",
                "{entry}"
            );
            // The server's libraries came with it, from the same source.
            assert_eq!(
                built["libpq5"]["source"],
                format!("postgresql-{major}"),
                "{entry}"
            );
            let postgis = &built[format!("postgresql-{major}-postgis-3")];
            assert_eq!(postgis["packaging"], "upstream", "{entry}");
            assert!(
                postgis["version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with('3')),
                "{entry}"
            );
        }
        monitor_serves(&node, major);
        // wal2json is an output plugin, not an extension: it must load.
        if packages.contains_key(&format!("postgresql-{major}-wal2json")) {
            node.sql("LOAD 'wal2json'")
                .unwrap_or_else(|e| panic!("PostgreSQL {major}: wal2json: {e}"));
        }
    }
}

/// The monitor on 8080 reads this major: bg_mon's document with the
/// container's cgroup and the server's processes, and its metrics.
fn monitor_serves(node: &Container, major: u32) {
    let doc = wait_for(
        Duration::from_secs(30),
        &format!("PostgreSQL {major} in the monitor's document"),
        || {
            let (status, body) = node.monitor("/");
            let doc: serde_json::Value =
                serde_json::from_str(&body).ok().filter(|_| status == 200)?;
            doc["postgresql"]["version"].is_string().then_some(doc)
        },
        || format!("{:?}", node.monitor("/")),
    );
    let version = doc["postgresql"]["version"].as_str().unwrap();
    assert!(version.starts_with(&format!("{major}.")), "{version}");
    assert_eq!(doc["postgresql"]["role"], "master");
    assert!(
        doc["cgroup"]["memory"]["usage"].as_u64().is_some(),
        "{}",
        doc["cgroup"]
    );
    let kinds: Vec<&str> = doc["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"checkpointer"),
        "PostgreSQL {major}: {kinds:?}"
    );
    let (status, metrics) = node.monitor("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("\nspilo_postgres_up 1\n"), "{metrics}");
    assert!(metrics.contains("\nspilo_patroni_up 1\n"), "{metrics}");
    assert_eq!(node.monitor("/ui").0, 200);
}

/// pg_repack rewrites a bloated table online: new storage, the same rows.
fn repack_a_table(node: &Container, major: u32) {
    node.sql(
        "CREATE TABLE repacked (id int PRIMARY KEY, pad text); \
         INSERT INTO repacked SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i; \
         DELETE FROM repacked WHERE id % 2 = 0",
    )
    .unwrap_or_else(|e| panic!("PostgreSQL {major}: a table to repack: {e}"));
    let storage = "SELECT pg_relation_filenode('repacked') || ' ' || pg_relation_size('repacked')";
    let before = node.sql(storage).unwrap();
    let repack = node.exec(&[
        &format!("/usr/lib/postgresql/{major}/bin/pg_repack"),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-t",
        "repacked",
    ]);
    assert!(
        repack.status.success(),
        "PostgreSQL {major}: pg_repack: {}",
        String::from_utf8_lossy(&repack.stderr)
    );
    let after = node.sql(storage).unwrap();
    let storage = |s: &str| -> (u64, u64) {
        let mut fields = s.split(' ').map(|n| n.parse::<u64>());
        match (fields.next(), fields.next()) {
            (Some(Ok(node)), Some(Ok(size))) => (node, size),
            _ => panic!("PostgreSQL {major}: storage {s:?}"),
        }
    };
    let ((node_before, size_before), (node_after, size_after)) =
        (storage(&before), storage(&after));
    assert_ne!(node_before, node_after, "new storage");
    assert!(size_after < size_before, "smaller: {before} -> {after}");
    assert_eq!(node.sql("SELECT count(*) FROM repacked").unwrap(), "10000");
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
    // patronictl without -c and psql over the socket, as that UID (no
    // passwd entry, no home of its own). PostgreSQL answers before the
    // bootstrap has finished and the member holds the leader key.
    let list = || {
        let list = node.exec(&["patronictl", "list", "-f", "json"]);
        serde_json::from_slice::<serde_json::Value>(&list.stdout).map_err(|e| {
            format!(
                "patronictl list: {e}: {}",
                String::from_utf8_lossy(&list.stderr)
            )
        })
    };
    wait_for(
        Duration::from_secs(60),
        "patronictl lists the member as Leader",
        || {
            list()
                .ok()
                .filter(|rows| rows[0]["Role"] == "Leader")
                .map(|_| ())
        },
        || format!("{:?}", list()),
    );
    let one = node.exec(&["psql", "-U", "postgres", "-tAq", "-c", "SELECT 1"]);
    assert_eq!(
        String::from_utf8_lossy(&one.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
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
    node.wait_healthy();
}

/// The image's pgBackRest archives and backs up into a mounted directory
/// with the root filesystem read-only: a first full backup after the
/// bootstrap, then the WAL of a switch in the archive.
#[test]
fn backups_go_to_a_mounted_directory_with_a_read_only_root() {
    let _serial = serial();
    let node = Container::run(
        image(),
        "backup",
        &[
            "--read-only",
            "--tmpfs=/run:rw,exec,mode=1777",
            "--tmpfs=/tmp:rw,mode=1777",
            "--tmpfs=/home/postgres/pgdata:rw,mode=1777",
            "--tmpfs=/backups:rw,mode=1777",
            "-e",
            "WAL_LOCAL_PATH=/backups",
            "-e",
            "SCOPE=imaged",
        ],
        &[],
    );
    node.wait_ready(READY);
    let list = || {
        let out = node.exec(&["spilo", "backup", "list", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    };
    let info = wait_for(
        Duration::from_secs(120),
        "a first full backup",
        || list().filter(|i| i[0]["backup"][0]["type"] == "full"),
        || format!("{:?}\n{}", list(), node.logs()),
    );
    assert_eq!(info[0]["name"], "imaged", "{info}");
    let segment = node
        .sql("CREATE TABLE switched (id int)")
        .and_then(|_| node.sql("SELECT pg_walfile_name(pg_switch_wal())"))
        .expect("a WAL switch");
    wait_for(
        Duration::from_secs(60),
        "the switched segment archived",
        || {
            node.sql("SELECT last_archived_wal FROM pg_stat_archiver")
                .ok()
                .filter(|last| *last >= segment)
        },
        || node.logs(),
    );
    let table = node.exec(&["spilo", "backup", "list"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("full"), "{table}");

    // A standby of this cluster's archive fetches the segment through the
    // operator's restore_command: envdir, /scripts/restore_command.sh and
    // pgBackRest, with the env-standby `spilo configure` writes (its
    // RW_DIR and PGHOME its own, beside the running node's; the same
    // PGDATA, whose system identifier pgBackRest checks).
    let fetch = format!(
        "set -e; env RW_DIR=/tmp/standby PGHOME=/tmp/standby-home PGDATA=/home/postgres/pgdata/pgroot/pgdata SCOPE=imaged-standby STANDBY_SCOPE=imaged STANDBY_WAL_LOCAL_PATH=/backups spilo configure patroni backup; \
         envdir \"/tmp/standby/etc/wal-e.d/env-standby\" /scripts/restore_command.sh \"{segment}\" \"/tmp/{segment}\"; \
         stat -c %s /tmp/{segment}"
    );
    let out = output(&[
        "exec", "--user", "postgres", &node.name, "/bin/sh", "-c", &fetch,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("16777216"),
        "{out:?}"
    );
}

/// The monitor's cost in the image (a release build) under pgbench: the
/// CPU of its threads in `spilo init` and of its session's backend, and
/// the RSS of `spilo init` with it, printed for README.md.
#[test]
fn the_monitor_cost_under_pgbench() {
    let _serial = serial();
    let node = Container::run(image(), "moncost", &[], &[]);
    node.wait_ready(READY);
    let pgbench = |args: &str| {
        let out = node.exec(&["sh", "-c", &format!("pgbench -U postgres {args} postgres")]);
        assert!(
            out.status.success(),
            "pgbench {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pgbench("-i -q -s 10");
    // utime + stime ticks of the monitor's threads and of its backend,
    // and PID 1's RSS in kB.
    let probe = || {
        let script = "import glob\n\
             def ticks(stat):\n\
             \x20   f = open(stat).read().rsplit(')', 1)[1].split()\n\
             \x20   return int(f[11]) + int(f[12])\n\
             threads = [t for t in glob.glob('/proc/1/task/*') if open(t + '/comm').read().startswith('monitor-')]\n\
             backend = [p for p in glob.glob('/proc/[0-9]*') if 'spilo monitor' in open(p + '/cmdline').read()]\n\
             rss = [l.split()[1] for l in open('/proc/1/status') if l.startswith('VmRSS')][0]\n\
             print(len(threads), sum(ticks(t + '/stat') for t in threads), sum(ticks(p + '/stat') for p in backend), rss)";
        let out = node.exec(&["python3", "-c", script]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let numbers: Vec<u64> = text
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(
            numbers.len(),
            4,
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        numbers
    };
    let before = probe();
    assert_eq!(before[0], 3, "the sampler, server and du threads");
    let started = std::time::Instant::now();
    pgbench("-c 4 -T 60 -n");
    let (status, body) = node.monitor("/");
    assert_eq!(status, 200, "{body}");
    let seconds = started.elapsed().as_secs_f64();
    let after = probe();
    let percent = |ticks: u64| ticks as f64 / 100.0 / seconds * 100.0;
    eprintln!(
        "monitor cost over {seconds:.0} s of pgbench -c 4: its threads {:.2}% of one core, its backend {:.2}%, spilo init RSS {} kB",
        percent(after[1] - before[1]),
        percent(after[2] - before[2]),
        after[3]
    );
}
