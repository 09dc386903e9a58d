//! What each fuzz target does with its input, kept here so that the
//! inputs under `regressions/<target>/` are replayed by `cargo test`.
//!
//! A target passes when it returns: bad input is an `Err`, never a panic
//! or a hang (libFuzzer's `-timeout` catches those). The configuration
//! targets say whether the input reached the renderers (the PAM ones
//! whether it was accepted), so the tests can check that the seeds named
//! `valid-*` explore more than the errors.

use std::path::PathBuf;
use std::sync::OnceLock;

use spilo::config::{Config, Env, System};
use spilo::render::{self, Section};

/// One pod as the operator configures it, the base every configuration
/// target changes one variable of.
const OPERATOR_POD: &str = include_str!("../../tests/fixtures/operator/basic.env");

/// The variables each configuration target sets from its input.
pub const SPILO_CONFIGURATION: &[&str] = &["SPILO_CONFIGURATION"];
/// Parsed for every `<DCS>_HOSTS`, whichever DCS is chosen.
pub const HOST_LISTS: &[&str] = &["ETCD3_HOSTS"];
pub const KUBERNETES_LABELS: &[&str] = &["KUBERNETES_LABELS", "KUBERNETES_BOOTSTRAP_LABELS"];
pub const PGBOUNCER: &[&str] = &["PGBOUNCER_CONFIGURATION", "PGBOUNCER_AUTHENTICATION"];

/// A scratch tree with the majors the fixtures ask for, made once per
/// process.
struct Scratch {
    _dir: tempfile::TempDir,
    rw_dir: PathBuf,
    postgres_root: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory for the fuzz target");
        let postgres_root = dir.path().join("pg");
        for major in ["15", "17"] {
            std::fs::create_dir_all(postgres_root.join(major).join("bin"))
                .expect("the scratch majors");
        }
        Scratch {
            rw_dir: dir.path().join("rw"),
            postgres_root,
            _dir: dir,
        }
    })
}

/// The model and every file `spilo configure` writes, for an environment
/// given as `KEY=VALUE` lines. Paths stay inside the scratch tree.
pub fn environment(data: &[u8]) -> bool {
    configure(Env::from_env_file(&String::from_utf8_lossy(data)).iter())
}

/// The operator's pod with `vars` set to the input (split at NUL bytes,
/// one value per name, the last one taking the rest).
pub fn operator_pod_with(vars: &[&str], data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut values = text.splitn(vars.len(), '\0');
    let base = Env::from_env_file(OPERATOR_POD);
    let overrides: Vec<(&str, &str)> = vars
        .iter()
        .map(|name| (*name, values.next().unwrap_or("")))
        .collect();
    configure(
        base.iter()
            .filter(|(k, _)| !vars.contains(k))
            .chain(overrides),
    )
}

fn configure<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    let scratch = scratch();
    let mut pairs: Vec<(String, String)> = vars
        .filter(|(k, _)| !matches!(*k, "RW_DIR" | "PGHOME" | "PGROOT" | "PGDATA"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let rw = scratch.rw_dir.display();
    pairs.extend([
        ("RW_DIR".to_owned(), rw.to_string()),
        ("PGHOME".to_owned(), format!("{rw}/home")),
        ("PGROOT".to_owned(), format!("{rw}/pgroot")),
    ]);
    let system = System {
        postgres_root: scratch.postgres_root.clone(),
        ..System::default()
    };
    // Rendering a valid model may still refuse (a value no reader could
    // use); it must not panic.
    Config::build(&Env::from_pairs(pairs), &system)
        .is_ok_and(|config| render::plan(&config, &[Section::All]).is_ok())
}

/// The argument part of a pam.d line, as `spilo configure` and the module
/// both check it.
pub fn pam_arguments(data: &[u8]) -> bool {
    std::str::from_utf8(data)
        .is_ok_and(|text| pam_oauth2::Config::parse_pam_arguments(text).is_ok())
}

/// A tokeninfo answer (after the first NUL: user, NUL, token, NUL, body)
/// checked against a module configured with claims: whether it grants.
pub fn tokeninfo(data: &[u8]) -> bool {
    let config = pam_oauth2::Config::parse(&[
        "https://tokeninfo.example/oauth2/tokeninfo?access_token=",
        "uid",
        "realm=/employees",
        "active=true",
        "level=5",
    ])
    .expect("the fuzz target's module arguments are valid");
    let mut parts = data.splitn(3, |b| *b == 0);
    let user = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let token = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let _ = pam_oauth2::request_url(&config, &token);
    pam_oauth2::verify::check_answer(&config, &user, body).is_ok()
}

/// A request head to the monitor on 8080 (its history holding the current
/// minute): an answer with a status line, never a panic.
pub fn monitor_request(data: &[u8]) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let answer = spilo::monitor::answer_head(data, now);
    assert!(answer.starts_with(b"HTTP/1.1 "), "no status line");
    answer.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input kept under `regressions/<target>/` still passes; the
    /// seeds named `valid-*` are accepted.
    fn replay(target: &str, run: impl Fn(&[u8]) -> bool) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("regressions")
            .join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path());
        let mut count = 0;
        for path in entries {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rendered = run(&data);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                rendered || !name.starts_with("valid-"),
                "{}: the seed is not accepted",
                path.display()
            );
            count += 1;
        }
        assert!(count > 0, "{} holds no input", dir.display());
    }

    #[test]
    fn environment() {
        replay("environment", super::environment);
    }

    #[test]
    fn spilo_configuration() {
        replay("spilo_configuration", |d| {
            super::operator_pod_with(super::SPILO_CONFIGURATION, d)
        });
    }

    #[test]
    fn host_lists() {
        replay("host_lists", |d| {
            super::operator_pod_with(super::HOST_LISTS, d)
        });
    }

    #[test]
    fn kubernetes_labels() {
        replay("kubernetes_labels", |d| {
            super::operator_pod_with(super::KUBERNETES_LABELS, d)
        });
    }

    #[test]
    fn pgbouncer() {
        replay("pgbouncer", |d| {
            super::operator_pod_with(super::PGBOUNCER, d)
        });
    }

    #[test]
    fn pam_arguments() {
        replay("pam_arguments", super::pam_arguments);
    }

    #[test]
    fn tokeninfo() {
        replay("tokeninfo", super::tokeninfo);
    }

    #[test]
    fn monitor_request() {
        replay("monitor_request", super::monitor_request);
    }
}
