//! `spilo configure` as a process: the operator fixtures through the real
//! `patroni --validate-config` (host tier), idempotence, dry runs,
//! sections, and a catalogue of bad inputs that must change nothing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A scratch machine: RW_DIR, PGHOME, PGROOT and a tree of majors.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Majors 15 and 17 as empty `bin` directories: all configure needs.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for major in ["15", "17"] {
            std::fs::create_dir_all(dir.path().join("majors").join(major).join("bin"))
                .expect("majors tree");
        }
        Sandbox { dir }
    }

    /// Majors whose binaries are the host's, for Patroni's validation.
    #[cfg(feature = "host-tests")]
    fn with_host_binaries() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        common::majors_tree(&dir.path().join("majors"), &[15, 17]);
        Sandbox { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn rw(&self) -> PathBuf {
        self.path("rw")
    }

    /// Runs `spilo configure ARGS` with exactly these variables plus the
    /// sandbox's paths (which a fixture may not override).
    fn run(&self, vars: &[(String, String)], args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_spilo"))
            .arg("configure")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RW_DIR", self.rw())
            .env("PGHOME", self.path("home"))
            .env("PGROOT", self.path("pgroot"))
            .env("SPILO_POSTGRES_ROOT", self.path("majors"))
            .output()
            .expect("spilo runs")
    }

    fn patroni_config(&self) -> Value {
        let text =
            std::fs::read_to_string(self.rw().join("postgres.yml")).expect("postgres.yml written");
        serde_yaml_ng::from_str(&text).expect("postgres.yml is YAML")
    }

    /// Every file under the sandbox's writable places, with mode and bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        let mut files = BTreeMap::new();
        for top in [self.rw(), self.path("home"), self.path("pgroot")] {
            walk(&top, &mut files);
        }
        files
    }
}

fn walk(dir: &Path, files: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            walk(&path, files);
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).expect("read link");
            files.insert(
                path,
                (0, target.to_string_lossy().into_owned().into_bytes()),
            );
        } else {
            let bytes = std::fs::read(&path).expect("read file");
            files.insert(path, (meta.permissions().mode() & 0o7777, bytes));
        }
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| &v[key])
}

#[cfg(feature = "host-tests")]
#[test]
fn operator_fixtures_pass_patroni_validation() {
    // And, on the first fixture, the bootstraps of a restore from a
    // repository and of a clone by base backup.
    let fixtures = common::operator_fixtures();
    let variant = |suffix: &str, extra: &[(&str, &str)]| {
        let mut fixture = fixtures[0].clone();
        fixture.0 = format!("{} {suffix}", fixture.0);
        fixture.1.extend(vars(extra));
        fixture
    };
    let restore = variant(
        "restoring",
        &[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "acid-old"),
            ("CLONE_WAL_S3_BUCKET", "old-wal-bucket"),
            ("CLONE_TARGET_TIME", "2026-12-01 10:00:00+00"),
        ],
    );
    let clone = variant(
        "cloning",
        &[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_HOST", "acid-old.default"),
            ("CLONE_USER", "standby"),
            ("CLONE_PASSWORD", "s3cret"),
        ],
    );
    for (name, fixture) in fixtures.into_iter().chain([restore, clone]) {
        let sandbox = Sandbox::with_host_binaries();
        let out = sandbox.run(&fixture, &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let validate = Command::new(common::patroni())
            .arg("--validate-config")
            .arg(sandbox.rw().join("postgres.yml"))
            .output()
            .expect("patroni runs");
        assert!(
            validate.status.success(),
            "{name}: patroni --validate-config failed:\n{}{}",
            String::from_utf8_lossy(&validate.stdout),
            stderr(&validate)
        );
        let method = get(&sandbox.patroni_config(), "bootstrap.method").clone();
        let expected = if name.ends_with("restoring") {
            "pgbackrest_restore"
        } else if name.ends_with("cloning") {
            "clone_with_basebackup"
        } else {
            "initdb"
        };
        assert_eq!(
            method.as_str().unwrap_or("initdb"),
            expected,
            "{name}: {method}"
        );
    }
}

