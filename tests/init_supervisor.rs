//! The supervisor with plain shell children, in-process: restart limits,
//! staged shutdown, orphans reaped (no zombies), SIGTERM leaving nothing,
//! SIGQUIT to every child at once, a stop held until the supervisor runs.
//! One test: the supervisor reaps with waitpid(-1) and handles this
//! process's signals, so nothing else may run beside it.

mod init_support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use spilo::init::reaper;
use spilo::init::supervisor::{self, ChildSpec, Restart};

fn spec(name: &str, script: &str, stage: u8) -> ChildSpec {
    ChildSpec {
        name: name.into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        user: None,
        dir: "/".into(),
        ready: None,
        restart: Restart {
            limit: 2,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
            stable_after: Duration::from_secs(60),
        },
        stop_stage: stage,
        stop_signal: Signal::SIGTERM,
    }
}

fn run(specs: Vec<ChildSpec>, grace: Duration) -> u8 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(supervisor::run(specs, Vec::new(), grace))
        .expect("supervisor")
}

fn children_of_me() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    init_support::process_table()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == me)
        .map(|(pid, _, state)| (pid, state))
        .collect()
}

#[test]
fn supervisor_restarts_gives_up_reaps_orphans_and_stops_in_order() {
    reaper::become_subreaper().expect("subreaper");

    // A crashing child is restarted twice, then the supervisor gives up,
    // stops its companion by SIGTERM (not by the grace period) and fails.
    let started = Instant::now();
    let status = run(
        vec![
            spec("crasher", "exit 3", 0),
            spec("companion", "exec sleep 30", 1),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status, supervisor::FAILED);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(children_of_me().is_empty(), "{:?}", children_of_me());

    // Orphans (grandchildren whose parent exited) are adopted and reaped
    // while running; on SIGTERM the first stage stops before the second,
    // and an orphan still alive at the end is stopped too.
    let dir = tempfile::tempdir().expect("tempdir");
    let order = dir.path().join("order");
    let first = format!(
        "trap 'echo first >> {o}; exit 0' TERM; (sleep 0.2 &); (sleep 0.3 &); (exec sleep 600 &); while :; do sleep 0.1; done",
        o = order.display()
    );
    let second = format!(
        "trap 'echo second >> {o}; exit 0' TERM; while :; do sleep 0.1; done",
        o = order.display()
    );
    let killer = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(2));
        let zombies: Vec<(i32, char)> = children_of_me()
            .into_iter()
            .filter(|(_, s)| *s == 'Z')
            .collect();
        init_support::send(std::process::id() as i32, Signal::SIGTERM);
        zombies
    });
    let status = run(
        vec![spec("first", &first, 0), spec("second", &second, 1)],
        Duration::from_secs(10),
    );
    let zombies = killer.join().expect("killer");
    assert_eq!(status, supervisor::CLEAN);
    assert!(zombies.is_empty(), "zombies while running: {zombies:?}");
    assert_eq!(read(&order), "first\nsecond\n");
    // The orphaned `sleep 600` was stopped as well; nothing is left.
    assert!(children_of_me().is_empty(), "{:?}", children_of_me());

    // SIGQUIT goes to every child at once, whatever its stage.
    let quit = dir.path().join("quit");
    let child = |name: &str, stage| {
        let script = format!(
            "trap 'echo {name} >> {q}; exit 0' QUIT; while :; do sleep 0.1; done",
            q = quit.display()
        );
        spec(name, &script, stage)
    };
    let quitter = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(1));
        init_support::send(std::process::id() as i32, Signal::SIGQUIT);
    });
    let status = run(vec![child("a", 0), child("b", 1)], Duration::from_secs(10));
    quitter.join().expect("quitter");
    assert_eq!(status, supervisor::CLEAN);
    let mut got: Vec<String> = read(&quit).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["a", "b"]);
    assert!(children_of_me().is_empty(), "{:?}", children_of_me());

    // A stop that arrives before the supervisor runs (init still preparing
    // the volumes) is held, not lost: the tree starts and stops at once.
    supervisor::hold_stop_signals().expect("hold");
    nix::sys::signal::raise(Signal::SIGTERM).expect("raise");
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(20)).is_err() {
            eprintln!("the held SIGTERM was lost: the supervisor never stopped");
            std::process::abort();
        }
    });
    let started = Instant::now();
    let status = run(
        vec![spec("late", "exec sleep 30", 0)],
        Duration::from_secs(10),
    );
    let stopped_within = started.elapsed();
    done.send(()).expect("watchdog");
    watchdog.join().expect("watchdog");
    assert_eq!(status, supervisor::CLEAN);
    assert!(
        stopped_within < Duration::from_secs(5),
        "{stopped_within:?}"
    );
    assert!(children_of_me().is_empty(), "{:?}", children_of_me());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
