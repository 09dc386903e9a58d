//! Shared helpers of the integration tests: the operator fixtures
//! (tests/fixtures/operator), a tree of installed majors made from the
//! host's PostgreSQL, and the tools the tests run for real (tests/setup
//! installs them).

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

/// The host's PostgreSQL major, installed by tests/setup.
pub const HOST_MAJOR: u32 = 15;

/// The environments of pods as the operator configures them, kept with
/// the tests (`*.env`: one `NAME=value` a line, `#` comments).
pub fn operator_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/operator")
}

/// Every operator fixture as (file name, variables).
pub fn operator_fixtures() -> Vec<(String, Vec<(String, String)>)> {
    let dir = operator_fixture_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "env"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files.iter().map(|path| read_fixture(path)).collect()
}

/// One operator fixture by file name.
pub fn operator_fixture(name: &str) -> Vec<(String, String)> {
    read_fixture(&operator_fixture_dir().join(name)).1
}

fn read_fixture(path: &Path) -> (String, Vec<(String, String)>) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let env = spilo::config::Env::from_env_file(&text);
    let name = path
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    (
        name,
        env.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The host's binaries for `major`, where tests/setup installs them.
pub fn host_bin_dir() -> PathBuf {
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{HOST_MAJOR}/bin"));
    assert!(
        dir.join("postgres").exists(),
        "{} missing: run tests/setup",
        dir.display()
    );
    dir
}

/// A `<root>/<major>/bin` tree for each major, whose binaries are the
/// host's (patroni --validate-config wants them to exist).
pub fn majors_tree(root: &Path, majors: &[u32]) {
    let host = host_bin_dir();
    for major in majors {
        let bin = root.join(major.to_string()).join("bin");
        std::fs::create_dir_all(&bin).expect("create fixture bin dir");
        for entry in std::fs::read_dir(&host).expect("read host bin dir") {
            let entry = entry.expect("directory entry");
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name()))
                .expect("symlink binary");
        }
    }
}

/// Patroni 4 as tests/setup installs it (SPILO_TEST_PATRONI overrides).
pub fn patroni() -> PathBuf {
    let path = std::env::var_os("SPILO_TEST_PATRONI")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/spilo-test/venv/bin/patroni".into());
    assert!(path.exists(), "{} missing: run tests/setup", path.display());
    path
}
