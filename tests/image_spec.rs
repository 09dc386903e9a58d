//! What the spec can say, built: a third-party apt repository as the
//! source of every major, and the build's refusals of a spec it can't
//! satisfy. Each builds a copy of the checkout whose image/spec.toml the
//! test edits.
//!
//! The third-party repository is PostgreSQL's own (PGDG), the way a build
//! that reaches it takes 14 to 18 from it: `--build-arg SOURCE=pgdg` with
//! the spec's `pgdg` source. PGDG is unreachable here, so the test makes a
//! repository in its layout (`dists/trixie-pgdg/main`, a pool), signs it
//! with a key of its own and serves it on loopback (the build runs with
//! the host's network); the packages are real ones, the PostgreSQL 18 the
//! image's sources stage compiles. The copy's `pgdg` source points there,
//! with that key inline; the same repository under another key stops the
//! build.

mod image_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::collections::BTreeMap;

use image_support::{BuildLog, Container, READY, build, build_in, cmd, manifest, ok, serial};

const SOURCES: &str = "localhost/spilo-rs:sources";
const PGDG: &str = "localhost/spilo-rs:test-pgdg";
const SUITE: &str = "trixie-pgdg";

/// The host's Debian architecture, the image's too.
fn arch() -> String {
    run(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned()
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packages the sources stage built, copied out of its image.
fn built_packages(dir: &Path) {
    build(SOURCES, &["--target", "sources"]).expect("the sources stage");
    let name = image_support::unique("sources");
    ok(&["create", "--name", &name, SOURCES, "true"]);
    let copied = cmd()
        .args([
            "cp",
            &format!("{name}:/built/."),
            &dir.display().to_string(),
        ])
        .output()
        .expect("cp");
    ok(&["rm", &name]);
    assert!(copied.status.success(), "{copied:?}");
}

/// A GnuPG home of the test's, its agent stopped when dropped.
struct Keyring(std::path::PathBuf);

impl Drop for Keyring {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "all"])
            .status();
    }
}

/// A signing key of its own in `home`; returns it armored.
fn key(home: &Path, who: &str) -> String {
    std::fs::create_dir_all(home).unwrap();
    let gpg = || {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(home)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"]);
        c
    };
    run(gpg().args([
        "--passphrase",
        "",
        "--quick-gen-key",
        &format!("{who} <{who}@localhost>"),
        "default",
        "default",
        "never",
    ]));
    run(gpg().args(["--armor", "--export"]))
}

/// PGDG's layout under `root`: the .debs of `debs` in the pool, the
/// suite's Packages and Release, InRelease signed with the key in `home`.
fn repository(root: &Path, debs: &Path, home: &Path) {
    let pool = root.join("pool/main");
    let binary = root.join(format!("dists/{SUITE}/main/binary-{}", arch()));
    std::fs::create_dir_all(&pool).unwrap();
    std::fs::create_dir_all(&binary).unwrap();
    for entry in std::fs::read_dir(debs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "deb") {
            std::fs::copy(&path, pool.join(path.file_name().unwrap())).unwrap();
        }
    }
    let packages = run(Command::new("apt-ftparchive")
        .current_dir(root)
        .args(["packages", "pool/main"]));
    assert!(packages.contains("Package: postgresql-18\n"), "{packages}");
    std::fs::write(binary.join("Packages"), packages).unwrap();
    let field = |name: &str, value: &str| format!("APT::FTPArchive::Release::{name}={value}");
    let release = run(Command::new("apt-ftparchive")
        .current_dir(root.join("dists").join(SUITE))
        .args(["-o", &field("Origin", "apt.postgresql.org (spilo-rs test)")])
        .args([
            "-o",
            &field("Suite", SUITE),
            "-o",
            &field("Codename", SUITE),
        ])
        .args(["-o", &field("Components", "main")])
        .args(["-o", &field("Architectures", &arch())])
        .args(["release", "."]));
    let dist = root.join("dists").join(SUITE);
    std::fs::write(dist.join("Release"), release).unwrap();
    run(Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--clearsign",
            "-o",
        ])
        .arg(dist.join("InRelease"))
        .arg(dist.join("Release")));
}

