//! `spilo init`, the container's entrypoint (PID 1), in one pass of typed
//! steps: check the input (nothing written before), decide what this
//! start is (the embedded etcd's first start, initdb ahead), prepare the
//! volumes and nss_wrapper, unpack a packed major, plan and write the
//! files, then supervise etcd (when no DCS is configured), Patroni and
//! pgbouncer until a signal stops them.

pub(crate) mod account;
mod certwatch;
pub mod children;
mod etcd;
pub mod hooks;
pub mod initdb_ahead;
pub(crate) mod locale;
pub mod logging;
mod majors;
mod nss;
mod pod_labels;
pub mod reaper;
mod shm;
pub(crate) mod spacewatch;
pub mod supervisor;
mod volumes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::backup;
use crate::config::backup::Store;
use crate::config::{Config, ConfigError, DcsKind, Env, Paths, System};
use crate::files::{self, IoError};
use crate::render::patroni::{self, Additions};
use crate::render::{self, RenderError, Section};

use account::{Account, AccountError};
use children::Programs;
use spacewatch::Holds;

pub struct Options {
    pub postgres_root: PathBuf,
    pub programs: Programs,
    /// How long a shutdown may take before what is left is killed.
    pub grace: Duration,
    /// The library preloaded for an arbitrary uid (LD_PRELOAD).
    pub nss_wrapper: String,
    /// This binary, which Patroni's hooks, the initdb shim and a clone's
    /// bootstrap call back (the model's `program`).
    pub program: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error(transparent)]
    Locale(#[from] locale::LocaleError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Major(#[from] majors::MajorError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("hook or backup spec: {0}")]
    Spec(#[from] serde_json::Error),
    #[error(transparent)]
    Ahead(#[from] initdb_ahead::AheadError),
    #[error("supervisor: {0}")]
    Runtime(std::io::Error),
}

impl InitError {
    /// 2 for bad input (nothing was started), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::Config(_)
            | InitError::Account(_)
            | InitError::Volume(_)
            | InitError::Locale(_) => 2,
            InitError::Render(e) if e.is_input() => 2,
            _ => 1,
        }
    }
}