#[test]
fn operator_fixtures_have_the_contract_values() {
    for (name, fixture) in common::operator_fixtures() {
        let sandbox = Sandbox::new();
        let out = sandbox.run(&fixture, &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let config_file = sandbox.rw().join("postgres.yml");

        let var = |k: &str| {
            fixture
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let config = sandbox.patroni_config();
        assert_eq!(
            config["name"],
            var("HOSTNAME").expect("fixture sets HOSTNAME"),
            "{name}"
        );
        assert_eq!(
            config["scope"],
            var("SCOPE").expect("fixture sets SCOPE"),
            "{name}"
        );
        let pod_ip = var("POD_IP").expect("fixture sets POD_IP");
        assert_eq!(
            get(&config, "postgresql.connect_address"),
            &format!("{pod_ip}:5432"),
            "{name}"
        );
        assert_eq!(
            get(&config, "restapi.connect_address"),
            &format!("{pod_ip}:8008"),
            "{name}"
        );
        assert_eq!(get(&config, "restapi.listen"), "*:8008");
        assert_eq!(get(&config, "postgresql.listen"), "*:5432");
        let major = var("PGVERSION").expect("fixture sets PGVERSION");
        let bin_dir = sandbox.path("majors").join(major).join("bin");
        assert_eq!(
            get(&config, "postgresql.bin_dir"),
            bin_dir.to_str().expect("utf-8 path"),
            "{name}"
        );
        let dcs_parameters = get(&config, "bootstrap.dcs.postgresql.parameters");
        assert!(
            dcs_parameters.as_object().is_some_and(|p| !p.is_empty()),
            "{name}"
        );
        assert_eq!(
            dcs_parameters["archive_mode"], "on",
            "{name}: a string, not a YAML 1.1 boolean"
        );
        // The fixtures' SPILO_CONFIGURATION sets shared_buffers: merged over ours.
        assert_eq!(
            get(&config, "postgresql.parameters.shared_buffers"),
            "32MB",
            "{name}"
        );
        // A bucket turns archiving on, into Spilo's folder of the scope
        // (beside WAL-G's wal/); without one it stays off.
        let archive_command = get(&config, "postgresql.parameters.archive_command");
        if let Some(bucket) = var("WAL_S3_BUCKET") {
            let scope = var("SCOPE").expect("fixture sets SCOPE");
            let conf = sandbox.rw().join("pgbackrest/pgbackrest.conf");
            assert_eq!(
                archive_command,
                &format!(
                    "pgbackrest --config={} --stanza={scope} archive-push \"%p\"",
                    conf.display()
                ),
                "{name}"
            );
            let text = std::fs::read_to_string(&conf).expect("pgbackrest.conf");
            let suffix = var("WAL_BUCKET_SCOPE_SUFFIX").unwrap_or_default();
            for line in [
                format!("repo1-s3-bucket={bucket}\n"),
                format!("repo1-path=/spilo/{scope}{suffix}/pgbackrest\n"),
                format!("[{scope}]\n"),
            ] {
                assert!(text.contains(&line), "{name}: {line:?} not in\n{text}");
            }
        } else {
            assert_eq!(archive_command, "/bin/true", "{name}");
        }
        assert_eq!(
            get(&config, "postgresql.authentication.superuser.password"),
            var("PGPASSWORD_SUPERUSER").expect("fixture sets the password"),
            "{name}"
        );
        assert_eq!(
            std::fs::read_link(sandbox.path("home/postgres.yml")).expect("PGHOME link"),
            config_file
        );

        if var("DCS_ENABLE_KUBERNETES_API").is_some() {
            let k8s = &config["kubernetes"];
            assert_eq!(k8s["leader_label_value"], "master", "{name}");
            assert_eq!(k8s["standby_leader_label_value"], "master", "{name}");
            assert_eq!(
                k8s["role_label"],
                var("KUBERNETES_ROLE_LABEL").unwrap_or("spilo-role")
            );
            assert_eq!(
                k8s["scope_label"],
                var("KUBERNETES_SCOPE_LABEL").unwrap_or("version")
            );
            assert_eq!(k8s["bypass_api_service"], true);
            for other in ["etcd", "etcd3", "consul", "zookeeper", "exhibitor"] {
                assert!(
                    config.get(other).is_none(),
                    "{name}: only the kubernetes block"
                );
            }
            // The operator's own overrides of bootstrap.dcs win.
            assert_eq!(dcs_parameters["log_statement"], "all");
            assert_eq!(get(&config, "bootstrap.dcs.failsafe_mode"), false);
            assert_eq!(
                get(&config, "bootstrap.initdb")[0]["auth-host"],
                "scram-sha-256"
            );
        }
        if let Some(hosts) = var("ETCD3_HOSTS") {
            let listed: Vec<&str> = config["etcd3"]["hosts"]
                .as_array()
                .expect("host list")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(listed.join(","), hosts.replace('"', ""), "{name}");
        }
        if var("SPILO_CONFIGURATION").is_some_and(|c| c.contains("synchronous_mode: true")) {
            assert_eq!(get(&config, "bootstrap.dcs.synchronous_mode"), true);
            // ttl 10 is below Patroni's floor: raised, with a warning.
            assert_eq!(get(&config, "bootstrap.dcs.ttl"), 20);
            assert!(
                stderr(&out).contains("bootstrap.dcs.ttl=10 raised"),
                "{}",
                stderr(&out)
            );
        }
        if var("PAM_OAUTH2").is_some() {
            let hba: Vec<&str> = get(&config, "postgresql.pg_hba")
                .as_array()
                .expect("pg_hba list")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                hba.contains(&"hostssl all +zalandos all pam"),
                "{name}: {hba:?}"
            );
            let pam =
                std::fs::read_to_string(sandbox.rw().join("pam.d/postgresql")).expect("PAM file");
            assert!(pam.contains(&format!(
                "auth sufficient pam_oauth2.so {}",
                var("PAM_OAUTH2").unwrap_or_default()
            )));
        }
    }
}

#[test]
fn running_twice_changes_nothing() {
    let (_, fixture) = common::operator_fixtures()
        .into_iter()
        .next()
        .expect("a fixture");
    let sandbox = Sandbox::new();
    assert!(sandbox.run(&fixture, &[]).status.success());
    let first = sandbox.snapshot();
    let out = sandbox.run(&fixture, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(first, sandbox.snapshot());

    let rw = sandbox.rw();
    assert_eq!(first[&rw.join("postgres.yml")].0, 0o600);
    assert_eq!(first[&rw.join("certs/server.key")].0, 0o600);
    assert_eq!(first[&rw.join("certs/server.crt")].0, 0o644);
    let cert = String::from_utf8_lossy(&first[&rw.join("certs/server.crt")].1).into_owned();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
}

#[test]
fn dry_run_prints_redacted_files_and_writes_nothing() {
    let sandbox = Sandbox::new();
    let env = vars(&[
        ("HOSTNAME", "demo-0"),
        ("POD_IP", "10.0.0.9"),
        ("PGPASSWORD_SUPERUSER", "very-secret-super"),
        ("PGPASSWORD_STANDBY", "very-secret-standby"),
        (
            "PGBOUNCER_CONFIGURATION",
            "[databases]\n* = host=127.0.0.1 password=very-secret-super\n[pgbouncer]\nlisten_port = 6432\n",
        ),
        ("PGBOUNCER_AUTHENTICATION", "\"app\" \"md5abcdef\"\n"),
    ]);
    let out = sandbox.run(&env, &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for secret in [
        "very-secret-super",
        "very-secret-standby",
        "md5abcdef",
        "PRIVATE KEY",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    let rw = sandbox.rw();
    for file in [
        "postgres.yml",
        "certs/server.crt",
        "certs/server.key",
        "pgbouncer/pgbouncer.ini",
        "pgbouncer/userlist.txt",
    ] {
        assert!(
            shown.contains(&format!("# ==> {} ", rw.join(file).display())),
            "{file} missing:\n{shown}"
        );
    }
    assert!(shown.contains("password: \"<redacted>\""), "{shown}");
    assert!(sandbox.snapshot().is_empty(), "a dry run wrote files");

    let out = sandbox.run(&env, &["--dry-run", "--show-secrets"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    for secret in [
        "very-secret-super",
        "very-secret-standby",
        "md5abcdef",
        "PRIVATE KEY",
    ] {
        assert!(
            shown.contains(secret),
            "{secret} not shown with --show-secrets"
        );
    }
    assert!(sandbox.snapshot().is_empty(), "a dry run wrote files");
}

#[test]
fn sections_write_only_their_files() {
    let sandbox = Sandbox::new();
    let env = vars(&[
        ("HOSTNAME", "demo-0"),
        ("POD_IP", "10.0.0.9"),
        (
            "PGBOUNCER_CONFIGURATION",
            "[databases]\n* = host=127.0.0.1\n[pgbouncer]\nlisten_port = 6432\n",
        ),
        ("PGBOUNCER_AUTH", "\"app\" \"md5abcdef\"\n"),
        (
            "PAM_OAUTH2",
            "https://info.example.com/oauth2/tokeninfo?access_token= uid realm=/employees",
        ),
    ]);
    let out = sandbox.run(&env, &["pgbouncer"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<PathBuf> = sandbox.snapshot().into_keys().collect();
    let rw = sandbox.rw();
    assert_eq!(
        files,
        [
            rw.join("pgbouncer/pgbouncer.ini"),
            rw.join("pgbouncer/userlist.txt")
        ]
    );
    let ini = std::fs::read_to_string(rw.join("pgbouncer/pgbouncer.ini")).expect("ini");
    assert!(ini.ends_with("[pgbouncer]\nlisten_port = 6432\n"), "{ini}");
    assert_eq!(
        std::fs::read_to_string(rw.join("pgbouncer/userlist.txt")).expect("userlist"),
        "\"app\" \"md5abcdef\"\n"
    );

    let out = sandbox.run(&env, &["pam-oauth2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pam = std::fs::read_to_string(rw.join("pam.d/postgresql")).expect("PAM file");
    let lines: Vec<&str> = pam.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "auth sufficient pam_oauth2.so https://info.example.com/oauth2/tokeninfo?access_token= uid realm=/employees",
            "account sufficient pam_oauth2.so",
        ]
    );
    assert!(!rw.join("postgres.yml").exists());
}

/// PAM_OAUTH2 lines on which `spilo configure` and the PAM module used to
/// disagree: configure accepted lines that the module refuses at every
/// login, and refused arguments the module accepts. `true`: valid.
const PAM_OAUTH2_LINES: &[(&str, bool)] = &[
    // Both always agreed.
    (
        "https://info.example.com/oauth2/tokeninfo?access_token= uid realm=/employees",
        true,
    ),
    ("https://info.example.com/t?access_token= uid realm", false),
    // Configure accepted, the module refuses.
    ("https://info.example.com/t?access_token= uid=x", false),
    (
        "https://info.example.com/t?access_token= uid timeout=forever",
        false,
    ),
    (
        "https://info.example.com/t?access_token= uid timeout=1 timeout=2",
        false,
    ),
    (
        "https://info.example.com/t?access_token= uid cafile=ca.pem",
        false,
    ),
    (
        "https://info.example.com/t?access_token= uid max_body=1G",
        false,
    ),
    (
        "https://info.example.com/t?access_token= uid claim:=x",
        false,
    ),
    // libpam drops a '#' and the rest of the line as a comment (here the
    // realm check, silently), and joins a line ending in '\' with the next.
    ("https://info.example.com/t?access_token=#x uid", false),
    (
        "https://info.example.com/t?access_token= uid realm=/employees#x",
        false,
    ),
    (
        "https://info.example.com/t?access_token= uid realm=/employees\\",
        false,
    ),
    // Configure refused, the module accepts.
    ("HTTPS://info.example.com/t?access_token= uid", true),
    (
        "https://info.example.com/t?access_token= uid realm=/employees debug",
        true,
    ),
    (
        "https://info.example.com/t?access_token= uid try_first_pass",
        true,
    ),
    (
        "https://info.example.com/t?access_token= uid use_first_pass use_authtok",
        true,
    ),
    (
        "https://info.example.com/t?access_token= uid [realm=/all staff]",
        true,
    ),
];

#[test]
fn pam_oauth2_configure_and_the_module_agree() {
    let mut failures = Vec::new();
    for &(line, valid) in PAM_OAUTH2_LINES {
        // What the module makes of the rendered arguments at login.
        let module = pam_oauth2_args::Config::parse_pam_arguments(line);
        let sandbox = Sandbox::new();
        let env = vars(&[
            ("HOSTNAME", "demo-0"),
            ("POD_IP", "10.0.0.9"),
            ("PAM_OAUTH2", line),
        ]);
        let out = sandbox.run(&env, &["pam-oauth2"]);
        let err = stderr(&out);
        let configure_ok = out.status.success();
        let agreed = if configure_ok {
            // The module accepts the auth line as written to the file.
            let pam =
                std::fs::read_to_string(sandbox.rw().join("pam.d/postgresql")).unwrap_or_default();
            let written = pam
                .lines()
                .find_map(|l| l.strip_prefix("auth sufficient pam_oauth2.so "))
                .unwrap_or_default();
            written == line && pam_oauth2_args::Config::parse_pam_arguments(written).is_ok()
        } else {
            // One line naming the variable, its value and the module's reason.
            let reason = module.as_ref().err().map(ToString::to_string);
            let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
            out.status.code() == Some(2)
                && lines.len() == 1
                && reason
                    .is_some_and(|r| lines[0] == format!("spilo: error: PAM_OAUTH2={line}: {r}"))
                && !sandbox.rw().exists()
        };
        if configure_ok != valid || module.is_ok() != valid || !agreed {
            failures.push(format!(
                "{line:?}: expected {}, configure {}, module {module:?}; {err}",
                if valid { "valid" } else { "invalid" },
                if configure_ok { "accepted" } else { "refused" },
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // libpam (before 1.6) cuts lines longer than 1023 bytes: the module
    // would get a truncated line and the rest would break the PAM stack.
    // The auth line is "auth sufficient pam_oauth2.so " (30 bytes) and the
    // arguments.
    let padded = |line_length: usize| {
        let head = "https://info.example.com/t?access_token= uid claim:pad=";
        format!("{head}{}", "x".repeat(line_length - 30 - head.len()))
    };
    for (line_length, fits) in [(1023, true), (1024, false)] {
        let sandbox = Sandbox::new();
        let value = padded(line_length);
        assert!(pam_oauth2_args::Config::parse_pam_arguments(&value).is_ok());
        let env = vars(&[
            ("HOSTNAME", "demo-0"),
            ("POD_IP", "10.0.0.9"),
            ("PAM_OAUTH2", &value),
        ]);
        let out = sandbox.run(&env, &["pam-oauth2"]);
        let err = stderr(&out);
        if fits {
            let pam = std::fs::read_to_string(sandbox.rw().join("pam.d/postgresql")).unwrap();
            assert!(pam.lines().any(|l| l.len() == 1023), "{pam}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
        assert_eq!(
            lines,
            [
                "spilo: error: PAM_OAUTH2: the PAM line would be 1024 bytes; libpam reads at most 1023"
            ]
        );
        assert!(!sandbox.rw().exists());
    }
}

#[test]
fn given_certificates_are_written_and_kept() {
    let sandbox = Sandbox::new();
    let cert = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n";
    let env = vars(&[
        ("HOSTNAME", "demo-0"),
        ("POD_IP", "10.0.0.9"),
        ("SSL_CERTIFICATE", cert),
        ("SSL_PRIVATE_KEY", key),
        ("SSL_CA", cert),
    ]);
    let out = sandbox.run(&env, &["certificate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap = sandbox.snapshot();
    let rw = sandbox.rw();
    assert_eq!(
        snap[&rw.join("certs/server.crt")],
        (0o644, cert.as_bytes().to_vec())
    );
    assert_eq!(
        snap[&rw.join("certs/server.key")],
        (0o600, key.as_bytes().to_vec())
    );
    assert_eq!(
        snap[&rw.join("certs/ca.crt")],
        (0o644, cert.as_bytes().to_vec())
    );

    // A mounted pair is used as it is, never regenerated.
    let mounted = vars(&[
        ("HOSTNAME", "demo-0"),
        ("POD_IP", "10.0.0.9"),
        (
            "SSL_CERTIFICATE_FILE",
            rw.join("certs/server.crt").to_str().expect("utf-8"),
        ),
        (
            "SSL_PRIVATE_KEY_FILE",
            rw.join("certs/server.key").to_str().expect("utf-8"),
        ),
    ]);
    assert!(sandbox.run(&mounted, &[]).status.success());
    assert_eq!(
        sandbox.snapshot()[&rw.join("certs/server.key")],
        (0o600, key.as_bytes().to_vec())
    );
    let config = sandbox.patroni_config();
    assert_eq!(
        get(&config, "postgresql.parameters.ssl_ca_file"),
        &Value::Null
    );
    assert_eq!(
        get(&config, "postgresql.parameters.ssl_key_file"),
        rw.join("certs/server.key").to_str().expect("utf-8")
    );
}

#[test]
fn the_data_directory_decides_the_major() {
    let sandbox = Sandbox::new();
    let pgdata = sandbox.path("pgroot/pgdata");
    std::fs::create_dir_all(&pgdata).expect("pgdata");
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").expect("PG_VERSION");
    let out = sandbox.run(
        &vars(&[
            ("HOSTNAME", "a"),
            ("POD_IP", "10.0.0.9"),
            ("PGVERSION", "17"),
        ]),
        &["patroni"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("PGVERSION=17 ignored: the data directory is PostgreSQL 15"));
    let bin = sandbox.path("majors/15/bin");
    assert_eq!(
        get(&sandbox.patroni_config(), "postgresql.bin_dir"),
        bin.to_str().expect("utf-8")
    );

    let out = sandbox.run(
        &vars(&[("HOSTNAME", "a"), ("POD_IP", "10.0.0.9")]),
        &["patroni"],
    );
    assert!(out.status.success());
    // Without a data directory: the newest major.
    std::fs::remove_dir_all(&pgdata).expect("remove pgdata");
    assert!(
        sandbox
            .run(
                &vars(&[("HOSTNAME", "a"), ("POD_IP", "10.0.0.9")]),
                &["patroni"]
            )
            .status
            .success()
    );
    let bin = sandbox.path("majors/17/bin");
    assert_eq!(
        get(&sandbox.patroni_config(), "postgresql.bin_dir"),
        bin.to_str().expect("utf-8")
    );
}

/// A bad input: extra variables, an optional preparation of the sandbox,
/// and what the one error line must say.
struct Bad {
    vars: &'static [(&'static str, &'static str)],
    prepare: Option<fn(&Sandbox)>,
    message: &'static str,
}

const fn bad(vars: &'static [(&'static str, &'static str)], message: &'static str) -> Bad {
    Bad {
        vars,
        prepare: None,
        message,
    }
}

const K8S: (&str, &str) = ("KUBERNETES_SERVICE_HOST", "10.96.0.1");
const K8S_ON: (&str, &str) = ("DCS_ENABLE_KUBERNETES_API", "true");
const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

const CATALOGUE: &[Bad] = &[
    bad(
        &[("PGUSER_ADMIN", "postgres")],
        "PGUSER_ADMIN=postgres: is PGUSER_SUPERUSER too",
    ),
    bad(
        &[("HUMAN_ROLE", "standby")],
        "HUMAN_ROLE=standby: is PGUSER_STANDBY too",
    ),
    bad(
        &[("PGUSER_ADMIN", "cron_admin")],
        "PGUSER_ADMIN=cron_admin: is the hooks' role too",
    ),
    bad(
        &[("PGUSER_STANDBY", "postgres")],
        "PGUSER_STANDBY=postgres: is PGUSER_SUPERUSER too",
    ),
    bad(
        &[("PGVERSION", "abc")],
        "PGVERSION=abc: not a PostgreSQL major version",
    ),
    bad(
        &[("PGVERSION", "16")],
        "PGVERSION=16: PostgreSQL 16 is not installed (installed: 15, 17)",
    ),
    bad(
        &[("SPILO_CONFIGURATION", "[1, 2]")],
        "SPILO_CONFIGURATION=[1, 2]: must be a YAML or JSON mapping",
    ),
    bad(
        &[("SPILO_CONFIGURATION", "{postgresql: {parameters: [}")],
        "SPILO_CONFIGURATION={postgresql: {parameters: [}: not valid YAML",
    ),
    bad(
        &[("PATRONI_CONFIGURATION", "just text")],
        "PATRONI_CONFIGURATION=just text: must be a YAML or JSON mapping",
    ),
    bad(
        &[("SPILO_CONFIGURATION", "{bootstrap: {dcs: {ttl: soon}}}")],
        "bootstrap.dcs.ttl: \"soon\": not an integer",
    ),
    bad(
        &[(
            "SPILO_CONFIGURATION",
            "{bootstrap: {dcs: {postgresql: {parameters: null}}}}",
        )],
        "bootstrap.dcs.postgresql.parameters must be a mapping",
    ),
    bad(
        &[("PGPORT", "70000")],
        "PGPORT=70000: not a TCP port number (1-65535)",
    ),
    bad(
        &[("APIPORT", "http")],
        "APIPORT=http: not a TCP port number",
    ),
    bad(
        &[K8S, K8S_ON, ("KUBERNETES_LABELS", "application=spilo")],
        "KUBERNETES_LABELS=application=spilo: not JSON",
    ),
    bad(
        &[K8S, K8S_ON, ("KUBERNETES_BOOTSTRAP_LABELS", "[1]")],
        "KUBERNETES_BOOTSTRAP_LABELS=[1]: must be a JSON object of string labels",
    ),
    bad(
        &[K8S, ("DCS_ENABLE_KUBERNETES_API", "sure")],
        "DCS_ENABLE_KUBERNETES_API=sure: not a boolean",
    ),
    bad(
        &[K8S, K8S_ON, ("KUBERNETES_USE_CONFIGMAPS", "perhaps")],
        "KUBERNETES_USE_CONFIGMAPS=perhaps: not a boolean",
    ),
    bad(
        &[("PAM_OAUTH2", "http://info.example.com/tokeninfo?t= uid")],
        "PAM_OAUTH2=http://info.example.com/tokeninfo?t= uid: the tokeninfo URL must start with https://",
    ),
    bad(
        &[("PAM_OAUTH2", "https://info.example.com/tokeninfo")],
        "PAM_OAUTH2=https://info.example.com/tokeninfo: expected at least two arguments: <tokeninfo URL> <login field>",
    ),
    bad(
        &[("SSL_CERTIFICATE", PEM_CERT)],
        "SSL_CERTIFICATE: given without SSL_PRIVATE_KEY",
    ),
    bad(
        &[
            ("SSL_CERTIFICATE", PEM_CERT),
            ("SSL_PRIVATE_KEY", "top-secret-key-material"),
        ],
        "SSL_PRIVATE_KEY=<redacted>: not PEM",
    ),
    bad(
        &[("SSL_CERTIFICATE_FILE", "tls/tls.crt")],
        "SSL_CERTIFICATE_FILE=tls/tls.crt: must be an absolute path",
    ),
    bad(
        &[
            ("SSL_RESTAPI_CERTIFICATE_FILE", "/nonexistent/api.crt"),
            ("SSL_RESTAPI_PRIVATE_KEY_FILE", "/nonexistent/api.key"),
        ],
        "SSL_RESTAPI_CERTIFICATE_FILE=/nonexistent/api.crt: no such file",
    ),
    bad(
        &[("ALLOW_NOSSL", "maybe")],
        "ALLOW_NOSSL=maybe: not a boolean",
    ),
    bad(
        &[("POD_IP", "10.0.0.300")],
        "POD_IP=10.0.0.300: not an IP address",
    ),
    bad(
        &[("PGDATA", "relative/data")],
        "PGDATA=relative/data: must be an absolute path",
    ),
    bad(
        &[("ETCD3_HOSTS", "[a:2379, [b]]")],
        "ETCD3_HOSTS=[a:2379, [b]]: every host must be a non-empty string",
    ),
    bad(
        &[("EXHIBITOR_HOSTS", "x"), ("EXHIBITOR_PORT", "eighty")],
        "EXHIBITOR_PORT=eighty: not a TCP port number",
    ),
    bad(
        &[("SCOPE", "team/cluster")],
        "SCOPE=team/cluster: a cluster name cannot hold spaces or '/'",
    ),
    bad(
        &[("HUMAN_ROLE", "zalando humans")],
        "HUMAN_ROLE=zalando humans: not a usable role name",
    ),
    bad(
        &[("INITDB_LOCALE", "en US")],
        "INITDB_LOCALE=en US: expected a locale name",
    ),
    bad(
        &[("PGBOUNCER_CONFIGURATION", "listen_port = 6432")],
        "PGBOUNCER_CONFIGURATION=listen_port = 6432: a pgbouncer.ini needs a [pgbouncer] section",
    ),
    bad(
        &[("PGBOUNCER_AUTHENTICATION", "\"u\" \"p\"")],
        "PGBOUNCER_AUTHENTICATION: given without PGBOUNCER_CONFIGURATION",
    ),
    bad(
        &[("BGMON_LISTEN_IP", "all")],
        "BGMON_LISTEN_IP=all: expected an IPv4 or IPv6 address",
    ),
    bad(
        &[("BGMON_NAPTIME", "60")],
        "BGMON_NAPTIME=60: expected 1 to 10 seconds",
    ),
    bad(
        &[("BGMON_HISTORY_BUCKETS", "-1")],
        "BGMON_HISTORY_BUCKETS=-1: expected 0 to 1440 one-minute buckets",
    ),
    bad(
        &[("WAL_S3_BUCKET", "My_Bucket")],
        "WAL_S3_BUCKET=My_Bucket: not a bucket name",
    ),
    bad(
        &[
            ("WAL_S3_BUCKET", "wal"),
            ("AWS_SECRET_ACCESS_KEY", "s3cret-s3cret"),
        ],
        "AWS_SECRET_ACCESS_KEY: given without AWS_ACCESS_KEY_ID",
    ),
    bad(
        &[
            ("WAL_S3_BUCKET", "wal"),
            ("AWS_ENDPOINT", "http://minio:9000"),
        ],
        "AWS_ENDPOINT=http://minio:9000: pgBackRest reaches S3 over HTTPS only",
    ),
    bad(
        &[
            ("WAL_GS_BUCKET", "wal"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
        ],
        "GOOGLE_APPLICATION_CREDENTIALS=/nonexistent/key.json: no such file",
    ),
    bad(
        &[
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("WALG_AZ_PREFIX", "azure://wal"),
        ],
        "AZURE_STORAGE_ACCOUNT: needs AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN",
    ),
    bad(
        &[("WAL_LOCAL_PATH", "/nonexistent/backups")],
        "WAL_LOCAL_PATH=/nonexistent/backups: not an absolute path to a directory",
    ),
    bad(
        &[("WAL_S3_BUCKET", "wal"), ("BACKUP_SCHEDULE", "0 25 * * *")],
        "BACKUP_SCHEDULE=0 25 * * *: ",
    ),
    bad(
        &[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "old"),
            ("CLONE_WAL_S3_BUCKET", "wal"),
            ("CLONE_TARGET_TIME", "yesterday"),
        ],
        "CLONE_TARGET_TIME=yesterday: expected a timestamp with time zone",
    ),
    bad(
        &[
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
            ("CLONE_USER", "standby"),
        ],
        "CLONE_HOST: CLONE_METHOD=CLONE_WITH_BASEBACKUP needs the source cluster's host",
    ),
    bad(
        &[("STANDBY_METHOD", "STANDBY_WITH_WALE")],
        "STANDBY_METHOD: STANDBY_WITH_WALE needs the source's archive",
    ),
    bad(
        &[
            ("STANDBY_METHOD", "STANDBY_WITH_WALE"),
            ("STANDBY_WALE_S3_PREFIX", "s3://b/backups/s"),
        ],
        "STANDBY_WALE_S3_PREFIX=s3://b/backups/s: expected s3://BUCKET/spilo/SCOPE[/UID]/wal[/MAJOR]",
    ),
    bad(
        &[
            ("SCOPE", "acid-source"),
            ("WAL_S3_BUCKET", "backups"),
            (
                "STANDBY_WALE_S3_PREFIX",
                "s3://backups/spilo/acid-source/wal/17",
            ),
        ],
        "SCOPE: this cluster's repository (/spilo/acid-source/pgbackrest) is its source's",
    ),
    bad(
        &[
            ("CLONE_METHOD", "CLONE_WITH_WALE"),
            ("CLONE_SCOPE", "old"),
            ("CLONE_WAL_S3_BUCKET", "wal"),
            ("CLONE_TARGET_TIME", "2999-01-01 00:00:00+00"),
        ],
        "CLONE_TARGET_TIME=2999-01-01 00:00:00+00: is in the future",
    ),
    bad(
        &[
            ("STANDBY_HOST", "acid-source"),
            ("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"),
        ],
        "CLONE_METHOD: a standby cluster (STANDBY_*) follows its source and cannot also be a clone",
    ),
    bad(
        &[
            ("SSL_CERTIFICATE_FILE", "/dev/null/server.crt"),
            ("SSL_PRIVATE_KEY_FILE", "/dev/null/server.key"),
        ],
        "SSL_CERTIFICATE_FILE=/dev/null/server.crt: no such file, and a self-signed one cannot be written there",
    ),
    bad(
        &[("CLONE_METHOD", "CLONE_WITH_MAGIC")],
        "CLONE_METHOD=CLONE_WITH_MAGIC: expected CLONE_WITH_BASEBACKUP or CLONE_WITH_WALE",
    ),
    Bad {
        vars: &[],
        prepare: Some(|s| {
            let old = s.path("pgroot/data");
            std::fs::create_dir_all(&old).expect("old pgdata");
            std::fs::write(old.join("PG_VERSION"), "15\n").expect("PG_VERSION");
        }),
        message: "pgroot/pgdata: empty, but ",
    },
    Bad {
        vars: &[],
        prepare: Some(|s| {
            std::fs::create_dir_all(s.path("pgroot")).expect("pgroot");
            std::fs::write(s.path("pgroot/pgdata"), "").expect("a file");
        }),
        message: "pgroot/pgdata: exists and is not a directory",
    },
    Bad {
        vars: &[("PGVERSION", "17")],
        prepare: Some(|s| {
            let pgdata = s.path("pgroot/pgdata");
            std::fs::create_dir_all(&pgdata).expect("pgdata");
            std::fs::write(pgdata.join("PG_VERSION"), "13\n").expect("PG_VERSION");
        }),
        message: "PG_VERSION: the data directory is PostgreSQL 13, which this image does not have (installed: 15, 17)",
    },
    Bad {
        vars: &[],
        prepare: Some(|s| std::fs::remove_dir_all(s.path("majors")).expect("remove majors")),
        message: "majors: No such file or directory",
    },
];

#[test]
fn bad_inputs_fail_with_one_line_and_write_nothing() {
    assert!(CATALOGUE.len() >= 20);
    let mut failures = Vec::new();
    for case in CATALOGUE {
        let sandbox = Sandbox::new();
        if let Some(prepare) = case.prepare {
            prepare(&sandbox);
        }
        let before = sandbox.snapshot();
        let mut env = vars(&[("HOSTNAME", "demo-0"), ("POD_IP", "10.0.0.9")]);
        env.retain(|(k, _)| !case.vars.iter().any(|(n, _)| n == k));
        env.extend(vars(case.vars));
        let out = sandbox.run(&env, &[]);
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
        let ok = out.status.code() == Some(2)
            && lines.len() == 1
            && lines[0].starts_with("spilo: error: ")
            && lines[0].contains(case.message)
            && sandbox.snapshot() == before
            && !sandbox.rw().exists()
            && !sandbox.path("home/postgres.yml").exists()
            && !case
                .vars
                .iter()
                .any(|(k, v)| k.contains("KEY") && err.contains(v));
        if !ok {
            failures.push(format!(
                "{:?}: status {:?}, stderr {err:?}",
                case.vars,
                out.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad inputs misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_value_that_is_not_utf8_is_an_error_naming_its_variable() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"acid-\xff");
    for name in [
        "SCOPE",
        "SPILO_CONFIGURATION",
        "PGPASSWORD_SUPERUSER",
        "WAL_S3_BUCKET",
    ] {
        let sandbox = Sandbox::new();
        let out = Command::new(env!("CARGO_BIN_EXE_spilo"))
            .arg("configure")
            .env_clear()
            .envs([("HOSTNAME", "demo-0"), ("POD_IP", "10.0.0.9")])
            .env("RW_DIR", sandbox.rw())
            .env("PGHOME", sandbox.path("home"))
            .env("SPILO_POSTGRES_ROOT", sandbox.path("majors"))
            .env(name, not_utf8)
            .output()
            .expect("spilo runs");
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim(),
            format!("spilo: error: {name}: the value is not valid UTF-8")
        );
        assert!(!sandbox.rw().exists(), "{name}: something was written");
    }
    // Not a variable of ours: no business of configure's.
    let sandbox = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_spilo"))
        .args(["configure", "patroni"])
        .env_clear()
        .envs([("HOSTNAME", "demo-0"), ("POD_IP", "10.0.0.9")])
        .env("RW_DIR", sandbox.rw())
        .env("PGHOME", sandbox.path("home"))
        .env("SPILO_POSTGRES_ROOT", sandbox.path("majors"))
        .env("MY_APP_BLOB", not_utf8)
        .output()
        .expect("spilo runs");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_user_pg_hba_replaces_ours_and_is_checked_for_replication() {
    let sandbox = Sandbox::new();
    let base = [("HOSTNAME", "a"), ("POD_IP", "10.0.0.9")];
    let mut env = vars(&base);
    env.extend(vars(&[(
        "PATRONI_CONFIGURATION",
        "postgresql:\n  pg_hba:\n    - local all all trust\n    - hostssl all all all md5\n",
    )]));
    let out = sandbox.run(&env, &["patroni"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        get(&sandbox.patroni_config(), "postgresql.pg_hba"),
        &serde_json::json!(["local all all trust", "hostssl all all all md5"])
    );
    let warnings = stderr(&out);
    assert!(
        warnings.contains(
            "PATRONI_CONFIGURATION: postgresql.pg_hba has no host rule for replication by standby"
        ),
        "{warnings}"
    );

    let mut env = vars(&base);
    env.extend(vars(&[(
        "SPILO_CONFIGURATION",
        "{postgresql: {pg_hba: [local all all trust, hostssl replication standby 10.0.0.0/8 md5]}}",
    )]));
    let out = sandbox.run(&env, &["patroni"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("pg_hba"), "{}", stderr(&out));
}