/// Package → version, from a Packages index.
fn versions(index: &str) -> BTreeMap<String, String> {
    index
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            Some((field("Package: ")?, field("Version: ")?))
        })
        .collect()
}

/// `python3 -m http.server` on a free loopback port, stopped when dropped.
struct Server(Child, u16);

impl Server {
    fn start(root: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("http.server");
        let server = Server(child, port);
        image_support::wait_for(
            std::time::Duration::from_secs(20),
            "the repository's server answers",
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
            String::new,
        );
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy of the build context (what .dockerignore lets through) in
/// `dir`, its spec changed by `edit`.
fn context(dir: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir).unwrap();
    let tar = format!(
        "set -o pipefail; tar -C {root} --exclude=target -cf - \
         Cargo.toml Cargo.lock fuzz/Cargo.toml .dockerignore Dockerfile src extensions image | tar -C {} -xf -",
        dir.display()
    );
    run(Command::new("bash").args(["-c", &tar]));
    let path = dir.join("image/spec.toml");
    let mut spec: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    edit(&mut spec);
    std::fs::write(&path, toml::to_string(&spec).unwrap()).unwrap();
}

/// The spec's `pgdg` source: the test's repository, `key` inline.
fn pgdg_at(port: u16, key: &str) -> impl FnOnce(&mut toml::Table) + '_ {
    move |spec| {
        let pgdg = spec["source"]
            .as_array_mut()
            .expect("[[source]]")
            .iter_mut()
            .filter_map(|s| s.as_table_mut())
            .find(|s| s["name"].as_str() == Some("pgdg"))
            .expect("the pgdg source");
        pgdg.insert(
            "uris".into(),
            toml::Value::Array(vec![format!("http://127.0.0.1:{port}").into()]),
        );
        pgdg.remove("signed_by");
        pgdg.insert("key".into(), key.into());
    }
}

/// The tools' error lines in a failed build's output, without the
/// engine's prefixes, each once (BuildKit repeats a failed step's last
/// lines in its summary).
fn error_lines(output: &str) -> Vec<&str> {
    let lines: std::collections::BTreeSet<&str> = output
        .lines()
        .filter_map(|l| {
            ["spilo-build: error:", "build-sources: error:"]
                .iter()
                .find_map(|marker| l.find(marker).map(|at| &l[at..]))
        })
        .collect();
    lines.into_iter().collect()
}

