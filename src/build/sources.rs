//! Majors compiled from source. `spilo-build source-plan` turns the spec's
//! `[major.build]` tables into plain plan lines that image/build-sources.sh
//! runs in the Dockerfile's sources stage: that stage's cache then depends
//! on the plan and the script, never on this tool's binary. The script
//! leaves a flat apt repository with `built.tsv`, which `install` reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use spilo_layout::IoError;
use spilo_layout::manifest::BuiltFrom;

use super::spec::{Spec, fill};
use super::{BuildError, apt};

/// Where the rootfs stage finds the sources stage's repository.
pub const REPOSITORY: &str = "/var/lib/spilo/built";
/// The repository's record of what it holds, one package per line.
pub const BUILT: &str = "built.tsv";

/// Writes `plan` and `deb-src.sources` into `out` (an empty plan when no
/// major is built).
pub fn plan(spec: &Spec, out: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(out).map_err(IoError::at("create", out))?;
    let lines = plan_lines(spec);
    let suites: BTreeSet<String> = spec
        .built_majors()
        .flat_map(|(_, b)| {
            std::iter::once(b.suite.clone())
                .chain(b.extensions.iter().filter_map(|e| e.suite.clone()))
        })
        .collect();
    let sources = if suites.is_empty() {
        String::new()
    } else {
        let base = apt::base_entries(Path::new("/etc/apt"))?;
        let suites: Vec<String> = suites.into_iter().collect();
        apt::derive_src(&suites, &spec.base.suite, &base)?
    };
    for (name, text) in [("plan", lines), ("deb-src.sources", sources)] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(IoError::at("write", &path))?;
    }
    Ok(())
}

/// One line per server and extension, in build order (a major's server
/// before its extensions, which build against it).
pub fn plan_lines(spec: &Spec) -> String {
    let list = |items: &[String], major: u32| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items
                .iter()
                .map(|i| fill(i, major))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let mut text = String::new();
    for (major, build) in spec.built_majors() {
        text.push_str(&format!(
            "server {major} {} {}\n",
            build.suite,
            fill(&build.server, major)
        ));
        for e in &build.extensions {
            text.push_str(&format!(
                "extension {major} {} {} {} {}\n",
                e.suite.as_ref().unwrap_or(&build.suite),
                fill(&e.source, major),
                list(&e.packages, major),
                list(&e.build_depends, major)
            ));
        }
    }
    text
}

/// `built.tsv` of the repository at `dir`: package → where it came from.
pub fn read_built(dir: &Path) -> Result<BTreeMap<String, BuiltFrom>, BuildError> {
    let path = dir.join(BUILT);
    let text = std::fs::read_to_string(&path).map_err(IoError::at("read", &path))?;
    parse_built(&text).map_err(|line| {
        BuildError::Check(format!(
            "{}: line {line} does not have six tab-separated fields",
            path.display()
        ))
    })
}

/// Parses `built.tsv`; the error is the number of the first bad line.
fn parse_built(text: &str) -> Result<BTreeMap<String, BuiltFrom>, usize> {
    let mut built = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [package, _version, source, version, suite, packaging] = fields[..] else {
            return Err(n + 1);
        };
        built.insert(
            package.to_owned(),
            BuiltFrom {
                source: source.to_owned(),
                version: version.to_owned(),
                suite: suite.to_owned(),
                packaging: packaging.to_owned(),
            },
        );
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_plans_the_server_before_its_extensions() {
        let spec = Spec::parse(include_str!("../../image/spec.toml")).unwrap();
        let plan = plan_lines(&spec);
        let lines: Vec<&str> = plan.lines().collect();
        assert_eq!(lines[0], "server 18 sid postgresql-18");
        assert!(
            lines.contains(
                &"extension 18 forky postgis postgresql-18-postgis-3,postgresql-18-postgis-3-scripts \
                  libgeos-dev,libproj-dev,libgdal-dev,libjson-c-dev,libprotobuf-c-dev,protobuf-c-compiler,libxml2-dev,libsfcgal-dev,libpcre2-dev,pkgconf"
            ),
            "{plan}"
        );
        assert!(
            lines.contains(&"extension 18 sid pg-repack postgresql-18-repack -"),
            "{plan}"
        );
        assert!(
            lines.iter().skip(1).all(|l| l.starts_with("extension 18 ")),
            "{plan}"
        );
    }

    #[test]
    fn built_tsv_names_each_package_and_its_source() {
        let built = parse_built(
            "postgresql-18\t18.6-3\tpostgresql-18\t18.6-3\tsid\tdebian\n\npostgresql-18-repack\t1.5.3-0spilo1\tpg-repack\t1.5.3\tsid\tupstream\n",
        )
        .unwrap();
        assert_eq!(built.len(), 2);
        assert_eq!(built["postgresql-18-repack"].source, "pg-repack");
        assert_eq!(built["postgresql-18-repack"].version, "1.5.3");
        assert_eq!(built["postgresql-18"].packaging, "debian");
        assert_eq!(parse_built("a\tb\n").unwrap_err(), 1);
    }
}
