//! Leak and latency check: N logins (default 10,000) in one process through
//! the real PAM stack (pam_start → pam_authenticate → pam_acct_mgmt →
//! pam_end, module loaded from an /etc/pam.d service file) against a local
//! HTTPS tokeninfo server, printing RSS growth and per-login time.
//!
//! ```text
//! cargo build -p pam_oauth2 --release --examples
//! target/release/examples/leak_check [N]
//! ```
//! Needs root (writes /etc/pam.d/spilo-oauth2-test-*).

#[path = "../tests/support/mod.rs"]
mod support;

use std::ffi::CString;
use std::time::Instant;

use support::{Ca, Reply, Server, Service, pam_login, rss_kib};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);

    let ca = Ca::new("leak check CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cafile = ca.write(dir.path(), "ca.pem");
    let server = Server::start(&ca);
    server.quiet();
    server.reply(
        "leak-token",
        Reply::json(r#"{"uid":"alice","realm":"/employees"}"#),
    );
    let svc = Service::new(
        "required",
        &format!(
            "{} uid realm=/employees cafile={}",
            server.url(),
            cafile.display()
        ),
    );
    let service = CString::new(svc.name.clone()).expect("service");
    let alice = CString::new("alice").expect("user");
    let bob = CString::new("bob").expect("user");
    let token = CString::new("leak-token").expect("token");

    let run = |count: usize| -> (usize, usize) {
        let (mut ok, mut denied) = (0, 0);
        for i in 0..count {
            // Every 10th login is a denial (wrong user) so both paths run.
            let user = if i % 10 == 9 { &bob } else { &alice };
            if pam_login(&service, user, &token) == 0 {
                ok += 1;
            } else {
                denied += 1;
            }
        }
        (ok, denied)
    };

    // Warm up: first dlopen, agent cache, allocator arenas.
    run(500);
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut checkpoints = Vec::new();
    let (mut ok, mut denied) = (0, 0);
    let step = (n / 4).max(1);
    let mut done = 0;
    while done < n {
        let count = step.min(n - done);
        let (o, d) = run(count);
        ok += o;
        denied += d;
        done += count;
        checkpoints.push((done, rss_kib()));
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib();

    println!("logins through libpam: {n} ({ok} granted, {denied} denied)");
    println!(
        "time per login: {:.1} µs (incl. the loopback HTTPS round trip, keep-alive)",
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    for (done, rss) in &checkpoints {
        println!("  after {done:>6}: RSS {rss} KiB");
    }
    println!(
        "RSS before {rss_before} KiB, after {rss_after} KiB, growth {} KiB",
        rss_after as i64 - rss_before as i64
    );
    let expected_denied = (0..n).filter(|i| i % 10 == 9).count();
    if denied != expected_denied {
        eprintln!("unexpected outcome count: {denied} denied, expected {expected_denied}");
        std::process::exit(1);
    }
}
