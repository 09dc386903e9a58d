//! What dpkg knows about the installed packages: versions (for the
//! manifest), dependencies (to tell which packages only one major needs)
//! and the files each package owns (to pack those).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use super::{BuildError, stdout_of};

#[derive(Debug, Clone, Default)]
pub struct Installed {
    /// Package name → version.
    pub versions: BTreeMap<String, String>,
    /// Package name → dependency groups (alternatives within a group).
    depends: BTreeMap<String, Vec<Vec<String>>>,
    /// Virtual package name → installed packages providing it.
    provides: BTreeMap<String, Vec<String>>,
}

impl Installed {
    /// Reads the dpkg database of the running system.
    pub fn query() -> Result<Installed, BuildError> {
        let text = stdout_of(Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${db:Status-Abbrev}\t${Package}\t${Version}\t${Provides}\t${Pre-Depends}, ${Depends}\n",
        ]))?;
        Ok(Installed::parse(&text))
    }

    pub fn parse(text: &str) -> Installed {
        let mut installed = Installed::default();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let (Some(status), Some(name), Some(version), Some(provides), Some(depends)) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                continue;
            };
            if !status.starts_with("ii") {
                continue;
            }
            let name = strip_arch(name).to_owned();
            for provided in split_list(provides) {
                installed
                    .provides
                    .entry(provided)
                    .or_default()
                    .push(name.clone());
            }
            let groups = depends
                .split(',')
                .map(split_alternatives)
                .filter(|g| !g.is_empty())
                .collect();
            installed.depends.insert(name.clone(), groups);
            installed.versions.insert(name, version.to_owned());
        }
        installed
    }

    /// `roots` and everything they need, transitively, among the installed
    /// packages (the first installed alternative of each group).
    pub fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().cloned().collect();
        while let Some(name) = todo.pop() {
            for real in self.resolve(&name) {
                if seen.insert(real.clone()) {
                    if let Some(groups) = self.depends.get(&real) {
                        for group in groups {
                            if let Some(pick) =
                                group.iter().find(|alt| !self.resolve(alt).is_empty())
                            {
                                todo.push(pick.clone());
                            }
                        }
                    }
                }
            }
        }
        seen
    }

    /// The installed package(s) a name stands for: itself or its providers.
    fn resolve(&self, name: &str) -> Vec<String> {
        if self.versions.contains_key(name) {
            return vec![name.to_owned()];
        }
        self.provides.get(name).cloned().unwrap_or_default()
    }
}

fn strip_arch(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// `a (>= 1), b:any` → [a, b] (names only).
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .filter_map(|item| item.split_whitespace().next())
        .map(|n| strip_arch(n).to_owned())
        .collect()
}

fn split_alternatives(group: &str) -> Vec<String> {
    group
        .split('|')
        .filter_map(|alt| alt.split_whitespace().next())
        .map(|n| strip_arch(n).to_owned())
        .collect()
}

/// The paths a package installed (files, links and directories).
pub fn files_of(packages: &BTreeSet<String>) -> Result<Vec<PathBuf>, BuildError> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let text = stdout_of(Command::new("dpkg-query").arg("-L").args(packages))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with('/') && *l != "/.")
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "ii \tpostgresql-15\t15.14-0+deb12u1\t\tpostgresql-common (>= 1), libllvm14 (>= 1:14), libc6\n\
ii \tpostgresql-17\t17.6-0+deb13u1\t\tpostgresql-common, libllvm19, libc6\n\
ii \tlibllvm14:amd64\t1:14.0.6-12\t\t, libc6, libz3-4 | libz3-dev\n\
ii \tlibllvm19:amd64\t1:19.1.7-3\t\t, libc6\n\
ii \tpostgresql-common\t278\tpostgresql-common-dev\t, adduser\n\
ii \tlibz3-4:amd64\t4.8\t\t\n\
ii \tlibc6:amd64\t2.41\t\t\n\
rc \tgone\t1\t\t\n\
ii \tadduser\t3\t\t\n\
ii \tpostgresql-15-postgis-3\t3.3\t\tpostgresql-15, postgresql-common-dev\n";

    #[test]
    fn closure_follows_dependencies_and_provides() {
        let installed = Installed::parse(STATUS);
        assert!(!installed.versions.contains_key("gone"));
        let c15 = installed.closure(&["postgresql-15-postgis-3".to_string()]);
        for p in [
            "postgresql-15",
            "libllvm14",
            "libz3-4",
            "postgresql-common",
            "adduser",
            "libc6",
        ] {
            assert!(c15.contains(p), "{p} missing from {c15:?}");
        }
        assert!(!c15.contains("libllvm19"));
        let c17 = installed.closure(&["postgresql-17".to_string()]);
        let only15: Vec<_> = c15.difference(&c17).collect();
        assert_eq!(
            only15,
            vec![
                "libllvm14",
                "libz3-4",
                "postgresql-15",
                "postgresql-15-postgis-3"
            ]
        );
    }
}
