//! `spilo-build install`: the spec's user, apt sources, pins and packages
//! on the running (rootfs stage) system. Never creates a database cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use spilo_layout::IoError;
use spilo_layout::manifest::BuiltFrom;

use super::run as run_command;
use super::sources::{self, REPOSITORY};
use super::spec::{BASE_SOURCE, BUILD_SOURCE, Spec};
use super::{BuildError, Progress, apt};

/// What `install` chose (optional packages depend on the archive), read by
/// `compress` and `manifest`.
pub const SELECTION: &str = "/usr/share/spilo/selection.json";

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const PREFERENCES: &str = "/etc/apt/preferences.d/spilo";
const NO_CLUSTER: &str = "/etc/postgresql-common/createcluster.d/00-spilo.conf";
/// The apt source of the sources stage's repository, there during
/// `install` alone.
const BUILT_SOURCE: &str = "/etc/apt/sources.list.d/spilo-built.sources";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selection {
    pub global: Vec<String>,
    /// Major → the packages installed for it.
    pub majors: BTreeMap<u32, Vec<String>>,
    /// Optional packages the major's source does not have.
    pub skipped: BTreeMap<u32, Vec<String>>,
    /// Every package the sources stage compiled (`manifest` keeps the
    /// installed ones, dependencies such as libpq5 included).
    #[serde(default)]
    pub built: BTreeMap<String, BuiltFrom>,
}

impl Selection {
    pub fn load(root: &Path) -> Result<Selection, BuildError> {
        let path = super::under(root, SELECTION);
        let text = std::fs::read_to_string(&path).map_err(IoError::at("read", &path))?;
        serde_json::from_str(&text).map_err(|source| BuildError::Json { path, source })
    }

    fn save(&self) -> Result<(), BuildError> {
        let path = Path::new(SELECTION);
        let text = serde_json::to_string_pretty(self).map_err(|source| BuildError::Json {
            path: path.to_owned(),
            source,
        })?;
        write(path, &text)
    }
}

pub fn run(spec: &Spec) -> Result<(), BuildError> {
    let progress = Progress::start("install");
    check_base_suite(spec)?;
    // Package scripts must not start services inside the build.
    write(Path::new(POLICY_RC_D), "#!/bin/sh\nexit 101\n")?;
    chmod(Path::new(POLICY_RC_D), 0o755)?;
    let result = install(spec, &progress);
    std::fs::remove_file(POLICY_RC_D).map_err(IoError::at("remove", Path::new(POLICY_RC_D)))?;
    result?;
    progress.say("done");
    Ok(())
}

fn install(spec: &Spec, progress: &Progress) -> Result<(), BuildError> {
    progress.say(&format!(
        "user {} ({}:{})",
        spec.user.name, spec.user.uid, spec.user.gid
    ));
    create_user(spec)?;
    write(
        Path::new(NO_CLUSTER),
        "# spilo: clusters are made by Patroni at run time, never by package scripts.\ncreate_main_cluster = false\n",
    )?;

    progress.say(&format!("apt update ({})", spec.base.suite));
    apt::update()?;
    progress.say(&format!(
        "bootstrap packages: {}",
        spec.bootstrap.packages.join(" ")
    ));
    apt::install(&spec.bootstrap.packages)?;

    let base = apt::base_entries(Path::new("/etc/apt"))?;
    let mut low = Vec::new();
    let mut suites_of = BTreeMap::new();
    for source in apt::enabled_sources(spec) {
        if let Some(key) = &source.signed_by {
            if !key.is_file() {
                return Err(BuildError::Check(format!(
                    "source {:?}: signing key {} is not in the image (install its package in [bootstrap])",
                    source.name,
                    key.display()
                )));
            }
        }
        let (text, suites) = apt::derive(source, &spec.base.suite, &base)?;
        progress.say(&format!(
            "source {}: {} (pin {})",
            source.name,
            suites.join(" "),
            source.pin
        ));
        write(
            &PathBuf::from(format!(
                "/etc/apt/sources.list.d/spilo-{}.sources",
                source.name
            )),
            &text,
        )?;
        low.push((suites.clone(), source.pin));
        suites_of.insert(source.name.clone(), suites);
    }
    let built = spec.built_majors().next().is_some();
    if built {
        add_built_repository()?;
    }
    write(Path::new(PREFERENCES), &apt::pins(&low, &[]))?;
    progress.say("apt update (all sources)");
    apt::update()?;

    // Every major's packages are checked before anything else is
    // installed: a major no source provides stops the build untouched.
    let mut chosen_of = Vec::new();
    for major in spec.majors_in_order() {
        let (required, optional) = spec.packages_for(major.version);
        let all: Vec<String> = required.iter().chain(&optional).cloned().collect();
        let found = apt::available(&all)?;
        let missing: Vec<&String> = required.iter().filter(|p| !found.contains(*p)).collect();
        if !missing.is_empty() {
            return Err(BuildError::Apt(format!(
                "PostgreSQL {} from {}: no candidate for {}",
                major.version,
                major.source,
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let (chosen, skipped): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|p| found.contains(p));
        chosen_of.push((major, chosen, skipped));
    }

    let mut selection = Selection {
        global: spec.global.packages.clone(),
        ..Selection::default()
    };
    progress.say(&format!(
        "global packages: {}",
        spec.global.packages.join(" ")
    ));
    apt::install(&spec.global.packages)?;

    let mut wanted = Vec::new();
    for (major, chosen, skipped) in chosen_of {
        if ![BASE_SOURCE, BUILD_SOURCE].contains(&major.source.as_str()) {
            if let Some(suites) = suites_of.get(&major.source) {
                wanted.push((chosen.clone(), suites.clone()));
                write(Path::new(PREFERENCES), &apt::pins(&low, &wanted))?;
            }
        }
        progress.say(&format!(
            "PostgreSQL {} from {}: {} packages{}",
            major.version,
            major.source,
            chosen.len(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" (not in its source, skipped: {})", skipped.join(" "))
            }
        ));
        apt::install(&chosen)?;
        selection.majors.insert(major.version, chosen);
        if !skipped.is_empty() {
            selection.skipped.insert(major.version, skipped);
        }
    }
    if built {
        selection.built = sources::read_built(Path::new(REPOSITORY))?;
    }
    remove_built_repository(built)?;

    progress.say(&format!("locales: {}", spec.image.locales.join(" ")));
    locales(&spec.image.locales)?;
    for (link, target) in &spec.image.links {
        symlink(target, link)?;
    }
    for dir in &spec.image.writable {
        std::fs::create_dir_all(dir).map_err(IoError::at("create", dir))?;
        chmod(dir, 0o1777)?;
    }
    check_no_cluster()?;
    run_command(Command::new("apt-get").arg("clean"))?;
    selection.save()
}

/// The sources stage's flat repository, trusted: the Dockerfile copies it
/// from that stage of the same build.
fn add_built_repository() -> Result<(), BuildError> {
    let packages = Path::new(REPOSITORY).join("Packages");
    if !packages.is_file() {
        return Err(BuildError::Check(format!(
            "a major is built from source, but {} is missing (the Dockerfile's sources stage makes it)",
            packages.display()
        )));
    }
    write(
        Path::new(BUILT_SOURCE),
        &format!(
            "# Written by `spilo-build install`; removed when it is done.\nTypes: deb\nURIs: file:{REPOSITORY}\nSuites: ./\nTrusted: yes\n"
        ),
    )
}

/// Neither the repository (empty when nothing was built) nor its source
/// stays in the image.
fn remove_built_repository(added: bool) -> Result<(), BuildError> {
    if added {
        std::fs::remove_file(BUILT_SOURCE)
            .map_err(IoError::at("remove", Path::new(BUILT_SOURCE)))?;
    }
    match std::fs::remove_dir_all(REPOSITORY) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(IoError::at("remove", Path::new(REPOSITORY))(e).into())
        }
        _ => Ok(()),
    }
}

