//! apt sources and pins derived from the base image's own sources (so no
//! mirror is hard-coded), and the apt-get / apt-cache calls of `install`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use spilo_layout::IoError;

use super::spec::{Source, Spec};
use super::{BuildError, run, stdout_of};

/// One `deb` entry of the base's apt configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<SignedBy>,
}

/// What an entry's `Signed-By` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// A keyring file.
    Path(String),
    /// An armored key, written inline.
    Key(String),
}

/// Reads every `deb` entry under `etc_apt` (sources.list, *.list, *.sources).
pub fn base_entries(etc_apt: &Path) -> Result<Vec<Entry>, BuildError> {
    let mut entries = Vec::new();
    let list = etc_apt.join("sources.list");
    if let Some(text) = read_if_exists(&list)? {
        entries.extend(parse_one_line(&text));
    }
    let dir = etc_apt.join("sources.list.d");
    if let Some(read) = read_dir_if_exists(&dir)? {
        let mut paths: Vec<_> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("spilo-"))
            })
            .collect();
        paths.sort();
        for path in paths {
            let Some(text) = read_if_exists(&path)? else {
                continue;
            };
            match path.extension().and_then(|e| e.to_str()) {
                Some("list") => entries.extend(parse_one_line(&text)),
                Some("sources") => entries.extend(parse_deb822(&text)),
                _ => {}
            }
        }
    }
    Ok(entries)
}

fn read_if_exists(path: &Path) -> Result<Option<String>, BuildError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IoError::at("read", path)(e).into()),
    }
}

fn read_dir_if_exists(path: &Path) -> Result<Option<std::fs::ReadDir>, BuildError> {
    match std::fs::read_dir(path) {
        Ok(read) => Ok(Some(read)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IoError::at("list", path)(e).into()),
    }
}

/// `deb [options] uri suite component...` lines.
pub fn parse_one_line(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            let mut signed_by = None;
            let rest = match rest.strip_prefix('[') {
                Some(opts) => {
                    let (opts, after) = opts.split_once(']')?;
                    signed_by = opts
                        .split_whitespace()
                        .find_map(|o| o.strip_prefix("signed-by="))
                        .map(|p| SignedBy::Path(p.to_owned()));
                    after
                }
                None => rest,
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_owned();
            let suite = words.next()?.to_owned();
            Some(Entry {
                uris: vec![uri],
                suites: vec![suite],
                components: words.map(str::to_owned).collect(),
                signed_by,
            })
        })
        .collect()
}

/// deb822 stanzas (`Types: deb`, `URIs:`, `Suites:`, ...).
pub fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields = std::collections::HashMap::new();
        let mut last: Option<String> = None;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Continuation (e.g. an inline Signed-By key): not a path.
                if let Some(key) = &last {
                    fields.insert(key.clone(), String::new());
                }
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                let key = key.trim().to_ascii_lowercase();
                fields.insert(key.clone(), value.trim().to_owned());
                last = Some(key);
            }
        }
        let words = |key: &str| -> Vec<String> {
            fields
                .get(key)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let enabled = fields
            .get("enabled")
            .is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        if !enabled || !words("types").iter().any(|t| t == "deb") {
            continue;
        }
        let entry = Entry {
            uris: words("uris"),
            suites: words("suites"),
            components: words("components"),
            signed_by: fields
                .get("signed-by")
                .filter(|v| !v.is_empty())
                .map(|p| SignedBy::Path(p.clone())),
        };
        if !entry.uris.is_empty() && !entry.suites.is_empty() {
            entries.push(entry);
        }
    }
    entries
}

/// The deb822 stanzas of an extra source, and the suites it brings (to pin).
pub fn derive(
    source: &Source,
    base_suite: &str,
    base: &[Entry],
) -> Result<(String, Vec<String>), BuildError> {
    let mut entries = Vec::new();
    if source.uris.is_empty() {
        for entry in base {
            let suites: Vec<String> = entry
                .suites
                .iter()
                .filter_map(|s| {
                    let rest = s.strip_prefix(base_suite)?;
                    (rest.is_empty() || rest.starts_with(['-', '/']))
                        .then(|| format!("{}{rest}", source.suite))
                })
                .collect();
            if !suites.is_empty() {
                entries.push(Entry {
                    uris: entry.uris.clone(),
                    suites,
                    components: entry.components.clone(),
                    signed_by: signed_by(source).or_else(|| entry.signed_by.clone()),
                });
            }
        }
        if entries.is_empty() {
            return Err(BuildError::Apt(format!(
                "source {:?}: the base's apt sources have no entry for suite {base_suite:?} to derive it from",
                source.name
            )));
        }
    } else {
        entries.push(Entry {
            uris: source.uris.clone(),
            suites: vec![source.suite.clone()],
            components: source.components.clone(),
            signed_by: signed_by(source),
        });
    }
    let mut text = format!(
        "# Written by `spilo-build install` for the spec's source {:?}.\n",
        source.name
    );
    let mut suites = Vec::new();
    for entry in &entries {
        text.push_str(&stanza("deb", entry));
        suites.extend(entry.suites.iter().cloned());
    }
    Ok((text, suites))
}

