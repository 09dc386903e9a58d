//! What the module adds to a login beyond the tokeninfo round trip.
//!
//! Against one local HTTPS tokeninfo server (127.0.0.1, test CA):
//! * `warm/*`: a kept-alive connection and a cached agent (a long-lived
//!   process such as pgbouncer): a bare ureq GET vs. the module's
//!   `Config::parse` + `authenticate` vs. a whole libpam login
//!   (pam_start/pam_authenticate/pam_acct_mgmt/pam_end, module loaded from
//!   a service file).
//! * `cold/*`: a new agent per login (a fresh PostgreSQL backend): new TCP
//!   connection and TLS handshake each time, bare vs. module; plus loading
//!   the system CA store, which a fresh backend without `cafile=` pays.
//!
//! Run: `cargo bench -p pam_oauth2` (as root: writes /etc/pam.d).

#[path = "../tests/support/mod.rs"]
mod support;

use std::ffi::CString;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pam_oauth2::{Config, authenticate, http};
use support::{Ca, Reply, Server, Service, pam_login};
use ureq::tls::{RootCerts, TlsConfig};

/// A plain ureq agent (defaults: no timeouts) trusting `roots`.
fn bare_agent(roots: Vec<ureq::tls::Certificate<'static>>) -> ureq::Agent {
    bare_config(roots).build().new_agent()
}

fn bare_config(
    roots: Vec<ureq::tls::Certificate<'static>>,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let tls = TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    ureq::Agent::config_builder().tls_config(tls)
}

fn bare_get(agent: &ureq::Agent, url: &str) -> usize {
    let mut resp = agent.get(url).call().expect("GET");
    resp.body_mut().read_to_vec().expect("body").len()
}

fn benches(c: &mut Criterion) {
    let ca = Ca::new("bench CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cafile = ca.write(dir.path(), "ca.pem");
    // A "system" bundle = the real one + the test CA, so the module can be
    // measured with its default (system store) roots against the test server.
    let system_bundle = openssl_probe::probe()
        .cert_file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{system_bundle}\n{}", ca.pem())).expect("bundle");
    // SAFETY: no other thread runs yet (the server starts below).
    unsafe { std::env::set_var("SSL_CERT_FILE", &bundle) };
    let server = Server::start(&ca);
    server.quiet();
    server.reply(
        "bench-token",
        Reply::json(r#"{"uid":"alice","realm":"/employees","scope":["uid"],"expires_in":3600}"#),
    );
    let args = vec![
        server.url(),
        "uid".to_owned(),
        "realm=/employees".to_owned(),
        format!("cafile={}", cafile.display()),
    ];
    let full_url = format!("{}bench-token", server.url());
    let roots = http::root_certs(Some(&cafile)).expect("roots");
    let svc = Service::new("required", &args.join(" "));
    let service = CString::new(svc.name.clone()).expect("service");
    let user = CString::new("alice").expect("user");
    let token = CString::new("bench-token").expect("token");

    let mut warm = c.benchmark_group("warm");
    let agent = bare_agent(roots.clone());
    warm.bench_function("bare_https_get", |b| {
        b.iter(|| black_box(bare_get(&agent, &full_url)))
    });
    // The same, with the module's default timeouts: ureq then bounds the
    // DNS lookup by running it on a short-lived helper thread.
    let timed = bare_config(roots.clone())
        .timeout_global(Some(Duration::from_secs(5)))
        .timeout_resolve(Some(Duration::from_secs(3)))
        .timeout_connect(Some(Duration::from_secs(3)))
        .build()
        .new_agent();
    warm.bench_function("bare_https_get_same_timeouts", |b| {
        b.iter(|| black_box(bare_get(&timed, &full_url)))
    });
    warm.bench_function("module_authenticate", |b| {
        b.iter(|| {
            let config = Config::parse(&args).expect("config");
            authenticate(&config, "alice", "bench-token").expect("granted");
        })
    });
    warm.bench_function("libpam_login", |b| {
        b.iter(|| assert_eq!(pam_login(&service, &user, &token), 0))
    });
    // The PAM stack alone (libpam reads the service file and /etc/pam.d/other
    // and loads their modules on every pam_start), with pam_permit instead.
    let permit = Service::raw("auth required pam_permit.so\naccount required pam_permit.so\n");
    let permit_name = CString::new(permit.name.clone()).expect("service");
    warm.bench_function("libpam_login_pam_permit_baseline", |b| {
        b.iter(|| assert_eq!(pam_login(&permit_name, &user, &token), 0))
    });
    warm.finish();

    let mut cold = c.benchmark_group("cold");
    cold.bench_function("bare_https_get_new_agent", |b| {
        b.iter(|| {
            let roots = http::root_certs(Some(&cafile)).expect("roots");
            black_box(bare_get(&bare_agent(roots), &full_url))
        })
    });
    cold.bench_function("module_authenticate_new_agent", |b| {
        b.iter(|| {
            http::clear_agent_cache();
            let config = Config::parse(&args).expect("config");
            authenticate(&config, "alice", "bench-token").expect("granted");
        })
    });
    let system_args = &args[..3];
    let n_system = http::root_certs(None).map(|r| r.len()).unwrap_or(0);
    eprintln!("system store used below: {n_system} certificates");
    cold.bench_function("module_authenticate_new_agent_system_store", |b| {
        b.iter(|| {
            http::clear_agent_cache();
            let config = Config::parse(system_args).expect("config");
            authenticate(&config, "alice", "bench-token").expect("granted");
        })
    });
    cold.bench_function("load_system_ca_store", |b| {
        b.iter(|| black_box(http::root_certs(None).map(|r| r.len()).unwrap_or(0)))
    });
    cold.finish();
}

criterion_group! {
    name = auth;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(auth);
