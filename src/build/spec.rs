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
    /// `base` or the name of a `[[source]]`.
    pub source: String,
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
            if major.source != BASE_SOURCE {
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
            if source.name == BASE_SOURCE || source.name.is_empty() {
                return Err(format!("source name {:?} is reserved", source.name));
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
        let fill = |list: &[String]| {
            list.iter()
                .map(|p| p.replace("{major}", &major.to_string()))
                .collect::<Vec<_>>()
        };
        (fill(&self.packages.required), fill(&self.packages.optional))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_spec_parses() {
        let text = include_str!("../../image/spec.toml");
        let spec = Spec::parse(text).unwrap();
        assert_eq!(spec.image.default_major, 17);
        let order: Vec<u32> = spec.majors_in_order().iter().map(|m| m.version).collect();
        assert_eq!(order, vec![17, 15]);
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
    fn unknown_keys_are_errors() {
        let err = Spec::parse(&minimal(
            "[[major]]\nversion = 17\nsource = \"base\"\nflavour = 1\n",
        ))
        .unwrap_err();
        assert!(err.contains("flavour"), "{err}");
    }
}
