//! Repeated logins through libpam in one process do not grow memory.
//!
//! A shorter version of `examples/leak_check.rs` (which runs 10,000 and
//! prints figures). Its own test binary, so no other test allocates while
//! RSS is measured.

mod support;

use std::ffi::CString;

use support::{Logins, Reply, pam_login, rss_kib};

#[test]
fn repeated_logins_do_not_leak() {
    let logins = Logins::new("leak");
    let server = &logins.server;
    server.reply("leak-401", Reply::status(401, "{}"));
    let service = &logins.service;
    let alice = CString::new("alice").expect("user");
    let bob = CString::new("bob").expect("user");
    let good = CString::new("leak").expect("token");
    let bad = CString::new("leak-401").expect("token");

    let round = |n: usize| {
        for i in 0..n {
            let (user, token, want_ok) = match i % 4 {
                0 => (&bob, &good, false),
                1 => (&alice, &bad, false),
                _ => (&alice, &good, true),
            };
            let rc = pam_login(service, user, token);
            assert_eq!(rc == 0, want_ok, "login {i}: PAM code {rc}");
        }
    };
    round(200); // warm up
    let before = rss_kib();
    round(1500);
    let after = rss_kib();
    let growth = after.saturating_sub(before);
    eprintln!("1500 logins: RSS {before} KiB -> {after} KiB (+{growth} KiB)");
    // A leak of 256 bytes per login would show as ~384 KiB.
    assert!(growth < 384, "RSS grew by {growth} KiB over 1500 logins");
}
