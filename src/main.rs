use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use spilo::backup;
use spilo::clone;
use spilo::config::Env;
use spilo::configure;
use spilo::envdir;
use spilo::init::{self, children::Programs, hooks, initdb_ahead, logging};
use spilo::render::Section;
use spilo::upgrade;
use spilo_layout::POSTGRES_ROOT;

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
        #[arg(long, env = "SPILO_POSTGRES_ROOT", default_value = POSTGRES_ROOT)]
        postgres_root: PathBuf,
    },
    /// The container's entrypoint: prepare the volumes, configure, then
    /// run and supervise etcd (without a DCS), Patroni and pgbouncer.
    Init {
        /// Where the PostgreSQL majors are installed (<root>/<major>/bin).
        #[arg(long, env = "SPILO_POSTGRES_ROOT", default_value = POSTGRES_ROOT)]
        postgres_root: PathBuf,
        /// The Patroni executable.
        #[arg(long, env = "SPILO_PATRONI_BIN", default_value = "patroni")]
        patroni: PathBuf,
        /// The etcd executable, run when no DCS is configured.
        #[arg(long, env = "SPILO_ETCD_BIN", default_value = "etcd")]
        etcd: PathBuf,
        /// The pgbouncer executable, run when PGBOUNCER_CONFIGURATION is set.
        #[arg(long, env = "SPILO_PGBOUNCER_BIN", default_value = "pgbouncer")]
        pgbouncer: PathBuf,
        /// Seconds a shutdown may take before what is left is killed.
        #[arg(long, env = "SPILO_STOP_TIMEOUT", default_value_t = 60)]
        stop_timeout: u64,
        /// The nss_wrapper library preloaded for a uid without a passwd entry.
        #[arg(long, env = "SPILO_NSS_WRAPPER", default_value = "libnss_wrapper.so")]
        nss_wrapper: String,
        /// Log lines as plain text or JSON objects.
        #[arg(long, env = "SPILO_LOG_FORMAT", value_enum, default_value = "plain")]
        log_format: logging::Format,
    },
    /// Print the image's manifest: majors, package versions, extensions.
    Manifest,
    /// Patroni's hooks (called by Patroni, not by hand).
    Hook {
        #[command(subcommand)]
        hook: Hook,
    },
    /// Backups with pgBackRest (configured by WAL_S3_BUCKET, WAL_GS_BUCKET,
    /// AZURE_STORAGE_ACCOUNT or WAL_LOCAL_PATH).
    Backup {
        #[command(subcommand)]
        backup: Backup,
    },
    /// A major upgrade in place, on the primary: the operator's
    /// /scripts/inplace_upgrade.py N runs it. The target is PGVERSION (or
    /// postgresql.bin_dir in SPILO_CONFIGURATION).
    Upgrade {
        /// The number of members the cluster must have.
        #[arg(long)]
        members: usize,
        /// Patroni's configuration file (default: $RW_DIR/postgres.yml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the PostgreSQL majors are installed (<root>/<major>/bin).
        #[arg(long, env = "SPILO_POSTGRES_ROOT", default_value = POSTGRES_ROOT)]
        postgres_root: PathBuf,
    },
    /// A replica's part of an upgrade (started by the primary's).
    #[command(hide = true)]
    UpgradeReplica(upgrade::replica::Options),
    /// Runs initdb ahead of Patroni (started by `init`).
    #[command(hide = true)]
    InitdbAhead { dir: PathBuf },
    /// Patroni's copy of a running cluster: a clone's bootstrap
    /// (CLONE_METHOD=CLONE_WITH_BASEBACKUP) or the basebackup_fast_xlog
    /// replica method, which Patroni calls with its own parameters.
    #[command(hide = true)]
    Basebackup {
        #[arg(long)]
        major: u32,
        #[arg(long)]
        bin_dir: PathBuf,
        #[arg(long, alias = "datadir")]
        pgdata: PathBuf,
        #[arg(long)]
        waldir: Option<PathBuf>,
        /// The source's connection string.
        #[arg(long, alias = "connstring")]
        source: String,
        #[command(flatten)]
        upgrade: UpgradeArgs,
        /// Patroni's other parameters of a replica method, not needed.
        #[arg(long = "scope", hide = true)]
        _scope: Option<String>,
        #[arg(long = "role", hide = true)]
        _role: Option<String>,
    },
    /// Patroni's bootstrap of a restore from the source's repository
    /// (rendered from CLONE_METHOD=CLONE_WITH_WALE).
    #[command(hide = true)]
    CloneRestore {
        #[arg(long)]
        major: u32,
        #[arg(long)]
        pgdata: PathBuf,
        #[arg(long)]
        stanza: String,
        #[command(flatten)]
        upgrade: UpgradeArgs,
        /// pgBackRest's restore command, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// A clone's bootstrap: a source of an older major that this image has
/// is copied with its programs, recovered and upgraded.
#[derive(clap::Args)]
struct UpgradeArgs {
    /// The clone's Patroni configuration (none for a standby or a replica).
    #[arg(long)]
    upgrade_with: Option<PathBuf>,
    /// Where the majors are installed.
    #[arg(long, default_value = POSTGRES_ROOT)]
    postgres_root: PathBuf,
}

impl UpgradeArgs {
    fn upgradable(self) -> Option<clone::Upgradable> {
        let postgres_root = self.postgres_root;
        self.upgrade_with.map(|config| clone::Upgradable {
            config,
            postgres_root,
        })
    }
}

#[derive(Subcommand)]
enum Hook {
    /// bootstrap.post_init: the roles and the database helpers after bootstrap.
    PostInit {
        /// The spec `init` wrote.
        spec: PathBuf,
        /// The superuser connection string Patroni passes.
        connection: String,
    },
    /// postgresql.callbacks (on_role_change; also on_start and on_stop when
    /// it labels the pod): label the pod, create the roles on promotion.
    OnRoleChange {
        spec: PathBuf,
        action: String,
        role: String,
        scope: String,
    },
}

#[derive(Subcommand)]
enum Backup {
    /// The scheduler `init` runs: the stanza, the first backup after
    /// bootstrap, BACKUP_SCHEDULE's backups, WAL archiving reports.
    Schedule {
        /// The spec `init` wrote (default: $RW_DIR/backup.json).
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Take a backup now, on the primary.
    Now {
        /// The spec `init` wrote (default: $RW_DIR/backup.json).
        #[arg(long)]
        spec: Option<PathBuf>,
        #[arg(long = "type", value_name = "TYPE", value_enum, default_value = "full")]
        kind: backup::BackupType,
    },
    /// List the backups in the repository.
    List {
        /// The spec `init` wrote (default: $RW_DIR/backup.json).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Print pgBackRest's JSON as is.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next().unwrap_or_default());
    if initdb_ahead::called_as_shim(&argv0) {
        return initdb_ahead::shim(&argv0, args.collect());
    }
    if argv0.file_name().is_some_and(|name| name == "envdir") {
        return envdir::run(args.collect());
    }
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
        Command::Init {
            postgres_root,
            patroni,
            etcd,
            pgbouncer,
            stop_timeout,
            nss_wrapper,
            log_format,
        } => {
            logging::init(log_format);
            // Patroni's hooks, the initdb shim and a clone's bootstrap call
            // this binary back.
            let program = match std::env::current_exe() {
                Ok(path) => path,
                Err(e) => {
                    tracing::error!("cannot find this program's own path: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = init::Options {
                postgres_root,
                programs: Programs {
                    patroni,
                    etcd,
                    pgbouncer,
                },
                grace: Duration::from_secs(stop_timeout),
                nss_wrapper,
                program,
            };
            match init::run(&Env::from_process(), &options) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Manifest => match spilo_layout::manifest::print(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spilo manifest: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::InitdbAhead { dir } => initdb_ahead::run(&dir),
        Command::Upgrade {
            members,
            config,
            postgres_root,
        } => {
            let options = upgrade::Options {
                members,
                config: config.unwrap_or_else(upgrade::default_config_path),
                postgres_root,
                spilo_configuration: std::env::var("SPILO_CONFIGURATION").ok(),
                pgversion: std::env::var("PGVERSION").ok(),
            };
            match upgrade::run(&options) {
                Ok(summary) => {
                    println!("spilo upgrade: {summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("spilo upgrade: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::UpgradeReplica(options) => match upgrade::replica::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spilo upgrade-replica: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Basebackup {
            major,
            bin_dir,
            pgdata,
            waldir,
            source,
            upgrade,
            ..
        } => clone_exit(
            "basebackup",
            clone::basebackup(&clone::Basebackup {
                major,
                bin_dir,
                pgdata,
                waldir,
                source,
                upgrade: upgrade.upgradable(),
            }),
        ),
        Command::CloneRestore {
            major,
            pgdata,
            stanza,
            upgrade,
            command,
        } => clone_exit(
            "clone-restore",
            clone::restore(&clone::Restore {
                major,
                pgdata,
                stanza,
                command,
                upgrade: upgrade.upgradable(),
            }),
        ),
        Command::Backup { backup: command } => {
            let spec_or_default =
                |spec: Option<PathBuf>| spec.unwrap_or_else(backup::default_spec_path);
            let result = match command {
                Backup::Schedule { spec } => backup::schedule(&spec_or_default(spec)),
                Backup::Now { spec, kind } => {
                    backup::read_spec(&spec_or_default(spec)).and_then(|s| backup::now(&s, kind))
                }
                Backup::List { spec, json } => backup::read_spec(&spec_or_default(spec))
                    .and_then(|s| backup::list(&s, json, &mut std::io::stdout().lock())),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spilo backup: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Hook { hook } => {
            let log = &mut |line: String| eprintln!("spilo hook {line}");
            let (name, result) = match hook {
                Hook::PostInit { spec, connection } => (
                    "post-init".to_owned(),
                    hooks::read_spec(&spec).and_then(|s| {
                        hooks::post_init(&s, &connection)?;
                        log(format!("post-init: {}", hooks::summary(&s)));
                        Ok(())
                    }),
                ),
                Hook::OnRoleChange {
                    spec, action, role, ..
                } => {
                    let result = hooks::read_spec(&spec)
                        .and_then(|s| hooks::callback(&s, &action, &role, log));
                    (action, result)
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spilo hook {name}: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A copy for a clone or a standby ends: its error on stderr, where
/// Patroni logs it.
fn clone_exit(name: &str, result: Result<(), clone::CloneError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spilo {name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
