//! Clones by base backup (CLONE_METHOD=CLONE_WITH_BASEBACKUP, the
//! operator's variables), for real: a source `spilo init` node, a clone
//! node that copies it while it runs, and a clone whose source does not
//! answer.

mod backup_support;
mod init_support;

use std::time::Duration;

use backup_support::*;
use init_support::*;

const REPLICATION_PASSWORD: &str = "clone-me";

/// The operator's clone variables for a source at `host`.
fn clone_env(host: &str) -> Vec<(String, String)> {
    env(&[
        ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
        ("CLONE_HOST", host),
        ("CLONE_PORT", "5432"),
        ("CLONE_USER", "standby"),
        ("CLONE_PASSWORD", REPLICATION_PASSWORD),
    ])
}

fn timeline(node: &Node) -> String {
    sql(
        node,
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
    )
}

#[test]
fn a_basebackup_clone_has_every_row_its_own_timeline_and_its_own_archive() {
    let _serial = serial();
    let scratch = Scratch::new("clone-basebackup");
    // The source on the embedded etcd, the clone on a test etcd.
    let source = Node::start(
        &scratch.path,
        options(
            "source",
            "127.0.0.41",
            None,
            "acid-source",
            env(&[("PGPASSWORD_STANDBY", REPLICATION_PASSWORD)]),
        ),
    );
    wait_writable(&source, Duration::from_secs(90));
    sql(
        &source,
        "CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r SELECT generate_series(1, 500)",
    );
    let source_timeline = timeline(&source);

    let etcd = Etcd::start(&scratch.path);
    let repository = posix_repository(&scratch.path.join("repository"));
    let mut extra = clone_env(&source.ip);
    extra.extend(Store::Posix(repository.clone()).env());
    let clone = Node::start(
        &scratch.path,
        options(
            "clone",
            "127.0.0.42",
            Some(&etcd.hosts),
            "acid-clone",
            extra,
        ),
    );
    wait_writable(&clone, Duration::from_secs(120));
    assert_eq!(r_summary(&clone), "500|1|500");
    clone.assert_logged("basebackup: copying PostgreSQL 15 from host=127.0.0.41");
    // Promoted at the end of the copy: a timeline after the source's.
    let next = u32::from_str_radix(&source_timeline, 16).unwrap() + 1;
    assert_eq!(timeline(&clone), format!("{next:08X}"));

    // Two clusters from now on.
    sql(&source, "INSERT INTO r SELECT generate_series(501, 600)");
    sql(&clone, "INSERT INTO r SELECT generate_series(1001, 1010)");
    assert_eq!(r_summary(&source), "600|1|600");
    assert_eq!(
        sql(
            &clone,
            "SELECT count(*) FROM r WHERE id BETWEEN 501 AND 600"
        ),
        "0"
    );
    // The clone archives and backs up under its own scope only.
    wait_full_backups(&clone, "acid-clone", 1, Duration::from_secs(180));
    let store = Store::Posix(repository);
    assert!(!store.repository_files("acid-clone").is_empty());
    assert!(
        store.repository_files("acid-source").is_empty(),
        "the clone wrote under the source's scope"
    );
}

#[test]
fn a_clone_of_a_source_that_does_not_answer_never_becomes_an_empty_new_cluster() {
    let _serial = serial();
    let scratch = Scratch::new("clone-nosource");
    let mut node = Node::start(
        &scratch.path,
        // Nothing listens there.
        options(
            "orphan",
            "127.0.0.43",
            None,
            "acid-orphan",
            clone_env("127.0.0.44"),
        ),
    );
    never_an_empty_cluster(&mut node, Duration::from_secs(60));
    node.assert_logged("spilo basebackup: error: ");
}
