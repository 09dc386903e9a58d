//! The monitor on port 8080, in `spilo init` itself: what bg_mon serves in
//! Spilo (a per-second snapshot of the host, the cgroup, the volumes and
//! every PostgreSQL process, a minute-by-minute history, a page), plus
//! Prometheus metrics, with no extension to build or preload. A sampler
//! thread reads /proc, the cgroup and one query; the server only ever
//! hands out what was published last. Neither can hold up the supervisor.

mod cgroup;
mod disk;
mod history;
mod host;
mod http;
mod metrics;
mod pgwire;
mod postgres;
mod process;
mod raw;
mod snapshot;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::backup::state::State;
use history::History;
use raw::Raw;

/// Where the monitor listens and what it watches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub naptime: Duration,
    pub history_buckets: u16,
    pub query_text: bool,
    pub socket_dir: PathBuf,
    pub pg_port: u16,
    pub pgdata: PathBuf,
    pub wal: PathBuf,
    pub log: PathBuf,
    pub cluster_name: String,
    /// Patroni's REST API over plain HTTP (None: it speaks TLS).
    pub patroni: Option<(String, u16)>,
    /// The backup scheduler's outcomes, when backups are configured.
    pub backup_state: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor: listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("monitor: {what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
}

/// What the sampler published last, and the history.
pub struct Shared {
    latest: Mutex<Option<Arc<Published>>>,
    history: Mutex<History>,
}

/// One sample, as served.
pub struct Published {
    pub json: Vec<u8>,
    brotli: OnceLock<Vec<u8>>,
    pub raw: Arc<Raw>,
}

impl Published {
    /// The document compressed, once, on the first request that takes it.
    pub fn brotli(&self) -> &[u8] {
        self.brotli.get_or_init(|| {
            let mut out = Vec::new();
            let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 5, 18);
            let _ = writer.write_all(&self.json);
            drop(writer);
            out
        })
    }
}

impl Shared {
    fn new(buckets: u16) -> Self {
        Shared {
            latest: Mutex::new(None),
            history: Mutex::new(History::new(buckets)),
        }
    }

    pub fn latest(&self) -> Option<Arc<Published>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the server answers the request head `head` (without its blank
/// line) while its history holds one document of `time_ms` and no sample
/// is published: the fuzz target's view of the server.
pub fn answer_head(head: &[u8], time_ms: i64) -> Vec<u8> {
    let shared = Shared::new(5);
    shared.history().record(time_ms, br#"{"time":0}"#);
    http::respond(head, &shared).bytes()
}

/// Binds the port and starts the sampler and the server, each in a thread
/// of its own.
pub fn start(settings: Settings) -> Result<(), MonitorError> {
    let listener =
        std::net::TcpListener::bind(settings.listen).map_err(|source| MonitorError::Listen {
            address: settings.listen,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| MonitorError::Start {
            what: "listener",
            source,
        })?;
    let shared = Arc::new(Shared::new(settings.history_buckets));
    let sizes = Arc::new(Mutex::new([0u64; 3]));
    let spawn = |name: &str, job: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(job)
            .map(drop)
            .map_err(|source| MonitorError::Start {
                what: "thread",
                source,
            })
    };
    let server_shared = shared.clone();
    spawn(
        "monitor-http",
        Box::new(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return warn!("monitor: no runtime for the server: {e}"),
            };
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => http::serve(listener, server_shared).await,
                    Err(e) => warn!("monitor: listener: {e}"),
                }
            });
        }),
    )?;
    let walked = sizes.clone();
    let du_settings = settings.clone();
    spawn(
        "monitor-du",
        Box::new(move || walk_directories(&du_settings, &walked)),
    )?;
    info!(
        "monitor on http://{} (a sample every {} s, {} minutes of history)",
        settings.listen,
        settings.naptime.as_secs(),
        settings.history_buckets
    );
    spawn(
        "monitor-sampler",
        Box::new(move || Sampler::new(settings, shared, sizes).run()),
    )
}

/// The directories' sizes every 30 samples, as bg_mon refreshes them.
fn walk_directories(settings: &Settings, sizes: &Mutex<[u64; 3]>) {
    let every = settings.naptime * 30;
    loop {
        // The data directory's size leaves out the log directory inside
        // it; pg_wal counts when it is a directory, not when it is a link.
        let data = disk::directory_size(&settings.pgdata, std::slice::from_ref(&settings.log));
        let wal = disk::directory_size(
            &settings.wal.canonicalize().unwrap_or(settings.wal.clone()),
            &[],
        );
        let log = disk::directory_size(&settings.log, &[]);
        *sizes.lock().unwrap_or_else(|p| p.into_inner()) = [data, wal, log];
        thread::sleep(every);
    }
}

