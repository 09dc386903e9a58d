//! The DCS failing under a running cluster (a test etcd the test stops):
//! down for longer than ttl, the primary demotes, or with Patroni's
//! failsafe_mode keeps serving while it sees every member; a three-member
//! etcd losing one member changes nothing.

mod init_support;

use std::time::{Duration, Instant};

use init_support::*;
use nix::sys::signal::Signal;

/// Two members on the given etcd; their leader's index.
fn start_pair(scratch: &Scratch, etcd: &Etcd, names: [(&str, &str); 2]) -> (Vec<Node>, usize) {
    let nodes: Vec<Node> = names
        .iter()
        .map(|(name, ip)| Node::start(&scratch.path, NodeOptions::new(name, ip, Some(&etcd.hosts))))
        .collect();
    let primary = wait_leader_index(&nodes, 1, Duration::from_secs(120));
    (nodes, primary)
}

fn writable(node: &Node, id: usize) -> bool {
    node.psql(&format!(
        "CREATE TABLE IF NOT EXISTS w (id int); INSERT INTO w VALUES ({id})"
    ))
    .is_ok()
}

fn in_recovery(node: &Node) -> Option<bool> {
    node.psql("SELECT pg_is_in_recovery()")
        .ok()
        .map(|answer| answer.trim() == "t")
}

/// Longer than ttl: Patroni's leader key would have expired.
const BEYOND_TTL: Duration = Duration::from_secs(TTL + 2 * LOOP_WAIT + 6);

#[test]
fn the_dcs_down_longer_than_ttl_demotes_the_primary_unless_failsafe_mode_sees_every_member() {
    let _serial = serial();
    let scratch = Scratch::new("dcs-down");
    let etcd = Etcd::start(&scratch.path);
    let (nodes, primary) = start_pair(
        &scratch,
        &etcd,
        [("node10", "127.0.0.64"), ("node11", "127.0.0.65")],
    );
    let first = &nodes[primary];
    assert!(writable(first, 0));

    // failsafe_mode off (the default): the primary cannot renew its
    // leader key and demotes within ttl; nothing takes writes.
    etcd.signal(0, Signal::SIGSTOP);
    let stopped = Instant::now();
    first.wait_for("the primary demoted", BEYOND_TTL, || {
        (in_recovery(first) == Some(true)).then_some(())
    });
    eprintln!(
        "failsafe off: demoted {:.1}s after the DCS stopped answering",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        nodes.iter().all(|n| in_recovery(n) != Some(false)),
        "a member still takes writes without a DCS"
    );
    etcd.signal(0, Signal::SIGCONT);
    let primary = wait_leader_index(&nodes, 1, Duration::from_secs(90));
    let leader = nodes[primary].name.clone();
    let first = &nodes[primary];

    // failsafe_mode on: the primary sees every member through their REST
    // APIs and keeps serving, for longer than ttl.
    let (code, answer) = http(
        &format!("{}:8008", first.ip),
        "PATCH",
        "/config",
        Some(r#"{"failsafe_mode": true}"#),
    )
    .expect("PATCH /config");
    assert_eq!(code, 200, "{answer}");
    // The leader publishes the members it may rely on: /failsafe.
    first.wait_for(
        "the failsafe key in the DCS",
        Duration::from_secs(30),
        || {
            let (code, body) = http(&format!("{}:8008", first.ip), "GET", "/failsafe", None)?;
            (code == 200 && body.contains(&nodes[1 - primary].name)).then_some(())
        },
    );
    etcd.signal(0, Signal::SIGSTOP);
    let stopped = Instant::now();
    let mut id = 1;
    while stopped.elapsed() < BEYOND_TTL {
        assert!(
            writable(first, id),
            "failsafe on: the primary stopped taking writes {:.1}s after the DCS stopped answering{}",
            stopped.elapsed().as_secs_f64(),
            first.log_tail()
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(in_recovery(&nodes[1 - primary]), Some(true));
    etcd.signal(0, Signal::SIGCONT);
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_eq!(wait_healthy(&refs, 1, Duration::from_secs(90)), leader);
}

#[test]
fn a_three_member_etcd_losing_one_member_changes_nothing() {
    let _serial = serial();
    let scratch = Scratch::new("dcs-member");
    let etcd = Etcd::cluster(&scratch.path, 3);
    let (nodes, primary) = start_pair(
        &scratch,
        &etcd,
        [("node12", "127.0.0.66"), ("node13", "127.0.0.67")],
    );
    let leader = nodes[primary].name.clone();
    // The member Patroni talks to first, and so likely the one it uses.
    etcd.signal(0, Signal::SIGKILL);
    let killed = Instant::now();
    let mut id = 0;
    while killed.elapsed() < BEYOND_TTL {
        assert!(
            writable(&nodes[primary], id),
            "the primary stopped taking writes {:.1}s after one etcd member of three died{}",
            killed.elapsed().as_secs_f64(),
            nodes[primary].log_tail()
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let view = members(&nodes[1 - primary]).expect("the replica's view");
    assert!(
        view.iter()
            .any(|(name, role, state)| *name == leader && role == "leader" && state == "running"),
        "{view:?}"
    );
    assert!(
        view.iter().any(|(name, role, state)| *name != leader
            && role == "replica"
            && state == "streaming"),
        "{view:?}"
    );
}
