//! The monitor on 8080 against a real two-member cluster under pgbench:
//! bg_mon's document agrees with pg_stat_activity and /proc and names the
//! blocker of a waiting backend; the history fills and is served (brotli
//! or plain); `/metrics` parses with Prometheus' own Python parser and its
//! replication lag moves while a replica's WAL receiver is stopped; the
//! page renders in headless chromium with a process row; a stuck monitor
//! session, bad requests and many idle connections leave it serving.
//! Prints the monitor's own cost (its threads' CPU and the process' RSS).

mod init_support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use init_support::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const MEMBERS: [(&str, &str); 2] = [("mon0", "127.0.0.81"), ("mon1", "127.0.0.82")];
const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const VENV_PYTHON: &str = "/opt/spilo-test/venv/bin/python";

struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn get(ip: &str, path: &str, headers: &str) -> Option<Answer> {
    let mut stream =
        TcpStream::connect_timeout(&format!("{ip}:8080").parse().ok()?, Duration::from_secs(2))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {ip}\r\n{headers}\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = headers.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

fn snapshot(ip: &str) -> Option<Value> {
    let answer = get(ip, "/", "").filter(|a| a.status == 200)?;
    serde_json::from_slice(&answer.body).ok()
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // An open bucket is a stream without its end: what is there is all.
    let _ = brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out);
    out
}

fn processes(doc: &Value) -> Vec<Value> {
    doc["processes"].as_array().cloned().unwrap_or_default()
}

fn psql_on(node: &Node, sql: &str) -> String {
    node.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A psql session kept open on stdin, so that its transaction stays.
fn session(node: &Node, name: &str, sql: &str) -> Child {
    let mut child = Command::new(PSQL)
        .args([
            "-h",
            &node.socket_dir().display().to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-q",
        ])
        .env("PGAPPNAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin.write_all(sql.as_bytes()).expect("session sql");
    stdin.flush().expect("flush");
    child
}

fn pid_of(node: &Node, application: &str) -> u32 {
    wait_for(
        &format!("the session {application}"),
        Duration::from_secs(20),
        || {
            node.psql(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{application}' AND state IS NOT NULL"
        ))
        .ok()?
        .parse()
        .ok()
        },
    )
}

/// (utime + stime) ticks of the monitor's threads of `spilo init`.
fn monitor_ticks(pid: i32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("monitor-"))
        })
        .filter_map(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            Some(fields[11] + fields[12])
        })
        .sum()
}