struct Sampler {
    settings: Settings,
    shared: Arc<Shared>,
    sizes: Arc<Mutex<[u64; 3]>>,
    session: postgres::Session,
    facts: snapshot::Facts,
    cgroup: Option<cgroup::Location>,
    page_kb: u64,
    previous: Option<Arc<Raw>>,
    /// Whether the last sample reached PostgreSQL (said on changes).
    reached: Option<bool>,
}

impl Sampler {
    fn new(settings: Settings, shared: Arc<Shared>, sizes: Arc<Mutex<[u64; 3]>>) -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let value = |var| sysconf(var).ok().flatten().unwrap_or(0).max(1) as u64;
        let cpus = thread::available_parallelism().map_or(1, usize::from);
        Sampler {
            session: postgres::Session::new(
                &settings.socket_dir,
                settings.pg_port,
                settings.query_text,
            ),
            facts: snapshot::facts(&settings.pgdata, cpus, value(SysconfVar::CLK_TCK)),
            cgroup: cgroup::locate(
                &host::text(Path::new("/proc/self/cgroup")).unwrap_or_default(),
                &host::text(Path::new("/proc/self/mountinfo")).unwrap_or_default(),
            ),
            page_kb: value(SysconfVar::PAGE_SIZE) / 1024,
            previous: None,
            reached: None,
            settings,
            shared,
            sizes,
        }
    }

    fn run(mut self) {
        let mut next = Instant::now();
        loop {
            let raw = Arc::new(self.sample());
            let document = snapshot::document(&self.facts, &raw, self.previous.as_deref());
            let json = serde_json::to_vec(&document).unwrap_or_default();
            self.shared.history().record(raw.time_ms, &json);
            let published = Arc::new(Published {
                json,
                brotli: OnceLock::new(),
                raw: Arc::clone(&raw),
            });
            *self.shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(published);
            self.previous = Some(raw);
            next += self.settings.naptime;
            let now = Instant::now();
            if next <= now {
                // Behind (a slow sample): the schedule starts again now.
                next = now + self.settings.naptime;
            }
            thread::sleep(next - now);
        }
    }

    fn sample(&mut self) -> Raw {
        let proc = Path::new("/proc");
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let diskstats = host::text(&proc.join("diskstats")).unwrap_or_default();
        let mountinfo = host::text(&proc.join("self/mountinfo")).unwrap_or_default();
        let s = &self.settings;
        let volumes = [&s.pgdata, &s.wal, &s.log].map(|d| disk::volume(d, &diskstats, &mountinfo));
        let processes = process::postmaster(&s.pgdata)
            .map(|pm| process::children(proc, pm, &s.cluster_name, self.page_kb))
            .unwrap_or_default();
        let patroni = s.patroni.as_ref().map(|(host, port)| patroni(host, *port));
        let backup = s.backup_state.as_deref().map(State::read);
        let postgres = self.session.sample().map_err(|e| e.to_string());
        self.say_reached(&postgres);
        Raw {
            time_ms,
            clock: Instant::now(),
            host: host::read(proc),
            cgroup: self
                .cgroup
                .as_ref()
                .map(|at| cgroup::read(at, self.facts.clock_ticks)),
            volumes,
            sizes: *self.sizes.lock().unwrap_or_else(|p| p.into_inner()),
            postgres,
            processes,
            patroni,
            backup,
        }
    }

    fn say_reached(&mut self, postgres: &Result<postgres::Sample, String>) {
        let reached = postgres.is_ok();
        if self.reached == Some(reached) {
            return;
        }
        match postgres {
            Ok(_) => info!("monitor: PostgreSQL reached as {}", postgres::ROLE),
            // Not before the first success: the server may still be
            // starting, the role still to be made by the primary.
            Err(e) if self.reached.is_some() => {
                warn!("monitor: PostgreSQL not reached as {}: {e}", postgres::ROLE)
            }
            Err(_) => return,
        }
        self.reached = Some(reached);
    }
}

/// `GET /patroni` on the member's REST API, bounded to a second.
fn patroni(host: &str, port: u16) -> Result<raw::Patroni, String> {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET /patroni HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut answer)
        .map_err(|e| e.to_string())?;
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| &answer[at + 4..])
        .ok_or("no HTTP answer")?;
    serde_json::from_slice(body).map_err(|e| e.to_string())
}
