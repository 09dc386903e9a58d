use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use spilo::config::{Env, version::DEFAULT_POSTGRES_ROOT};
use spilo::configure;
use spilo::render::Section;

/// PostgreSQL high availability in one image, configured by environment
/// variables (a drop-in replacement for Zalando's Spilo).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render the configuration files under RW_DIR from the environment.
    Configure {
        /// Sections to render (default: all).
        #[arg(value_enum)]
        sections: Vec<Section>,
        /// Print the files instead of writing them.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run, show passwords and keys instead of redacting them.
        #[arg(long, requires = "dry_run")]
        show_secrets: bool,
        /// Where the PostgreSQL majors are installed (<root>/<major>/bin).
        #[arg(long, env = "SPILO_POSTGRES_ROOT", default_value = DEFAULT_POSTGRES_ROOT)]
        postgres_root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Configure {
            sections,
            dry_run,
            show_secrets,
            postgres_root,
        } => {
            let options = configure::Options {
                sections,
                dry_run,
                show_secrets,
                postgres_root,
            };
            let mut stdout = std::io::stdout().lock();
            let result = configure::run(&Env::from_process(), &options, &mut stdout, &mut |w| {
                eprintln!("spilo: warning: {w}")
            });
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spilo: error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}
