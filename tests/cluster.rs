//! Three `spilo init` members on 127.0.0.2-4 with a test etcd: formation,
//! switchover, SIGTERM handover and rejoin, SIGKILL failover and rejoin,
//! and zero loss of acknowledged commits in synchronous mode.

mod init_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use init_support::*;
use nix::sys::signal::Signal;

const IPS: [(&str, &str); 3] = [
    ("node2", "127.0.0.2"),
    ("node3", "127.0.0.3"),
    ("node4", "127.0.0.4"),
];

struct Cluster {
    // Field order is drop order: nodes before their etcd.
    nodes: Vec<Node>,
    _etcd: Etcd,
    _scratch: Scratch,
}

impl Cluster {
    fn start(tag: &str, synchronous: bool) -> Self {
        let scratch = Scratch::new(tag);
        let etcd = Etcd::start(&scratch.path);
        let nodes = IPS
            .iter()
            .map(|(name, ip)| {
                let mut options = NodeOptions::new(name, ip, Some(&etcd.hosts));
                options.synchronous = synchronous;
                Node::start(&scratch.path, options)
            })
            .collect();
        Cluster {
            nodes,
            _etcd: etcd,
            _scratch: scratch,
        }
    }

    fn refs(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("known node")
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("known node")
    }

    fn healthy(&self, within: Duration) -> String {
        wait_healthy(&self.refs(), 2, within)
    }

    /// Patroni passes the hooks' output through; none may have failed.
    fn assert_hooks_succeeded(&self) {
        for node in &self.nodes {
            let log = node.log();
            assert!(!hook_failed(&log), "{}: {}", node.name, tail(&log, 30));
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[test]
fn three_members_switch_over_hand_over_on_sigterm_and_rejoin() {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = Cluster::start("cluster", false);
    let leader = cluster.healthy(Duration::from_secs(90));
    eprintln!(
        "cluster: 1 primary + 2 streaming replicas after {}",
        seconds(started.elapsed())
    );

    // Replication works.
    cluster
        .node(&leader)
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (42)")
        .unwrap();
    for replica in cluster.nodes.iter().filter(|n| n.name != leader) {
        wait_for("the row on a replica", Duration::from_secs(20), || {
            (replica.psql("SELECT id FROM t").ok()? == "42").then_some(())
        });
    }

    // Switchover through Patroni's REST API.
    let candidate = IPS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n != leader)
        .unwrap()
        .to_owned();
    let body = format!(r#"{{"leader": "{leader}", "candidate": "{candidate}"}}"#);
    let switch_started = Instant::now();
    let (code, answer) = http(
        &format!("{}:8008", cluster.node(&leader).ip),
        "POST",
        "/switchover",
        Some(&body),
    )
    .expect("switchover request");
    assert_eq!(code, 200, "{answer}");
    wait_for("the candidate to lead", Duration::from_secs(60), || {
        (cluster.node(&candidate).role().as_deref() == Some("primary")).then_some(())
    });
    eprintln!(
        "switchover {leader} -> {candidate}: {}",
        seconds(switch_started.elapsed())
    );
    let leader = cluster.healthy(Duration::from_secs(60));
    assert_eq!(leader, candidate);
    // Promotion ran the on_role_change hook on the new primary.
    wait_for("the on_role_change hook", Duration::from_secs(30), || {
        cluster
            .node(&candidate)
            .log()
            .contains("spilo hook on-role-change to primary: roles ensured")
            .then_some(())
    });

    // SIGTERM to the primary's init: Patroni hands over, init exits 0.
    let term_started = Instant::now();
    cluster.node(&leader).signal(Signal::SIGTERM);
    let gone = BTreeSet::from([leader.clone()]);
    let new_leader = wait_new_leader(&cluster.refs(), &gone, Duration::from_secs(60));
    eprintln!(
        "SIGTERM handover {leader} -> {new_leader}: {}",
        seconds(term_started.elapsed())
    );
    let status = cluster.node_mut(&leader).wait_exit(Duration::from_secs(45));
    assert_eq!(status.code(), Some(0));
    assert!(
        cluster.node(&leader).leftovers().is_empty(),
        "{:?}",
        cluster.node(&leader).leftovers()
    );

    // Restarted, the old primary rejoins as a replica.
    cluster.node_mut(&leader).restart();
    let now_leading = cluster.healthy(Duration::from_secs(90));
    assert_eq!(now_leading, new_leader);
    assert_eq!(cluster.node(&leader).role().as_deref(), Some("replica"));
    assert_eq!(
        cluster.node(&leader).psql("SELECT id FROM t").unwrap(),
        "42"
    );
}

#[test]
fn sigkill_of_the_primary_tree_promotes_a_replica_within_ttl_and_loop_wait() {
    let _serial = serial();
    let mut cluster = Cluster::start("failover", false);
    let leader = cluster.healthy(Duration::from_secs(90));
    let killed = Instant::now();
    cluster.node_mut(&leader).kill_tree();
    let gone = BTreeSet::from([leader.clone()]);
    let new_leader = wait_new_leader(&cluster.refs(), &gone, Duration::from_secs(60));
    let took = killed.elapsed();
    eprintln!(
        "SIGKILL failover {leader} -> {new_leader}: {}",
        seconds(took)
    );
    let bound = Duration::from_secs(TTL + LOOP_WAIT);
    assert!(took <= bound, "failover took {took:?}, more than {bound:?}");

    // Restarted over its crashed data, the old primary rejoins as a
    // replica of the new one (pg_rewind if it had diverged).
    cluster.node_mut(&leader).restart();
    assert_eq!(cluster.healthy(Duration::from_secs(90)), new_leader);
    assert_eq!(cluster.node(&leader).role().as_deref(), Some("replica"));
    cluster.assert_hooks_succeeded();
}

#[test]
fn synchronous_mode_loses_no_acknowledged_commit_in_a_crash_failover() {
    let _serial = serial();
    let mut cluster = Cluster::start("sync", true);
    let leader = cluster.healthy(Duration::from_secs(90));
    // Patroni promotes only the member named in /sync: wait for one.
    wait_for("a synchronous standby", Duration::from_secs(60), || {
        members(cluster.node(&leader))?
            .iter()
            .any(|(_, role, state)| role == "sync_standby" && state == "streaming")
            .then_some(())
    });
    cluster
        .node(&leader)
        .psql("CREATE TABLE acked (id int PRIMARY KEY)")
        .unwrap();

    // A writer that records every commit the primary acknowledged.
    let socket = cluster.node(&leader).socket_dir();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                match psql_at(&socket, &format!("INSERT INTO acked VALUES ({id})")) {
                    Ok(_) => acked.push(id),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    cluster.node_mut(&leader).kill_tree();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(acked.len() > 10, "the writer barely wrote: {}", acked.len());

    let crashed = Instant::now();
    let gone = BTreeSet::from([leader.clone()]);
    let new_leader = wait_new_leader(&cluster.refs(), &gone, Duration::from_secs(60));
    let took = crashed.elapsed();
    let present = cluster
        .node(&new_leader)
        .psql("SELECT string_agg(id::text, ',') FROM acked")
        .unwrap();
    let present: BTreeSet<i32> = present.split(',').filter_map(|s| s.parse().ok()).collect();
    let lost: Vec<i32> = acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    eprintln!(
        "sync failover {leader} -> {new_leader}: {}, {} acknowledged commits, {} lost",
        seconds(took),
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    cluster.assert_hooks_succeeded();
}
