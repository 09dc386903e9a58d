//! `spilo configure`: environment → model → files under RW_DIR.

use std::io::Write;
use std::path::PathBuf;

use crate::config::{Config, ConfigError, Env, System};
use crate::files::{self, IoError};
use crate::init::account::Account;
use crate::render::{self, Output, RenderError, Section};

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// Bad input: exit status 2, nothing written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Write(#[from] IoError),
    #[error("standard output: {0}")]
    Stdout(std::io::Error),
}

impl ConfigureError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigureError::Config(_) => 2,
            ConfigureError::Render(e) if e.is_input() => 2,
            _ => 1,
        }
    }
}

pub struct Options {
    pub sections: Vec<Section>,
    pub dry_run: bool,
    pub show_secrets: bool,
    pub postgres_root: PathBuf,
}

/// Runs `configure` on an environment; warnings go to `warn`, the dry-run
/// listing to `out`. Returns the model for callers that go on (`init`).
pub fn run(
    env: &Env,
    options: &Options,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(&str),
) -> Result<Config, ConfigureError> {
    let system = System {
        postgres_root: options.postgres_root.clone(),
        ..System::default()
    };
    let config = Config::build(env, &system)?;
    config.warnings.iter().for_each(|w| warn(w));
    let outputs = render::plan(&config, &options.sections)?;
    if options.dry_run {
        print(&outputs, options.show_secrets, out).map_err(ConfigureError::Stdout)?;
    } else {
        // Root without a postgres user (not the image) keeps what it writes.
        let owner = Account::resolve().map(|a| a.owner()).unwrap_or_default();
        files::write_all(&outputs, owner)?;
    }
    Ok(config)
}

fn print(outputs: &[Output], show_secrets: bool, out: &mut dyn Write) -> std::io::Result<()> {
    for output in outputs {
        match output {
            Output::File {
                path,
                contents,
                mode,
                redacted,
            } => {
                writeln!(out, "# ==> {} (mode {mode:04o}) <==", path.display())?;
                let shown = match redacted {
                    Some(shown) if !show_secrets => shown.as_bytes(),
                    _ => contents,
                };
                out.write_all(shown)?;
                if !shown.ends_with(b"\n") {
                    writeln!(out)?;
                }
            }
            Output::Symlink { link, target } => {
                writeln!(out, "# ==> {} -> {} <==", link.display(), target.display())?;
            }
        }
    }
    Ok(())
}
