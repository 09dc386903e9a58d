//! End to end through PostgreSQL: `spilo configure` renders pg_hba and the
//! PAM service from PAM_OAUTH2, the host's PostgreSQL runs with them, and
//! psql over SSL logs a member of HUMAN_ROLE in with an access token.
//!
//! Needs root (installs the module, links /etc/pam.d/postgresql) and the
//! host's PostgreSQL 15 (tests/setup).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{Ca, Reply, Server};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id runs");
        assert!(out.status.success(), "no postgres user: run tests/setup");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// Runs a command as postgres and insists that it succeeds.
fn as_postgres(program: &str, args: &[&str]) -> Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .output()
        .expect("runuser runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The PAM security directory of this machine (where pam_unix.so is).
fn security_dir() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/security",
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib/aarch64-linux-gnu/security",
        "/lib/security",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("pam_unix.so").exists())
    .expect("a PAM security directory with pam_unix.so")
}

/// Puts the built module where `pam_oauth2.so` resolves, and points the
/// `postgresql` PAM service at the rendered file; undone on drop.
struct Installed {
    service: PathBuf,
    backup: Option<PathBuf>,
}

impl Installed {
    fn new(rendered_service: &Path) -> Self {
        let module = security_dir().join("pam_oauth2.so");
        let tmp = module.with_extension("so.spilo-test");
        std::fs::copy(support::module_path(), &tmp).expect("copy module");
        std::fs::rename(&tmp, &module).expect("install module");

        let service = PathBuf::from("/etc/pam.d/postgresql");
        let backup = service.symlink_metadata().is_ok().then(|| {
            let backup = service.with_extension("spilo-test-backup");
            std::fs::rename(&service, &backup).expect("back up /etc/pam.d/postgresql");
            backup
        });
        std::os::unix::fs::symlink(rendered_service, &service).expect("link PAM service");
        Installed { service, backup }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.service);
        if let Some(backup) = &self.backup {
            let _ = std::fs::rename(backup, &self.service);
        }
    }
}

/// A PostgreSQL server stopped on drop.
struct Postgres {
    data: PathBuf,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn psql(port: u16, user: &str, password: &str, sslmode: &str) -> Output {
    Command::new(format!("{PG_BIN}/psql"))
        .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGDATABASE", "postgres")
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

#[test]
fn a_human_logs_in_with_a_token_over_ssl() {
    let ca = Ca::new("spilo pam_oauth2 postgres test CA");
    let server = Server::start(&ca);
    server.reply(
        "good-token",
        Reply::json(r#"{"uid":"alice","realm":"/employees"}"#),
    );
    server.reply(
        "outsider-token",
        Reply::json(r#"{"uid":"alice","realm":"/services"}"#),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown tempdir");
    let cafile = ca.write(dir.path(), "ca.pem");

    let rw = dir.path().join("rw");
    let env = spilo::config::Env::from_pairs([
        ("HOSTNAME", "pam-test".to_owned()),
        ("POD_IP", "127.0.0.2".to_owned()),
        ("PGVERSION", "15".to_owned()),
        ("RW_DIR", rw.display().to_string()),
        ("PGHOME", dir.path().join("home").display().to_string()),
        ("PGROOT", dir.path().join("pgroot").display().to_string()),
        ("HUMAN_ROLE", "zalandos".to_owned()),
        (
            "PAM_OAUTH2",
            format!(
                "{} uid realm=/employees cafile={}",
                server.url(),
                cafile.display()
            ),
        ),
    ]);
    let options = spilo::configure::Options {
        sections: vec![spilo::render::Section::All],
        dry_run: false,
        show_secrets: false,
        postgres_root: "/usr/lib/postgresql".into(),
    };
    let config = spilo::configure::run(&env, &options, &mut std::io::sink(), &mut |_| {})
        .expect("configure");
    let rendered: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(rw.join("postgres.yml")).expect("postgres.yml"),
    )
    .expect("postgres.yml is YAML");
    let hba: Vec<String> = rendered["postgresql"]["pg_hba"]
        .as_array()
        .expect("pg_hba")
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    assert!(
        hba.contains(&"hostssl all +zalandos 127.0.0.1/32 pam".to_owned()),
        "{hba:?}"
    );
    let _installed = Installed::new(&config.paths.pam_service());

    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    as_postgres(
        &format!("{PG_BIN}/initdb"),
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ],
    );
    std::fs::write(data.join("pg_hba.conf"), hba.join("\n") + "\n").expect("pg_hba.conf");
    let port = free_port();
    let params = &rendered["postgresql"]["parameters"];
    let conf = format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        dir.path().display(),
        params["ssl_cert_file"].as_str().expect("ssl_cert_file"),
        params["ssl_key_file"].as_str().expect("ssl_key_file"),
    );
    std::fs::write(data.join("postgresql.auto.conf"), conf).expect("postgresql.auto.conf");
    std::os::unix::fs::chown(data.join("pg_hba.conf"), Some(uid), Some(gid)).expect("chown");
    std::os::unix::fs::chown(data.join("postgresql.auto.conf"), Some(uid), Some(gid))
        .expect("chown");
    let log = dir.path().join("postgres.log").display().to_string();
    let _postgres = Postgres { data: data.clone() };
    as_postgres(
        &format!("{PG_BIN}/pg_ctl"),
        &["-D", &data_s, "-l", &log, "-w", "-t", "60", "start"],
    );
    as_postgres(
        &format!("{PG_BIN}/psql"),
        &[
            "-X",
            "-h",
            &dir.path().display().to_string(),
            "-p",
            &port.to_string(),
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "CREATE ROLE zalandos NOLOGIN; CREATE ROLE alice LOGIN IN ROLE zalandos; CREATE ROLE app LOGIN PASSWORD 'app-password'",
        ],
    );

    let ok = psql(port, "alice", "good-token", "require");
    assert!(
        ok.status.success(),
        "valid token refused: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "alice");

    for (token, why) in [
        ("bad-token", "unknown token (401)"),
        ("outsider-token", "claim realm does not match"),
    ] {
        let denied = psql(port, "alice", token, "require");
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(!denied.status.success(), "{why}: logged in");
        assert!(
            err.contains("PAM authentication failed for user \"alice\""),
            "{why}: {err}"
        );
    }
    // Without SSL nobody gets in, token or not.
    let plain = psql(port, "alice", "good-token", "disable");
    assert!(
        !plain.status.success(),
        "a token over plain TCP was accepted"
    );
    // Other roles keep password authentication.
    let app = psql(port, "app", "app-password", "require");
    assert!(
        app.status.success(),
        "{}",
        String::from_utf8_lossy(&app.stderr)
    );
    assert_eq!(
        server
            .tokens()
            .iter()
            .filter(|t| t.as_deref() == Some("good-token"))
            .count(),
        1
    );
}
