//! Leak and latency check against a local HTTPS tokeninfo server.
//!
//! * N logins (default 10,000) through the real PAM stack: pam_start →
//!   pam_authenticate → pam_acct_mgmt → pam_end, the module loaded from an
//!   /etc/pam.d service file; cached agent and kept-alive connection, as in
//!   pgbouncer. Every 10th login is denied (wrong user).
//! * COLD logins (default 2,000) through the module's Rust entry with a new
//!   agent each (roots, TLS config, new TLS connection), as in a fresh
//!   PostgreSQL backend.
//!
//! Prints RSS at checkpoints and the time per login.
//!
//! ```text
//! cargo build -p pam_oauth2 --release --examples
//! target/release/examples/leak_check [N] [COLD]
//! ```
//! Needs root (writes /etc/pam.d/spilo-oauth2-test-*).

#[path = "../tests/support/mod.rs"]
mod support;

use std::ffi::CString;
use std::time::Instant;

use support::{Logins, pam_login, rss_kib};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);

    let logins = Logins::new("leak-token");
    let (server, service, cafile) = (&logins.server, &logins.service, &logins.cafile);
    let alice = CString::new("alice").expect("user");
    let bob = CString::new("bob").expect("user");
    let token = CString::new("leak-token").expect("token");

    let run = |start: usize, count: usize| -> (usize, usize) {
        let (mut ok, mut denied) = (0, 0);
        for i in start..start + count {
            // Every 10th login is a denial (wrong user) so both paths run.
            let user = if i % 10 == 9 { &bob } else { &alice };
            if pam_login(service, user, &token) == 0 {
                ok += 1;
            } else {
                denied += 1;
            }
        }
        (ok, denied)
    };

    // Warm up: first dlopen, agent cache, allocator arenas.
    run(0, 500);
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut checkpoints = Vec::new();
    let (mut ok, mut denied) = (0, 0);
    let step = (n / 4).max(1);
    let mut done = 0;
    while done < n {
        let count = step.min(n - done);
        let (o, d) = run(done, count);
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
    println!(
        "TLS connections the tokeninfo server accepted: {}",
        server.connections()
    );
    // Cold path: a new agent (roots, TLS config, connection) per login, as
    // in a fresh PostgreSQL backend, through the module's Rust entry.
    let config = pam_oauth2::Config::parse(&[
        server.url(),
        "uid".to_owned(),
        "realm=/employees".to_owned(),
        format!("cafile={}", cafile.display()),
    ])
    .expect("config");
    let cold: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let cold_login = || {
        pam_oauth2::http::clear_agent_cache();
        pam_oauth2::authenticate(&config, "alice", "leak-token").is_ok()
    };
    for _ in 0..200 {
        cold_login();
    }
    let rss_cold_before = rss_kib();
    let started = Instant::now();
    let mut cold_ok = 0;
    for i in 0..cold {
        cold_ok += usize::from(cold_login());
        if (i + 1) % (cold / 4).max(1) == 0 {
            println!("  cold after {:>6}: RSS {} KiB", i + 1, rss_kib());
        }
    }
    let cold_elapsed = started.elapsed();
    let rss_cold_after = rss_kib();
    println!(
        "cold logins (new agent + TLS handshake each): {cold} ({cold_ok} granted), {:.1} µs each, \
         RSS {rss_cold_before} -> {rss_cold_after} KiB, growth {} KiB",
        cold_elapsed.as_secs_f64() * 1e6 / cold as f64,
        rss_cold_after as i64 - rss_cold_before as i64
    );
    let expected_denied = (0..n).filter(|i| i % 10 == 9).count();
    if denied != expected_denied || cold_ok != cold {
        eprintln!(
            "unexpected outcome: {denied} denied (expected {expected_denied}), {cold_ok}/{cold} cold granted"
        );
        drop(logins); // exit() skips destructors: remove the service file first
        std::process::exit(1);
    }
}