/// `deb-src` stanzas for `suites` of the base's own archive (the mirror
/// of its entry for the base suite itself, no -updates or -security
/// counterparts: a development suite has none).
pub fn derive_src(
    suites: &[String],
    base_suite: &str,
    base: &[Entry],
) -> Result<String, BuildError> {
    let mirrors: Vec<&Entry> = base
        .iter()
        .filter(|e| e.suites.iter().any(|s| s == base_suite))
        .collect();
    if mirrors.is_empty() {
        return Err(BuildError::Apt(format!(
            "the base's apt sources have no entry for suite {base_suite:?} to take source packages from"
        )));
    }
    let mut text = String::from("# Written by `spilo-build source-plan`.\n");
    for entry in mirrors {
        text.push_str(&stanza(
            "deb-src",
            &Entry {
                suites: suites.to_vec(),
                ..entry.clone()
            },
        ));
    }
    Ok(text)
}

/// A source's own `Signed-By`: its key inline, or its keyring's path.
fn signed_by(source: &Source) -> Option<SignedBy> {
    match (&source.key, &source.signed_by) {
        (Some(key), _) => Some(SignedBy::Key(key.clone())),
        (None, Some(path)) => Some(SignedBy::Path(path.display().to_string())),
        (None, None) => None,
    }
}

/// One deb822 stanza; an inline key in deb822's multi-line form (every
/// line indented, an empty one a dot).
fn stanza(types: &str, entry: &Entry) -> String {
    let mut text = format!(
        "\nTypes: {types}\nURIs: {}\nSuites: {}\nComponents: {}\nCheck-Valid-Until: no\n",
        entry.uris.join(" "),
        entry.suites.join(" "),
        entry.components.join(" ")
    );
    match &entry.signed_by {
        Some(SignedBy::Path(path)) => text.push_str(&format!("Signed-By: {path}\n")),
        Some(SignedBy::Key(key)) => {
            text.push_str("Signed-By:\n");
            for line in key.trim().lines().map(str::trim_end) {
                text.push_str(if line.is_empty() { " ." } else { " " });
                text.push_str(line);
                text.push('\n');
            }
        }
        None => {}
    }
    text
}

/// apt preferences: every extra suite at its source's pin, and the
/// packages a major asks for from its own source above everything else.
pub fn pins(low: &[(Vec<String>, i32)], wanted: &[(Vec<String>, Vec<String>)]) -> String {
    let mut text = String::from("# Written by `spilo-build install`.\n");
    for (suites, pin) in low {
        for suite in suites {
            text.push_str(&format!(
                "\nPackage: *\nPin: release n={suite}\nPin-Priority: {pin}\n"
            ));
        }
    }
    for (packages, suites) in wanted {
        if packages.is_empty() {
            continue;
        }
        for suite in suites {
            text.push_str(&format!(
                "\nPackage: {}\nPin: release n={suite}\nPin-Priority: 990\n",
                packages.join(" ")
            ));
        }
    }
    text
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-y", "-o", "Dpkg::Use-Pty=0"]);
    cmd
}

pub fn update() -> Result<(), BuildError> {
    run(apt_get().arg("update"))
}

