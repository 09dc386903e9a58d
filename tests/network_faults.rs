//! A network partition: three members in network namespaces of their own
//! on a bridge the test makes, the test etcd on the bridge's address. The
//! primary's link is cut: it demotes, a replica leads, and a writer on
//! every member shows that no two members took writes at once and that no
//! acknowledged commit is lost (synchronous mode). After the link is back
//! the old primary rejoins as a replica.

mod init_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use init_support::*;

const BRIDGE: &str = "spnfbr0";
const BRIDGE_IP: &str = "10.213.7.1";

/// The bridge, a namespace and a veth per member, and the FORWARD rule
/// that lets the members reach each other across the bridge (Docker's
/// policy drops bridged traffic); all removed when dropped.
struct Network {
    members: usize,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {}: {status}", args.join(" "));
}

fn iptables(action: &str) -> bool {
    Command::new("iptables")
        .args([
            action, "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Network {
    fn namespace(i: usize) -> String {
        format!("spilo-nf{i}")
    }

    fn veth(i: usize) -> String {
        format!("spnf{i}")
    }

    fn address(i: usize) -> String {
        format!("10.213.7.{}", 10 + i)
    }

    fn create(members: usize) -> Self {
        let network = Network { members };
        // What a failed run may have left.
        network.remove();
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", BRIDGE]);
        ip(&["link", "set", BRIDGE, "up"]);
        assert!(iptables("-I"), "iptables -I FORWARD");
        for i in 0..members {
            let (ns, veth) = (Self::namespace(i), Self::veth(i));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", BRIDGE, "up"]);
            let inside = ["netns", "exec", &ns, "ip"];
            let run = |args: &[&str]| ip(&[&inside[..], args].concat());
            run(&[
                "addr",
                "add",
                &format!("{}/24", Self::address(i)),
                "dev",
                "eth0",
            ]);
            run(&["link", "set", "eth0", "up"]);
            run(&["link", "set", "lo", "up"]);
        }
        network
    }

    /// Cuts member `i` off from everything (or links it again).
    fn link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &Self::veth(i),
            if up { "up" } else { "down" },
        ]);
    }

    fn remove(&self) {
        for i in 0..self.members {
            let _ = Command::new("ip")
                .args(["netns", "del", &Self::namespace(i)])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["link", "del", &Self::veth(i)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
        while iptables("-D") {}
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One acknowledged commit: its id, the member that took it, when.
type Ack = (u64, String, Instant);

/// One INSERT through `node`'s socket, given up (the connection closed,
/// never cancelled: a cancelled wait for the synchronous standby still
/// reports the commit) after 20 s.
fn insert(node: &Node, id: u64) -> bool {
    Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "20",
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-h", &node.socket_dir().display().to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-c"])
        .arg(format!("INSERT INTO acked VALUES ({id}, '{}')", node.name))
        .env("PGCONNECT_TIMEOUT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_primary_cut_off_demotes_a_replica_leads_and_no_acknowledged_commit_is_lost() {
    let _serial = serial();
    let scratch = Scratch::new("net-partition");
    let network = Network::create(3);
    let etcd = Etcd::cluster_on(&scratch.path, BRIDGE_IP, 1);
    let nodes: Arc<Vec<Node>> = Arc::new(
        (0..3)
            .map(|i| {
                let mut options =
                    NodeOptions::new(&format!("nf{i}"), &Network::address(i), Some(&etcd.hosts));
                options.synchronous = true;
                options.netns = Some(Network::namespace(i));
                Node::start(&scratch.path, options)
            })
            .collect(),
    );
    let old = wait_leader_index(&nodes, 2, Duration::from_secs(120));
    let leader = nodes[old].name.clone();
    wait_for("a synchronous standby", Duration::from_secs(60), || {
        members(&nodes[old])?
            .iter()
            .any(|(_, role, state)| role == "sync_standby" && state == "streaming")
            .then_some(())
    });
    nodes[old]
        .psql("CREATE TABLE acked (id bigint PRIMARY KEY, member text)")
        .expect("table");

    // A writer on every member, each id tried once.
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let mut writers = Background::default();
    for i in 0..3 {
        let (nodes, acks) = (nodes.clone(), acks.clone());
        writers.spawn(move |stop| {
            let node = &nodes[i];
            let mut id = i as u64;
            // Bounded: the test stops it within minutes.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if insert(node, id) {
                    acks.lock()
                        .unwrap()
                        .push((id, node.name.clone(), Instant::now()));
                } else {
                    thread::sleep(Duration::from_millis(200));
                }
                id += 3;
            }
        });
    }
    thread::sleep(Duration::from_secs(3));

    network.link(old, false);
    let cut = Instant::now();
    let refs: Vec<&Node> = nodes.iter().collect();
    let new_leader = wait_new_leader(
        &refs,
        &BTreeSet::from([leader.clone()]),
        Duration::from_secs(TTL + 4 * LOOP_WAIT + 20),
    );
    eprintln!(
        "partition: {new_leader} leads {:.1}s after {leader} was cut off",
        cut.elapsed().as_secs_f64()
    );
    // The cut-off primary no longer takes writes (its socket still answers).
    nodes[old].wait_for(
        "the cut-off primary demoted",
        Duration::from_secs(60),
        || {
            let answer = nodes[old].psql("SELECT pg_is_in_recovery()").ok()?;
            (answer.trim() == "t").then_some(())
        },
    );
    thread::sleep(Duration::from_secs(3));

    network.link(old, true);
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_eq!(wait_healthy(&refs, 2, Duration::from_secs(180)), new_leader);
    drop(writers);

    let acks = acks.lock().unwrap().clone();
    let by = |name: &str| -> Vec<Instant> {
        acks.iter()
            .filter(|(_, m, _)| m == name)
            .map(|(_, _, at)| *at)
            .collect()
    };
    let last_old = by(&leader).into_iter().max();
    let first_new = by(&new_leader)
        .into_iter()
        .filter(|at| *at > cut)
        .min()
        .expect("the new primary took writes");
    assert!(
        last_old.is_none_or(|at| at < first_new),
        "two members took writes at once: {leader} until {:?} after the cut, {new_leader} from {:?}",
        last_old.map(|at| at.saturating_duration_since(cut)),
        first_new.saturating_duration_since(cut)
    );
    let others: Vec<&Ack> = acks
        .iter()
        .filter(|(_, m, _)| *m != leader && *m != new_leader)
        .collect();
    assert!(others.is_empty(), "a replica took writes: {others:?}");
    let rows = nodes
        .iter()
        .find(|n| n.name == new_leader)
        .expect("the leader")
        .psql("SELECT id FROM acked")
        .expect("rows");
    let have: BTreeSet<u64> = rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let lost: Vec<u64> = acks
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| !have.contains(id))
        .collect();
    eprintln!(
        "{} acknowledged commits ({} by {leader}, {} by {new_leader}), {} lost",
        acks.len(),
        by(&leader).len(),
        by(&new_leader).len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert_eq!(nodes[old].role().as_deref(), Some("replica"));
}