/// The spec's suite must be the base's, or the derived sources are wrong.
fn check_base_suite(spec: &Spec) -> Result<(), BuildError> {
    let path = Path::new("/etc/os-release");
    let text = std::fs::read_to_string(path).map_err(IoError::at("read", path))?;
    let codename = text
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"'));
    match codename {
        Some(c) if c == spec.base.suite => Ok(()),
        other => Err(BuildError::Check(format!(
            "the spec is for a {} base, but this base is {}",
            spec.base.suite,
            other.unwrap_or("unknown (no VERSION_CODENAME in /etc/os-release)")
        ))),
    }
}

fn create_user(spec: &Spec) -> Result<(), BuildError> {
    let user = &spec.user;
    let exists = |db: &str, key: &str| {
        Command::new("getent")
            .args([db, key])
            .output()
            .map(|o| o.status.success())
            .map_err(|e| BuildError::Command {
                command: format!("getent {db} {key}"),
                reason: e.to_string(),
            })
    };
    if !exists("group", &user.name)? {
        run_command(
            Command::new("groupadd")
                .args(["--system", "--gid", &user.gid.to_string()])
                .arg(&user.name),
        )?;
    }
    if !exists("passwd", &user.name)? {
        run_command(
            Command::new("useradd")
                .args([
                    "--system",
                    "--uid",
                    &user.uid.to_string(),
                    "--gid",
                    &user.gid.to_string(),
                ])
                .args(["--shell", "/bin/bash", "--create-home", "--home-dir"])
                .arg(&user.home)
                .arg(&user.name),
        )?;
    }
    // useradd makes the home 0700; a container under another UID must
    // still reach the data directory below it.
    std::fs::create_dir_all(&user.home).map_err(IoError::at("create", &user.home))?;
    chmod(&user.home, 0o755)
}

/// Generates the locales glibc does not have built in.
fn locales(locales: &[String]) -> Result<(), BuildError> {
    let mut generated = String::new();
    for locale in locales.iter().filter(|l| !l.starts_with("C.")) {
        let charmap = locale.rsplit_once('.').map_or("UTF-8", |(_, c)| c);
        generated.push_str(&format!("{locale} {charmap}\n"));
    }
    if generated.is_empty() {
        return Ok(());
    }
    write(Path::new("/etc/locale.gen"), &generated)?;
    run_command(&mut Command::new("locale-gen"))
}

fn check_no_cluster() -> Result<(), BuildError> {
    let dir = Path::new("/etc/postgresql");
    let clusters = match std::fs::read_dir(dir) {
        Ok(read) => read.filter_map(Result::ok).count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(IoError::at("list", dir)(e).into()),
    };
    if clusters > 0 {
        return Err(BuildError::Check(format!(
            "package scripts created a database cluster under {}",
            dir.display()
        )));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), BuildError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(IoError::at("create", parent))?;
    }
    std::fs::write(path, text).map_err(IoError::at("write", path))?;
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(IoError::at("chmod", path))?;
    Ok(())
}

fn symlink(target: &Path, link: &Path) -> Result<(), BuildError> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(IoError::at("create", parent))?;
    }
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(IoError::at("remove", link)(e).into()),
    }
    std::os::unix::fs::symlink(target, link).map_err(IoError::at("link", link))?;
    Ok(())
}
