//! Process-level figures for `spilo init` (run as root, like the tests):
//!
//! 1. exec of `spilo init` → Patroni exec'd (a stand-in Patroni, DCS
//!    configured so no etcd is started): cold (fresh volume, certificate
//!    generated) and warm (restart over the same directories);
//! 2. exec → a writable single-node primary (real Patroni, embedded etcd)
//!    against plain `initdb` + `pg_ctl start -w` + the same INSERT.
//!
//! Switchover and failover times come from `cargo test --test cluster --
//! --nocapture`, which prints them.

#[path = "../tests/init_support/mod.rs"]
mod init_support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use init_support::*;
use nix::sys::signal::Signal;

fn summary(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{name}: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
    median
}

/// exec → the "patroni started" line of a `spilo init` with a stand-in
/// Patroni; the tree is stopped with SIGTERM afterwards.
fn until_patroni(env: &[(String, String)]) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(spilo())
        .arg("init")
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spilo init");
    let stderr = child.stderr.take().expect("stderr");
    let mut took = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        if took.is_none() && line.contains("patroni started") {
            took = Some(started.elapsed());
            send(child.id() as i32, Signal::SIGTERM);
        }
    }
    let status = child.wait().expect("wait");
    took.unwrap_or_else(|| panic!("patroni never started ({status})"))
}

fn startup_overhead(scratch: &Path) {
    let fake = scratch.join("fake-patroni");
    fs::write(&fake, "#!/bin/sh\nexec sleep 600\n").expect("fake patroni");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..15 {
        let options = NodeOptions::new("bench", "127.0.0.2", Some("127.0.0.1:1"));
        let dir = Node::dir_for(scratch, &format!("overhead-{i}"));
        fs::create_dir_all(&dir).expect("dir");
        let mut env = Node::env(&options, &dir);
        env.retain(|(k, _)| k != "SPILO_PATRONI_BIN");
        env.push(("SPILO_PATRONI_BIN".into(), fake.display().to_string()));
        cold.push(until_patroni(&env));
        warm.push(until_patroni(&env));
    }
    summary(
        "exec -> Patroni exec'd, fresh volume (certificate generated)",
        cold,
    );
    summary("exec -> Patroni exec'd, restart over existing files", warm);
}

fn spilo_primary(scratch: &Path) -> Duration {
    let _ = fs::remove_dir_all(Node::dir_for(scratch, "primary"));
    let mut node = Node::start(scratch, NodeOptions::new("primary", "127.0.0.2", None));
    let socket = node.socket_dir();
    // The figure is compared with pg_ctl start -w, which returns as soon
    // as the server is up: poll closely, but only with a stat until the
    // socket exists (a psql every few ms would steal the CPU initdb needs).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no primary");
        if socket.join(".s.PGSQL.5432").exists()
            && psql_at(&socket, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)").is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = node.started.elapsed();
    node.signal(Signal::SIGTERM);
    node.wait_exit(Duration::from_secs(60));
    took
}

/// What a hand-made server costs: initdb with the same options, pg_ctl
/// start -w, then the first write.
fn plain_primary(scratch: &Path) -> Duration {
    let dir = scratch.join("plain");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    let postgres = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("postgres user");
    std::os::unix::fs::chown(
        &dir,
        Some(postgres.uid.as_raw()),
        Some(postgres.gid.as_raw()),
    )
    .expect("chown");
    let as_postgres = |program: &str| {
        let mut command = Command::new(format!("{PG_BIN}/{program}"));
        command
            .uid(postgres.uid.as_raw())
            .gid(postgres.gid.as_raw())
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let data = dir.join("data");
    let started = Instant::now();
    let ok = as_postgres("initdb")
        .args([
            "-E",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--data-checksums",
            "-D",
        ])
        .arg(&data)
        .status()
        .expect("initdb")
        .success();
    assert!(ok, "initdb failed");
    let options = format!("-c listen_addresses='' -k {}", dir.display());
    let ok = as_postgres("pg_ctl")
        .args(["start", "-w", "-l"])
        .arg(dir.join("log"))
        .args(["-D"])
        .arg(&data)
        .args(["-o", &options])
        .status()
        .expect("pg_ctl")
        .success();
    assert!(ok, "pg_ctl start failed");
    wait_for("the plain server", Duration::from_secs(30), || {
        psql_at(&dir, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)").ok()
    });
    let took = started.elapsed();
    let _ = as_postgres("pg_ctl")
        .args(["stop", "-m", "fast", "-D"])
        .arg(&data)
        .status();
    took
}

fn main() {
    // `cargo bench` passes --bench; a filter, if any, is ignored.
    let scratch = Scratch::new("bench");
    patroni();
    startup_overhead(&scratch.path);
    let _serial = serial();
    // Interleaved, so that a busy moment of the machine hits both.
    let (mut spilo, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..11 {
        spilo.push(spilo_primary(&scratch.path));
        plain.push(plain_primary(&scratch.path));
    }
    // The machine's own speed drifts: each pair ran back to back, so the
    // median of the pairs' ratios is the steadier figure.
    let mut ratios: Vec<f64> = spilo
        .iter()
        .zip(&plain)
        .map(|(s, p)| s.as_secs_f64() / p.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let spilo = summary(
        "exec -> writable single-node primary (spilo init, embedded etcd, Patroni)",
        spilo,
    );
    let plain = summary(
        "initdb + pg_ctl start -w -> first write (same options)",
        plain,
    );
    println!(
        "ratio of the medians: {:.2}x; median of the pairs' ratios: {:.2}x (min {:.2}x, max {:.2}x)",
        spilo.as_secs_f64() / plain.as_secs_f64(),
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
