//! End-to-end tests of the built module through the real PAM stack:
//! pamtester → libpam → /etc/pam.d/<test service> → libpam_oauth2.so →
//! HTTPS tokeninfo server on 127.0.0.1 with a CA generated here.
//!
//! Needs root (writes /etc/pam.d), `pamtester` and `libpam0g-dev`.

mod support;

use std::time::Duration;

use std::ffi::OsStr;

use support::{Ca, Reply, Server, Service, pamtester, pamtester_with, syslog};

const GOOD: &str =
    r#"{"uid":"alice","realm":"/employees","n":5,"scope":["uid"],"expires_in":3600}"#;

/// A CA, a server of that CA, a temp dir holding the CA file.
struct Fixture {
    _dir: tempfile::TempDir,
    cafile: std::path::PathBuf,
    server: Server,
}

fn fixture() -> Fixture {
    // Listen on /dev/log before the first pamtester run.
    syslog();
    let ca = Ca::new("spilo pam_oauth2 test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cafile = ca.write(dir.path(), "ca.pem");
    let server = Server::start(&ca);
    Fixture {
        _dir: dir,
        cafile,
        server,
    }
}

impl Fixture {
    /// `<url> uid realm=/employees cafile=<ca> <extra>`
    fn args(&self, extra: &str) -> String {
        format!(
            "{} uid realm=/employees cafile={} {extra}",
            self.server.url(),
            self.cafile.display()
        )
    }
}

/// Assert that the module logged a line for `service` containing `want`,
/// and that no line contains `token`.
fn assert_logged(service: &Service, want: &str, token: &str) {
    let log = syslog();
    let lines = log.lines_with(&service.name);
    assert!(
        lines.iter().any(|l| l.contains(want)),
        "expected a log line with {want:?} for {}, got {lines:#?}",
        service.name
    );
    for line in &lines {
        eprintln!("logged: {line}");
    }
    for line in log.all() {
        assert!(!line.contains(token), "token leaked into the log: {line}");
    }
}

#[test]
fn good_token_is_accepted() {
    let f = fixture();
    let token = "good/tok+en=1 x";
    f.server.reply(token, Reply::json(GOOD));
    // The production form: sufficient for both auth and account.
    let svc = Service::new("sufficient", &f.args("n=5 claim:expires_in=3600"));
    let out = pamtester(&svc, "alice", token, &["authenticate", "acct_mgmt"]);
    assert!(out.ok, "expected success: {}", out.output);
    // The token arrived URL-encoded and decodes to itself.
    assert_eq!(f.server.tokens(), vec![Some(token.to_owned())]);
    assert_logged(&svc, "user alice: access granted", "tok+en");
}

#[test]
fn numeric_login_and_string_number_claims() {
    let f = fixture();
    f.server.reply(
        "num",
        Reply::json(r#"{"uid":1000,"realm":"/employees","n":"5"}"#),
    );
    let svc = Service::new("required", &f.args("n=5"));
    let out = pamtester(&svc, "1000", "num", &["authenticate"]);
    assert!(out.ok, "expected success: {}", out.output);
}

#[test]
fn wrong_login_is_denied() {
    let f = fixture();
    let token = "token-of-bob-0001";
    f.server
        .reply(token, Reply::json(r#"{"uid":"bob","realm":"/employees"}"#));
    let svc = Service::new("required", &f.args(""));
    let out = pamtester(&svc, "alice", token, &["authenticate"]);
    assert!(!out.ok, "expected denial: {}", out.output);
    assert_eq!(f.server.tokens().len(), 1);
    assert_logged(&svc, "field \"uid\" does not match the user name", token);
}

#[test]
fn failing_claim_is_denied() {
    let f = fixture();
    let token = "token-service-0002";
    f.server
        .reply(token, Reply::json(r#"{"uid":"alice","realm":"/services"}"#));
    let svc = Service::new("required", &f.args(""));
    let out = pamtester(&svc, "alice", token, &["authenticate"]);
    assert!(!out.ok, "expected denial: {}", out.output);
    assert_logged(&svc, "field \"realm\" does not match", token);

    // A claim on a field the answer lacks, and one of the wrong type.
    f.server.reply("t2", Reply::json(GOOD));
    let svc = Service::new("required", &f.args("team=db"));
    assert!(!pamtester(&svc, "alice", "t2", &["authenticate"]).ok);
    assert_logged(&svc, "no field \"team\"", "t2");
    let svc = Service::new("required", &f.args("scope=uid"));
    assert!(!pamtester(&svc, "alice", "t2", &["authenticate"]).ok);
    assert_logged(&svc, "field \"scope\" has a JSON type", "t2");
}

#[test]
fn http_error_statuses_are_denied() {
    let f = fixture();
    for (token, status) in [("t401", 401), ("t403", 403), ("t500", 500), ("t302", 302)] {
        // The body would grant access: only the status may deny.
        let mut reply = Reply::status(status, GOOD);
        if status == 302 {
            reply = reply.header(&format!("Location: {}ok", f.server.url()));
        }
        f.server.reply(token, reply);
        let svc = Service::new("required", &f.args(""));
        let out = pamtester(&svc, "alice", token, &["authenticate"]);
        assert!(!out.ok, "HTTP {status} must deny: {}", out.output);
        assert_logged(&svc, &format!("tokeninfo answered HTTP {status}"), token);
    }
    // The redirect was not followed.
    assert!(!f.server.tokens().contains(&Some("ok".to_owned())));
}

#[test]
fn unknown_token_401_is_denied() {
    let f = fixture();
    let svc = Service::new("required", &f.args(""));
    let out = pamtester(&svc, "alice", "never-issued-token", &["authenticate"]);
    assert!(!out.ok, "expected denial: {}", out.output);
    assert_logged(&svc, "HTTP 401", "never-issued-token");
}

#[test]
fn malformed_body_is_denied() {
    let f = fixture();
    f.server.reply(
        "bad-json",
        Reply::json(r#"{"uid":"alice","realm":"/employees""#),
    );
    f.server.reply("not-object", Reply::json(r#"["alice"]"#));
    f.server.reply("empty", Reply::json(""));
    let svc = Service::new("required", &f.args(""));
    for token in ["bad-json", "not-object", "empty"] {
        let out = pamtester(&svc, "alice", token, &["authenticate"]);
        assert!(!out.ok, "{token} must deny: {}", out.output);
    }
    assert_logged(&svc, "not valid JSON", "bad-json");
    assert_logged(&svc, "not a JSON object", "not-object");
}

#[test]
fn oversized_body_is_denied() {
    let f = fixture();
    // Valid, granting JSON, padded to 200 KiB: only the size cap may deny.
    let pad = "x".repeat(200 * 1024);
    let big = format!(r#"{{"uid":"alice","realm":"/employees","pad":"{pad}"}}"#);
    f.server.reply("big", Reply::json(&big));
    let svc = Service::new("required", &f.args(""));
    let out = pamtester(&svc, "alice", "big", &["authenticate"]);
    assert!(!out.ok, "expected denial: {}", out.output);
    assert_logged(&svc, "larger than 65536 bytes", "big-token-never");

    // Control: with a larger cap the same answer is accepted.
    let svc = Service::new("required", &f.args("max_body=1M"));
    let out = pamtester(&svc, "alice", "big", &["authenticate"]);
    assert!(out.ok, "expected success with max_body=1M: {}", out.output);
}

#[test]
fn slow_server_is_denied_within_timeout() {
    let f = fixture();
    f.server
        .reply("slow", Reply::json(GOOD).delayed(Duration::from_secs(3)));
    let svc = Service::new("required", &f.args("timeout=1 connect_timeout=500ms"));
    let out = pamtester(&svc, "alice", "slow", &["authenticate"]);
    assert!(!out.ok, "expected denial: {}", out.output);
    assert!(
        out.elapsed < Duration::from_millis(2500),
        "the 1 s timeout did not cut the request short: {:?}",
        out.elapsed
    );
    assert_logged(&svc, "timed out", "slow-token-never");
}

#[test]
fn plain_http_url_is_refused() {
    syslog();
    let server = Server::plain();
    server.reply("tok-plain", Reply::json(GOOD));
    let svc = Service::new(
        "required",
        &format!("{} uid realm=/employees", server.url()),
    );
    let out = pamtester(&svc, "alice", "tok-plain", &["authenticate"]);
    assert!(!out.ok, "expected denial: {}", out.output);
    assert_eq!(server.connections(), 0, "the module must not even connect");
    assert_logged(&svc, "must start with https://", "tok-plain");
}

#[test]
fn untrusted_certificate_is_denied() {
    let f = fixture();
    f.server.reply("tok-untrusted", Reply::json(GOOD));

    // Only the system CA store: the test CA is not in it.
    let svc = Service::new(
        "required",
        &format!("{} uid realm=/employees", f.server.url()),
    );
    let out = pamtester(&svc, "alice", "tok-untrusted", &["authenticate"]);
    assert!(
        !out.ok,
        "system store must not trust the test CA: {}",
        out.output
    );
    assert_logged(&svc, "TLS error", "tok-untrusted");

    // A cafile= of a different CA.
    let other = Ca::new("some other CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let other_file = other.write(dir.path(), "other.pem");
    let svc = Service::new(
        "required",
        &format!(
            "{} uid realm=/employees cafile={}",
            f.server.url(),
            other_file.display()
        ),
    );
    let out = pamtester(&svc, "alice", "tok-untrusted", &["authenticate"]);
    assert!(
        !out.ok,
        "a different CA must not be trusted: {}",
        out.output
    );

    // The handshakes failed; no request (and so no token) got through.
    assert!(f.server.tokens().is_empty(), "{:?}", f.server.events());
    assert_eq!(
        f.server.wait_tls_errors(2).len(),
        2,
        "{:?}",
        f.server.events()
    );
}

/// Without cafile=, SSL_CERT_FILE and SSL_CERT_DIR name the trust store
/// as they do for OpenSSL: a CA put only in such a directory (under a
/// plain name, beside a stray file) is trusted, the two are read together,
/// and a list of directories may name one that does not exist.
#[test]
fn ssl_cert_dir_and_file_name_the_trust_store() {
    let f = fixture();
    f.server.reply("tok-env", Reply::json(GOOD));
    let svc = Service::new(
        "required",
        &format!("{} uid realm=/employees", f.server.url()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    std::fs::copy(&f.cafile, certs.join("corporate-ca.pem")).expect("CA file");
    std::fs::write(certs.join("README"), "not a certificate\n").expect("stray file");
    let other = Ca::new("some other CA").write(dir.path(), "other.pem");
    let list = format!("/nonexistent/certs:{}", certs.display());
    for (env, trusted) in [
        (vec![("SSL_CERT_DIR", certs.as_os_str())], true),
        (vec![("SSL_CERT_DIR", OsStr::new(&list))], true),
        (vec![("SSL_CERT_FILE", other.as_os_str())], false),
        (
            vec![
                ("SSL_CERT_FILE", other.as_os_str()),
                ("SSL_CERT_DIR", certs.as_os_str()),
            ],
            true,
        ),
    ] {
        let out = pamtester_with(&svc, "alice", "tok-env", &["authenticate"], &env);
        assert_eq!(out.ok, trusted, "{env:?}: {}", out.output);
    }
}

#[test]
fn empty_token_and_bad_configuration_are_denied() {
    let f = fixture();
    f.server.reply("", Reply::json(GOOD));
    let svc = Service::new("required", &f.args(""));
    let out = pamtester(&svc, "alice", "", &["authenticate"]);
    assert!(!out.ok, "empty token must deny: {}", out.output);
    assert!(f.server.tokens().is_empty());

    for args in [
        f.server.url(),                                    // no login field
        format!("{} uid bogus", f.server.url()),           // unknown bare word
        format!("{} uid timeout=forever", f.server.url()), // bad option value
        format!("{} uid cafile=/nonexistent/ca.pem", f.server.url()),
    ] {
        f.server.reply("tok-cfg", Reply::json(GOOD));
        let svc = Service::new("required", &args);
        let out = pamtester(&svc, "alice", "tok-cfg", &["authenticate"]);
        assert!(!out.ok, "{args} must deny: {}", out.output);
    }
    assert!(f.server.tokens().is_empty());
}

#[test]
fn concurrent_authentications_in_one_process() {
    let f = fixture();
    f.server.reply("shared", Reply::json(GOOD));
    let config = pam_oauth2::Config::parse(&[
        f.server.url(),
        "uid".to_owned(),
        "realm=/employees".to_owned(),
        format!("cafile={}", f.cafile.display()),
    ])
    .expect("config");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    pam_oauth2::authenticate(&config, "alice", "shared")
                        .unwrap_or_else(|e| panic!("thread {i}: {e}"));
                    assert!(pam_oauth2::authenticate(&config, "bob", "shared").is_err());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(f.server.tokens().len(), 8 * 20 * 2);
}

#[test]
fn host_name_url_is_resolved() {
    let f = fixture();
    f.server.reply("tok-host", Reply::json(GOOD));
    let url = f.server.url_with_host("localhost");
    let svc = Service::new(
        "required",
        &format!("{url} uid realm=/employees cafile={}", f.cafile.display()),
    );
    let out = pamtester(&svc, "alice", "tok-host", &["authenticate"]);
    assert!(out.ok, "expected success via localhost: {}", out.output);

    // Repeated logins in one process reuse the lookup and the connection.
    let config = pam_oauth2::Config::parse(&[
        url,
        "uid".to_owned(),
        format!("cafile={}", f.cafile.display()),
    ])
    .expect("config");
    for _ in 0..5 {
        pam_oauth2::authenticate(&config, "alice", "tok-host").expect("granted");
    }
    assert_eq!(f.server.tokens().len(), 6);
}