#[test]
fn every_major_from_a_signed_repository_in_pgdg_layout() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let debs = work.path().join("built");
    std::fs::create_dir_all(&debs).unwrap();
    built_packages(&debs);
    let home = work.path().join("gnupg");
    let _agents = [Keyring(home.clone()), Keyring(work.path().join("other"))];
    let signing = key(&home, "spilo-rs-test-pgdg");
    let repo = work.path().join("repo");
    repository(&repo, &debs, &home);
    let server = Server::start(&repo);
    let args = [
        "--network",
        "host",
        "--build-arg",
        "SOURCE=pgdg",
        "--build-arg",
        "MAJORS=18",
    ];

    // Another key than the one that signed the repository: apt refuses
    // its index, the build stops.
    let stranger = key(&work.path().join("other"), "someone-else");
    let wrong = work.path().join("wrong");
    context(&wrong, pgdg_at(server.1, &stranger));
    let err = build_in(
        &wrong,
        &format!("{PGDG}-wrong-key"),
        &args,
        BuildLog::Capture,
    )
    .expect_err("a repository signed by another key must stop the build");
    assert!(
        err.contains("NO_PUBKEY") || err.contains("is not signed"),
        "not refused for its signature:\n{err}"
    );

    let good = work.path().join("good");
    context(&good, pgdg_at(server.1, &signing));
    build_in(&good, PGDG, &args, BuildLog::Show)
        .expect("the image from the PGDG-layout repository");
    drop(server);

    let manifest = manifest(PGDG);
    assert_eq!(manifest["default_major"], 18, "{manifest}");
    let majors = manifest["majors"].as_array().expect("majors");
    assert_eq!(majors.len(), 1, "{manifest}");
    let major = &majors[0];
    assert_eq!(major["source"], "pgdg", "{major}");
    assert!(
        major.get("built").is_none(),
        "installed from the repository, not built: {major}"
    );
    // The very packages the repository serves, at their versions.
    let served = versions(
        &std::fs::read_to_string(
            repo.join(format!("dists/{SUITE}/main/binary-{}/Packages", arch())),
        )
        .unwrap(),
    );
    for package in [
        "postgresql-18",
        "postgresql-18-postgis-3",
        "postgresql-18-repack",
    ] {
        assert_eq!(
            major["packages"][package].as_str(),
            served.get(package).map(String::as_str),
            "{package}: {major}"
        );
    }

    // The major's packages pinned to the repository's suite, above
    // anything else that carries their names.
    let pins = ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        PGDG,
        "/etc/apt/preferences.d/spilo",
    ]);
    assert!(
        pins.contains(&format!(
            "Package: postgresql-18 postgresql-18-postgis-3 postgresql-18-postgis-3-scripts \
             postgresql-18-repack postgresql-18-pgaudit postgresql-18-partman\n\
             Pin: release n={SUITE}\nPin-Priority: 990\n"
        )),
        "{pins}"
    );

    let node = Container::run(PGDG, "pgdg", &[], &[]);
    node.wait_ready(READY);
    let version = node.sql("SHOW server_version_num").unwrap();
    assert!(version.starts_with("18"), "{version}");
    node.sql("CREATE EXTENSION postgis")
        .unwrap_or_else(|e| panic!("postgis from the repository: {e}"));
}

#[test]
fn a_major_no_source_provides_stops_the_build_before_its_packages() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    context(work.path(), |spec| {
        let mut sixteen = toml::Table::new();
        sixteen.insert("version".into(), 16.into());
        sixteen.insert("source".into(), "bookworm".into());
        spec["major"].as_array_mut().unwrap().push(sixteen.into());
    });
    let err = build_in(
        work.path(),
        "localhost/spilo-rs:test-no-16",
        &[],
        BuildLog::Capture,
    )
    .expect_err("no suite has PostgreSQL 16");
    assert_eq!(
        error_lines(&err),
        [
            "spilo-build: error: apt: PostgreSQL 16 from bookworm: no candidate for \
          postgresql-16, postgresql-16-postgis-3, postgresql-16-postgis-3-scripts, postgresql-16-repack"
        ],
        "{err}"
    );
    // Checked before the global packages, the first of the spec's own.
    assert!(!err.contains("global packages:"), "{err}");
}

#[test]
fn a_missing_source_tarball_stops_the_build_before_anything_is_installed() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    context(work.path(), |spec| {
        // pgvector's source package is in sid, its .orig tarball is not.
        let mut pgvector = toml::Table::new();
        pgvector.insert("source".into(), "pgvector".into());
        pgvector.insert(
            "packages".into(),
            toml::Value::Array(vec!["postgresql-{major}-pgvector".into()]),
        );
        let eighteen = spec["major"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|m| m["version"].as_integer() == Some(18))
            .expect("major 18");
        eighteen["build"]["extension"]
            .as_array_mut()
            .unwrap()
            .push(pgvector.into());
    });
    let err = build_in(
        work.path(),
        "localhost/spilo-rs:test-no-tarball",
        &[],
        BuildLog::Capture,
    )
    .expect_err("pgvector's tarball is not in the archive");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0]
            .starts_with("build-sources: error: PostgreSQL 18: postgresql-18-pgvector: pgvector_")
            && lines[0].ends_with("(pgvector in sid) does not download"),
        "{err}"
    );
    // Before the build tools, the first thing the stage installs.
    assert!(!err.contains("build tools"), "{err}");
}