/// Installs without recommends: the spec names everything the image needs.
pub fn install(packages: &[String]) -> Result<(), BuildError> {
    if packages.is_empty() {
        return Ok(());
    }
    run(apt_get()
        .args([
            "install",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .args(packages))
}

/// Which of `packages` apt has an install candidate for.
pub fn available(packages: &[String]) -> Result<BTreeSet<String>, BuildError> {
    if packages.is_empty() {
        return Ok(BTreeSet::new());
    }
    let text = stdout_of(Command::new("apt-cache").arg("policy").args(packages))?;
    Ok(parse_policy(&text))
}

/// Package names from `apt-cache policy` output whose candidate is not (none).
pub fn parse_policy(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            current = line.strip_suffix(':');
        } else if let (Some(name), Some(candidate)) =
            (current, line.trim().strip_prefix("Candidate:"))
        {
            if candidate.trim() != "(none)" {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// The spec's extra sources that are enabled.
pub fn enabled_sources(spec: &Spec) -> impl Iterator<Item = &Source> {
    spec.sources.iter().filter(|s| s.enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: trixie-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://x\nSuites: trixie\nComponents: main\n";

    fn bookworm() -> Source {
        Source {
            name: "bookworm".into(),
            suite: "bookworm".into(),
            enabled: true,
            uris: vec![],
            components: vec![],
            signed_by: None,
            key: None,
            pin: 100,
        }
    }

    #[test]
    fn one_line_sources() {
        let e = parse_one_line(
            "# comment\ndeb http://deb.debian.org/debian trixie main contrib\ndeb-src http://x trixie main\ndeb [arch=amd64 signed-by=/k.gpg] http://m/d trixie-updates main\n",
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].uris, vec!["http://deb.debian.org/debian"]);
        assert_eq!(e[0].components, vec!["main", "contrib"]);
        assert_eq!(e[1].signed_by, Some(SignedBy::Path("/k.gpg".into())));
    }

    #[test]
    fn deb822_sources_skip_deb_src() {
        let e = parse_deb822(DEB822);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].suites, vec!["trixie", "trixie-updates"]);
    }

    #[test]
    fn another_suite_reuses_the_base_mirrors() {
        let (text, suites) = derive(&bookworm(), "trixie", &parse_deb822(DEB822)).unwrap();
        assert_eq!(
            suites,
            vec!["bookworm", "bookworm-updates", "bookworm-security"]
        );
        assert!(
            text.contains(
                "URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
            )
        );
        assert!(text.contains("Check-Valid-Until: no"));
        assert!(text.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"));
    }

    #[test]
    fn deriving_needs_a_base_entry() {
        let base = parse_one_line("deb http://m/d bookworm main\n");
        assert!(derive(&bookworm(), "trixie", &base).is_err());
    }

    #[test]
    fn a_source_with_its_own_uris() {
        let pgdg = Source {
            name: "pgdg".into(),
            suite: "trixie-pgdg".into(),
            uris: vec!["https://apt.postgresql.org/pub/repos/apt".into()],
            components: vec!["main".into()],
            signed_by: Some("/k.asc".into()),
            pin: 500,
            ..bookworm()
        };
        let (text, suites) = derive(&pgdg, "trixie", &[]).unwrap();
        assert_eq!(suites, vec!["trixie-pgdg"]);
        assert!(text.contains("Signed-By: /k.asc"));
        let inline = Source {
            signed_by: None,
            key: Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n".into()),
            ..pgdg
        };
        let (text, _) = derive(&inline, "trixie", &[]).unwrap();
        assert!(
            text.ends_with("Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n"),
            "{text}"
        );
    }

    #[test]
    fn source_packages_from_the_base_mirror() {
        let text = derive_src(
            &["sid".into(), "forky".into()],
            "trixie",
            &parse_deb822(DEB822),
        )
        .unwrap();
        assert_eq!(text.matches("Types: deb-src").count(), 1, "{text}");
        assert!(
            text.contains(
                "URIs: http://deb.debian.org/debian\nSuites: sid forky\nComponents: main\n"
            ),
            "{text}"
        );
        assert!(derive_src(&["sid".into()], "bookworm", &parse_deb822(DEB822)).is_err());
    }

    #[test]
    fn pins_low_suites_and_wanted_packages() {
        let text = pins(
            &[(vec!["bookworm".into()], 100)],
            &[(vec!["postgresql-15".into()], vec!["bookworm".into()])],
        );
        assert!(text.contains("Package: *\nPin: release n=bookworm\nPin-Priority: 100\n"));
        assert!(
            text.contains("Package: postgresql-15\nPin: release n=bookworm\nPin-Priority: 990\n")
        );
    }

    #[test]
    fn policy_candidates() {
        let text = "postgresql-15:\n  Installed: (none)\n  Candidate: 15.14-0+deb12u1\n  Version table:\n     15.14-0+deb12u1 100\n        100 http://deb.debian.org/debian bookworm/main amd64 Packages\npostgresql-15-pgvector:\n  Installed: (none)\n  Candidate: (none)\n";
        let found = parse_policy(text);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["postgresql-15"]);
    }
}
