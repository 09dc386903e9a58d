//! The image's manifest: what it holds, per major, with exact package
//! versions and extensions, at a fixed path. `spilo-build manifest` writes
//! it, `spilo manifest` prints it, and the OCI label `io.spilo.manifest`
//! names it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::archive::ArchiveInfo;
use crate::{IoError, LayoutError};

pub const MANIFEST: &str = "/usr/share/spilo/manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub spilo: String,
    pub base: String,
    pub default_major: u32,
    pub majors: Vec<MajorEntry>,
    /// Package → version, for everything outside the majors.
    pub global: BTreeMap<String, String>,
    pub locales: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MajorEntry {
    pub major: u32,
    pub source: String,
    pub packages: BTreeMap<String, String>,
    /// Optional packages its source does not have.
    pub skipped: Vec<String>,
    pub extensions: Vec<String>,
    /// Set when the major ships packed (COMPRESS=true).
    pub archive: Option<ArchiveInfo>,
    /// The installed packages the image build compiled for this major,
    /// with what they came from; dependencies built from the same sources
    /// (libpq5, the client) too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub built: BTreeMap<String, BuiltFrom>,
}

/// Where a package compiled by the image build came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltFrom {
    /// The Debian source package.
    pub source: String,
    /// Its version (upstream's alone when built from the .orig tarball).
    pub version: String,
    /// The suite whose deb-src index it came from.
    pub suite: String,
    /// `debian` (its own packaging) or `upstream` (the .orig tarball,
    /// packaged by the build).
    pub packaging: String,
}

/// `spilo manifest`: the image's manifest, as written at build.
pub fn print(out: &mut dyn std::io::Write) -> Result<(), LayoutError> {
    let path = Path::new(MANIFEST);
    let text = std::fs::read_to_string(path).map_err(IoError::at("read", path))?;
    out.write_all(text.as_bytes())
        .map_err(IoError::at("write", Path::new("standard output")))?;
    Ok(())
}