fn rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The families and samples Prometheus' parser reads from `text`, as
/// `name{labels} value` lines.
fn parse_metrics(text: &str) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  for f in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in f.samples:\n\
                  \x20       print(f.type, s.name, sorted(s.labels.items()), s.value)\n";
    let mut child = Command::new(VENV_PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python: run tests/setup");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("metrics to the parser");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn metric(lines: &[String], name: &str) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| l.split_whitespace().nth(1) == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn bg_mon_document_history_metrics_and_page_under_pgbench() {
    let _serial = serial();
    let scratch = Scratch::new("monitor");
    let etcd = Etcd::start(&scratch.path);
    // The first member bootstraps; the second, a replica, serves no query
    // text.
    let start = |(name, ip): (&str, &str), query_text: &str| {
        let mut options = NodeOptions::new(name, ip, Some(&etcd.hosts));
        options.extra_env = vec![
            ("BGMON_HISTORY_BUCKETS".into(), "5".into()),
            ("BGMON_QUERY_TEXT".into(), query_text.into()),
        ];
        Node::start(&scratch.path, options)
    };
    let primary = start(MEMBERS[0], "on");
    writable_primary(&primary);
    let replica = start(MEMBERS[1], "off");
    wait_healthy(&[&primary, &replica], 1, Duration::from_secs(120));
    let (primary, replica) = (&primary, &replica);
    let socket = primary.socket_dir().display().to_string();
    let init = Command::new(PGBENCH)
        .args([
            "-i", "-q", "-s", "1", "-h", &socket, "-U", "postgres", "postgres",
        ])
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let spilo_pid = primary.pid().expect("spilo init's pid");
    let ticks_before = monitor_ticks(spilo_pid);
    let measured_from = Instant::now();
    let mut load = Command::new(PGBENCH)
        .args([
            "-c", "4", "-T", "100", "-n", "-h", &socket, "-U", "postgres", "postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgbench");

    // bg_mon's document, its keys in bg_mon's order.
    let doc = poll(
        "a document with pgbench's backends",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let doc = snapshot(&primary.ip)?;
            processes(&doc)
                .iter()
                .any(|p| p["query"].as_str().is_some_and(|q| q.contains("pgbench_")))
                .then_some(doc)
        },
        || format!(": the last was {:?}", snapshot(&primary.ip)),
    );
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.iter()
            .filter(|k| **k != "cgroup")
            .copied()
            .collect::<Vec<_>>(),
        [
            "hostname",
            "time",
            "sysname",
            "cpu_cores",
            "postgresql",
            "system_stats",
            "disk_stats",
            "databases",
            "net_stats",
            "processes"
        ]
    );
    let pg = &doc["postgresql"];
    assert_eq!(pg["role"], "master");
    assert!(pg["version"].as_str().unwrap().starts_with("15."), "{pg}");
    assert_eq!(pg["data_directory"], primary.pgdata().display().to_string());
    assert_eq!(pg["connections"]["max"], 100);
    assert!(pg["wal"]["written"].is_u64(), "{pg}");
    assert_eq!(pg["timeline"], 1);
    assert_eq!(pg["replication"][0]["state"], "streaming", "{pg}");
    for key in ["load_average", "cpu", "ctxt", "processes", "memory"] {
        assert!(!doc["system_stats"][key].is_null(), "system_stats.{key}");
    }
    assert!(doc["system_stats"]["memory"]["total"].as_u64().unwrap() > 0);
    for volume in ["data", "wal", "log"] {
        let disk = &doc["disk_stats"][volume];
        assert!(
            disk["device"]["space"]["total"].as_u64().unwrap() > 0,
            "{disk}"
        );
        assert!(disk["device"]["io"]["write"].is_f64(), "{disk}");
    }
    assert!(doc["databases"]["postgres"]["xact"]["commit"].is_u64());

    // Brotli when asked for, the same document.
    let br = get(&primary.ip, "/", "Accept-Encoding: gzip, br\r\n").expect("/ with br");
    assert!(
        br.headers.contains("Content-Encoding: br"),
        "{}",
        br.headers
    );
    let unpacked: Value = serde_json::from_slice(&unbrotli(&br.body)).expect("brotli JSON");
    assert_eq!(unpacked["hostname"], doc["hostname"]);

    // Every backend listed is one pg_stat_activity has, with the same
    // user and database; /proc has its state and memory.
    let listed = processes(&doc);
    let activity = psql_on(
        primary,
        "SELECT string_agg(pid || ':' || coalesce(usename, '') || ':' || coalesce(datname, '') || ':' || backend_type, '|') FROM pg_stat_activity",
    );
    let known: BTreeSet<&str> = activity.split('|').collect();
    let pgbench: Vec<&Value> = listed
        .iter()
        .filter(|p| p["query"].as_str().is_some_and(|q| q.contains("pgbench_")))
        .collect();
    assert!(!pgbench.is_empty() && pgbench.len() <= 4, "{pgbench:?}");
    for p in &pgbench {
        let pid = p["pid"].as_u64().unwrap();
        let row = format!("{pid}:postgres:postgres:client backend");
        // pgbench's first connection (its checks) may be gone since.
        if !fs::exists(format!("/proc/{pid}")).unwrap_or(true) {
            continue;
        }
        assert!(known.contains(row.as_str()), "{row} not in {activity}");
        assert_eq!(p["type"], "backend");
        assert!("RSDT".contains(p["state"].as_str().unwrap()), "{p}");
        let statm = fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
        if !statm.is_empty() {
            assert!(p["uss"].as_u64().unwrap() > 0, "{p}");
        }
    }
    let kinds: BTreeSet<&str> = listed.iter().filter_map(|p| p["type"].as_str()).collect();
    for kind in ["checkpointer", "walwriter", "walsender", "syslogger"] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    assert!(
        listed.iter().all(|p| p["username"] != "spilo_monitor"),
        "the monitor's own session is not a process of the database"
    );

    // A backend waiting on a lock names its blocker.
    psql_on(primary, "CREATE TABLE IF NOT EXISTS held (id int)");
    let mut holder = session(
        primary,
        "holder",
        "BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE;\n",
    );
    let holder_pid = pid_of(primary, "holder");
    let mut waiter = session(primary, "waiter", "SELECT count(*) FROM held;\n");
    let waiter_pid = pid_of(primary, "waiter");
    let blocked = wait_for(
        "the waiter locked_by the holder",
        Duration::from_secs(15),
        || {
            let doc = snapshot(&primary.ip)?;
            processes(&doc).into_iter().find(|p| {
                p["pid"] == waiter_pid && p["locked_by"] == serde_json::json!([holder_pid])
            })
        },
    );
    assert_eq!(blocked["wait_event_type"], "Lock");
    assert_eq!(blocked["query"], "SELECT count(*) FROM held;");
    let doc = snapshot(&primary.ip).unwrap();
    let idle_holder = processes(&doc)
        .into_iter()
        .find(|p| p["pid"] == holder_pid)
        .expect("the idle blocker is listed");
    assert!(
        idle_holder["idle_in_transaction"].is_number(),
        "{idle_holder}"
    );
    assert!(idle_holder["age"].is_number(), "{idle_holder}");

    // Query text off on the replica: its sessions show, their SQL not.
    let mut sleeper = session(replica, "sleeper", "SELECT pg_sleep(30);\n");
    let sleeper_pid = pid_of(replica, "sleeper");
    let asleep = wait_for(
        "the replica's sleeping session",
        Duration::from_secs(25),
        || {
            processes(&snapshot(&replica.ip)?)
                .into_iter()
                .find(|p| p["pid"] == sleeper_pid)
        },
    );
    assert!(asleep.get("query").is_none(), "{asleep}");
    assert_eq!(asleep["wait_event"], "PgSleep");
    let replica_doc = snapshot(&replica.ip).unwrap();
    assert_eq!(replica_doc["postgresql"]["role"], "replica");
    assert!(replica_doc["postgresql"]["wal"]["replay_paused"].is_boolean());

    // /metrics: Prometheus' parser reads it; the lag moves while the
    // replica's WAL receiver is stopped, and comes back after.
    let metrics = |ip: &str| {
        let answer = get(ip, "/metrics", "").expect("/metrics");
        assert_eq!(answer.status, 200);
        assert!(
            answer.headers.contains("text/plain; version=0.0.4"),
            "{}",
            answer.headers
        );
        parse_metrics(&String::from_utf8_lossy(&answer.body))
    };
    let parsed = metrics(&primary.ip);
    assert_eq!(metric(&parsed, "spilo_postgres_up"), [1.0]);
    assert_eq!(metric(&parsed, "spilo_patroni_up"), [1.0]);
    assert_eq!(metric(&parsed, "spilo_postgres_in_recovery"), [0.0]);
    assert!(
        metric(&parsed, "spilo_postgres_xact_commits_total")
            .iter()
            .sum::<f64>()
            > 0.0
    );
    assert!(
        parsed
            .iter()
            .any(|l| l.contains("spilo_postgres_connections") && l.contains("'active'")),
        "{parsed:?}"
    );
    assert_eq!(metric(&parsed, "spilo_volume_free_bytes").len(), 3);
    let receiver: i32 = replica
        .psql("SELECT pid FROM pg_stat_wal_receiver")
        .expect("walreceiver")
        .parse()
        .expect("pid");
    send(receiver, Signal::SIGSTOP);
    let lag = wait_for("the lag to grow", Duration::from_secs(30), || {
        metric(
            &metrics(&primary.ip),
            "spilo_postgres_replication_lag_bytes",
        )
        .first()
        .copied()
        .filter(|lag| *lag > 256.0 * 1024.0)
    });
    send(receiver, Signal::SIGCONT);
    wait_for("the lag to shrink", Duration::from_secs(60), || {
        metric(
            &metrics(&primary.ip),
            "spilo_postgres_replication_lag_bytes",
        )
        .first()
        .copied()
        .filter(|now| *now < lag / 4.0)
    });
    assert_eq!(
        metric(&metrics(&replica.ip), "spilo_postgres_in_recovery"),
        [1.0]
    );

    // A stuck monitor session (its backend stopped) costs samples, never
    // an answer.
    let monitor_backend = pid_of(primary, "spilo monitor") as i32;
    send(monitor_backend, Signal::SIGSTOP);
    let stuck = Instant::now();
    while stuck.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        assert!(
            snapshot(&primary.ip).is_some(),
            "no answer while the session is stuck"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    send(monitor_backend, Signal::SIGCONT);
    wait_for("PostgreSQL reached again", Duration::from_secs(30), || {
        snapshot(&primary.ip)?["postgresql"]["version"]
            .as_str()
            .map(drop)
    });

    // History: the current minute's bucket by index and by time, brotli
    // or plain; then the minute before.
    let now_doc = snapshot(&primary.ip).unwrap();
    let time = now_doc["time"].as_i64().unwrap() / 1000;
    let index = (time / 60) % 5;
    let br = get(&primary.ip, &format!("/{index}"), "Accept-Encoding: br\r\n").expect("bucket");
    assert_eq!(br.status, 200);
    assert!(
        br.headers.contains("Content-Encoding: br"),
        "{}",
        br.headers
    );
    let open = String::from_utf8(unbrotli(&br.body)).unwrap();
    assert!(
        open.starts_with("[{\"hostname\""),
        "{}",
        &open[..open.len().min(80)]
    );
    let plain = get(&primary.ip, &format!("/{time}"), "").expect("bucket by time");
    let array: Vec<Value> = serde_json::from_slice(&plain.body).expect("a closed array");
    assert!(
        !array.is_empty()
            && array
                .iter()
                .all(|d| d["time"].as_i64().unwrap() / 60_000 == time / 60)
    );
    let prev = wait_for("the previous minute", Duration::from_secs(70), || {
        let answer = get(&primary.ip, "/prev", "").filter(|a| a.status == 200)?;
        serde_json::from_slice::<Vec<Value>>(&answer.body).ok()
    });
    let minutes: BTreeSet<i64> = prev
        .iter()
        .map(|d| d["time"].as_i64().unwrap() / 60_000)
        .collect();
    assert_eq!(minutes.len(), 1, "one minute per bucket: {minutes:?}");
    assert!(minutes.iter().all(|m| *m < time / 60 + 2), "{minutes:?}");
    assert!(
        prev.windows(2)
            .all(|w| w[0]["time"].as_i64() < w[1]["time"].as_i64())
    );

    // The page, in a real browser: a row for a pgbench backend, and the
    // charts' legend colours on the screenshot.
    let chromium = |args: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=5000",
                "--window-size=1280,900",
            ])
            .args(args)
            .output()
            .expect("chromium: run tests/setup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let url = format!("http://{}:8080/ui", primary.ip);
    let dom = String::from_utf8(chromium(&["--dump-dom", &url])).unwrap();
    assert!(
        dom.contains(&format!("data-pid=\"{waiter_pid}\"")),
        "no row for the waiter in {dom}"
    );
    assert!(dom.contains("SELECT count(*) FROM held;"), "{dom}");
    let shot = scratch.path.join("ui.png");
    chromium(&[&format!("--screenshot={}", shot.display()), &url]);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        fs::File::open(&shot).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("frame");
    let step = info.color_type.samples();
    let count = |rgb: [u8; 3]| {
        pixels[..info.buffer_size()]
            .chunks(step)
            .filter(|p| p[..3] == rgb)
            .count()
    };
    for (name, rgb) in [
        ("CPU user", [0x1f, 0x77, 0xb4]),
        ("load", [0xd6, 0x27, 0x28]),
        ("memory used", [0x2c, 0xa0, 0x2c]),
    ] {
        assert!(
            count(rgb) >= 100,
            "{name}: {} pixels of its colour",
            count(rgb)
        );
    }

    // Bad requests: 404, 405, 431 or a closed connection; it keeps serving.
    assert_eq!(get(&primary.ip, "/nothing-here", "").unwrap().status, 404);
    assert_eq!(get(&primary.ip, "/99999", "").unwrap().status, 404);
    let huge = format!("X-Big: {}\r\n", "a".repeat(16 << 10));
    assert!(get(&primary.ip, "/", &huge).is_none_or(|a| a.status == 431));
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(format!("{}:8080", primary.ip)).ok())
        .collect();
    assert!(idle.len() >= 250, "{} connections", idle.len());
    let asked = Instant::now();
    let served = snapshot(&primary.ip).expect("an answer beside 300 idle connections");
    assert!(served["time"].is_i64());
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // They are let go after the deadline.
    std::thread::sleep(Duration::from_secs(6));
    let closed = idle
        .into_iter()
        .filter(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(1))).ok();
            matches!(c.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert!(closed >= 250, "{closed} idle connections closed");
    assert!(snapshot(&primary.ip).is_some());

    // The monitor's cost under this load: its threads' CPU, the RSS of the
    // whole `spilo init` (a debug build here).
    let seconds = measured_from.elapsed().as_secs_f64();
    let ticks = monitor_ticks(spilo_pid) - ticks_before;
    eprintln!(
        "monitor cost: {:.2}% of one core over {seconds:.0} s under pgbench -c 4 (sampler, server, du threads), spilo init RSS {} kB",
        ticks as f64 / 100.0 / seconds * 100.0,
        rss_kb(spilo_pid as u32)
    );

    for child in [&mut holder, &mut waiter, &mut sleeper, &mut load] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
