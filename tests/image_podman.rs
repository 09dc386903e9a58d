//! The second engine: the same Dockerfile built with podman (`--format
//! docker`, tests/podman/containers.conf), whatever engine the other image
//! tests use. One build and one container: a single node becomes a
//! writable primary, answers SQL, passes its HEALTHCHECK, its monitor
//! answers, and it stops cleanly within the grace period. The build leaves out the major compiled from
//! source (`MAJORS=17,15`): podman has no share in docker's build cache,
//! and this test is about the engine, not the packages.

mod image_support;

use std::time::{Duration, Instant};

use image_support::{Container, READY, build, ok, serial, use_engine, wait_for};

/// The `podman stop` timeout; the image's own grace period is 60 s.
const STOP: Duration = Duration::from_secs(60);

#[test]
fn podman_builds_the_image_and_runs_a_single_node() {
    use_engine("podman");
    let _serial = serial();
    let version = ok(&["version", "--format", "{{.Client.Version}}"]);
    eprintln!("podman {}", version.trim());
    let image = "localhost/spilo-rs:podman";
    build(image, &["--build-arg", "MAJORS=17,15"]).expect("podman build");
    let node = Container::run(image, "podman", &[], &[]);
    node.wait_ready(READY);
    wait_for(
        Duration::from_secs(60),
        "Patroni reports a running primary",
        || {
            node.api("/patroni")
                .filter(|p| p["role"] == "primary" && p["state"] == "running")
        },
        || node.logs(),
    );
    assert_eq!(node.sql("SELECT pg_is_in_recovery()").unwrap(), "f");
    node.sql("CREATE TABLE written AS SELECT generate_series(1, 10) AS id")
        .expect("the primary takes writes");
    assert_eq!(node.sql("SELECT sum(id) FROM written").unwrap(), "55");
    node.wait_healthy();
    // The monitor reads this engine's cgroup and the server.
    let doc = wait_for(
        Duration::from_secs(60),
        "the monitor's document with PostgreSQL",
        || {
            serde_json::from_str::<serde_json::Value>(&node.monitor("/").1)
                .ok()
                .filter(|doc| doc["postgresql"]["role"] == "master")
        },
        || format!("{:?}", node.monitor("/")),
    );
    assert!(doc["cgroup"]["memory"]["usage"].is_u64(), "{doc}");

    let started = Instant::now();
    let timeout = STOP.as_secs().to_string();
    ok(&["stop", "-t", &timeout, &node.name]);
    let took = started.elapsed();
    let logs = node.logs_with(&[]);
    assert!(took < STOP, "stopped after {took:?}:\n{logs}");
    assert_eq!(node.inspect("{{.State.ExitCode}}"), "0", "{logs}");
    for clean in ["SIGTERM received", "patroni stopped", "etcd stopped"] {
        assert!(logs.contains(clean), "no {clean:?} in\n{logs}");
    }
    assert!(!logs.contains("killing what is left"), "{logs}");
    eprintln!("stopped cleanly in {:.1}s", took.as_secs_f64());
}
