//! A standby cluster that streams from a remote primary (STANDBY_HOST,
//! STANDBY_PORT, as the operator sets them), for real: a source `spilo
//! init` node, a two-member standby cluster on its own etcd, rows that
//! arrive in both members, and the promotion the operator makes by
//! removing `standby_cluster` through `PATCH /config`.

mod backup_support;
mod init_support;

use std::time::Duration;

use backup_support::*;
use init_support::*;

const REPLICATION_PASSWORD: &str = "stream-me";

fn count(node: &Node) -> Option<String> {
    node.psql("SELECT count(*) FROM r").ok()
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
        member.wait_for("the source's rows", Duration::from_secs(60), || {
            (count(member).as_deref() == Some("100")).then_some(())
        });
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
        member.wait_for("the new rows", Duration::from_secs(30), || {
            (count(member).as_deref() == Some("150")).then_some(())
        });
    }

    // The operator's promotion: standby_cluster removed from the DCS.
    let (code, answer) = http(
        &format!("{}:8008", leader.ip),
        "PATCH",
        "/config",
        Some(r#"{"standby_cluster": null}"#),
    )
    .expect("PATCH /config");
    assert_eq!(code, 200, "{answer}");
    wait_writable(leader, Duration::from_secs(60));
    sql(leader, "INSERT INTO r SELECT generate_series(1001, 1010)");
    replica.wait_for(
        "the promoted leader's rows",
        Duration::from_secs(60),
        || (count(replica).as_deref() == Some("160")).then_some(()),
    );
    // Its own cluster now: the source's new rows stay there.
    sql(&source, "INSERT INTO r SELECT generate_series(151, 200)");
    assert_eq!(count(&source).as_deref(), Some("200"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(leader).as_deref(), Some("160"));
}
