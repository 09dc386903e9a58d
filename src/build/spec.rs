//! The image spec (image/spec.toml): what the image contains, read and
//! checked once so the build steps work from typed values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use spilo_layout::IoError;

use super::BuildError;

/// Where the Dockerfile puts the spec inside the rootfs stage.
pub const DEFAULT_SPEC: &str = "/usr/share/spilo/spec.toml";

/// The name a major's `source` uses for the base image's own suite.
pub const BASE_SOURCE: &str = "base";

/// The name a major's `source` uses for packages the Dockerfile's sources
/// stage compiles (its `[major.build]`).
pub const BUILD_SOURCE: &str = "build";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub base: Base,
    pub image: Image,
    pub user: User,
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
    pub bootstrap: PackageList,
    pub global: PackageList,
    pub packages: MajorPackages,
    #[serde(rename = "major")]
    pub majors: Vec<Major>,
    pub slim: Slim,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub suite: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub default_major: u32,
    pub locales: Vec<String>,
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// Link path → target.
    #[serde(default)]
    pub links: BTreeMap<PathBuf, PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// An apt source besides the base's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub suite: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Without URIs: the base's own mirrors, components and keyring.
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub components: Vec<String>,
    /// Keyring (armored or binary) inside the rootfs.
    pub signed_by: Option<PathBuf>,
    /// Or the repository's armored public key itself, for a repository
    /// whose key no package brings.
    pub key: Option<String>,
    pub pin: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageList {
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MajorPackages {
    pub required: Vec<String>,
    #[serde(default)]
    pub optional: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Major {
    pub version: u32,
    /// `base`, `build` or the name of a `[[source]]`.
    pub source: String,
    /// What the sources stage compiles, with `source = "build"` only.
    pub build: Option<Build>,
}

/// A major compiled from source: the server from a Debian source package
/// with Debian's own packaging, each extension from the upstream tarball
/// (the `.orig`) of its Debian source package, packaged by the build.
/// `{major}` stands for the major in every name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The suite whose `deb-src` index has the source packages.
    pub suite: String,
    /// The server's source package; it builds a binary package of the
    /// same name, among others (client, contrib, server-dev, PL/Python).
    pub server: String,
    #[serde(default, rename = "extension")]
    pub extensions: Vec<Extension>,
}

/// An extension compiled for a built major.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// The Debian source package whose `.orig` tarball is built.
    pub source: String,
    /// Its suite, when not the build's (the version there may differ).
    pub suite: Option<String>,
    /// The packages made of it: the first holds the libraries and
    /// programs, an optional second one what goes under /usr/share.
    pub packages: Vec<String>,
    /// Build dependencies (the base suite's -dev packages) beyond the
    /// server's development files.
    #[serde(default)]
    pub build_depends: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slim {
    pub remove: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Spec {
    pub fn load(path: &Path) -> Result<Spec, BuildError> {
        let text = std::fs::read_to_string(path).map_err(IoError::at("read", path))?;
        Spec::parse(&text).map_err(|reason| BuildError::Spec {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Spec, String> {
        let spec: Spec = toml::from_str(text).map_err(|e| e.to_string())?;
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for major in &self.majors {
            if !seen.insert(major.version) {
                return Err(format!("major {} is listed twice", major.version));
            }
            if major.source == BUILD_SOURCE {
                self.check_build(major)?;
            } else if major.build.is_some() {
                return Err(format!(
                    "major {}: [major.build] needs source = \"{BUILD_SOURCE}\"",
                    major.version
                ));
            } else if major.source != BASE_SOURCE {
                match self.source(&major.source) {
                    None => {
                        return Err(format!(
                            "major {}: no [[source]] named {:?}",
                            major.version, major.source
                        ));
                    }
                    Some(s) if !s.enabled => {
                        return Err(format!(
                            "major {}: source {:?} is not enabled",
                            major.version, major.source
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if !seen.contains(&self.image.default_major) {
            return Err(format!(
                "default_major {} is not one of the [[major]] entries",
                self.image.default_major
            ));
        }
        // `spilo init` starts a new cluster on the newest installed major:
        // a different default would be built and tested first but not run.
        if let Some(newest) = seen.last().filter(|n| **n != self.image.default_major) {
            return Err(format!(
                "default_major {} is not the newest [[major]] ({newest}), which new clusters run",
                self.image.default_major
            ));
        }
        for source in &self.sources {
            if [BASE_SOURCE, BUILD_SOURCE].contains(&source.name.as_str()) || source.name.is_empty()
            {
                return Err(format!("source name {:?} is reserved", source.name));
            }
            if source.signed_by.is_some() && source.key.is_some() {
                return Err(format!(
                    "source {:?}: signed_by and key exclude each other",
                    source.name
                ));
            }
            if !source.uris.is_empty() && source.components.is_empty() {
                return Err(format!(
                    "source {:?}: components are required with uris",
                    source.name
                ));
            }
        }
        Ok(())
    }

    /// A built major must build every required package of its major.
    fn check_build(&self, major: &Major) -> Result<(), String> {
        let version = major.version;
        let Some(build) = major.build.as_ref() else {
            return Err(format!(
                "major {version}: source = \"{BUILD_SOURCE}\" needs a [major.build] table"
            ));
        };
        for extension in &build.extensions {
            if extension.packages.is_empty() || extension.packages.len() > 2 {
                return Err(format!(
                    "major {version}: extension {:?} must name one or two packages",
                    extension.source
                ));
            }
        }
        let built = built_packages(build, version);
        let (required, _) = self.packages_for(version);
        match required.iter().find(|p| !built.contains(*p)) {
            Some(missing) => Err(format!(
                "major {version}: no source provides {missing} (its build makes {})",
                built.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            None => Ok(()),
        }
    }

    /// The spec for one build: only `majors` (all when empty), or every
    /// major from the `[[source]]` named `source` (enabled for it; then
    /// `majors` may name any), the newest the default.
    pub fn select(mut self, majors: &[u32], source: Option<&str>) -> Result<Spec, String> {
        if let Some(name) = source {
            let Some(found) = self.sources.iter_mut().find(|s| s.name == name) else {
                return Err(format!("SOURCE: no [[source]] named {name:?}"));
            };
            found.enabled = true;
            let versions: Vec<u32> = if majors.is_empty() {
                self.majors.iter().map(|m| m.version).collect()
            } else {
                majors.to_vec()
            };
            self.majors = versions
                .into_iter()
                .map(|version| Major {
                    version,
                    source: name.to_owned(),
                    build: None,
                })
                .collect();
        } else if !majors.is_empty() {
            if let Some(unknown) = majors
                .iter()
                .find(|v| !self.majors.iter().any(|m| m.version == **v))
            {
                return Err(format!(
                    "MAJORS: {unknown} is not one of the [[major]] entries"
                ));
            }
            self.majors.retain(|m| majors.contains(&m.version));
        }
        if let Some(newest) = self.majors.iter().map(|m| m.version).max() {
            self.image.default_major = newest;
        }
        self.check()?;
        Ok(self)
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Majors in install order: the default first, so that what the others
    /// add on top is theirs alone.
    pub fn majors_in_order(&self) -> Vec<&Major> {
        let mut majors: Vec<&Major> = self.majors.iter().collect();
        majors.sort_by_key(|m| (m.version != self.image.default_major, m.version));
        majors
    }

    /// The packages of one major, `{major}` filled in: (required, optional).
    pub fn packages_for(&self, major: u32) -> (Vec<String>, Vec<String>) {
        let fill = |list: &[String]| list.iter().map(|p| fill(p, major)).collect::<Vec<_>>();
        (fill(&self.packages.required), fill(&self.packages.optional))
    }

    /// The majors compiled from source.
    pub fn built_majors(&self) -> impl Iterator<Item = (u32, &Build)> {
        self.majors
            .iter()
            .filter_map(|m| Some((m.version, m.build.as_ref()?)))
    }
}

/// `{major}` in a name, filled in.
pub fn fill(name: &str, major: u32) -> String {
    name.replace("{major}", &major.to_string())
}

/// The package names a build is known to make: the server's own and the
/// extensions'.
pub fn built_packages(build: &Build, major: u32) -> BTreeSet<String> {
    std::iter::once(&build.server)
        .chain(build.extensions.iter().flat_map(|e| &e.packages))
        .map(|p| fill(p, major))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_parses() {
        let text = include_str!("../../image/spec.toml");
        let spec = Spec::parse(text).unwrap();
        assert_eq!(spec.image.default_major, 18);
        let order: Vec<u32> = spec.majors_in_order().iter().map(|m| m.version).collect();
        assert_eq!(order, vec![18, 15, 17]);
        let built: Vec<u32> = spec.built_majors().map(|(v, _)| v).collect();
        assert_eq!(built, vec![18]);
        let (required, optional) = spec.packages_for(15);
        assert!(required.contains(&"postgresql-15-postgis-3".to_string()));
        assert!(optional.contains(&"postgresql-15-pgvector".to_string()));
        assert!(spec.global.packages.contains(&"patroni".to_string()));
        let pgdg = spec.source("pgdg").unwrap();
        assert!(!pgdg.enabled);
    }

    fn minimal(extra: &str) -> String {
        format!(
            r#"
[base]
suite = "trixie"
[image]
default_major = 17
locales = []
[user]
name = "postgres"
uid = 101
gid = 103
home = "/home/postgres"
[bootstrap]
packages = []
[global]
packages = []
[packages]
required = ["postgresql-{{major}}"]
[slim]
remove = []
{extra}"#
        )
    }

    #[test]
    fn default_major_must_be_listed() {
        let err =
            Spec::parse(&minimal("[[major]]\nversion = 15\nsource = \"base\"\n")).unwrap_err();
        assert!(err.contains("default_major 17"), "{err}");
    }

    #[test]
    fn default_major_must_be_the_newest() {
        let majors = "[[major]]\nversion = 17\nsource = \"base\"\n[[major]]\nversion = 18\nsource = \"base\"\n";
        let err = Spec::parse(&minimal(majors)).unwrap_err();
        assert_eq!(
            err,
            "default_major 17 is not the newest [[major]] (18), which new clusters run"
        );
    }

    #[test]
    fn a_major_needs_a_known_enabled_source() {
        let err =
            Spec::parse(&minimal("[[major]]\nversion = 17\nsource = \"pgdg\"\n")).unwrap_err();
        assert!(err.contains("no [[source]] named \"pgdg\""), "{err}");
        let err = Spec::parse(&minimal(
            "[[major]]\nversion = 17\nsource = \"pgdg\"\n[[source]]\nname = \"pgdg\"\nsuite = \"x\"\nenabled = false\npin = 1\n",
        ))
        .unwrap_err();
        assert!(err.contains("not enabled"), "{err}");
    }

    #[test]
    fn a_built_major_must_build_every_required_package() {
        let built = "[[major]]\nversion = 17\nsource = \"build\"\n[major.build]\nsuite = \"sid\"\nserver = \"postgresql-{major}\"\n";
        Spec::parse(&minimal(built)).unwrap();
        let spec = minimal(built).replace(
            "required = [\"postgresql-{major}\"]",
            "required = [\"postgresql-{major}\", \"postgresql-{major}-repack\"]",
        );
        assert_eq!(
            Spec::parse(&spec).unwrap_err(),
            "major 17: no source provides postgresql-17-repack (its build makes postgresql-17)"
        );
        let err =
            Spec::parse(&minimal("[[major]]\nversion = 17\nsource = \"build\"\n")).unwrap_err();
        assert_eq!(
            err,
            "major 17: source = \"build\" needs a [major.build] table"
        );
        let err = Spec::parse(&minimal(&built.replace("\"build\"", "\"base\""))).unwrap_err();
        assert_eq!(err, "major 17: [major.build] needs source = \"build\"");
        let empty = format!("{built}[[major.build.extension]]\nsource = \"x\"\npackages = []\n");
        assert!(
            Spec::parse(&minimal(&empty))
                .unwrap_err()
                .contains("one or two packages")
        );
    }

    #[test]
    fn majors_left_out() {
        let spec = Spec::parse(include_str!("../../image/spec.toml")).unwrap();
        let some = spec.clone().select(&[15, 17], None).unwrap();
        assert_eq!(some.image.default_major, 17);
        assert_eq!(some.built_majors().count(), 0);
        let order: Vec<u32> = some.majors_in_order().iter().map(|m| m.version).collect();
        assert_eq!(order, vec![17, 15]);
        assert_eq!(spec.clone().select(&[], None).unwrap().majors.len(), 3);
        assert_eq!(
            spec.select(&[16], None).unwrap_err(),
            "MAJORS: 16 is not one of the [[major]] entries"
        );
    }

    #[test]
    fn every_major_from_one_source() {
        let spec = Spec::parse(include_str!("../../image/spec.toml")).unwrap();
        let pgdg = spec
            .clone()
            .select(&[14, 15, 16, 17, 18], Some("pgdg"))
            .unwrap();
        assert!(pgdg.source("pgdg").unwrap().enabled);
        assert_eq!(pgdg.image.default_major, 18);
        assert!(
            pgdg.majors
                .iter()
                .all(|m| m.source == "pgdg" && m.build.is_none())
        );
        assert_eq!(pgdg.built_majors().count(), 0);
        assert_eq!(pgdg.majors.len(), 5);
        assert_eq!(
            spec.clone().select(&[], Some("pgdg")).unwrap().majors.len(),
            3
        );
        assert_eq!(
            spec.select(&[], Some("ppa")).unwrap_err(),
            "SOURCE: no [[source]] named \"ppa\""
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Spec::parse(&minimal(
            "[[major]]\nversion = 17\nsource = \"base\"\nflavour = 1\n",
        ))
        .unwrap_err();
        assert!(err.contains("flavour"), "{err}");
    }
}
