//! A soak: pgbench through the leader's pgbouncer (found as the primary
//! service finds it) while the cluster
//! switches over ten times and one member is killed twice, in
//! synchronous mode. pgbench fails only in the switch windows, no
//! acknowledged write is lost, every member is back and streaming, and
//! `spilo init` leaks no file descriptor and leaves no zombie.

mod init_support;

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use init_support::*;

const MEMBERS: [(&str, &str); 3] = [
    ("soak0", "127.0.0.71"),
    ("soak1", "127.0.0.72"),
    ("soak2", "127.0.0.73"),
];
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
/// How long after a switch window pgbench may still fail: a burst runs
/// 2 s, its connections are made at once (`-C`) with a 2 s timeout.
const AFTER_WINDOW: Duration = Duration::from_secs(6);

/// The pgbouncer of the member Patroni calls the leader, as the primary
/// service (Endpoints) points at it; the first member otherwise. libpq's
/// own read-write search across the pgbouncers is no use: a pgbouncer
/// keeps telling new clients the `in_hot_standby` its first server
/// connection reported, also once that server is a replica.
fn through_leader(command: &mut Command) -> &mut Command {
    let leader = MEMBERS.iter().find_map(|(_, ip)| {
        let (code, body) = http(&format!("{ip}:8008"), "GET", "/cluster", None)?;
        let cluster: serde_json::Value =
            serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        let member = cluster["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "leader" && m["state"] == "running")?;
        let name = member["name"].as_str()?;
        MEMBERS.iter().find(|(n, _)| *n == name).map(|(_, ip)| *ip)
    });
    command
        .args([
            "-h",
            leader.unwrap_or(MEMBERS[0].1),
            "-p",
            "6432",
            "-U",
            "postgres",
        ])
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
}

fn options(scratch: &Scratch, name: &str, ip: &str, etcd: &Etcd) -> NodeOptions {
    let dir = Node::dir_for(&scratch.path, name);
    let mut options = NodeOptions::new(name, ip, Some(&etcd.hosts));
    options.synchronous = true;
    options.extra_env = vec![
        ("SPILO_PGBOUNCER_BIN".into(), "/usr/sbin/pgbouncer".into()),
        (
            "PGBOUNCER_CONFIGURATION".into(),
            format!(
                "[databases]\npostgres = host={} port=5432 user=postgres\n[pgbouncer]\n\
                 listen_addr = {ip}\nlisten_port = 6432\nunix_socket_dir =\nauth_type = trust\n\
                 auth_file = {}\npool_mode = transaction\nserver_login_retry = 1\n",
                dir.join("run/postgresql").display(),
                dir.join("run/pgbouncer/userlist.txt").display()
            ),
        ),
        (
            "PGBOUNCER_AUTHENTICATION".into(),
            "\"postgres\" \"\"\n".into(),
        ),
    ];
    options
}

/// A pgbench burst: when it ran, and whether it failed.
type Burst = (Instant, Instant, bool);

fn file_descriptors(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

fn zombies(pid: i32) -> Vec<i32> {
    let tree = descendants(pid);
    tree.into_iter()
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit(')')
                        .next()
                        .map(|rest| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The cluster healthy with a synchronous standby; the leader's name.
fn healthy(nodes: &[Node], within: Duration) -> String {
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = wait_healthy(&refs, 2, within);
    wait_for("a synchronous standby", within, || {
        nodes
            .iter()
            .find_map(members)?
            .iter()
            .any(|(_, role, state)| role == "sync_standby" && state == "streaming")
            .then_some(())
    });
    leader
}

#[test]
fn pgbench_through_pgbouncer_across_ten_switchovers_and_two_kills() {
    let _serial = serial();
    let scratch = Scratch::new("soak");
    let etcd = Etcd::start(&scratch.path);
    let mut nodes: Vec<Node> = MEMBERS
        .iter()
        .map(|(name, ip)| Node::start(&scratch.path, options(&scratch, name, ip, &etcd)))
        .collect();
    let mut leader = healthy(&nodes, Duration::from_secs(120));
    let init = through_leader(Command::new(PGBENCH).args(["-i", "-q", "-s", "2"]))
        .arg("postgres")
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    nodes
        .iter()
        .find(|n| n.name == leader)
        .unwrap()
        .psql("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .expect("table");
    // soak0 is never killed: its spilo init is the one checked for leaks.
    let watched = nodes[0].pid().expect("soak0 runs");
    let fds_before = file_descriptors(watched);

    let bursts: Arc<Mutex<Vec<Burst>>> = Arc::default();
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut load = Background::default();
    let record = bursts.clone();
    load.spawn(move |stop| {
        for _ in 0..10_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let started = Instant::now();
            let ok = through_leader(Command::new(PGBENCH).args(["-n", "-C", "-c", "4", "-T", "2"]))
                .arg("postgres")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            record.lock().unwrap().push((started, Instant::now(), !ok));
            if !ok {
                thread::sleep(Duration::from_millis(500));
            }
        }
    });
    let record = acks.clone();
    load.spawn(move |stop| {
        for id in 0..1_000_000u64 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let ok = through_leader(Command::new("timeout").args(["-s", "KILL", "20", PSQL]))
                .args(["-X", "-q", "-d", "postgres", "-c"])
                .arg(format!("INSERT INTO acked VALUES ({id})"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                record.lock().unwrap().push((id, Instant::now()));
            } else {
                thread::sleep(Duration::from_millis(100));
            }
        }
    });
    thread::sleep(Duration::from_secs(5));

    // Ten switchovers, a kill of soak1 after the third and the seventh.
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    for round in 0..10 {
        let began = Instant::now();
        let address = nodes.iter().find(|n| n.name == leader).unwrap().ip.clone();
        let body = format!(r#"{{"leader": "{leader}"}}"#);
        let (code, answer) = http(
            &format!("{address}:8008"),
            "POST",
            "/switchover",
            Some(&body),
        )
        .expect("switchover request");
        assert_eq!(code, 200, "switchover {round}: {answer}");
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_new_leader(
            &refs,
            &BTreeSet::from([leader.clone()]),
            Duration::from_secs(60),
        );
        leader = healthy(&nodes, Duration::from_secs(120));
        windows.push((began, Instant::now()));
        thread::sleep(Duration::from_secs(5));
        if round == 2 || round == 6 {
            let began = Instant::now();
            nodes[1].kill_tree();
            let refs: Vec<&Node> = nodes.iter().collect();
            if leader == nodes[1].name {
                wait_new_leader(
                    &refs,
                    &BTreeSet::from([leader.clone()]),
                    Duration::from_secs(TTL + 4 * LOOP_WAIT + 20),
                );
            }
            nodes[1].restart();
            leader = healthy(&nodes, Duration::from_secs(180));
            windows.push((began, Instant::now()));
            thread::sleep(Duration::from_secs(5));
        }
    }
    drop(load);

    let bursts = bursts.lock().unwrap().clone();
    let failed: Vec<&Burst> = bursts.iter().filter(|(_, _, failed)| *failed).collect();
    let outside: Vec<(Duration, Duration)> = failed
        .iter()
        .filter(|(from, to, _)| {
            !windows
                .iter()
                .any(|(began, ended)| *from <= *ended + AFTER_WINDOW && *to >= *began)
        })
        .map(|(from, to, _)| {
            (
                from.duration_since(windows[0].0),
                to.duration_since(windows[0].0),
            )
        })
        .collect();
    assert!(
        outside.is_empty(),
        "pgbench failed outside the switch windows: {outside:?}"
    );

    let acks = acks.lock().unwrap().clone();
    let mut times: Vec<Instant> = acks.iter().map(|(_, at)| *at).collect();
    times.sort();
    let outage = times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    let rows = nodes
        .iter()
        .find(|n| n.name == leader)
        .unwrap()
        .psql("SELECT id FROM acked")
        .expect("rows");
    let have: BTreeSet<u64> = rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let lost: Vec<u64> = acks
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !have.contains(id))
        .collect();
    eprintln!(
        "soak: {} switch windows, {} pgbench bursts of 2 s, {} failed ({:.2} per window), \
         {} acknowledged writes, 0 of them lost: {}, longest write outage {:.1}s",
        windows.len(),
        bursts.len(),
        failed.len(),
        failed.len() as f64 / windows.len() as f64,
        acks.len(),
        lost.is_empty(),
        outage.as_secs_f64()
    );
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    // pgbench works again after every window: a burst started before the
    // next one succeeds.
    for (i, (_, ended)) in windows.iter().enumerate() {
        let next = windows.get(i + 1).map(|(began, _)| *began);
        assert!(
            bursts.iter().any(|(from, _, failed)| !failed
                && from > ended
                && next.is_none_or(|next| *from < next)),
            "no pgbench burst succeeded after switch window {i}"
        );
    }

    healthy(&nodes, Duration::from_secs(60));
    assert_eq!(
        nodes[0].pid(),
        Some(watched),
        "soak0's spilo init was never restarted"
    );
    // The monitor's requests to Patroni open a socket for a moment each
    // second: a leak is a count that stays above, not one reading.
    let mut fds_after = file_descriptors(watched);
    for _ in 0..20 {
        if fds_after <= fds_before {
            break;
        }
        thread::sleep(Duration::from_millis(250));
        fds_after = file_descriptors(watched);
    }
    assert!(
        fds_after <= fds_before,
        "spilo init's file descriptors: {fds_before} before, {fds_after} after"
    );
    // A process that just exited is a zombie until its parent reaps it:
    // only one still there two seconds later is left behind.
    let first: Vec<Vec<i32>> = nodes
        .iter()
        .map(|n| zombies(n.pid().expect("running")))
        .collect();
    thread::sleep(Duration::from_secs(2));
    for (node, before) in nodes.iter().zip(first) {
        let left: Vec<i32> = zombies(node.pid().expect("running"))
            .into_iter()
            .filter(|p| before.contains(p))
            .collect();
        assert!(left.is_empty(), "{}: zombies {left:?}", node.name);
    }
}
