//! `spilo-build`: the steps the Dockerfile runs to assemble the image from
//! image/spec.toml: `source-plan` in its source-plan stage, then in the
//! rootfs stage install → slim → [compress] → manifest.
//!
//! It depends on `spilo-layout` only, never on the runtime crate: the
//! Dockerfile builds it from src/build and src/layout alone, so a change to
//! runtime code leaves the tool, and the package layers it makes, to the
//! build cache.

pub mod apt;
pub mod compress;
pub mod dpkg;
pub mod install;
pub mod manifest;
pub mod slim;
pub mod sources;
pub mod spec;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::{Args, Subcommand};
use spilo_layout::archive::Format;
use spilo_layout::{IoError, LayoutError};

pub use spec::Spec;
pub use spilo_layout::under;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("spec {}: {reason}", path.display())]
    Spec { path: PathBuf, reason: String },
    #[error("{command}: {reason}")]
    Command { command: String, reason: String },
    #[error("apt: {0}")]
    Apt(String),
    #[error("{0}")]
    Check(String),
    #[error("JSON {}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image spec.
    #[arg(long, env = "SPILO_SPEC", default_value = spec::DEFAULT_SPEC)]
    pub spec: PathBuf,
    /// Only these of the spec's majors (comma-separated; the newest is the
    /// default). The Dockerfile's MAJORS build argument.
    #[arg(long, env = "SPILO_MAJORS", default_value = "", value_parser = majors)]
    pub majors: Majors,
    /// Every major from this `[[source]]` of the spec (enabled for it),
    /// e.g. pgdg. The Dockerfile's SOURCE build argument.
    #[arg(long, env = "SPILO_SOURCE", default_value = "")]
    pub source: String,
    #[command(subcommand)]
    pub step: Step,
}

#[derive(Debug, Subcommand)]
pub enum Step {
    /// Plan what the sources stage compiles (majors with `source = "build"`).
    SourcePlan {
        /// Where `plan` and `deb-src.sources` are written.
        out: PathBuf,
    },
    /// Add the spec's apt sources and pins, install its packages.
    Install,
    /// Drop what a running container never needs; hard-link duplicates.
    Slim,
    /// Pack every major but the default into its own archive.
    Compress {
        #[arg(long, value_enum, default_value_t = Format::Zstd)]
        format: Format,
        /// Compression level (zstd 1-22, gzip 0-9); default per format.
        #[arg(long)]
        level: Option<i32>,
    },
    /// Record every major, its package versions and extensions.
    Manifest,
}

/// A comma-separated list of majors (MAJORS); empty for all.
#[derive(Debug, Clone)]
pub struct Majors(pub Vec<u32>);

/// Parses MAJORS; a repeated major counts once.
fn majors(text: &str) -> Result<Majors, String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{v:?} is not a PostgreSQL major"))
        })
        .collect::<Result<std::collections::BTreeSet<u32>, _>>()
        .map(|set| Majors(set.into_iter().collect()))
}

/// Runs one build step on the running system (the rootfs stage).
pub fn main(args: &BuildArgs) -> Result<(), BuildError> {
    let spec = || {
        Spec::load(&args.spec)?
            .select(
                &args.majors.0,
                Some(args.source.as_str()).filter(|s| !s.is_empty()),
            )
            .map_err(|reason| BuildError::Spec {
                path: args.spec.clone(),
                reason,
            })
    };
    let root = Path::new("/");
    match &args.step {
        Step::SourcePlan { out } => sources::plan(&spec()?, out),
        Step::Install => install::run(&spec()?),
        Step::Slim => slim::run(root, &spec()?).map(|_| ()),
        Step::Compress { format, level } => compress::run(root, &spec()?, *format, *level),
        Step::Manifest => manifest::run(root, &spec()?, &args.spec),
    }
}

/// Step headers with elapsed time, for a person watching a long build.
pub struct Progress {
    step: &'static str,
    start: Instant,
}

impl Progress {
    pub fn start(step: &'static str) -> Progress {
        let p = Progress {
            step,
            start: Instant::now(),
        };
        p.say("started");
        p
    }

    pub fn say(&self, what: &str) {
        println!(
            "==> spilo-build {} [{:6.1}s] {what}",
            self.step,
            self.start.elapsed().as_secs_f64()
        );
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command with its output shown; failure is an error.
pub fn run(cmd: &mut Command) -> Result<(), BuildError> {
    let what = describe(cmd);
    let status = cmd.status().map_err(|e| BuildError::Command {
        command: what.clone(),
        reason: e.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Command {
            command: what,
            reason: status.to_string(),
        })
    }
}

/// Runs a command and returns what it printed; failure is an error.
pub fn stdout_of(cmd: &mut Command) -> Result<String, BuildError> {
    let what = describe(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| BuildError::Command {
            command: what.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BuildError::Command {
            command: what,
            reason: out.status.to_string(),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| BuildError::Command {
        command: what,
        reason: format!("output is not UTF-8: {e}"),
    })
}
