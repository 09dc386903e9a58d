//! Full volumes (tmpfs mounts the tests make): a full log volume never
//! stops the database; a full PGDATA on the primary stops PostgreSQL, a
//! replica takes over, and once space is freed the member is back without
//! a lost acknowledged commit. `spilo init` says which volume is full in
//! one line.

mod init_support;

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use init_support::*;

/// A tmpfs of `size_mib` at a path, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size_mib: u64) -> Self {
        fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("tmpfs")
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount tmpfs on {}: {status}",
            path.display()
        );
        Tmpfs(path.to_owned())
    }

    /// Fills the volume with one file until it has no byte left (bounded
    /// by the volume's size); the file, to free the space again.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 1 << 16];
        for _ in 0..(1 << 16) {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
        // The last partial block.
        while let Ok(n) = file.write(&[0u8; 512]) {
            if n == 0 {
                break;
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The first line after byte `since` of the log that holds `words`,
/// waited for.
fn wait_logged(node: &Node, since: usize, words: &str, within: Duration) -> String {
    node.wait_for(&format!("{words:?} in the log"), within, || {
        let log = node.log();
        let tail = log.get(since..)?;
        tail.lines()
            .find(|line| line.contains(words))
            .map(str::to_owned)
    })
}

#[test]
fn a_full_log_volume_never_stops_the_database() {
    let _serial = serial();
    let scratch = Scratch::new("disk-log");
    let pglog = scratch.path.join("pglog");
    let volume = Tmpfs::mount(&pglog, 64);
    let mut options = NodeOptions::new("node7", "127.0.0.61", None);
    options.extra_env = vec![("PGLOG".into(), pglog.display().to_string())];
    let node = Node::start(&scratch.path, options);
    writable_primary(&node);

    let since = node.log().len();
    let filler = volume.fill();
    let line = wait_logged(&node, since, "log volume", Duration::from_secs(30));
    assert!(
        line.contains(&format!("log volume {} is full", pglog.display()))
            && line.contains("the database keeps running"),
        "{line}"
    );
    // Enough statements for PostgreSQL's logger to have tried writing.
    for setup in [
        "CREATE TABLE logged (id int)",
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        node.psql(setup).expect(setup);
    }
    for id in 0..200 {
        node.psql(&format!("INSERT INTO logged VALUES ({id})"))
            .unwrap_or_else(|e| {
                panic!(
                    "insert {id} with the log volume full: {e}{}",
                    node.log_tail()
                )
            });
    }
    assert_eq!(
        node.psql("SELECT count(*) FROM logged").unwrap().trim(),
        "200"
    );
    assert_eq!(node.role().as_deref(), Some("primary"));

    let since = node.log().len();
    fs::remove_file(&filler).expect("free the space");
    let line = wait_logged(&node, since, "log volume", Duration::from_secs(30));
    assert!(line.contains("has room again"), "{line}");
}

#[test]
fn a_full_pgdata_on_the_primary_fails_over_and_the_member_recovers_without_loss() {
    let _serial = serial();
    let scratch = Scratch::new("disk-pgdata");
    let etcd = Etcd::start(&scratch.path);
    let mut volumes = Vec::new();
    let nodes: Vec<Node> = [("node8", "127.0.0.62"), ("node9", "127.0.0.63")]
        .iter()
        .map(|(name, ip)| {
            volumes.push(Tmpfs::mount(
                &Node::dir_for(&scratch.path, name).join("pgroot"),
                256,
            ));
            let mut options = NodeOptions::new(name, ip, Some(&etcd.hosts));
            options.synchronous = true;
            Node::start(&scratch.path, options)
        })
        .collect();
    let primary = wait_leader_index(&nodes, 1, Duration::from_secs(120));
    let replica = 1 - primary;
    // Patroni fails over once the primary has not come back within this.
    let (code, answer) = http(
        &format!("{}:8008", nodes[primary].ip),
        "PATCH",
        "/config",
        Some(r#"{"primary_start_timeout": 10}"#),
    )
    .expect("PATCH /config");
    assert_eq!(code, 200, "{answer}");
    // Patroni promotes only the member named in /sync.
    wait_for("a synchronous standby", Duration::from_secs(60), || {
        members(&nodes[primary])?
            .iter()
            .any(|(_, role, state)| role == "sync_standby" && state == "streaming")
            .then_some(())
    });
    let first = &nodes[primary];
    first
        .psql("CREATE TABLE acked (id int PRIMARY KEY); CREATE TABLE counter (n int); INSERT INTO counter VALUES (0)")
        .expect("tables");
    let mut acked: Vec<u32> = Vec::new();
    for id in 0..100 {
        first
            .psql(&format!("INSERT INTO acked VALUES ({id})"))
            .expect("insert");
        acked.push(id);
    }

    let since = first.log().len();
    let filler = volumes[primary].fill();
    let line = wait_logged(first, since, "volume", Duration::from_secs(30));
    assert!(
        line.contains("PGDATA, WAL and log volume") && line.contains("is full"),
        "{line}"
    );
    // Writes go on failing or being acknowledged until WAL has no room:
    // a new segment cannot be made, and PostgreSQL stops (PANIC).
    let mut stopped = false;
    for id in 100..400 {
        if first
            .psql(&format!("INSERT INTO acked VALUES ({id})"))
            .is_ok()
        {
            acked.push(id);
        }
        if first
            .psql("UPDATE counter SET n = n + 1; SELECT pg_switch_wal()")
            .is_err()
            && first.psql("SELECT 1").is_err()
        {
            stopped = true;
            break;
        }
    }
    assert!(
        stopped,
        "PostgreSQL still answers on a full PGDATA{}",
        first.log_tail()
    );

    let refs: Vec<&Node> = nodes.iter().collect();
    let new_leader = wait_new_leader(
        &refs,
        &std::collections::BTreeSet::from([nodes[primary].name.clone()]),
        Duration::from_secs(120),
    );
    assert_eq!(new_leader, nodes[replica].name);

    fs::remove_file(&filler).expect("free the space");
    let refs: Vec<&Node> = nodes.iter().collect();
    assert_eq!(wait_healthy(&refs, 1, Duration::from_secs(180)), new_leader);
    let rows = nodes[replica]
        .psql("SELECT id FROM acked ORDER BY id")
        .expect("rows");
    let have: Vec<u32> = rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let lost: Vec<&u32> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    let line = wait_logged(
        &nodes[primary],
        since,
        "has room again",
        Duration::from_secs(30),
    );
    assert!(line.contains("PGDATA, WAL and log volume"), "{line}");
}