/// Runs the container; returns its exit status once the tree is down.
pub fn run(env: &Env, options: &Options) -> Result<u8, InitError> {
    let started = Instant::now();
    take_charge();
    let Input {
        config,
        account,
        checked,
    } = check_input(env, options)?;
    let start = decide(&config);
    volumes::prepare(&config.paths, &account, &start.private_dirs(&config.paths))?;
    if let Some(backup) = config
        .backup
        .as_ref()
        .filter(|b| b.repository.store == Store::Posix)
    {
        volumes::local_repository(Path::new(&backup.repository.path), &account)?;
    }
    if let Some(etcd) = &start.etcd {
        etcd.mark(&config.paths);
    }
    let nss_env = nss(&config, &account, options)?;
    warn_small_shm(&config);
    let library_env = majors::prepare(&config, &options.postgres_root)?;
    let plan = plan(
        &config,
        &account,
        checked,
        start.ahead,
        &options.programs.patroni,
    )?;
    let child_env: Vec<(String, String)> = nss_env.into_iter().chain(library_env).collect();
    let specs = children::specs(&config, env, &account, &options.programs, &child_env);
    write(&config, &account, &plan.outputs)?;
    if let (Some(ahead), Some(patroni)) = (&plan.ahead, children::patroni(&specs)) {
        // Before the supervisor, so that initdb overlaps etcd's and
        // Patroni's start-up; after every other write, so that an error
        // leaves no run behind.
        ahead.start(
            &config.program,
            &config.version.bin_dir.join("initdb"),
            patroni,
        )?;
    }
    start_monitor(&config);
    let periodic = vec![watch_certificates(&config), watch_space(&config)];
    info!(
        "configured in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    supervise(specs, periodic, options.grace)
}

/// Stop signals are held until the supervisor acts on them, and orphans
/// are ours to reap.
fn take_charge() {
    if let Err(e) = supervisor::hold_stop_signals() {
        warn!("cannot hold stop signals until the supervisor runs: {e}");
    }
    if let Err(e) = reaper::become_subreaper() {
        warn!("cannot become the subreaper of our children: {e}");
    }
}

/// Everything that can be wrong with the input, found before anything is
/// written: the model (built once, against the tree the major runs from,
/// unpacked or not), the files whose rendering checks the input, and who
/// runs PostgreSQL.
struct Input {
    config: Config,
    account: Account,
    /// Every file but Patroni's configuration, which waits for the major's
    /// tree, the hook commands and the initdb decision (its input is
    /// checked by the model).
    checked: Vec<render::Output>,
}

const CHECKED: [Section; 4] = [
    Section::Certificate,
    Section::PamOauth2,
    Section::Pgbouncer,
    Section::Backup,
];

fn check_input(env: &Env, options: &Options) -> Result<Input, InitError> {
    let system = System {
        postgres_root: options.postgres_root.clone(),
        unpacks: true,
        program: options.program.clone(),
        ..System::default()
    };
    let config = Config::build(env, &system)?;
    config.warnings.iter().for_each(|w| warn!("{w}"));
    info!(
        "PostgreSQL {} ({}), member {} of {}",
        config.version.major, config.version.source, config.identity.name, config.identity.scope
    );
    let checked = render::plan(&config, &CHECKED)?;
    locale::check(&config)?;
    let account = Account::resolve()?;
    Ok(Input {
        config,
        account,
        checked,
    })
}

/// What this start is, decided before the volumes are prepared (they
/// create the etcd data directory and PGDATA).
struct Start {
    /// The embedded etcd, when no DCS is configured.
    etcd: Option<etcd::Embedded>,
    ahead: Option<initdb_ahead::Candidate>,
}

fn decide(config: &Config) -> Start {
    let etcd = (config.dcs.kind == DcsKind::Embedded).then(|| etcd::prepare(&config.paths));
    let ahead = initdb_ahead::candidate(&config.paths, etcd.as_ref());
    Start { etcd, ahead }
}

impl Start {
    /// The private directories under RW_DIR the volumes get.
    fn private_dirs(&self, paths: &Paths) -> Vec<PathBuf> {
        self.etcd.iter().map(|_| paths.etcd_data()).collect()
    }
}

/// nss_wrapper's variables for a uid without a passwd entry (none else).
fn nss(
    config: &Config,
    account: &Account,
    options: &Options,
) -> Result<Vec<(String, String)>, InitError> {
    let nss_env = nss::prepare(account, &config.paths, &options.nss_wrapper, &nss::SYSTEM)?;
    if !nss_env.is_empty() {
        info!(
            "uid {} has no passwd entry: nss_wrapper gives it one",
            account.uid
        );
    }
    Ok(nss_env)
}

fn warn_small_shm(config: &Config) {
    let shared_buffers = shm::shared_buffers_mb(&config.user, config.sizing.shared_buffers_mb);
    if let Some(warning) = shm::check(Path::new("/dev/shm"), shared_buffers) {
        warn!("{warning}");
    }
}

/// Every file to write, and the run of initdb ahead when there is one.
struct Plan {
    outputs: Vec<render::Output>,
    ahead: Option<initdb_ahead::Ahead>,
}

/// What `configure` writes, with the hook commands and, when initdb runs
/// ahead, the shim in Patroni's configuration; plus the hooks' spec and
/// the backup commands'.
fn plan(
    config: &Config,
    account: &Account,
    checked: Vec<render::Output>,
    candidate: Option<initdb_ahead::Candidate>,
    patroni: &Path,
) -> Result<Plan, InitError> {
    let hooks = hooks::install(config)?;
    let template = patroni::Template::render(config)?;
    let mut additions = Additions {
        hooks: Some(hooks.commands),
        initdb: None,
    };
    let mut tree = template.tree(config, &additions);
    // Patroni's configuration without the shim tells whether initdb may
    // run ahead, and with what.
    let ahead = candidate.and_then(|c| c.request(&tree));
    if let Some(ahead) = &ahead {
        additions.initdb = Some(ahead.shim());
        tree = template.tree(config, &additions);
    }
    let mut outputs = render::patroni_files(config, tree)?;
    outputs.extend(checked);
    outputs.push(hooks.spec);
    let owner = account
        .switch_to()
        .map(|(uid, gid)| (uid.as_raw(), gid.as_raw()));
    if let Some(spec) = backup::Spec::for_config(config, owner, patroni) {
        outputs.push(render::Output::File {
            path: config.paths.backup_spec(),
            contents: serde_json::to_vec_pretty(&spec)?,
            mode: 0o644,
            redacted: None,
        });
    }
    Ok(Plan { outputs, ahead })
}

/// Clears what an earlier run ahead left, then writes every file.
fn write(config: &Config, account: &Account, outputs: &[render::Output]) -> Result<(), InitError> {
    initdb_ahead::clear_stale(&config.paths)?;
    files::write_all(outputs, account.owner())?;
    Ok(())
}

/// Certificates that change on disk make the postmaster reload.
fn watch_certificates(config: &Config) -> supervisor::Periodic {
    let tls = &config.ssl.postgres;
    let watched = [
        Some(&tls.cert_file),
        Some(&tls.key_file),
        tls.ca_file.as_ref(),
        tls.crl_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    certwatch::watch(watched, config.paths.pgdata.clone())
}

fn watch_space(config: &Config) -> supervisor::Periodic {
    let paths = &config.paths;
    spacewatch::watch(vec![
        (Holds::Pgdata, paths.pgdata.clone()),
        (Holds::Wal, paths.pgdata.join("pg_wal")),
        (Holds::Log, paths.pglog.clone()),
    ])
}

/// The monitor on 8080; a port it cannot have costs the monitor, never
/// the database.
fn start_monitor(config: &Config) {
    let Some(monitor) = &config.monitor else {
        return;
    };
    let paths = &config.paths;
    let settings = crate::monitor::Settings {
        listen: std::net::SocketAddr::new(monitor.listen, monitor.port),
        naptime: monitor.naptime,
        history_buckets: monitor.history_buckets,
        query_text: monitor.query_text,
        socket_dir: paths.socket_dir(),
        pg_port: config.identity.pg_port,
        pgdata: paths.pgdata.clone(),
        wal: paths
            .pgwal
            .clone()
            .unwrap_or_else(|| paths.pgdata.join("pg_wal")),
        log: paths.pglog.clone(),
        cluster_name: config.identity.scope.clone(),
        patroni: config.ssl.restapi.is_none().then(|| {
            (
                config.identity.restapi_connect_host.clone(),
                config.identity.api_port,
            )
        }),
        backup_state: config
            .backup
            .as_ref()
            .map(|_| backup::state::path(&paths.pgbackrest_spool())),
    };
    if let Err(e) = crate::monitor::start(settings) {
        warn!("{e}; PostgreSQL runs without it");
    }
}

/// Supervises the tree until it is down; its exit status.
fn supervise(
    specs: Vec<supervisor::ChildSpec>,
    periodic: Vec<supervisor::Periodic>,
    grace: Duration,
) -> Result<u8, InitError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InitError::Runtime)?;
    runtime
        .block_on(supervisor::run(specs, periodic, grace))
        .map_err(InitError::Runtime)
}
