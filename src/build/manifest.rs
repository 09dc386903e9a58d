//! `spilo-build manifest`: writes the image's manifest (its types and
//! path are `spilo_layout::manifest`'s, which `spilo manifest` prints).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use spilo_layout::archive::read_info;
use spilo_layout::manifest::{BuiltFrom, MANIFEST, MajorEntry, Manifest};
use spilo_layout::{IoError, POSTGRES_ROOT};

use super::compress;
use super::dpkg::Installed;
use super::install::Selection;
use super::spec::{Major, Spec, fill};
use super::{BuildError, Progress, under};

pub fn run(root: &Path, spec: &Spec, spec_path: &Path) -> Result<(), BuildError> {
    let progress = Progress::start("manifest");
    let selection = Selection::load(root)?;
    let installed = Installed::query()?;
    let manifest = build(root, spec, &selection, &installed)?;
    for major in &manifest.majors {
        progress.say(&format!(
            "PostgreSQL {} ({}): {} packages, {} extensions{}",
            major.major,
            major
                .packages
                .get(&format!("postgresql-{}", major.major))
                .map_or("?", String::as_str),
            major.packages.len(),
            major.extensions.len(),
            if major.archive.is_some() {
                ", packed"
            } else {
                ""
            }
        ));
    }
    let path = under(root, MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|source| BuildError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text + "\n").map_err(IoError::at("write", &path))?;
    progress.say(&format!(
        "written to {MANIFEST} (spec {})",
        spec_path.display()
    ));
    Ok(())
}

/// The installed packages compiled from one of the major's build sources
/// (its server's, such as libpq5 and the client, and its extensions').
fn built_for(
    major: &Major,
    selection: &Selection,
    installed: &Installed,
) -> BTreeMap<String, BuiltFrom> {
    let Some(build) = &major.build else {
        return BTreeMap::new();
    };
    let sources: BTreeSet<String> = std::iter::once(&build.server)
        .chain(build.extensions.iter().map(|e| &e.source))
        .map(|s| fill(s, major.version))
        .collect();
    selection
        .built
        .iter()
        .filter(|(package, from)| {
            sources.contains(&from.source) && installed.versions.contains_key(*package)
        })
        .map(|(package, from)| (package.clone(), from.clone()))
        .collect()
}

pub fn build(
    root: &Path,
    spec: &Spec,
    selection: &Selection,
    installed: &Installed,
) -> Result<Manifest, BuildError> {
    let version = |name: &String| {
        installed.versions.get(name).cloned().ok_or_else(|| {
            BuildError::Check(format!("package {name} was selected but is not installed"))
        })
    };
    let postgres_root = under(root, POSTGRES_ROOT);
    let mut majors = Vec::new();
    for major in spec.majors_in_order() {
        let names = selection
            .majors
            .get(&major.version)
            .cloned()
            .unwrap_or_default();
        let packages = names
            .iter()
            .map(|n| Ok((n.clone(), version(n)?)))
            .collect::<Result<BTreeMap<_, _>, BuildError>>()?;
        let unpacked = postgres_root
            .join(major.version.to_string())
            .join("bin")
            .is_dir();
        let archive = if unpacked {
            None
        } else {
            Some(read_info(&postgres_root, major.version)?)
        };
        let extensions = match &archive {
            Some(info) => info.extensions.clone(),
            None => compress::extensions_of(root, major.version)?,
        };
        majors.push(MajorEntry {
            major: major.version,
            source: major.source.clone(),
            skipped: selection
                .skipped
                .get(&major.version)
                .cloned()
                .unwrap_or_default(),
            extensions,
            archive,
            built: built_for(major, selection, installed),
            packages,
        });
    }
    let global = spec
        .bootstrap
        .packages
        .iter()
        .chain(&selection.global)
        .map(|n| Ok((n.clone(), version(n)?)))
        .collect::<Result<BTreeMap<_, _>, BuildError>>()?;
    Ok(Manifest {
        spilo: env!("CARGO_PKG_VERSION").to_owned(),
        base: spec.base.suite.clone(),
        default_major: spec.image.default_major,
        majors,
        global,
        locales: spec.image.locales.clone(),
    })
}
