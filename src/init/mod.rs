//! `spilo init`, the container's entrypoint (PID 1): check and prepare
//! the volumes, run `configure` in-process, then supervise etcd (when no
//! DCS is configured), Patroni and pgbouncer until a signal stops them.

pub mod account;
pub mod certwatch;
pub mod children;
pub mod hooks;
pub mod initdb_ahead;
pub mod logging;
pub mod majors;
pub mod nss;
pub mod pod_labels;
pub mod reaper;
pub mod shm;
pub mod supervisor;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{Config, ConfigError, Env, System};
use crate::files::{self, Owner, WriteError};
use crate::render::{self, RenderError, Section};

use account::{Account, AccountError};
use children::Programs;

pub struct Options {
    pub postgres_root: PathBuf,
    pub programs: Programs,
    /// How long a shutdown may take before what is left is killed.
    pub grace: Duration,
    /// The library preloaded for an arbitrary uid (LD_PRELOAD).
    pub nss_wrapper: String,
    /// The binary Patroni's hooks call (normally this one).
    pub hook_program: PathBuf,
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
    Nss(#[from] nss::NssError),
    #[error(transparent)]
    Major(#[from] majors::MajorError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("hook spec: {0}")]
    HookSpec(#[from] serde_json::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
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
            | InitError::Major(majors::MajorError::Config(_))
            | InitError::Account(_)
            | InitError::Volume(_) => 2,
            InitError::Render(e) if e.is_input() => 2,
            _ => 1,
        }
    }
}

/// Runs the container; returns its exit status once the tree is down.
pub fn run(env: &Env, options: &Options) -> Result<u8, InitError> {
    let started = Instant::now();
    if let Err(e) = supervisor::hold_stop_signals() {
        warn!("cannot hold stop signals until the supervisor runs: {e}");
    }
    if let Err(e) = reaper::become_subreaper() {
        warn!("cannot become the subreaper of our children: {e}");
    }
    let system = System {
        postgres_root: options.postgres_root.clone(),
        ..System::default()
    };
    // Everything that can be wrong with the input is found by these two,
    // before anything is written.
    let mut config = Config::build(env, &system)?;
    config.warnings.iter().for_each(|w| warn!("{w}"));
    info!(
        "PostgreSQL {} ({}), member {} of {}",
        config.version.major, config.version.source, config.identity.name, config.identity.scope
    );
    let embedded_etcd = config.dcs.kind == crate::config::DcsKind::Embedded;
    let etcd_data = children::etcd_data_dir(&config);
    if embedded_etcd {
        match children::clear_unfinished_etcd(&config) {
            Ok(true) => info!(
                "{}: removed the data of an embedded etcd whose first start never finished",
                etcd_data.display()
            ),
            Ok(false) => {}
            Err(e) => warn!("{}: {e}", etcd_data.display()),
        }
    }
    let etcd_first_start = embedded_etcd && !etcd_data.exists();
    let ahead = initdb_ahead::decide(&config, &etcd_data);
    let mut outputs = plan(&mut config, &options.hook_program, ahead.as_ref())?;
    let account = Account::resolve()?;
    let private_dirs: Vec<PathBuf> = embedded_etcd.then_some(etcd_data).into_iter().collect();
    volumes::prepare(&config.paths, &account, &private_dirs)?;
    if etcd_first_start {
        // Without the mark nothing is removed later: only a cut-short first
        // start is not cleaned up.
        if let Err(e) = children::mark_etcd_first_start(&config) {
            warn!("{}: {e}", config.paths.rw_dir.display());
        }
    }
    let nss_env = nss::prepare(
        &account,
        &config.paths.rw_dir,
        &config.paths.pghome,
        &options.nss_wrapper,
        &nss::SYSTEM,
    )?;
    if !nss_env.is_empty() {
        info!(
            "uid {} has no passwd entry: nss_wrapper gives it one",
            account.uid
        );
    }
    let shared_buffers = shm::shared_buffers_mb(&config.user, config.sizing.shared_buffers_mb);
    if let Some(warning) = shm::check(Path::new("/dev/shm"), shared_buffers) {
        warn!("{warning}");
    }

    let (config, library_env) = match majors::prepare(&config, env, &options.postgres_root)? {
        None => (config, Vec::new()),
        Some(mut unpacked) => {
            outputs = plan(&mut unpacked.config, &options.hook_program, ahead.as_ref())?;
            (unpacked.config, unpacked.env)
        }
    };
    let child_env: Vec<(String, String)> = nss_env.into_iter().chain(library_env).collect();
    let specs = children::specs(&config, env, &account, &options.programs, &child_env);
    initdb_ahead::clear_stale(&config)?;
    files::write_all(&outputs, Owner::detect())?;
    if let (Some(ahead), Some(patroni)) = (&ahead, children::patroni(&specs)) {
        // Before the supervisor, so that initdb overlaps etcd's and
        // Patroni's start-up; after every other write, so that an error
        // leaves no run behind.
        ahead.start(
            &options.hook_program,
            &config.version.bin_dir.join("initdb"),
            patroni,
        )?;
    }

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
    let periodic = vec![certwatch::watch(watched, config.paths.pgdata.clone())];
    info!(
        "configured in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InitError::Runtime)?;
    runtime
        .block_on(supervisor::run(specs, periodic, options.grace))
        .map_err(InitError::Runtime)
}

/// What `configure` writes, plus the hooks' spec (and their commands in
/// the Patroni configuration) and the initdb shim when initdb runs ahead.
fn plan(
    config: &mut Config,
    hook_program: &Path,
    ahead: Option<&initdb_ahead::Ahead>,
) -> Result<Vec<render::Output>, InitError> {
    if let Some(ahead) = ahead {
        ahead.configure(config);
    }
    let hook_spec = hooks::install(config, hook_program)?;
    let mut outputs = render::plan(config, &[Section::All])?;
    outputs.push(hook_spec);
    Ok(outputs)
}
